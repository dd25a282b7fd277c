#include "chat/member_cache.h"

#include <algorithm>
#include <mutex>

namespace parley {

std::shared_ptr<const ThreadMembers> MemberCache::cached(const std::string& thread_id) const {
  if (!bus_.healthy()) return nullptr;
  std::shared_lock lock(mu_);
  auto it = members_.find(thread_id);
  return it == members_.end() ? nullptr : it->second;
}

Result<std::shared_ptr<const ThreadMembers>> MemberCache::get(const std::string& thread_id) {
  const bool trusted = bus_.healthy();
  uint64_t seen = 0;
  if (trusted) {
    std::shared_lock lock(mu_);
    if (auto it = members_.find(thread_id); it != members_.end()) return it->second;
    seen = version_;
  }
  auto loaded = store_.thread_members(thread_id);
  if (!loaded) return loaded.error();
  if (!*loaded) return std::shared_ptr<const ThreadMembers>();
  auto ptr = std::make_shared<const ThreadMembers>(std::move(**loaded));
  if (trusted) {
    std::unique_lock lock(mu_);
    if (version_ == seen) members_[thread_id] = ptr;
  }
  return ptr;
}

void MemberCache::forget(const std::string& thread_id) {
  std::unique_lock lock(mu_);
  members_.erase(thread_id);
  ++version_;
}

void MemberCache::forget_all() {
  std::unique_lock lock(mu_);
  members_.clear();
  ++version_;
}

bool MemberCache::contains(const ThreadMembers& m, const std::string& user_id) {
  return std::find(m.user_ids.begin(), m.user_ids.end(), user_id) != m.user_ids.end();
}

}  // namespace parley
