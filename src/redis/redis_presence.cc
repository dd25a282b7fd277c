#include "redis/redis_presence.h"

#include <condition_variable>
#include <mutex>

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>

#include "common/clock.h"

namespace parley {

namespace {

constexpr const char* kChannel = "parley:presence";  // also named in the scripts
constexpr std::chrono::milliseconds kTick{1000};
constexpr const char* kHeartbeatMs = "3000";
// After Redis restarted empty: how long the live nodes get to register their
// users again before the ones no node has are announced offline.
constexpr std::chrono::milliseconds kRegisterAgainWait{5000};

// The announcements each node's copy follows, published by the scripts
// themselves so that a change and its announcement reach Redis as one step
// (a PUBLISH sent after a script's reply is lost if the link drops between):
// "+<user>" and "-<user>" (online anywhere, or nowhere), "L<node> <user>" and
// "l<node> <user>" (the user has an open connection on that node, or no
// longer: its grace period began, or it ended), "X<node>" (that node was
// found dead: it has no one), and "R<node> <token>" (a node's reload took
// its snapshot here: see reload()).
//
// Sets the user's live flag on this node, the tail of the two scripts below.
// KEYS[4]: node-live:<node>. ARGV: node, user, "1" live or "0" in the grace
// period.
constexpr const char* kSetLive = R"(
if ARGV[3] == '1' then
  if redis.call('SADD', KEYS[4], ARGV[2]) == 1 then
    redis.call('PUBLISH', 'parley:presence', 'L' .. ARGV[1] .. ' ' .. ARGV[2])
  end
elseif redis.call('SREM', KEYS[4], ARGV[2]) == 1 then
  redis.call('PUBLISH', 'parley:presence', 'l' .. ARGV[1] .. ' ' .. ARGV[2])
end
)";

// KEYS: conns:<user>, node-users:<node>, online, node-live:<node>. ARGV: node,
// user, live ("1" or "0"). Returns how many nodes had the user before.
const std::string kOnlineScript = std::string(R"(
local before = redis.call('HLEN', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], 1)
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
if before == 0 then redis.call('PUBLISH', 'parley:presence', '+' .. ARGV[2]) end
)") + kSetLive + "return before";

// Same keys and arguments, for a user already on this node: only the flag.
const std::string kLiveScript = std::string(kSetLive) + "return 0";

// Same keys. ARGV: node, user. Returns how many nodes still have the user.
constexpr const char* kOfflineScript = R"(
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('SREM', KEYS[4], ARGV[2]) == 1 then
  redis.call('PUBLISH', 'parley:presence', 'l' .. ARGV[1] .. ' ' .. ARGV[2])
end
local left = redis.call('HLEN', KEYS[1])
if left == 0 then
  redis.call('SREM', KEYS[3], ARGV[2])
  redis.call('PUBLISH', 'parley:presence', '-' .. ARGV[2])
end
return left)";

