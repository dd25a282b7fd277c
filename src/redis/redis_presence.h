// RedisPresenceDirectory: the PresenceDirectory (chat/presence_directory.h)
// of several nodes on one Redis.
//
// In Redis: parley:conns:<user> is a hash of the nodes that have the user
// (a user is online while it is not empty), parley:node-users:<node> the
// users of each node, parley:node-live:<node> those of them with an open
// connection there (not in their grace period), parley:online every online
// user, and parley:node:<node>
// a heartbeat key each live node sets every second with a 3 s expiry
// (parley:nodes lists them). Each node checks every second for nodes whose
// heartbeat expired and removes them in one Lua script, so exactly one node
// learns which users went offline and announces it: within 5 s of a kill -9,
// last seen when the dead node's heartbeat last came (parley:node-seen).
// The scripts publish each change on parley:presence (the format is in
// redis_presence.cc) so each node keeps a local copy of who is online, and on
// which other nodes with an open connection, for cheap lookups. The scripts
// name keys they compute (not cluster-safe: one Redis).
//
// Threading: as PresenceDirectory; both connections live on the reactor's
// loop. While Redis is unreachable, first/last answers are "yes" (each node
// announces on its own, as a single node would) and the copy stays as it was.
// Each heartbeat tells whether the node's key had expired (Redis restarted
// empty, or this node was cut off past the 3 s, so another node may have
// reaped it and announced its users offline): then this node registers its
// users again, and those no node had meanwhile come back through the back
// hook (Presence announces them online again). Every reconnect also makes
// Redis hold exactly this node's users (an online or offline sent while the
// link was down may be lost even when the key did not expire); a user this
// node announced offline on its own meanwhile, whom another node still has,
// is announced online again (the back hook, `elsewhere`). A change whose
// script Redis did not answer was announced by this node alone, and the bus
// may have lost that announcement: it is announced again. Announcements made
// again wait 3 s, for the other nodes' subscriptions to be back. Redis restarted
// empty also forgot the nodes that died meanwhile: the first node back
// (parley:epoch) announces their users offline (the gone hook) once the live
// nodes have had 5 s to register theirs. The copy is
// reloaded every second for 5 s after a reconnect, while the other nodes
// register theirs.
#pragma once

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/reactor.h"
#include "redis/redis_link.h"
#include "chat/presence_directory.h"

namespace parley {

class RedisPresenceDirectory final : public PresenceDirectory {
 public:
  RedisPresenceDirectory(Reactor& reactor, RedisEndpoint endpoint, std::string node_id);
  ~RedisPresenceDirectory() override;  // stops on the loop and waits; not from the loop

  void node_online(const std::string& user_id, std::function<void(bool first)> done) override;
  void node_offline(const std::string& user_id, std::function<void(bool last)> done) override;
  void node_live(const std::string& user_id, bool live) override;
  bool known_online(const std::string& user_id) const override;
  bool known_connected_elsewhere(const std::string& user_id) const override;
  void set_gone_hook(std::function<void(const std::string& user_id, int64_t last_heard)> hook) override;
  void set_back_hook(std::function<void(const std::string& user_id, bool elsewhere)> hook) override;
  // Set once before start(): runs on the loop after this node registered its
  // users again (its other per-node state in Redis, such as connection
  // counts, may be gone too).
  void set_registered_again_hook(std::function<void()> hook) { registered_again_hook_ = std::move(hook); }
  // Set once before start(): runs on the loop when another node was removed
  // for a heartbeat that expired (it died, or was cut off from Redis past
  // 3 s): what it had not published yet may be gone with it.
  void set_node_gone_hook(std::function<void(const std::string& node)> hook) { node_gone_hook_ = std::move(hook); }

  // Whether this node removes dead nodes (on by default). A node that cannot
  // announce yet, or any more (its event loops are not running: a start
  // that then fails, a stop), leaves it to the others: the users a reap
  // returns are taken off parley:reaped as soon as the gone hook has them.
  // Any thread.
  void set_reaping(bool on) { reaping_.store(on, std::memory_order_relaxed); }
  // Connects and starts the heartbeat. Any thread but the loop's.
  void start();
  // Stops the heartbeat and disconnects (the node's key then expires).
  // published_all: the node's bus has nothing left to publish, so its
  // removal makes no other node resync (set_node_gone_hook).
  void close(bool published_all = false);
  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }
  const std::string& node_id() const { return node_id_; }
  const RedisEndpoint& endpoint() const { return endpoint_; }

 private:
  void announce_again(const std::string& user_id, std::function<void()> announce);
  void heard(const std::weak_ptr<bool>& alive, const std::string& user_id, const struct redisReply* r);
  void on_commands_up();
  void on_subscription_up();
  bool run(const std::string& script, const std::string& user_id, bool live, RedisLink::ReplyFn done = {});
  struct Snapshot {
    std::unordered_set<std::string> online;
    std::unordered_map<std::string, std::vector<std::string>> live;
  };
  static std::optional<Snapshot> parse_snapshot(const struct redisReply* reply);
  void on_message(const struct redisReply* reply);
  void on_reload_marker(std::string_view rest);
  void apply(std::string_view announcement);
  void set_live_elsewhere(const std::string& user, std::string_view node, bool live);
  void tick();
  void heartbeat();
  void register_again();
  void reconcile();
  void reload();
  void claim_lost_users(std::unordered_set<std::string> before);

  Reactor& reactor_;
  std::string node_id_;
  RedisEndpoint endpoint_;
  RedisLink commands_, subscription_;
  std::function<void(const std::string&, int64_t)> gone_hook_;
  std::function<void(const std::string&, bool)> back_hook_;
  std::function<void()> registered_again_hook_;
  std::function<void(const std::string&)> node_gone_hook_;
  std::unordered_set<std::string> left_cleanly_;  // 'C' came, its 'X' not yet (loop thread)
  std::atomic<bool> healthy_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> reaping_{true};

  mutable std::mutex mu_;
  std::unordered_set<std::string> online_;  // every node's users, as last heard
  // The other nodes where a user has an open connection, as last heard.
  std::unordered_map<std::string, std::vector<std::string>> live_elsewhere_;

  // Loop thread only: this node's users (true: with an open connection; false:
  // in the grace period), registered again after a reconnect.
  std::unordered_map<std::string, bool> mine_;
  // Loop thread only: users whose last online or offline here Redis did not
  // answer, announced by this node alone; announced again when it is back.
  std::unordered_set<std::string> unheard_;
  uint64_t ticks_ = 0;
  // The reload in flight (only the latest counts), see reload().
  struct Reload {
    uint64_t token = 0;
    bool marker_seen = false;
    bool recording = false;                  // marker seen, reply not yet
    std::optional<Snapshot> snapshot;        // reply before its marker
    std::vector<std::string> since_marker;  // announcements after the marker
  };
  Reload reload_;
  uint64_t reload_tokens_ = 0;
  int reloads_left_ = 0;  // reloads due on the next ticks, after a reconnect
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace parley
