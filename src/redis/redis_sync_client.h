// RedisSyncClient: one blocking hiredis connection to Redis for callers on
// worker threads (the login limits), with a timeout on the connect and on
// every command, so a Redis that hangs costs a caller at most that long.
// After a failure it reconnects on a later call, at most once a second; in
// between, calls fail at once.
//
// Threading: any thread; calls take turns on one connection (a loopback
// round trip is well under the time a login spends hashing).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "redis/redis_link.h"

struct redisContext;
struct redisReply;

namespace parley {

class RedisSyncClient {
 public:
  struct ReplyDeleter {
    void operator()(redisReply* r) const;
  };
  using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

  RedisSyncClient(RedisEndpoint endpoint, std::chrono::milliseconds timeout);
  ~RedisSyncClient();
  RedisSyncClient(const RedisSyncClient&) = delete;
  RedisSyncClient& operator=(const RedisSyncClient&) = delete;

  // The reply (possibly a Redis error reply), or null when Redis is
  // unreachable or did not answer within the timeout.
  Reply command(const std::vector<std::string>& argv);

 private:
  bool connect();  // REQUIRES: mu_ held
  void drop();     // REQUIRES: mu_ held

  RedisEndpoint endpoint_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  redisContext* ctx_ = nullptr;
  std::chrono::steady_clock::time_point next_connect_{};
};

}  // namespace parley
