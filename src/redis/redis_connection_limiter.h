// RedisConnectionLimiter: the per-user connection limit (ConnectionLimiter,
// chat/connection_limiter.h) counted across the nodes that share one Redis.
//
// In Redis: parley:user-conns:<user>, a hash of node id -> that node's
// connections of the user (open, or being admitted). Each node writes only
// its own field, always as an absolute number, from one connection, so the
// last write is its current count. acquire() runs one Lua script, atomic in
// Redis: the counts of the live nodes (those whose heartbeat key
// parley:node:<node> exists; RedisPresenceDirectory sets it under the same
// node id) plus this node's new count must stay within the limit, or nothing
// is written and the connection is refused.
//
// The bound: exact while every node reaches Redis (two nodes admitting the
// 20th connection at once run the script one after the other; one of them
// is refused). A node that died stops counting when its heartbeat expires
// (3 s) and the node that reaps it deletes its fields. A node cut off from
// Redis past its heartbeat does not count at the others until it is back; it
// then writes all its counts again (a user may briefly hold more than the
// limit). While Redis is unreachable each node enforces the limit on its own
// connections only, so a user may hold up to limit x nodes; nobody is
// refused for the outage.
//
// Threading: acquire() and release() from any thread; they post to the
// reactor's loop, where the Redis connection and this node's counts live;
// `done` runs on that loop. start() and close() from any thread but the loop's.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <unordered_map>

#include "chat/connection_limiter.h"
#include "common/reactor.h"
#include "redis/redis_link.h"

namespace parley {

class RedisConnectionLimiter final : public ConnectionLimiter {
 public:
  RedisConnectionLimiter(Reactor& reactor, RedisEndpoint endpoint, std::string node_id, int max_per_user);
  ~RedisConnectionLimiter() override;  // close()

  void acquire(const std::string& user_id, std::function<void(bool admitted)> done) override;
  void release(const std::string& user_id) override;

  void start();
  // Disconnects; acquisitions in flight are answered `false`. Then acquire
  // answers false and release does nothing.
  void close();
  // Writes every count of this node again, for when Redis lost them (this
  // node was reaped while cut off): a function to call on the loop thread,
  // safe to call after this limiter is gone (it then does nothing).
  std::function<void()> write_all_hook();

 private:
  void write(const std::string& user_id);
  void write_all();

  Reactor& reactor_;
  std::string node_id_;
  int max_per_user_;
  RedisLink link_;
  // Loop thread only: this node's count per user. An entry at 0 stays until
  // Redis has it (written when the link is back).
  std::unordered_map<std::string, int> mine_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::atomic<bool> closed_{false};
};

}  // namespace parley
