#include "chat/presence.h"

namespace parley {

Presence::Presence(std::chrono::milliseconds grace) : grace_(grace) {}

void Presence::set_hooks(Scheduler schedule, Announce announce) {
  schedule_ = std::move(schedule);
  announce_ = std::move(announce);
}

void Presence::set_directory(PresenceDirectory* directory) {
  directory_ = directory;
  // A node died with this user's last connection: unless the user is back
  // here meanwhile, they are offline.
  directory_->set_gone_hook([this](const std::string& user_id) {
    if (!online_here(user_id) && announce_) announce_(user_id, false);
  });
  // This node was cut off long enough for the others to announce its users
  // offline: those still connected here are online again.
  directory_->set_back_hook([this](const std::string& user_id) {
    if (online_here(user_id) && announce_) announce_(user_id, true);
  });
}

void Presence::connect(const std::string& user_id) {
  bool announce = false;
  {
    std::lock_guard lock(mu_);
    Entry& e = users_[user_id];
    if (e.connections++ == 0) ++online_count_;
    ++e.generation;
    if (!e.announced_online) announce = e.announced_online = true;
  }
  if (!announce) return;
  if (!directory_) {
    if (announce_) announce_(user_id, true);
    return;
  }
  directory_->node_online(user_id, [this, user_id](bool first) {
    if (first && announce_) announce_(user_id, true);
  });
}

void Presence::disconnect(const std::string& user_id) {
  uint64_t generation;
  {
    std::lock_guard lock(mu_);
    auto it = users_.find(user_id);
    if (it == users_.end() || it->second.connections == 0) return;
    if (--it->second.connections > 0) return;
    --online_count_;
    generation = ++it->second.generation;
  }
  if (schedule_) {
    schedule_(grace_, [this, user_id, generation] { grace_over(user_id, generation); });
  } else {
    grace_over(user_id, generation);
  }
}

void Presence::grace_over(const std::string& user_id, uint64_t generation) {
  {
    std::lock_guard lock(mu_);
    auto it = users_.find(user_id);
    // Reconnected meanwhile (the generation moved): still online, say nothing.
    if (it == users_.end() || it->second.generation != generation || it->second.connections > 0) return;
    users_.erase(it);
  }
  if (!directory_) {
    if (announce_) announce_(user_id, false);
    return;
  }
  directory_->node_offline(user_id, [this, user_id](bool last) {
    if (last && announce_) announce_(user_id, false);
  });
}

bool Presence::online(const std::string& user_id) const {
  return online_here(user_id) || (directory_ && directory_->known_online(user_id));
}

bool Presence::online_here(const std::string& user_id) const {
  std::lock_guard lock(mu_);
  auto it = users_.find(user_id);
  return it != users_.end() && it->second.connections > 0;
}

size_t Presence::users_online() const {
  std::lock_guard lock(mu_);
  return online_count_;
}

}  // namespace parley