// The heartbeat. KEYS: node:<node>, nodes. ARGV: node, expiry in ms.
// Returns 1 when the key was still there (nothing of this node was lost).
// parley:node-seen keeps when each node was last heard of (ms), the
// last_seen its users get if it dies.
constexpr const char* kHeartbeatScript = R"(
local alive = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], 1, 'PX', ARGV[2])
local t = redis.call('TIME')
redis.call('HSET', 'parley:node-seen', ARGV[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', 'parley:reports-live', ARGV[1])
return alive)";

// Removes every node whose heartbeat expired, with its connection counts
// (redis/redis_connection_limiter.h); returns the users left on no node,
// each followed by how long ago (ms, by Redis's clock, so no other clock
// is compared with it) the latest of their dead nodes was last heard of:
// -1 if not known (a node of an older version, which stamps no
// parley:node-seen).
// Each is also kept in parley:reaped (user -> when, in ms) until its caller
// has announced it and says so (kSettledScript, tick()): a reply that went to a
// link its caller had given up on (Redis hung, then ran what was queued)
// would otherwise take the announcement with it. Whoever reaps more than
// 2 s later gets those users again, if no node has them by then; past 30 s
// (links down that long, or an older version's reaper about) they are
// dropped: an offline announced that late would only set a wrong last_seen.
// parley:reaped-seen keeps "<reaped stamp>:<last heard>" for them, used only
// while the stamp is still the user's in parley:reaped (an older version's
// reaper neither writes nor clears it). Last, what older reapers leave
// behind is cleared.
constexpr const char* kReapScript = R"(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = {}
local owed = redis.call('HGETALL', 'parley:reaped')
for i = 1, #owed, 2 do
  local u, stamp = owed[i], owed[i + 1]
  local age = now - tonumber(stamp)
  if age > 2000 then
    if age < 30000 and redis.call('HLEN', 'parley:conns:' .. u) == 0 then
      local ago = -1  -- its stamp kept: it ages out all the same
      local kept = redis.call('HGET', 'parley:reaped-seen', u)
      if kept then
        local s, heard = string.match(kept, '^(%d+):(%d+)$')
        if s == stamp then ago = math.max(0, now - tonumber(heard)) end
      end
      table.insert(gone, u)
      table.insert(gone, ago)
    else
      redis.call('HDEL', 'parley:reaped', u)
      redis.call('HDEL', 'parley:reaped-seen', u)
    end
  end
end
local last = {}  -- user -> the latest last-heard of their dead nodes
for _, n in ipairs(redis.call('SMEMBERS', 'parley:nodes')) do
  if redis.call('EXISTS', 'parley:node:' .. n) == 0 then
    local seen = tonumber(redis.call('HGET', 'parley:node-seen', n) or '0')
    for _, u in ipairs(redis.call('SMEMBERS', 'parley:node-users:' .. n)) do
      redis.call('HDEL', 'parley:conns:' .. u, n)
      redis.call('HDEL', 'parley:user-conns:' .. u, n)
      if seen > (last[u] or 0) then last[u] = seen end
      if redis.call('HLEN', 'parley:conns:' .. u) == 0 then
        local heard = last[u] or 0
        redis.call('SREM', 'parley:online', u)
        redis.call('PUBLISH', 'parley:presence', '-' .. u)
        table.insert(gone, u)
        table.insert(gone, heard > 0 and math.max(0, now - heard) or -1)
        redis.call('HSET', 'parley:reaped', u, now)
        if heard > 0 then
          redis.call('HSET', 'parley:reaped-seen', u, string.format('%d:%d', now, heard))
        else
          redis.call('HDEL', 'parley:reaped-seen', u)
        end
      end
    end
    redis.call('DEL', 'parley:node-users:' .. n, 'parley:node-live:' .. n)
    redis.call('SREM', 'parley:nodes', n)
    redis.call('HDEL', 'parley:node-seen', n)
    redis.call('SREM', 'parley:reports-live', n)
    if redis.call('SREM', 'parley:left', n) == 1 then redis.call('PUBLISH', 'parley:presence', 'C' .. n) end
    redis.call('PUBLISH', 'parley:presence', 'X' .. n)
  end
end
-- What a reaper of an older version left behind (it knows no reports-live,
-- no left, no node-seen, no reaped-seen), and what a node that left before
-- its first heartbeat stamped.
for _, set in ipairs({'parley:reports-live', 'parley:left'}) do
  for _, n in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('SISMEMBER', 'parley:nodes', n) == 0 then redis.call('SREM', set, n) end
  end
end
-- Each hash is walked only when it holds more than it should (a count is
-- cheap; a walk of many owed users, every second on every node, is not).
if redis.call('HLEN', 'parley:node-seen') > redis.call('SCARD', 'parley:nodes') then
  for _, n in ipairs(redis.call('HKEYS', 'parley:node-seen')) do
    if redis.call('SISMEMBER', 'parley:nodes', n) == 0 then redis.call('HDEL', 'parley:node-seen', n) end
  end
end
if redis.call('HLEN', 'parley:reaped-seen') > redis.call('HLEN', 'parley:reaped') then
  for _, u in ipairs(redis.call('HKEYS', 'parley:reaped-seen')) do
    if redis.call('HEXISTS', 'parley:reaped', u) == 0 then redis.call('HDEL', 'parley:reaped-seen', u) end
  end
end
return gone)";

// The users of a reap's reply announced: no longer owed. ARGV: the users.
constexpr const char* kSettledScript = R"(
for _, u in ipairs(ARGV) do
  redis.call('HDEL', 'parley:reaped', u)
  redis.call('HDEL', 'parley:reaped-seen', u)
end
return 0)";

