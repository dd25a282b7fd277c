// Fuzz target: JWT parsing and verification (src/auth/jwt). The first byte
// picks a mode:
//   0: the rest is a token, verified as a client would send it (HS256 secret
//      and an ES256 public key configured);
//   1: the rest is "HEADER_JSON\nPAYLOAD_JSON", signed here with the secret,
//      so the claim checks behind the signature are reached too;
//   2: the rest is a subject: sign() then verify() must give it back;
//   3: base64url: decode(encode(x)) == x, and decode never crashes.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "auth/jwt.h"
#include "common/utf8.h"

namespace {

constexpr std::string_view kSecret = "fuzz-secret";
constexpr int64_t kNow = 1'800'000'000;
// A public key only (its private half was thrown away): lets tokens reach the ES256 path.
constexpr const char* kEs256PublicKey =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAECbW5ptubo4gibr5ATiihXUDcDtbu\n"
    "NPdfXjNilBNCpSPb8XwlgMdadDUCpHnqxczwFs2pHelf31sytDqVot2lkw==\n"
    "-----END PUBLIC KEY-----\n";

const parley::JwtVerifier& verifier() {
  static auto v = parley::JwtVerifier::create(std::string(kSecret), kEs256PublicKey);
  if (!v) std::abort();
  return **v;
}

std::string hs256_token(std::string_view header, std::string_view payload) {
  std::string input = parley::base64url_encode(header) + "." + parley::base64url_encode(payload);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), kSecret.data(), static_cast<int>(kSecret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  return input + "." + parley::base64url_encode(std::string_view(reinterpret_cast<const char*>(mac), len));
}

void check(const parley::Result<parley::JwtClaims>& claims) {
  if (!claims) {
    if (claims.error().code.empty()) std::abort();
    return;
  }
  // Accepted: a subject, an expiry still ahead, every claim kept.
  if (claims->sub.empty() || claims->exp <= kNow || !claims->all.contains("exp")) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 4) {
    case 0:
      check(verifier().verify(rest, kNow));
      break;
    case 1: {
      size_t newline = rest.find('\n');
      if (newline == std::string::npos) return 0;
      check(verifier().verify(hs256_token(std::string_view(rest).substr(0, newline),
                                          std::string_view(rest).substr(newline + 1)),
                              kNow));
      break;
    }
    case 2: {
      if (rest.empty() || rest.size() > 1024 || !parley::utf8_length(rest)) return 0;
      auto claims = verifier().verify(verifier().sign(rest, kNow, 3600), kNow);
      if (!claims || claims->sub != rest || claims->exp != kNow + 3600) std::abort();
      break;
    }
    case 3: {
      auto back = parley::base64url_decode(parley::base64url_encode(rest));
      if (!back || *back != rest) std::abort();
      (void)parley::base64url_decode(rest);
      break;
    }
  }
  return 0;
}
