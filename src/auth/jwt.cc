#include "auth/jwt.h"

#include <cmath>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <strings.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <limits>

#include <boost/json.hpp>

#include "common/bearer.h"

namespace parley {

namespace json = boost::json;

namespace {

constexpr size_t kMaxTokenBytes = 8 * 1024;
// Clocks of the issuer and of this server drift; tolerate that much.
// nbf tolerates an issuer whose clock runs ahead of ours. exp gets no
// tolerance: an expired token is expired, and our own short-lived tokens
// (and the contract's "expired -> rejected") must mean what they say.
constexpr int64_t kClockSkewSeconds = 30;
// An exp further ahead than this is not a lifetime but a forged or broken
// token (2^63 and 1e300 have been seen): invalid, the same for REST and
// WebSocket, instead of overflowing whatever adds to it later.
constexpr int64_t kMaxLifetimeSeconds = int64_t{20} * 366 * 24 * 3600;

Error unauthorized(std::string code, std::string msg) {
  return {ErrorKind::kUnauthorized, std::move(code), std::move(msg)};
}
Error invalid(std::string msg) { return unauthorized("invalid_token", std::move(msg)); }

using Hmac = std::array<unsigned char, 32>;

// The header of every token `sign` makes: recognised as is, not parsed.
constexpr std::string_view kOurHeaderB64 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";  // {"alg":"HS256","typ":"JWT"}

// Parses base64url text holding a JSON object; nullopt on anything else.
std::optional<json::object> decode_object(std::string_view b64) {
  auto text = base64url_decode(b64);
  if (!text) return std::nullopt;
  boost::system::error_code ec;
  json::value v = json::parse(*text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return std::move(v.as_object());
}

// A NumericDate claim as whole seconds. Fractions are allowed by RFC 7519;
// huge values saturate instead of overflowing.
std::optional<int64_t> numeric_date(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) return std::numeric_limits<int64_t>::max();
  if (v.is_double()) {
    double d = v.get_double();
    // Boost.JSON reads some out-of-range literals (0.0e315) as NaN: not a date.
    if (!std::isfinite(d)) return std::nullopt;
    if (d >= 9.2e18) return std::numeric_limits<int64_t>::max();
    if (d <= -9.2e18) return std::numeric_limits<int64_t>::min();
    return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

// JWS ES256 signatures are raw r||s (RFC 7518 section 3.4); OpenSSL wants DER.
std::optional<std::string> es256_raw_to_der(std::string_view raw) {
  if (raw.size() != 64) return std::nullopt;
  auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(p, 32, nullptr);
  BIGNUM* s = BN_bin2bn(p + 32, 32, nullptr);
  if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return std::nullopt;
  }
  // sig owns r and s now.
  unsigned char* der = nullptr;
  int len = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  if (len <= 0) return std::nullopt;
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

}  // namespace

struct JwtVerifier::Pkey {
  EVP_PKEY* key = nullptr;
  std::string alg;  // "RS256" or "ES256": the only algorithm this key may verify
  ~Pkey() { EVP_PKEY_free(key); }

  bool verify(std::string_view data, std::string_view sig) const {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    if (!ctx) return false;
    bool ok = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
              EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                               reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
  }
};

// libsodium's HMAC-SHA-256 with the key's inner and outer pads hashed once:
// each token then costs a copy of the state and the hash of its own bytes.
// (OpenSSL 3's one-shot HMAC() looked the digest up and allocated a context
// per call: a fifth of the CPU of a connection storm.)
struct JwtVerifier::Hs256Key {
  crypto_auth_hmacsha256_state keyed;
  Hmac mac(std::string_view data) const {
    crypto_auth_hmacsha256_state st = keyed;
    Hmac out{};
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(data.data()), data.size());
    crypto_auth_hmacsha256_final(&st, out.data());
    sodium_memzero(&st, sizeof st);
    return out;
  }
};

JwtVerifier::JwtVerifier() : hs256_(std::make_unique<Hs256Key>()) {}
JwtVerifier::~JwtVerifier() { sodium_memzero(&hs256_->keyed, sizeof hs256_->keyed); }

Result<std::shared_ptr<JwtVerifier>> JwtVerifier::create(std::string hs256_secret, const std::string& public_key_pem) {
  if (hs256_secret.empty()) return Error{ErrorKind::kInternal, "invalid_config", "JWT secret is empty"};
  std::shared_ptr<JwtVerifier> v(new JwtVerifier());
  if (sodium_init() < 0) return Error{ErrorKind::kInternal, "crypto_init_failed", "libsodium did not initialise"};
  crypto_auth_hmacsha256_init(&v->hs256_->keyed, reinterpret_cast<const unsigned char*>(hs256_secret.data()),
                              hs256_secret.size());
  sodium_memzero(hs256_secret.data(), hs256_secret.size());
  if (public_key_pem.empty()) return v;

  auto bad_key = [](std::string msg) { return Error{ErrorKind::kInternal, "invalid_config", std::move(msg)}; };
  BIO* bio = BIO_new_mem_buf(public_key_pem.data(), static_cast<int>(public_key_pem.size()));
  if (!bio) return bad_key("cannot read JWT public key");
  auto pkey = std::make_unique<Pkey>();
  pkey->key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (!pkey->key) return bad_key("JWT public key is not a PEM public key");

  if (EVP_PKEY_get_base_id(pkey->key) == EVP_PKEY_RSA) {
    // Shorter RSA keys are forgeable in practice (RFC 7518 section 3.3 requires 2048).
    if (EVP_PKEY_get_bits(pkey->key) < 2048) return bad_key("JWT RSA key is shorter than 2048 bits");
    pkey->alg = "RS256";
  } else if (EVP_PKEY_get_base_id(pkey->key) == EVP_PKEY_EC) {
    char group[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_group_name(pkey->key, group, sizeof group, &len) != 1 || std::strcmp(group, "prime256v1") != 0)
      return bad_key("JWT EC key is not on P-256 (ES256)");
    pkey->alg = "ES256";
  } else {
    return bad_key("JWT public key must be RSA or EC P-256");
  }
  v->pkey_ = std::move(pkey);
  return v;
}

Result<JwtClaims> JwtVerifier::verify(const std::string& given, int64_t now_seconds) const {
  // `Bearer <jwt>`, the Authorization header's form, as apps store and send
  // it in an auth frame or a Socket.IO auth payload: a JWT holds no space,
  // so the prefix is never part of one.
  std::string_view token = bearer_token(given).value_or(std::string_view(given));
  if (token.size() > kMaxTokenBytes) return invalid("token too large");
  // JWS segments are unpadded (RFC 7515 section 2); padding would give one
  // token several spellings.
  if (token.find('=') != std::string_view::npos) return invalid("malformed token");
  size_t d1 = token.find('.');
  size_t d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos)
    return invalid("malformed token");
  std::string_view t = token;
  std::string_view signing_input = t.substr(0, d2);
  std::string_view payload_b64 = t.substr(d1 + 1, d2 - d1 - 1);

