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
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

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

// A verified token's user, and the token's own times (seconds since epoch;
// 0 = the claim is absent): a connection closes at `expires_at`, and when a
// revoke-tokens time passes `issued_at`.
struct Authenticated {
  User user;
  int64_t expires_at = 0;
  int64_t issued_at = 0;
  // Identity::generation() when the account was read: if it moved before the
  // connection registered, an account change may have closed the user's
  // connections without seeing this one (Identity::account_state re-reads).
  uint64_t generation = 0;
};

struct RegisterRequest {
  std::string username, password, full_name, role;
  std::optional<std::string> phone_number;
  // Local tools only (`parley user add --id`): the account of an outside
  // identity provider's user, made before their first token names it (as
  // `sub`). Without a password, it signs in only through that provider.
  std::optional<std::string> id;
};

class Identity {
 public:
  Identity(Store& store, std::shared_ptr<const JwtVerifier> jwt, const Config& config);

  // `address`: the client's, for the per-address limit; empty (local tools) = not limited.
  Result<AuthResult> register_user(const RegisterRequest& request, const std::string& address = "");
  // `login` is a username or a phone number; `address` the client's, for rate limiting.
  Result<AuthResult> login(const std::string& login, const std::string& password, const std::string& address);
  AuthResult issue_token(const User& user) const;
  // For a token just issued to `user` as authenticate() read it: the account
  // read again, refused as authenticate() would (unauthorized
  // "account_disabled" / "token_revoked") if it was disabled or its tokens
  // revoked since. Reads the store.
  Status unchanged_since(const User& user);
  // Verifies a token and returns its user, provisioning one for a provider's
  // token that carries a profile. A disabled account's tokens, and tokens
  // issued (iat) before the account's revoke-tokens time, are refused
  // (unauthorized "account_disabled" / "token_revoked"). Reads the store.
  Result<Authenticated> authenticate(const std::string& token);
  // The same without the store, for a WebSocket upgrade on an event loop
  // (connection storms): answered from the enabled accounts read by warm()
  // or authenticate() in the last kUserCacheSeconds, or nullopt when the
  // store must be read. A bad token is refused here; the account's refusals
  // (disabled, revoked) are left to the store. What it answers carries the
  // account's id only (the profile is the store's: read it there). The cache
  // cannot see `parley user disable` or revoke-tokens until forget_user();
  // the AccountWatcher calls it on the same poll that closes the account's
  // open connections.
  std::optional<Result<Authenticated>> authenticate_cached(const std::string& token);
  // An account changed: its next authentication reads the store.
  void forget_user(const std::string& user_id);
  // Reads up to `limit` accounts (at most half the cache), the most recently
  // seen first, into the cache: after a restart its clients come back at
  // once. Call after the AccountWatcher started, so no change falls between
  // the two. Reads the store: a worker thread.
  void warm(int limit);
  // Counts forget_user() calls: compared with Authenticated::generation.
  uint64_t generation();
  // The account as the store has it now, for a connection whose
  // authentication an account change may have overtaken. Reads the store.
  Result<AccountState> account_state(const std::string& user_id);
  static constexpr int64_t kUserCacheSeconds = 600;
  static constexpr size_t kMaxCachedUsers = 200000;
  // Failed logins counted elsewhere (several nodes: Redis) instead of in this
  // process. At start, before the first login.
  void use_login_limits(std::unique_ptr<LoginLimits> limits);

 private:
  Result<User> provision(const JwtClaims& claims);
  // The account's refusals (disabled, revoked) applied to a verified token.
  static Result<Authenticated> admit(const JwtClaims& claims, User user);
  // Caches `user`, read from the store when forgets_ was `generation`: not
  // if an account was forgotten since (the read may predate the change).
  void remember(const User& user, uint64_t generation);

  // What an upgrade needs of an account (an enabled one: refusals are the
  // store's), small enough to keep every active user.
  struct CachedUser {
    int64_t tokens_valid_after = 0;
    int64_t read_at = 0;  // seconds
  };
  std::mutex cache_mu_;
  std::unordered_map<std::string, CachedUser> cache_;  // user id -> account; guarded by cache_mu_
  uint64_t forgets_ = 0;                               // forget_user() calls; guarded by cache_mu_

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

// A login text as an account key, whichever spelling it has: "phone:" and
// the digits of a phone number, else "login:" and the lowercased text.
std::string login_text_key(const std::string& login);

}  // namespace parley
