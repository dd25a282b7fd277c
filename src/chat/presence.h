// Presence: who has open connections in this process, and the online/offline
// announcements, with a grace period
// after a user's last connection closes so that a page reload does not flap.
// Whether other nodes have the user too comes from a PresenceDirectory: a
// user comes online when the first node has a connection and goes offline
// when the last one has none (or died). The per-user connection limit is
// the ConnectionLimiter's (chat/connection_limiter.h).
// Thread-safe. The hooks and the directory are set once at start, before the
// first connect(). The announce hook and the directory's node_online and
// node_offline are called in the order of the changes they carry, under a
// lock that only orders them (so they may call online()): they must not
// block, nor call connect() or disconnect().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "chat/presence_directory.h"
#include "model/model.h"

namespace parley {

// One user's change of presence, as it is announced to their contacts. `at`
// is when it happened: the first connection's open, or the last one's close
// (not the end of the grace period, which only decides whether to announce).
struct PresenceChange {
  std::string user_id;
  bool online = false;
  Micros at = 0;
};

class Presence {
 public:
  using Scheduler = std::function<void(std::chrono::milliseconds, std::function<void()>)>;
  using Announce = std::function<void(PresenceChange change)>;

  explicit Presence(std::chrono::milliseconds grace);
  void set_hooks(Scheduler schedule, Announce announce);
  // Several nodes: the directory they share (not owned). None: this process only.
  void set_directory(PresenceDirectory* directory);

  // A connection of user_id opened (the limiter admitted it).
  void connect(const std::string& user_id);
  void disconnect(const std::string& user_id);
  // True while the user is online as their contacts were told: from the first
  // connection until the offline announced when the grace period ends, here or
  // on another node. What the API reports, so a list loaded during a reload's
  // grace does not show offline a user who comes back without an announcement.
  bool online(const std::string& user_id) const;
  // True while the user has an open connection here or, as the directory
  // last heard, on another node: what push and calls ask (a user in the
  // grace period has nothing live and is not connected).
  bool connected(const std::string& user_id) const;
  // Users with a connection to this process.
  size_t users_online() const;

 private:
  struct Entry {
    int connections = 0;
    bool announced_online = false;
    uint64_t generation = 0;  // bumps on every change; a stale grace timer sees it moved
  };
  void grace_over(const std::string& user_id, uint64_t generation, Micros closed_at);
  bool online_here(const std::string& user_id) const;
  bool connected_here(const std::string& user_id) const;

  // Held from a change's decision to its hook call, so that one user's
  // online and offline reach the directory (and the announcements) in the
  // order they were decided: a reconnect on another loop at the moment a
  // grace period ends must not overtake its offline.
  std::mutex order_mu_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> users_;
  size_t online_count_ = 0;
  std::chrono::milliseconds grace_;
  Scheduler schedule_;
  Announce announce_;
  PresenceDirectory* directory_ = nullptr;
};

}  // namespace parley