  std::optional<json::object> header;
  std::string_view alg = "HS256";
  if (t.substr(0, d1) != kOurHeaderB64) {
    header = decode_object(t.substr(0, d1));
    if (!header) return invalid("malformed header");
    // We implement no JWS extensions, so any critical one must be refused (RFC 7515 section 4.1.11).
    if (header->contains("crit")) return invalid("unsupported critical header");
    const json::string* a = header->contains("alg") ? header->at("alg").if_string() : nullptr;
    if (!a) return invalid("missing alg");
    alg = std::string_view(a->data(), a->size());
    std::string alg_lower(alg);
    std::transform(alg_lower.begin(), alg_lower.end(), alg_lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (alg_lower == "none") return invalid("unsigned tokens are not accepted");
  }

  auto sig = base64url_decode(t.substr(d2 + 1));
  if (!sig) return invalid("malformed signature");
  // Each algorithm is bound to its own key, so a token can never pick the key
  // type that verifies it (e.g. RS256 with the HMAC secret).
  bool good = false;
  if (alg == "HS256") {
    Hmac mac = hs256_->mac(signing_input);
    good = sig->size() == mac.size() && CRYPTO_memcmp(sig->data(), mac.data(), mac.size()) == 0;
  } else if (pkey_ && alg == pkey_->alg) {
    if (pkey_->alg == "ES256") {
      auto der = es256_raw_to_der(*sig);
      good = der && pkey_->verify(signing_input, *der);
    } else {
      good = pkey_->verify(signing_input, *sig);
    }
  } else {
    return invalid("unsupported alg");
  }
  if (!good) return invalid("bad signature");

  auto payload = decode_object(payload_b64);
  if (!payload) return invalid("malformed payload");
  JwtClaims claims;
  const json::string* sub = payload->contains("sub") ? payload->at("sub").if_string() : nullptr;
  if (!sub || sub->empty()) return invalid("missing sub");
  claims.sub = std::string(sub->c_str(), sub->size());
  auto exp = payload->contains("exp") ? numeric_date(payload->at("exp")) : std::nullopt;
  if (!exp) return invalid("missing exp");
  claims.exp = *exp;
  if (payload->contains("iat")) {
    auto iat = numeric_date(payload->at("iat"));
    if (!iat) return invalid("bad iat");
    claims.iat = *iat;
  }
  std::optional<int64_t> nbf;
  if (payload->contains("nbf")) {
    nbf = numeric_date(payload->at("nbf"));
    if (!nbf) return invalid("bad nbf");
  }
  if (now_seconds >= claims.exp) return unauthorized("token_expired", "token expired");
  if (claims.exp - now_seconds > kMaxLifetimeSeconds) return invalid("exp is too far in the future");
  if (nbf && now_seconds + kClockSkewSeconds < *nbf) return invalid("token not yet valid (nbf)");
  claims.all = std::move(*payload);
  return claims;
}

std::string JwtVerifier::sign(const std::string& sub, int64_t now_seconds, int64_t ttl_seconds,
                              const json::object& extra) const {
  // Registered claims are set last so extra claims cannot override them.
  json::object payload = extra;
  payload["sub"] = sub;
  payload["iat"] = now_seconds;
  payload["exp"] = now_seconds + ttl_seconds;
  std::string input = std::string(kOurHeaderB64) + "." +
                      base64url_encode(json::serialize(payload));
  Hmac mac = hs256_->mac(input);
  return input + "." + base64url_encode(std::string_view(reinterpret_cast<const char*>(mac.data()), mac.size()));
}

static const char kB64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string base64url_encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() * 4 + 2) / 3);
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : data) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kB64Url[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(kB64Url[(acc << (6 - bits)) & 63]);
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  // Optional padding, but only where it belongs.
  if (!text.empty() && text.back() == '=') {
    if (text.size() % 4 != 0) return std::nullopt;
    text.remove_suffix(1);
    if (!text.empty() && text.back() == '=') text.remove_suffix(1);
  }
  if (text.size() % 4 == 1) return std::nullopt;  // 6 bits cannot end a byte
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char ch : text) {
    int v;
    if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
    else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
    else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
    else if (ch == '-') v = 62;
    else if (ch == '_') v = 63;
    else return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  // Leftover bits must be zero, else two texts would decode to the same bytes.
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

}  // namespace parley