// What a node's copy holds. ARGV: this node, the reload's token. Returns
// every online user, then each other node's id followed by the users with an
// open connection there; publishes the reload's marker ("R<node> <token>").
// A node of a version before node-live sets (not in parley:reports-live,
// which the heartbeat fills: a rolling upgrade) counts all its users, as
// that version did, until the next reload.
constexpr const char* kReloadScript = R"(
local others = {}
for _, n in ipairs(redis.call('SMEMBERS', 'parley:nodes')) do
  if n ~= ARGV[1] then
    table.insert(others, n)
    if redis.call('SISMEMBER', 'parley:reports-live', n) == 1 then
      table.insert(others, redis.call('SMEMBERS', 'parley:node-live:' .. n))
    else
      table.insert(others, redis.call('SMEMBERS', 'parley:node-users:' .. n))
    end
  end
end
redis.call('PUBLISH', 'parley:presence', 'R' .. ARGV[1] .. ' ' .. ARGV[2])
return {redis.call('SMEMBERS', 'parley:online'), others})";

// How long after Redis answers again a change is announced again
// (announce_again): more than a link's longest retry backoff (redis_link.h).
constexpr std::chrono::milliseconds kAnnounceAgainAfter{3000};
// Announcements kept between a reload's marker and its reply, at most.
constexpr size_t kMaxRecorded = 100000;

std::string conns_key(const std::string& user) { return "parley:conns:" + user; }

// A user's (or "X"'s node's) part of an announcement: "<node> <user>".
bool split_node_user(std::string_view rest, std::string_view& node, std::string_view& user) {
  size_t space = rest.find(' ');
  if (space == std::string_view::npos || space == 0 || space + 1 == rest.size()) return false;
  node = rest.substr(0, space);
  user = rest.substr(space + 1);
  return true;
}

}  // namespace

RedisPresenceDirectory::RedisPresenceDirectory(Reactor& reactor, RedisEndpoint endpoint, std::string node_id)
    : reactor_(reactor),
      node_id_(std::move(node_id)),
      endpoint_(endpoint),
      commands_(reactor, endpoint, "presence", [this] { on_commands_up(); },
                [this] { healthy_ = false; }),
      subscription_(reactor, endpoint, "presence-subscribe", [this] { on_subscription_up(); }, [] {}) {}

RedisPresenceDirectory::~RedisPresenceDirectory() { close(); }

void RedisPresenceDirectory::start() {
  reactor_.post([this] {
    commands_.start();
    subscription_.start();
    tick();
  });
}

// A node that stops on purpose, everything it published out, says so
// (parley:left): its removal then makes no other node resync ('C' before 'X').
// Its heartbeat is left to expire as a killed node's would (3 s from now, no
// more): the grace its users' connections had when it closed them, so one
// who reconnects to another node meanwhile is never announced offline.
constexpr const char* kLeaveScript = R"(
if ARGV[2] == '1' then redis.call('SADD', 'parley:left', ARGV[1]) end
redis.call('SET', 'parley:node:' .. ARGV[1], 1, 'PX', ARGV[3])
local t = redis.call('TIME')
redis.call('HSET', 'parley:node-seen', ARGV[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return 1)";

void RedisPresenceDirectory::close(bool published_all) {
  if (closed_.exchange(true)) return;
  // A node that stops on purpose sets its heartbeat's last 3 s (kLeaveScript):
  // a heartbeat sent just before could otherwise have given it up to 3 s
  // more. Bounded: Redis may be unreachable.
  struct Said {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  auto said = std::make_shared<Said>();
  auto mark = [said] {
    std::lock_guard lock(said->mu);
    said->done = true;
    said->cv.notify_all();
  };
  reactor_.post([this, mark, published_all] {
    if (!commands_.up() || !commands_.command({"EVAL", kLeaveScript, "0", node_id_, published_all ? "1" : "0", kHeartbeatMs},
                                              [mark](const redisReply*) { mark(); }))
      mark();
  });
  {
    std::unique_lock lock(said->mu);
    said->cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return said->done; });
  }
  std::promise<void> done;
  reactor_.post([&] {
    *alive_ = false;
    commands_.stop();
    subscription_.stop();
    done.set_value();
  });
  done.get_future().wait();
}

void RedisPresenceDirectory::set_gone_hook(std::function<void(const std::string&, int64_t)> hook) {
  gone_hook_ = std::move(hook);
}
void RedisPresenceDirectory::set_back_hook(std::function<void(const std::string&, bool)> hook) {
  back_hook_ = std::move(hook);
}

