// ConnectionLimiter: the per-user connection limit (`--max-connections-per-user`,
// 20 by default): counts each user's open connections and refuses one past
// the limit. In one process LocalConnectionLimiter counts in memory; several
// nodes on one Redis count across nodes (redis/redis_connection_limiter.h).
//
// Threading: every method may be called from any thread and never blocks.
// `done` runs exactly once, inline (the local limiter) or later on the
// limiter's own thread; it must only hand work on. Owned by the chat service.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

namespace parley {

class ConnectionLimiter {
 public:
  virtual ~ConnectionLimiter() = default;
  // A connection of user_id wants to open. done(true): it is counted until
  // release(); done(false): the user has the limit already, nothing counted.
  virtual void acquire(const std::string& user_id, std::function<void(bool admitted)> done) = 0;
  // A connection that acquire() admitted closed.
  virtual void release(const std::string& user_id) = 0;
};

// One process: a count per user under a mutex; acquire answers inline.
class LocalConnectionLimiter final : public ConnectionLimiter {
 public:
  explicit LocalConnectionLimiter(int max_per_user) : max_per_user_(max_per_user) {}
  void acquire(const std::string& user_id, std::function<void(bool admitted)> done) override;
  void release(const std::string& user_id) override;

 private:
  std::mutex mu_;
  std::unordered_map<std::string, int> open_;  // users with at least one connection
  int max_per_user_;
};

}  // namespace parley
