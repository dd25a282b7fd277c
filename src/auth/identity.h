// Identity: who a caller is. Registration and password login (Argon2id),
// the tokens we issue, and accounts provisioned on first use from an outside
// provider's token (CONTRACT section 1). It reads and creates users through
// the Store and knows nothing of threads or messages, which are the chat
// service's; that is why it lives in auth/ beside the JWT and password code
// it is the only user of.
//
// Thread-safety: every method may be called from any thread. register_user
// and login hash passwords (tens of ms) and read the store: call them from
// worker threads, never from a network event loop. The store and verifier
// must outlive the Identity.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "auth/jwt.h"
#include "auth/login_limiter.h"
#include "common/config.h"
#include "common/error.h"
#include "model/model.h"
#include "store/store.h"

namespace parley {

struct AuthResult {
  std::string token;
  User user;
  Micros expires_at = 0;
};

struct RegisterRequest {
  std::string username, password, full_name, role;
  std::optional<std::string> phone_number;
};

class Identity {
 public:
  Identity(Store& store, std::shared_ptr<const JwtVerifier> jwt, const Config& config);

  // `address`: the client's, for the per-address limit; empty (local tools) = not limited.
  Result<AuthResult> register_user(const RegisterRequest& request, const std::string& address = "");
  // `login` is a username or a phone number; `address` the client's, for rate limiting.
  Result<AuthResult> login(const std::string& login, const std::string& password, const std::string& address);
  AuthResult issue_token(const User& user) const;
  // Verifies a token and returns its user, provisioning one for a provider's
  // token that carries a profile. A disabled account's tokens, and tokens
  // issued (iat) before the account's revoke-tokens time, are refused
  // (unauthorized "account_disabled" / "token_revoked").
  Result<User> authenticate(const std::string& token);
  // The verified claims of a token (exp, iat), for connections that must
  // close when it expires or is revoked.
  Result<JwtClaims> token_claims(const std::string& token) const;
  // Seconds since epoch at which the token expires; for connections that must close then.
  Result<int64_t> token_expiry(const std::string& token) const;
  // Failed logins counted elsewhere (several nodes: Redis) instead of in this
  // process. At start, before the first login.
  void use_login_limits(std::unique_ptr<LoginLimits> limits);

 private:
  Result<User> provision(const JwtClaims& claims);

  Store& store_;
  std::shared_ptr<const JwtVerifier> jwt_;
  const Config& config_;
  LoginLimiter login_limiter_;
  std::unique_ptr<LoginLimits> shared_login_limits_;
  LoginLimits* login_limits_ = &login_limiter_;
  LoginLimiter registration_limiter_;
};

// ASCII lowercase (usernames are ASCII; other bytes are left alone).
std::string ascii_lowercase(std::string text);

}  // namespace parley
