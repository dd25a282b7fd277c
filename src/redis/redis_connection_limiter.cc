#include "redis/redis_connection_limiter.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <future>

namespace parley {

namespace {

// KEYS: user-conns:<user>. ARGV: node, this node's count if admitted, limit.
// 1 = admitted (the count written), 0 = refused (nothing written).
constexpr const char* kAcquireScript = R"(
local total = tonumber(ARGV[2])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local node = fields[i]
  if node ~= ARGV[1] and redis.call('EXISTS', 'parley:node:' .. node) == 1 then
    total = total + tonumber(fields[i + 1])
  end
end
if total > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1)";

// KEYS: user-conns:<user>. ARGV: node, count (0 removes the field).
constexpr const char* kWriteScript = R"(
if ARGV[2] == '0' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1)";

std::string key(const std::string& user) { return "parley:user-conns:" + user; }

}  // namespace

RedisConnectionLimiter::RedisConnectionLimiter(Reactor& reactor, RedisEndpoint endpoint, std::string node_id,
                                               int max_per_user)
    : reactor_(reactor),
      node_id_(std::move(node_id)),
      max_per_user_(max_per_user),
      link_(reactor, std::move(endpoint), "connection-limit", [this] { write_all(); }, [] {}) {}

RedisConnectionLimiter::~RedisConnectionLimiter() { close(); }

void RedisConnectionLimiter::start() {
  reactor_.post([this] { link_.start(); });
}

void RedisConnectionLimiter::close() {
  if (closed_.exchange(true)) return;
  std::promise<void> done;
  reactor_.post([&] {
    *alive_ = false;
    link_.stop();  // replies in flight run with nullptr: refused, below
    done.set_value();
  });
  done.get_future().wait();
}

void RedisConnectionLimiter::acquire(const std::string& user_id, std::function<void(bool)> done) {
  std::weak_ptr<bool> alive = alive_;
  reactor_.post([this, alive, user_id, done = std::move(done)]() mutable {
    if (auto a = alive.lock(); !a || !*a) return done(false);
    int& mine = mine_[user_id];
    if (mine >= max_per_user_) return done(false);  // this node alone has the limit
    ++mine;
    bool sent = link_.command(
        {"EVAL", kAcquireScript, "1", key(user_id), node_id_, std::to_string(mine), std::to_string(max_per_user_)},
        [this, alive, user_id, done](const redisReply* r) {
          if (auto a = alive.lock(); !a || !*a) return done(false);
          if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
            --mine_[user_id];
            write(user_id);  // the script wrote nothing; later changes may have: the current count wins
            return done(false);
          }
          if (r && r->type == REDIS_REPLY_ERROR)
            spdlog::warn("event=connection_limit_error error=\"{}\"", std::string(r->str, r->len));
          // Admitted, or Redis went away meanwhile: this node's own count
          // stays within the limit, and Redis gets it when the link is back.
          done(true);
        });
    if (!sent) done(true);  // Redis unreachable: this node's limit only
  });
}

void RedisConnectionLimiter::release(const std::string& user_id) {
  std::weak_ptr<bool> alive = alive_;
  reactor_.post([this, alive, user_id] {
    if (auto a = alive.lock(); !a || !*a) return;
    auto it = mine_.find(user_id);
    if (it == mine_.end() || it->second == 0) return;
    --it->second;
    if (link_.up()) write(user_id);
  });
}

// An entry at 0 goes once Redis has answered its write: a write lost with the
// link must be made again when it is back (write_all), or Redis would keep
// counting connections this node no longer has.
void RedisConnectionLimiter::write(const std::string& user_id) {
  auto it = mine_.find(user_id);
  if (it == mine_.end()) return;
  std::weak_ptr<bool> alive = alive_;
  link_.command({"EVAL", kWriteScript, "1", key(user_id), node_id_, std::to_string(it->second)},
                [this, alive, user_id](const redisReply* r) {
                  if (auto a = alive.lock(); !a || !*a) return;
                  if (!r || r->type == REDIS_REPLY_ERROR) return;
                  if (auto now = mine_.find(user_id); now != mine_.end() && now->second == 0) mine_.erase(now);
                });
}

std::function<void()> RedisConnectionLimiter::write_all_hook() {
  std::weak_ptr<bool> alive = alive_;
  return [this, alive] {
    if (auto a = alive.lock(); a && *a) write_all();
  };
}

void RedisConnectionLimiter::write_all() {
  if (!link_.up()) return;
  for (const auto& [user_id, count] : mine_) write(user_id);
}

}  // namespace parley
