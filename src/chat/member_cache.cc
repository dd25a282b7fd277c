#include "chat/member_cache.h"

#include <algorithm>
#include <mutex>

namespace parley {

std::shared_ptr<const ThreadMembers> MemberCache::cached(const std::string& thread_id) const {
  std::shared_lock lock(mu_);
  auto it = members_.find(thread_id);
  return it == members_.end() ? nullptr : it->second;
}

Result<std::shared_ptr<const ThreadMembers>> MemberCache::get(const std::string& thread_id) {
  if (auto hit = cached(thread_id)) return hit;
  auto loaded = store_.thread_members(thread_id);
  if (!loaded) return loaded.error();
  if (!*loaded) return std::shared_ptr<const ThreadMembers>();
  auto ptr = std::make_shared<const ThreadMembers>(std::move(**loaded));
  std::unique_lock lock(mu_);
  members_[thread_id] = ptr;
  return ptr;
}

void MemberCache::forget(const std::string& thread_id) {
  std::unique_lock lock(mu_);
  members_.erase(thread_id);
}

bool MemberCache::contains(const ThreadMembers& m, const std::string& user_id) {
  return std::find(m.user_ids.begin(), m.user_ids.end(), user_id) != m.user_ids.end();
}

}  // namespace parley
