#include "chat/delivery_cursor.h"

#include <algorithm>
#include <utility>

namespace parley {

DeliveryCursor::State& DeliveryCursor::state(const std::string& thread_id) {
  if (last_ && *last_id_ == thread_id) return *last_;
  auto it = threads_.try_emplace(thread_id).first;
  last_id_ = &it->first;
  last_ = &it->second;
  return *last_;
}

DeliveryCursor::Decision DeliveryCursor::live(const std::string& thread_id, int64_t seq, const FramePtr& frame) {
  State& s = state(thread_id);
  if (s.left) {
    const bool sent = sent_before(s, seq);  // records it (the connection's own message too)
    return {frame != nullptr && !sent, -1};
  }
  if (s.replays > 0) {
    if (frame || !holds_own(s, seq)) s.held.emplace_back(seq, frame);  // its answer may have come first
    return {};
  }
  if (s.hi != 0 && seq <= s.hi) return {};
  if (s.hi != 0 && seq > s.hi + 1) {
    // The bus lost or reordered events: what lies between comes from the store.
    s.held.emplace_back(seq, frame);
    ++s.replays;
    return {false, s.hi};
  }
  if (s.hi == 0 && first_window_ > 0 && seq > 1) {
    const int64_t window = unseen_reads_ > 0 ? std::max(first_window_, unseen_window_) : first_window_;
    s.held.emplace_back(seq, frame);
    ++s.replays;
    return {false, std::max<int64_t>(0, seq - 1 - window), true};
  }
  if (s.hi == 0) s.lo = seq;
  s.hi = seq;
  return {frame != nullptr, -1};
}

bool DeliveryCursor::holds_own(const State& s, int64_t seq) {
  for (const auto& [held_seq, frame] : s.held)
    if (held_seq == seq && !frame) return true;
  return false;
}

bool DeliveryCursor::hold_answer(const std::string& thread_id, int64_t seq, std::vector<FramePtr>& frames) {
  auto it = threads_.find(thread_id);
  if (it == threads_.end() || it->second.replays == 0) return false;
  State& s = it->second;
  if (s.hi != 0 && seq <= s.hi) return false;  // everything before it went out already
  if (!holds_own(s, seq)) s.held.emplace_back(seq, nullptr);
  s.answers.emplace_back(seq, std::move(frames));
  return true;
}

std::vector<FramePtr> DeliveryCursor::take_answer(const std::string& thread_id, int64_t seq) {
  std::vector<FramePtr> out;
  auto it = threads_.find(thread_id);
  if (it != threads_.end()) release_answer(it->second, seq, out);
  return out;
}

void DeliveryCursor::release_answer(State& s, int64_t seq, std::vector<FramePtr>& out) {
  for (auto it = s.answers.begin(); it != s.answers.end(); ++it) {
    if (it->first != seq) continue;
    for (auto& f : it->second) out.push_back(std::move(f));
    s.answers.erase(it);
    return;
  }
}

void DeliveryCursor::begin_replay(const std::string& thread_id, int64_t /*since_seq*/) {
  State& s = state(thread_id);
  ++s.replays;
  ++s.subscribes;
  s.left = false;  // the client subscribes again: a member again, or refused and forgotten
}

void DeliveryCursor::begin_catch_up(const std::string& thread_id) {
  State& s = state(thread_id);
  ++s.replays;
  s.left = false;
}

void DeliveryCursor::gave_way(const std::string& thread_id, int64_t at, int64_t created_floor) {
  State& s = state(thread_id);
  s.gave_way_at = at;
  s.gave_way_floor = created_floor;
}

DeliveryCursor::Resume DeliveryCursor::resume_fill(const std::string& thread_id) {
  auto it = threads_.find(thread_id);
  if (it == threads_.end() || it->second.gave_way_at < 0) return {};
  State& s = it->second;
  Resume out{std::exchange(s.gave_way_at, -1), s.gave_way_floor};
  ++s.replays;
  return out;
}

void DeliveryCursor::drop_gave_way(const std::string& thread_id) {
  if (auto it = threads_.find(thread_id); it != threads_.end()) it->second.gave_way_at = -1;
}

uint32_t DeliveryCursor::subscribes(const std::string& thread_id) const {
  auto it = threads_.find(thread_id);
  return it == threads_.end() ? 0 : it->second.subscribes;
}

bool DeliveryCursor::replayed(const std::string& thread_id, int64_t seq) {
  State& s = state(thread_id);
  if (s.hi != 0 && seq >= s.lo && seq <= s.hi) return false;
  // The connection's own message, held while the store is read: it gets message_sent.
  if (holds_own(s, seq)) return false;
  return !sent_by_replay(s, seq);
}

// True when another replay running on the thread already sent seq; else
// records that this one sends it.
bool DeliveryCursor::sent_by_replay(State& s, int64_t seq) {
  if (!s.replay_sent) s.replay_sent = std::make_unique<std::vector<std::pair<int64_t, int64_t>>>();
  auto& ranges = *s.replay_sent;
  // The first range starting after seq; the one before it may hold seq.
  auto next = std::upper_bound(ranges.begin(), ranges.end(), seq,
                               [](int64_t v, const std::pair<int64_t, int64_t>& r) { return v < r.first; });
  if (next != ranges.begin() && std::prev(next)->second >= seq) return true;
  const bool joins_prev = next != ranges.begin() && std::prev(next)->second == seq - 1;
  const bool joins_next = next != ranges.end() && next->first == seq + 1;
  if (joins_prev && joins_next) {
    std::prev(next)->second = next->second;
    ranges.erase(next);
  } else if (joins_prev) {
    std::prev(next)->second = seq;
  } else if (joins_next) {
    next->first = seq;
  } else {
    ranges.insert(next, {seq, seq});
  }
  return false;
}

// True when seq went out before ([lo, hi] or the ranges); else records it.
bool DeliveryCursor::sent_before(State& s, int64_t seq) {
  if (s.hi != 0 && seq >= s.lo && seq <= s.hi) return true;
  return sent_by_replay(s, seq);
}

void DeliveryCursor::held_changes(std::vector<FramePtr>& out) const {
  for (const auto& [thread_id, s] : threads_) out.insert(out.end(), s.held_changes.begin(), s.held_changes.end());
}

bool DeliveryCursor::changed(const std::string& thread_id, FramePtr frame) {
  auto it = threads_.find(thread_id);  // no entry: nothing sent or running, nothing to wait for
  if (it == threads_.end() || it->second.replays == 0) return true;
  it->second.held_changes.push_back(std::move(frame));
  return false;
}

void DeliveryCursor::caught_up(const std::string& thread_id, int64_t seq) {
  if (seq <= 0) return;
  State& s = state(thread_id);
  if (seq <= s.hi) return;
  if (s.hi == 0) s.lo = seq;
  s.hi = seq;  // what lies between the old hi and seq, the client has by its own word
}

DeliveryCursor::ReplayEnd DeliveryCursor::end_replay(const std::string& thread_id, int64_t since_seq,
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
  ReplayEnd out;
  if (--s.replays > 0) return out;
  s.replay_sent.reset();  // every replay merged what it sent into [lo, hi]
  std::sort(s.held.begin(), s.held.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  size_t i = 0;
  for (; i < s.held.size(); ++i) {
    auto& [seq, frame] = s.held[i];
    if (s.hi != 0 && seq > s.hi + 1) break;  // still a gap: fill again from hi (answers past it wait too)
    if (!frame) release_answer(s, seq, out.frames);  // never dropped, even one the replay passed
    if (s.hi != 0 && seq <= s.hi) continue;
    if (s.hi == 0) s.lo = seq;
    s.hi = seq;
    if (frame) out.frames.push_back(std::move(frame));
  }
  const bool resync = std::exchange(s.resync_pending, false) && s.hi != 0;
  if (i < s.held.size() || resync) {
    s.held.erase(s.held.begin(), s.held.begin() + static_cast<std::ptrdiff_t>(i));
    ++s.replays;
    out.fill_from = s.hi;
  } else {
    s.held.clear();
    release_changes(s, out.frames);
    if (s.hi == 0) forget(thread_id);  // nothing sent: a refused or empty replay leaves no entry behind
  }
  return out;
}

std::vector<FramePtr> DeliveryCursor::skip_gap(const std::string& thread_id) {
  State& s = state(thread_id);
  std::vector<FramePtr> out;
  if (s.replays > 0) --s.replays;
  if (s.replays > 0) return out;
  s.replay_sent.reset();
  std::sort(s.held.begin(), s.held.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [seq, frame] : s.held) {
    if (!frame) release_answer(s, seq, out);
    if (s.hi != 0 && seq <= s.hi) continue;
    if (s.hi == 0) s.lo = seq;
    s.hi = seq;
    if (frame) out.push_back(std::move(frame));
  }
  s.held.clear();
  release_changes(s, out);
  return out;
}

DeliveryCursor::Abandoned DeliveryCursor::abandon(const std::string& thread_id) {
  State& s = state(thread_id);
  Abandoned out;
  if (s.replays > 0) --s.replays;
  if (s.replays > 0) return out;
  s.left = true;
  s.left_epoch = out.epoch = ++epochs_ == 0 ? ++epochs_ : epochs_;
  // replay_sent is kept: what the fill's earlier pages sent is not sent again,
  // and from here on it records what the pass-through sends.
  std::sort(s.held.begin(), s.held.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<FramePtr> answer;
  for (auto& [seq, frame] : s.held) {
    if (!frame) {
      release_answer(s, seq, answer);
      for (auto& f : answer) out.frames.emplace_back(std::move(f), true);
      answer.clear();
      sent_before(s, seq);
    } else if (!sent_before(s, seq)) {
      out.frames.emplace_back(std::move(frame), false);
    }
  }
  s.held.clear();
  std::sort(s.answers.begin(), s.answers.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [seq, frames] : s.answers)
    for (auto& f : frames) out.frames.emplace_back(std::move(f), true);
  s.answers.clear();
  for (auto& frame : s.held_changes) out.frames.emplace_back(std::move(frame), false);
  s.held_changes.clear();
  s.left_upto = newest_sent(s);
  return out;
}

int64_t DeliveryCursor::newest_sent(const State& s) {
  int64_t newest = s.hi;
  if (s.replay_sent && !s.replay_sent->empty()) newest = std::max(newest, s.replay_sent->back().second);
  return newest;
}

int64_t DeliveryCursor::forget_left(const std::string& thread_id, uint32_t epoch) {
  auto it = threads_.find(thread_id);
  if (it == threads_.end() || !it->second.left || it->second.left_epoch != epoch || it->second.replays != 0) return -1;
  State& s = it->second;
  if (newest_sent(s) <= s.left_upto) {
    forget(thread_id);
    return -1;
  }
  // A member again. The fill reads from where the pass-through began: what
  // was said while they were out is below their joined_at (the fill's
  // floor), what the pass-through sent is in replay_sent (skipped), and the
  // rest (an event the bus lost meanwhile) is sent.
  s.left = false;
  ++s.replays;
  return s.left_upto;
}

void DeliveryCursor::forget(const std::string& thread_id) {
  if (last_id_ && *last_id_ == thread_id) last_id_ = nullptr, last_ = nullptr;
  threads_.erase(thread_id);
}

void DeliveryCursor::release_changes(State& s, std::vector<FramePtr>& out) {
  for (auto& frame : s.held_changes) out.push_back(std::move(frame));
  s.held_changes.clear();
}

std::vector<std::pair<std::string, int64_t>> DeliveryCursor::begin_resync() {
  std::vector<std::pair<std::string, int64_t>> out;
  for (auto& [thread_id, s] : threads_) {
    if (s.hi == 0 || s.left) continue;  // a passed-through thread is not the user's to read
    if (s.replays > 0) {
      s.resync_pending = true;  // it may have read its last page before the loss
      continue;
    }
    ++s.replays;
    out.emplace_back(thread_id, s.hi);
  }
  return out;
}

void DeliveryCursor::begin_unseen_read(int64_t window) {
  ++unseen_reads_;
  unseen_window_ = window;
}

void DeliveryCursor::end_unseen_read() {
  if (unseen_reads_ > 0) --unseen_reads_;
}

bool DeliveryCursor::begin_unseen_fill(const std::string& thread_id) {
  if (threads_.contains(thread_id)) return false;
  ++state(thread_id).replays;
  return true;
}

int64_t DeliveryCursor::last_sent(const std::string& thread_id) const {
  auto it = threads_.find(thread_id);
  return it == threads_.end() ? 0 : it->second.hi;
}

bool DeliveryCursor::was_sent(const std::string& thread_id, int64_t seq) const {
  auto it = threads_.find(thread_id);
  if (it == threads_.end() || seq < 1) return false;
  const State& s = it->second;
  if (s.hi != 0 && seq >= s.lo && seq <= s.hi) return true;
  if (!s.replay_sent) return false;
  const auto& ranges = *s.replay_sent;
  auto next = std::upper_bound(ranges.begin(), ranges.end(), seq,
                               [](int64_t v, const std::pair<int64_t, int64_t>& r) { return v < r.first; });
  return next != ranges.begin() && std::prev(next)->second >= seq;
}

}  // namespace parley
