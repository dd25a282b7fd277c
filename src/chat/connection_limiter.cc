#include "chat/connection_limiter.h"

namespace parley {

void LocalConnectionLimiter::acquire(const std::string& user_id, std::function<void(bool)> done) {
  bool admitted;
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(user_id);
    int now = it == open_.end() ? 0 : it->second;
    admitted = now < max_per_user_;
    if (admitted) open_[user_id] = now + 1;
  }
  done(admitted);
}

void LocalConnectionLimiter::release(const std::string& user_id) {
  std::lock_guard lock(mu_);
  auto it = open_.find(user_id);
  if (it == open_.end()) return;
  if (--it->second <= 0) open_.erase(it);
}

}  // namespace parley
