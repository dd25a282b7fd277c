// LoginLimits: the failed-login limits (CONTRACT section 5: 10 failed logins
// per account per 15 minutes; also per client address) that Identity asks
// before it checks a password. LoginLimiter (auth/login_limiter.h) counts in
// this process; RedisLoginLimits (redis/redis_login_limits.h) across the
// nodes that share one Redis.
//
// Threading: any thread. An implementation may block briefly (a Redis round
// trip with a timeout): logins run on worker threads, never on a loop.
#pragma once

#include <cstdint>
#include <string>

namespace parley {

class LoginLimits {
 public:
  virtual ~LoginLimits() = default;
  // Checks and counts in one step: when a login for this account from this
  // address may be tried now, counts it as a failure right away and returns
  // true (concurrent attempts therefore never pass the limit); call
  // record_success(account, address, now) if it then succeeds.
  virtual bool admit(const std::string& account, const std::string& address, int64_t now_seconds) = 0;
  // A success of an attempt admit() counted at `admitted_at`: clears the
  // account's failures and takes that one attempt back from the address.
  virtual void record_success(const std::string& account, const std::string& address, int64_t admitted_at) = 0;
};

}  // namespace parley