bool RedisPresenceDirectory::known_online(const std::string& user_id) const {
  std::lock_guard lock(mu_);
  return online_.count(user_id) != 0;
}

bool RedisPresenceDirectory::known_connected_elsewhere(const std::string& user_id) const {
  std::lock_guard lock(mu_);
  return live_elsewhere_.count(user_id) != 0;
}

// The scripts' keys and arguments for a user of this node.
bool RedisPresenceDirectory::run(const std::string& script, const std::string& user_id, bool live,
                                 RedisLink::ReplyFn done) {
  return commands_.command({"EVAL", script, "4", conns_key(user_id), "parley:node-users:" + node_id_, "parley:online",
                            "parley:node-live:" + node_id_, node_id_, user_id, live ? "1" : "0"},
                           std::move(done));
}

void RedisPresenceDirectory::node_online(const std::string& user_id, std::function<void(bool)> done) {
  std::weak_ptr<bool> alive = alive_;
  reactor_.post([this, alive, user_id, done = std::move(done)]() mutable {
    if (auto a = alive.lock(); !a || !*a) return;
    mine_[user_id] = true;
    bool sent = run(kOnlineScript, user_id, true, [this, alive, user_id, done](const redisReply* r) {
      heard(alive, user_id, r);
      done(!r || r->type != REDIS_REPLY_INTEGER || r->integer == 0);
    });
    if (!sent) {  // Redis unreachable: behave as one node
      unheard_.insert(user_id);
      done(true);
    }
  });
}

void RedisPresenceDirectory::node_live(const std::string& user_id, bool live) {
  std::weak_ptr<bool> alive = alive_;
  reactor_.post([this, alive, user_id, live] {
    if (auto a = alive.lock(); !a || !*a) return;
    auto it = mine_.find(user_id);
    if (it == mine_.end()) return;
    it->second = live;
    run(kLiveScript, user_id, live);  // unsent: the reconnect's register_again sets it
  });
}

void RedisPresenceDirectory::node_offline(const std::string& user_id, std::function<void(bool)> done) {
  std::weak_ptr<bool> alive = alive_;
  reactor_.post([this, alive, user_id, done = std::move(done)]() mutable {
    if (auto a = alive.lock(); !a || !*a) return;
    mine_.erase(user_id);
    bool sent = run(kOfflineScript, user_id, false, [this, alive, user_id, done](const redisReply* r) {
      heard(alive, user_id, r);
      done(!r || r->type != REDIS_REPLY_INTEGER || r->integer == 0);
    });
    if (!sent) {
      unheard_.insert(user_id);
      done(true);
    }
  });
}

// A change Redis did not answer was announced by this node on its own, and
// the bus that carried the announcement may have lost it with the link
// (other nodes' contacts then never hear it, though Redis may well have run
// the script): announced again once Redis is back (reconcile, register_again).
void RedisPresenceDirectory::heard(const std::weak_ptr<bool>& alive, const std::string& user_id, const redisReply* r) {
  if (auto a = alive.lock(); !a || !*a) return;
  if (r && r->type == REDIS_REPLY_INTEGER) unheard_.erase(user_id);
  else unheard_.insert(user_id);
}

// Once a second: this node's heartbeat, then the removal of dead nodes.
void RedisPresenceDirectory::tick() {
  std::weak_ptr<bool> alive = alive_;
  reactor_.schedule(kTick, [this, alive] {
    if (auto a = alive.lock(); !a || !*a) return;
    if (closed_) return;  // its heartbeat's last 3 s are set (close): not one more
    if (commands_.up()) {
      // The copy follows the channel; a full reload now and then repairs a
      // change that raced with the last reload.
      if (++ticks_ % 10 == 0 || reloads_left_ > 0) {
        reloads_left_ = std::max(0, reloads_left_ - 1);
        reload();
      }
      heartbeat();
      if (reaping_) commands_.command({"EVAL", kReapScript, "0"}, [this, alive](const redisReply* r) {
        if (auto a = alive.lock(); !a || !*a || !r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) return;
        // Stopped reaping meanwhile: the users stay owed, for another node's reap.
        if (!reaping_) return;
        std::vector<std::string> settled{"EVAL", kSettledScript, "0"};
        const Micros now = now_micros();
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
          const redisReply* u = r->element[i];
          const redisReply* ago = r->element[i + 1];
          if (u->type != REDIS_REPLY_STRING || ago->type != REDIS_REPLY_INTEGER) continue;
          std::string user(u->str, u->len);
          spdlog::info("event=presence_node_gone user_id={}", user);
          if (gone_hook_) gone_hook_(user, ago->integer >= 0 ? now - ago->integer * 1000 : 0);
          settled.push_back(std::move(user));
        }
        if (settled.size() > 3)
          commands_.command(std::vector<std::string_view>(settled.begin(), settled.end()), [](const redisReply*) {});
      });
    }
    tick();
  });
}

