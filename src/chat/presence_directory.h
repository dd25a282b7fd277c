// PresenceDirectory: whether a user has a connection on any node, for
// Presence (which counts this node's connections). With one node there is
// none (Presence answers alone); with several it lives in Redis
// (redis/redis_presence.h), which also notices a node that died and reports
// its users gone.
//
// Threading: every method may be called from any thread and never blocks;
// `done` callbacks and the gone hook run on the directory's own thread (or
// inline) and must only hand work on. Owned by the app, outlives Presence.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace parley {

class PresenceDirectory {
 public:
  virtual ~PresenceDirectory() = default;
  // This node's first connection of the user opened; done(true) when no node
  // had one before (the user came online: announce it).
  virtual void node_online(const std::string& user_id, std::function<void(bool first)> done) = 0;
  // This node's last connection of the user closed (after Presence's grace);
  // done(true) when no node has one now (announce offline).
  virtual void node_offline(const std::string& user_id, std::function<void(bool last)> done) = 0;
  // Between the two: this node's last connection of the user closed and its
  // grace period began (live=false), or one opened again within it
  // (live=true). node_online counts as live. No answer.
  virtual void node_live(const std::string& user_id, bool live) = 0;
  // Online on some node (this one included), as last heard here: a local
  // lookup, a moment behind the truth.
  virtual bool known_online(const std::string& user_id) const = 0;
  // Has an open connection on another node (not one in its grace period),
  // as last heard here: a local lookup, a moment behind the truth.
  virtual bool known_connected_elsewhere(const std::string& user_id) const = 0;
  // Set once at start: called for each user whose last node died, with when
  // that node was last heard of (its last heartbeat, in microseconds since
  // the epoch; 0 when not known), the user's last_seen.
  virtual void set_gone_hook(std::function<void(const std::string& user_id, int64_t last_heard)> hook) = 0;
  // Set once at start: called for each of this node's users that the shared
  // directory had lost (this node was cut off from it past its heartbeat, so
  // another node announced the user offline, or it restarted empty) once this
  // node has registered the user again: announce online again. Also, with
  // `elsewhere`, for a user this node announced offline while cut off (its
  // last connection here closed) whom another node still has: that offline
  // was wrong, announce online again.
  virtual void set_back_hook(std::function<void(const std::string& user_id, bool elsewhere)> hook) = 0;
};

}  // namespace parley
