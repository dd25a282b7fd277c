#include "jwt.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace bench {

std::string base64_std(const unsigned char* data, size_t len) {
  std::string out(4 * ((len + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(len));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string base64url(std::string_view data) {
  std::string s = base64_std(reinterpret_cast<const unsigned char*>(data.data()), data.size());
  while (!s.empty() && s.back() == '=') s.pop_back();
  for (auto& c : s) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  return s;
}

std::string mint_hs256(const std::string& secret, const std::string& sub, int64_t now_s, int64_t ttl_s) {
  static const std::string header = base64url(R"({"alg":"HS256","typ":"JWT"})");
  std::string payload = R"({"sub":")" + sub + R"(","iat":)" + std::to_string(now_s) + R"(,"exp":)" +
                        std::to_string(now_s + ttl_s) + "}";
  std::string input = header + "." + base64url(payload);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(input.data()),
       input.size(), mac, &mac_len);
  return input + "." + base64url(std::string_view(reinterpret_cast<const char*>(mac), mac_len));
}

}  // namespace bench