void RedisPresenceDirectory::on_commands_up() {
  // Up only after close() (a start that failed at once): its leave was not
  // sent, so a heartbeat now would register a node that no one takes out
  // cleanly, and every other node would resync its sessions at the reap.
  if (closed_) return;
  healthy_ = true;
  reloads_left_ = 5;
  std::unordered_set<std::string> before;
  {
    std::lock_guard lock(mu_);
    before = online_;  // as it was while Redis was away
  }
  heartbeat();
  reconcile();
  reload();
  claim_lost_users(std::move(before));
}

// Redis restarted empty: a node that died meanwhile left no trace there for
// the reaper to find, so its users would stay online at their contacts. The
// first node to find parley:epoch missing (one SET NX) waits while the live
// nodes register their users again, then announces offline everyone its copy
// had before the restart whom no node has now. A live node slower to come
// back than that announces its users online again (register_again). Only a
// node with a copy tries: one started while Redis was away, back first, took
// the job and had no one to announce. (So a cluster's epoch is first set at
// the first reconnect of a node that knew who was online.)
void RedisPresenceDirectory::claim_lost_users(std::unordered_set<std::string> before) {
  if (before.empty()) return;
  std::weak_ptr<bool> alive = alive_;
  commands_.command({"SET", "parley:epoch", node_id_, "NX"}, [this, alive, before = std::move(before)](
                                                                 const redisReply* r) mutable {
    if (auto a = alive.lock(); !a || !*a || !r || r->type != REDIS_REPLY_STATUS) return;
    reactor_.schedule(kRegisterAgainWait, [this, alive, before = std::move(before)]() mutable {
      if (auto a = alive.lock(); !a || !*a) return;
      commands_.command({"SMEMBERS", "parley:online"}, [this, alive, before = std::move(before)](const redisReply* r) {
        if (auto a = alive.lock(); !a || !*a || !r || r->type != REDIS_REPLY_ARRAY) return;
        std::unordered_set<std::string> now;
        for (size_t i = 0; i < r->elements; ++i) now.emplace(r->element[i]->str, r->element[i]->len);
        for (const auto& user : before) {
          if (now.count(user) || mine_.count(user)) continue;
          spdlog::info("event=presence_lost_with_redis user_id={}", user);
          if (gone_hook_) gone_hook_(user, 0);
        }
      });
    });
  });
}

// After a reconnect, also one shorter than the heartbeat's expiry (Redis kept
// everything): a change this node made while the link was down may not have
// reached Redis. A lost offline would leave the user online everywhere for
// good (no push notifications, no offline announced later); a lost online,
// calls refused as callee_offline. Makes Redis hold exactly this node's users.
void RedisPresenceDirectory::reconcile() {
  std::weak_ptr<bool> alive = alive_;
  commands_.command({"SMEMBERS", "parley:node-users:" + node_id_}, [this, alive](const redisReply* r) {
    if (auto a = alive.lock(); !a || !*a || !r || r->type != REDIS_REPLY_ARRAY) return;
    // Gone from this node: those Redis still lists for it, and those whose
    // offline went unheard (Redis may have run it, the bus lost its news).
    std::unordered_set<std::string> gone;
    for (size_t i = 0; i < r->elements; ++i) gone.emplace(r->element[i]->str, r->element[i]->len);
    for (const auto& user : unheard_) gone.insert(user);
    for (const auto& user : gone) {
      if (mine_.count(user)) continue;
      unheard_.erase(user);
      spdlog::info("event=presence_stale_removed node={} user_id={}", node_id_, user);
      run(kOfflineScript, user, false, [this, alive, user](const redisReply* left) {
        if (auto a = alive.lock(); !a || !*a) return;
        if (!left || left->type != REDIS_REPLY_INTEGER) {
          unheard_.insert(user);  // the next reconnect tries again
          return;
        }
        // Another node has the user: the offline this node announced when it
        // could not ask was wrong. No node has them: the offline again, in
        // case the bus lost it (the gone hook skips a user back here).
        const bool elsewhere = left->integer != 0;
        announce_again(user, [this, user, elsewhere] {
          // As the copy stands then: the user may have come or gone since.
          if (known_online(user) != elsewhere) return;
          if (elsewhere && back_hook_) back_hook_(user, /*elsewhere=*/true);
          if (!elsewhere && gone_hook_) gone_hook_(user, 0);
        });
      });
    }
    // Those this node has that Redis lost: the online script is idempotent,
    // and announces only a user no node had.
    register_again();
  });
}

