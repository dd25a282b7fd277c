#include "chat/member_cache.h"

#include <time.h>

#include <algorithm>
#include <mutex>

#include <spdlog/spdlog.h>

namespace parley {

namespace {

// The entries one thread has used, as of one version of one cache.
struct LocalCopies {
  uint64_t cache_id = 0;
  uint64_t version = 0;
  std::unordered_map<std::string, std::pair<std::shared_ptr<const ThreadMembers>, int64_t>> members;
};
// Bounds each thread's copies (about 150 bytes each, on every loop and
// worker: 0.6 MB a thread at most); past it, they start over, and lookups of
// a thread that has used more lists than this in a while take the lock more.
constexpr size_t kMaxLocalCopies = 4096;

std::atomic<uint64_t> next_cache_id{1};

// Every lookup reads it: the coarse clock costs a few nanoseconds (no system
// call), and ages of seconds need no better than its few milliseconds.
int64_t coarse_now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

MemberCache::MemberCache(Store& store, const Bus& bus, std::chrono::milliseconds max_age, size_t sweep_from)
    : store_(store),
      bus_(bus),
      max_age_ms_(max_age.count()),
      sweep_from_(sweep_from),
      sweep_at_(sweep_from),
      id_(next_cache_id.fetch_add(1, std::memory_order_relaxed)) {}

std::shared_ptr<const ThreadMembers> MemberCache::cached(const std::string& thread_id) const {
  if (!bus_.healthy()) return nullptr;
  thread_local LocalCopies local;
  const uint64_t version = version_.load(std::memory_order_acquire);
  if (local.cache_id != id_ || local.version != version || local.members.size() >= kMaxLocalCopies) {
    local.members.clear();
    local.cache_id = id_;
    local.version = version;
  }
  const int64_t now = coarse_now_ms();
  if (auto it = local.members.find(thread_id); it != local.members.end()) {
    if (fresh(it->second.second, now)) return it->second.first;
    local.members.erase(it);
  }
  Entry hit;
  {
    std::shared_lock lock(mu_);
    auto it = members_.find(thread_id);
    if (it == members_.end() || !fresh(it->second.loaded_ms, now)) return nullptr;
    // A forget since the version was read: keep no copy of what it may have erased.
    if (version_.load(std::memory_order_relaxed) != version) return it->second.members;
    hit = it->second;
  }
  local.members.emplace(thread_id, std::make_pair(hit.members, hit.loaded_ms));
  return hit.members;
}

Result<std::shared_ptr<const ThreadMembers>> MemberCache::get(const std::string& thread_id) {
  if (auto hit = cached(thread_id)) return hit;
  const bool trusted = bus_.healthy();
  uint64_t seen = 0;
  if (trusted) {
    std::shared_lock lock(mu_);
    if (auto it = members_.find(thread_id); it != members_.end() && fresh(it->second.loaded_ms, coarse_now_ms()))
      return it->second.members;
    seen = version_.load(std::memory_order_relaxed);
  }
  const int64_t loaded_ms = coarse_now_ms();
  auto loaded = store_.thread_members(thread_id);
  if (!loaded) return loaded.error();
  if (!*loaded) return std::shared_ptr<const ThreadMembers>();
  auto ptr = std::make_shared<const ThreadMembers>(std::move(**loaded));
  if (trusted) {
    std::unique_lock lock(mu_);
    if (version_.load(std::memory_order_relaxed) == seen && !changing_.contains(thread_id)) {
      members_[thread_id] = Entry{ptr, loaded_ms};
      if (members_.size() >= sweep_at_) sweep(loaded_ms);
    }
  }
  return ptr;
}

// Only entries no lookup would use: no version bump, and the threads' own
// copies of them are past max_age as well (they keep the same load time).
void MemberCache::sweep(int64_t now_ms) {
  std::erase_if(members_, [&](const auto& kv) { return !fresh(kv.second.loaded_ms, now_ms); });
  sweep_at_ = std::max(sweep_from_, members_.size() * 2);
}

size_t MemberCache::size() const {
  std::shared_lock lock(mu_);
  return members_.size();
}

Result<std::shared_ptr<const ThreadMembers>> MemberCache::get_at_least(const std::string& thread_id,
                                                                       int64_t version) {
  auto hit = get(thread_id);
  if (!hit || !*hit || (*hit)->version >= version) return hit;
  forget(thread_id);
  auto again = get(thread_id);
  if (again) return again;
  // Older than the commit, but newer than anything the caller holds.
  spdlog::warn("event=members_reread_failed thread_id={} code={}", thread_id, again.error().code);
  return hit;
}

void MemberCache::forget(const std::string& thread_id) {
  std::unique_lock lock(mu_);
  members_.erase(thread_id);
  version_.fetch_add(1, std::memory_order_release);
}

void MemberCache::begin_change(const std::string& thread_id) {
  std::unique_lock lock(mu_);
  ++changing_[thread_id];
  members_.erase(thread_id);
  version_.fetch_add(1, std::memory_order_release);
}

void MemberCache::end_change(const std::string& thread_id) {
  std::unique_lock lock(mu_);
  if (auto it = changing_.find(thread_id); it != changing_.end() && --it->second <= 0) changing_.erase(it);
  members_.erase(thread_id);
  version_.fetch_add(1, std::memory_order_release);
}

void MemberCache::forget_all() {
  std::unique_lock lock(mu_);
  members_.clear();
  version_.fetch_add(1, std::memory_order_release);
}

bool MemberCache::contains(const ThreadMembers& m, const std::string& user_id) {
  return std::find(m.user_ids.begin(), m.user_ids.end(), user_id) != m.user_ids.end();
}

}  // namespace parley
