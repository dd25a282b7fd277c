// HS256 JWT minting for benchmark connections (the server shares the secret).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace bench {

std::string base64url(std::string_view data);
std::string base64_std(const unsigned char* data, size_t len);

// {"alg":"HS256","typ":"JWT"}.{"sub":sub,"iat":now,"exp":now+ttl}.signature
std::string mint_hs256(const std::string& secret, const std::string& sub, int64_t now_s, int64_t ttl_s);

}  // namespace bench