// Sets this node's heartbeat; if it had expired, this node's users may be
// gone from Redis (restarted empty, or reaped by another node): register them again.
void RedisPresenceDirectory::heartbeat() {
  std::weak_ptr<bool> alive = alive_;
  commands_.command({"EVAL", kHeartbeatScript, "2", "parley:node:" + node_id_, "parley:nodes", node_id_, kHeartbeatMs},
                    [this, alive](const redisReply* r) {
                      if (auto a = alive.lock(); !a || !*a || !r || r->type != REDIS_REPLY_INTEGER) return;
                      if (r->integer == 0) register_again();
                    });
}

void RedisPresenceDirectory::register_again() {
  if (!mine_.empty()) spdlog::info("event=presence_register_again node={} users={}", node_id_, mine_.size());
  if (registered_again_hook_) registered_again_hook_();
  std::weak_ptr<bool> alive = alive_;
  // The script also sets each user's live flag as it is here now.
  // Not a structured binding: clang 14 (the sanitizer build) cannot capture one.
  for (const auto& entry : mine_) {
    const std::string& user = entry.first;
    const bool unheard = unheard_.erase(user) != 0;
    run(kOnlineScript, user, entry.second, [this, alive, user, unheard](const redisReply* r) {
      if (auto a = alive.lock(); !a || !*a) return;
      if (!r || r->type != REDIS_REPLY_INTEGER) {
        if (unheard) unheard_.insert(user);
        return;
      }
      // No node had the user: the others were told it went offline (or never
      // heard it came). Or its online went unheard: the bus may have lost it.
      // Online again.
      if (r->integer == 0 || unheard)
        announce_again(user, [this, user] {
          if (back_hook_) back_hook_(user, /*elsewhere=*/false);  // if still connected here
        });
    });
  }
}

// Redis is back after this node lost it, and the other nodes' bus
// subscriptions may be coming back too (their links retry within 2 s): an
// announcement made at once could reach none of them.
void RedisPresenceDirectory::announce_again(const std::string& user_id, std::function<void()> announce) {
  std::weak_ptr<bool> alive = alive_;
  reactor_.schedule(kAnnounceAgainAfter, [alive, user_id, announce = std::move(announce)] {
    if (auto a = alive.lock(); !a || !*a) return;
    spdlog::info("event=presence_announced_again user_id={}", user_id);
    announce();
  });
}

void RedisPresenceDirectory::on_subscription_up() {
  subscription_.subscribe(kChannel, [this](const redisReply* r) { on_message(r); });
}

void RedisPresenceDirectory::on_message(const redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
  std::string_view kind(r->element[0]->str, r->element[0]->len);
  if (kind == "subscribe") return reload();
  if (kind != "message" || r->element[2]->type != REDIS_REPLY_STRING || r->element[2]->len < 2) return;
  std::string_view m(r->element[2]->str, r->element[2]->len);
  if (m[0] == 'R') return on_reload_marker(m.substr(1));
  // Between a reload's marker and its reply: kept, to apply again on top of
  // the snapshot (which they are newer than). Bounded: past it, the reload
  // is given up and the next one repairs.
  if (reload_.recording) {
    if (reload_.since_marker.size() < kMaxRecorded) reload_.since_marker.emplace_back(m);
    else reload_ = {};
  }
  {
    std::lock_guard lock(mu_);
    apply(m);
  }
  // A node removed: one that left on purpose ('C' first) took nothing with it.
  if (m[0] == 'C') left_cleanly_.emplace(m.substr(1));
  if (m[0] != 'X') return;
  std::string node(m.substr(1));
  if (!left_cleanly_.erase(node) && node != node_id_ && node_gone_hook_) node_gone_hook_(node);
}

