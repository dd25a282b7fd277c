#include "chat/newest_change.h"

namespace parley {

bool NewestChange::admit(const std::string& message_id, int64_t n) {
  std::lock_guard lock(mu_);
  auto it = newest_.find(message_id);
  if (it != newest_.end()) {
    if (n <= it->second) return false;
    it->second = n;
    return true;
  }
  if (newest_.size() >= kMaxMessages) newest_.clear();
  newest_.emplace(message_id, n);
  return true;
}

}  // namespace parley
