#include "chat/delivery_cursor.h"

#include <algorithm>

namespace parley {

DeliveryCursor::State& DeliveryCursor::state(const std::string& thread_id) {
  if (last_ && *last_id_ == thread_id) return *last_;
  auto it = threads_.try_emplace(thread_id).first;
  last_id_ = &it->first;
  last_ = &it->second;
  return *last_;
}

bool DeliveryCursor::live(const std::string& thread_id, int64_t seq, const FramePtr& frame) {
  State& s = state(thread_id);
  if (s.replays > 0) {
    s.held.emplace_back(seq, frame);
    return false;
  }
  if (s.hi != 0 && seq <= s.hi) return false;
  if (s.hi == 0) s.lo = seq;
  s.hi = seq;
  return true;
}

void DeliveryCursor::begin_replay(const std::string& thread_id, int64_t /*since_seq*/) {
  ++state(thread_id).replays;
}

bool DeliveryCursor::replayed(const std::string& thread_id, int64_t seq) {
  State& s = state(thread_id);
  if (s.hi != 0 && seq >= s.lo && seq <= s.hi) return false;
  return true;
}

std::vector<FramePtr> DeliveryCursor::end_replay(const std::string& thread_id, int64_t since_seq,
                                                 int64_t replayed_up_to) {
  State& s = state(thread_id);
  // This replay sent everything in [since_seq + 1, replayed_up_to] that was
  // not sent before; merge that with the sent range. They touch or overlap,
  // because the replay read after every live message already sent.
  // since_seq is bounded by the codec (kMaxSeq); the guard keeps +1 defined regardless.
  int64_t from = since_seq < INT64_MAX ? since_seq + 1 : INT64_MAX;
  if (replayed_up_to >= from && since_seq < INT64_MAX) {
    if (s.hi == 0 || from < s.lo) s.lo = from;
    s.hi = std::max(s.hi, replayed_up_to);
  }
  std::vector<FramePtr> out;
  if (--s.replays > 0) return out;
  std::sort(s.held.begin(), s.held.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [seq, frame] : s.held) {
    if (s.hi != 0 && seq <= s.hi) continue;
    if (s.hi == 0) s.lo = seq;
    s.hi = seq;
    out.push_back(std::move(frame));
  }
  s.held.clear();
  return out;
}

int64_t DeliveryCursor::last_sent(const std::string& thread_id) const {
  auto it = threads_.find(thread_id);
  return it == threads_.end() ? 0 : it->second.hi;
}

}  // namespace parley
