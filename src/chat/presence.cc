#include "chat/presence.h"

#include "common/clock.h"

namespace parley {

Presence::Presence(std::chrono::milliseconds grace) : grace_(grace) {}

void Presence::set_hooks(Scheduler schedule, Announce announce) {
  schedule_ = std::move(schedule);
  announce_ = std::move(announce);
}

void Presence::set_directory(PresenceDirectory* directory) {
  directory_ = directory;
  // A node died with this user's last connection: unless the user is back
  // here meanwhile, they are offline, last seen when that node was last heard
  // of (not later than now: the directory's clock is not this one).
  directory_->set_gone_hook([this](const std::string& user_id, int64_t last_heard) {
    std::lock_guard order(order_mu_);
    const Micros now = now_micros();
    const Micros at = last_heard > 0 && last_heard < now ? last_heard : now;
    if (!connected_here(user_id) && announce_) announce_({user_id, false, at});
  });
  // This node was cut off long enough for the others to announce its users
  // offline: those still connected here are online again.
  directory_->set_back_hook([this](const std::string& user_id, bool elsewhere) {
    std::lock_guard order(order_mu_);
    if ((elsewhere || connected_here(user_id)) && announce_) announce_({user_id, true, now_micros()});
  });
}

void Presence::connect(const std::string& user_id) {
  const Micros opened_at = now_micros();
  bool announce = false, back_in_grace = false;
  std::lock_guard order(order_mu_);
  {
    std::lock_guard lock(mu_);
    Entry& e = users_[user_id];
    const bool first_here = e.connections++ == 0;
    if (first_here) ++online_count_;
    ++e.generation;
    if (!e.announced_online) announce = e.announced_online = true;
    else back_in_grace = first_here;
  }
  if (back_in_grace && directory_) directory_->node_live(user_id, true);
  if (!announce) return;
  if (!directory_) {
    if (announce_) announce_({user_id, true, opened_at});
    return;
  }
  directory_->node_online(user_id, [this, user_id, opened_at](bool first) {
    if (first && announce_) announce_({user_id, true, opened_at});
  });
}

void Presence::disconnect(const std::string& user_id) {
  const Micros closed_at = now_micros();
  uint64_t generation;
  {
    // With a directory, under the order lock: it hears a last connection's
    // close (node_live) in order with a reconnect's.
    std::unique_lock order(order_mu_, std::defer_lock);
    if (directory_) order.lock();
    {
      std::lock_guard lock(mu_);
      auto it = users_.find(user_id);
      if (it == users_.end() || it->second.connections == 0) return;
      if (--it->second.connections > 0) return;
      --online_count_;
      generation = ++it->second.generation;
    }
    if (directory_) directory_->node_live(user_id, false);
  }
  if (schedule_) {
    schedule_(grace_, [this, user_id, generation, closed_at] { grace_over(user_id, generation, closed_at); });
  } else {
    grace_over(user_id, generation, closed_at);
  }
}

void Presence::grace_over(const std::string& user_id, uint64_t generation, Micros closed_at) {
  std::lock_guard order(order_mu_);
  {
    std::lock_guard lock(mu_);
    auto it = users_.find(user_id);
    // Reconnected meanwhile (the generation moved): still online, say nothing.
    if (it == users_.end() || it->second.generation != generation || it->second.connections > 0) return;
    users_.erase(it);
  }
  if (!directory_) {
    if (announce_) announce_({user_id, false, closed_at});
    return;
  }
  directory_->node_offline(user_id, [this, user_id, closed_at](bool last) {
    if (last && announce_) announce_({user_id, false, closed_at});
  });
}

bool Presence::online(const std::string& user_id) const {
  return online_here(user_id) || (directory_ && directory_->known_online(user_id));
}

bool Presence::connected(const std::string& user_id) const {
  return connected_here(user_id) || (directory_ && directory_->known_connected_elsewhere(user_id));
}

// An entry lives from the first connection until its grace period ends.
bool Presence::online_here(const std::string& user_id) const {
  std::lock_guard lock(mu_);
  return users_.count(user_id) > 0;
}

bool Presence::connected_here(const std::string& user_id) const {
  std::lock_guard lock(mu_);
  auto it = users_.find(user_id);
  return it != users_.end() && it->second.connections > 0;
}

size_t Presence::users_online() const {
  std::lock_guard lock(mu_);
  return online_count_;
}

}  // namespace parley
