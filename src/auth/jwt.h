// JWT (RFC 7519) signing and verification. HS256 with a shared secret is the
// default; RS256 and ES256 tokens of an outside identity provider are
// verified with a configured PEM public key. `alg: none`, unknown algorithms,
// bad signatures, expired (exp) and not-yet-valid (nbf) tokens are rejected;
// `exp` is required. A JwtVerifier is immutable after construction, so any
// thread may use one.
#pragma once

#include <boost/json/object.hpp>

#include <memory>
#include <optional>
#include <string>

#include "common/error.h"

namespace parley {

struct JwtClaims {
  std::string sub;
  int64_t exp = 0;  // seconds since epoch
  int64_t iat = 0;
  boost::json::object all;  // every claim, for provider profiles (email, user_metadata, role)
};

class JwtVerifier {
 public:
  // hs256_secret: required, non-empty. public_key_pem: optional (RS256/ES256).
  // Fails when the PEM does not parse.
  static Result<std::shared_ptr<JwtVerifier>> create(std::string hs256_secret, const std::string& public_key_pem = "");
  ~JwtVerifier();

  // Errors (kind unauthorized): "invalid_token" (malformed, bad signature,
  // bad alg, a `nbf` in the future), "token_expired". A `Bearer ` prefix is
  // skipped.
  Result<JwtClaims> verify(const std::string& token, int64_t now_seconds) const;

  // An HS256 token with sub, iat=now, exp=now+ttl and any extra claims.
  std::string sign(const std::string& sub, int64_t now_seconds, int64_t ttl_seconds,
                   const boost::json::object& extra = {}) const;

 private:
  JwtVerifier();
  struct Hs256Key;
  std::unique_ptr<Hs256Key> hs256_;  // the secret, as HMAC's keyed state
  struct Pkey;
  std::unique_ptr<Pkey> pkey_;
};

// base64url without padding (RFC 4648 section 5), used by JWT.
std::string base64url_encode(std::string_view data);
std::optional<std::string> base64url_decode(std::string_view text);

}  // namespace parley