// Under mu_: one announcement (the format is at the top of this file).
void RedisPresenceDirectory::apply(std::string_view m) {
  std::string_view rest = m.substr(1), node, user;
  switch (m[0]) {
    case '+':
      online_.emplace(rest);
      break;
    case '-':
      online_.erase(std::string(rest));
      break;
    case 'L':
    case 'l':
      if (!split_node_user(rest, node, user) || node == node_id_) break;
      set_live_elsewhere(std::string(user), node, m[0] == 'L');
      break;
    case 'X':
      for (auto it = live_elsewhere_.begin(); it != live_elsewhere_.end();) {
        std::erase(it->second, rest);
        it = it->second.empty() ? live_elsewhere_.erase(it) : std::next(it);
      }
      break;
  }
}

// Under mu_.
void RedisPresenceDirectory::set_live_elsewhere(const std::string& user, std::string_view node, bool live) {
  auto it = live_elsewhere_.find(user);
  if (live) {
    if (it == live_elsewhere_.end()) it = live_elsewhere_.emplace(user, std::vector<std::string>{}).first;
    if (std::find(it->second.begin(), it->second.end(), node) == it->second.end()) it->second.emplace_back(node);
  } else if (it != live_elsewhere_.end()) {
    std::erase(it->second, node);
    if (it->second.empty()) live_elsewhere_.erase(it);
  }
}

// The snapshot (the reply, on the command link) and the announcements (on
// the subscription) come in no fixed order to each other, so an
// announcement published after the snapshot was taken could come first and
// be overwritten by it. The script ends by publishing a marker, which the
// subscription delivers in order with the announcements: the snapshot is
// applied as of its marker, then whatever came after the marker on top.
void RedisPresenceDirectory::reload() {
  std::weak_ptr<bool> alive = alive_;
  // A snapshot whose marker never came (the subscription is down, or not yet
  // subscribed): applied now rather than never, as a reload without markers
  // would have been; the subscription's own reload follows when it is back.
  if (reload_.snapshot) {
    std::lock_guard lock(mu_);
    online_.swap(reload_.snapshot->online);
    live_elsewhere_.swap(reload_.snapshot->live);
  }
  reload_ = {};
  reload_.token = ++reload_tokens_;
  const std::string token = std::to_string(reload_.token);
  commands_.command({"EVAL", kReloadScript, "0", node_id_, token}, [this, alive, n = reload_.token](const redisReply* r) {
    if (auto a = alive.lock(); !a || !*a || n != reload_.token) return;
    auto snapshot = parse_snapshot(r);
    if (!snapshot) {
      reload_ = {};
      return;
    }
    if (!reload_.marker_seen) {
      reload_.snapshot = std::move(snapshot);
      return;
    }
    std::lock_guard lock(mu_);
    online_.swap(snapshot->online);
    live_elsewhere_.swap(snapshot->live);
    for (const auto& m : reload_.since_marker) apply(m);
    reload_ = {};
  });
}

void RedisPresenceDirectory::on_reload_marker(std::string_view rest) {
  std::string_view node, token;
  if (!split_node_user(rest, node, token) || node != node_id_ || reload_.token == 0 ||
      token != std::to_string(reload_.token) || reload_.marker_seen)
    return;
  reload_.marker_seen = true;
  if (!reload_.snapshot) {
    reload_.recording = true;  // the reply is still to come
    return;
  }
  std::lock_guard lock(mu_);
  online_.swap(reload_.snapshot->online);
  live_elsewhere_.swap(reload_.snapshot->live);
  reload_ = {};
}

std::optional<RedisPresenceDirectory::Snapshot> RedisPresenceDirectory::parse_snapshot(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) return std::nullopt;
  const redisReply* users = r->element[0];
  const redisReply* others = r->element[1];
  if (users->type != REDIS_REPLY_ARRAY || others->type != REDIS_REPLY_ARRAY) return std::nullopt;
  Snapshot out;
  for (size_t i = 0; i < users->elements; ++i) out.online.emplace(users->element[i]->str, users->element[i]->len);
  for (size_t i = 0; i + 1 < others->elements; i += 2) {
    const redisReply* node = others->element[i];
    const redisReply* there = others->element[i + 1];
    if (node->type != REDIS_REPLY_STRING || there->type != REDIS_REPLY_ARRAY) continue;
    for (size_t j = 0; j < there->elements; ++j)
      out.live[std::string(there->element[j]->str, there->element[j]->len)].emplace_back(node->str, node->len);
  }
  return out;
}

}  // namespace parley
