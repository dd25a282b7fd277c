// RedisLoginLimits: the failed-login limits (LoginLimits, auth/login_limits.h)
// counted across the nodes that share one Redis, so that 10 failed logins
// spread over several nodes lock the account on every node.
//
// In Redis: parley:login-fail:account:<key> and parley:login-fail:address:<addr>,
// sorted sets of failed attempts scored by their time (seconds), expiring
// with the window. One Lua script checks and counts both at once, so
// concurrent attempts on several nodes never pass the limit.
//
// When Redis does not answer (down, or no reply within the timeout): this
// node decides alone with its own LoginLimiter, which counts every attempt
// this node saw (also while Redis was up), and logs one warning per outage.
// So an outage neither locks everyone out nor lets anyone try without limit:
// an account gets at most the limit per node until Redis is back.
//
// Threading: any thread; blocks for at most the timeout (calls come from the
// login workers). Owned by Identity.
#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "auth/login_limiter.h"
#include "auth/login_limits.h"
#include "redis/redis_sync_client.h"

namespace parley {

class RedisLoginLimits final : public LoginLimits {
 public:
  RedisLoginLimits(RedisEndpoint endpoint, std::chrono::milliseconds timeout, int per_account, int per_address,
                   int window_seconds);

  bool admit(const std::string& account, const std::string& address, int64_t now_seconds) override;
  void record_success(const std::string& account, const std::string& address, int64_t admitted_at) override;

 private:
  // Logs the change between Redis answering and not, once each way.
  void answered(bool ok);

  RedisSyncClient redis_;
  LoginLimiter local_;
  int per_account_, per_address_, window_;
  std::atomic<bool> degraded_{false};
};

}  // namespace parley
