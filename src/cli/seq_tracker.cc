#include "cli/seq_tracker.h"

#include <algorithm>

namespace parley::cli {

std::int64_t SeqTracker::last(const std::string& thread) const {
  auto it = last_.find(thread);
  return it == last_.end() ? 0 : it->second;
}

SeqTracker::Offer SeqTracker::offer(const std::string& thread, std::int64_t seq, json::object& frame) {
  std::int64_t done = last(thread);
  if (seq <= done) return Offer::kDuplicate;
  if (seq == done + 1) return Offer::kNext;
  held_[thread].try_emplace(seq, std::move(frame));
  return Offer::kHeld;
}

void SeqTracker::printed(const std::string& thread, std::int64_t seq) {
  std::int64_t& done = last_[thread];
  done = std::max(done, seq);
}

std::optional<json::object> SeqTracker::take_next(const std::string& thread, bool force) {
  auto it = held_.find(thread);
  if (it == held_.end()) return std::nullopt;
  auto& queue = it->second;
  std::int64_t done = last(thread);
  while (!queue.empty() && queue.begin()->first <= done) queue.erase(queue.begin());
  if (queue.empty()) {
    held_.erase(it);
    return std::nullopt;
  }
  if (!force && queue.begin()->first != done + 1) return std::nullopt;
  json::object next = std::move(queue.begin()->second);
  queue.erase(queue.begin());
  return next;
}

}  // namespace parley::cli
