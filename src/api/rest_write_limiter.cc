#include "api/rest_write_limiter.h"

#include <algorithm>

namespace parley {

bool RestWriteLimiter::admit(const std::string& user_id, int64_t now_us) {
  std::lock_guard lock(mu_);
  if (buckets_.size() >= sweep_at_) forget_full(now_us);
  auto [it, fresh] = buckets_.try_emplace(user_id, Bucket{burst_, now_us});
  Bucket& b = it->second;
  if (!fresh) b.tokens = std::min(burst_, b.tokens + static_cast<double>(now_us - b.at_us) * per_second_ / 1e6);
  b.at_us = now_us;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

// A bucket that has refilled is the same as none: dropped, so the map holds
// only the users who wrote lately, and a sweep runs once per doubling.
void RestWriteLimiter::forget_full(int64_t now_us) {
  std::erase_if(buckets_, [&](const auto& entry) {
    const Bucket& b = entry.second;
    return b.tokens + static_cast<double>(now_us - b.at_us) * per_second_ / 1e6 >= burst_;
  });
  sweep_at_ = std::max<size_t>(1024, 2 * buckets_.size());
}

size_t RestWriteLimiter::users_tracked() {
  std::lock_guard lock(mu_);
  return buckets_.size();
}

}  // namespace parley
