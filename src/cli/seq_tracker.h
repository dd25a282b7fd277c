// Per-thread positions for `listen`: which messages were printed and which
// are held back because an earlier one is still missing, so that every
// (thread_id, seq) is printed once and in seq order, even when a live frame
// overtakes the replay that fills a gap. No I/O; the listener drives it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "cli/config.h"
#include "cli/json_util.h"

namespace parley::cli {

class SeqTracker {
 public:
  enum class Offer {
    kNext,       // the one after the last printed: print it now
    kDuplicate,  // already printed: drop it
    kHeld,       // a gap before it: kept until the gap is filled
  };

  // Seeds a thread's position (the last seq already seen).
  void set(const std::string& thread, std::int64_t seq) { last_[thread] = seq; }
  bool known(const std::string& thread) const { return last_.contains(thread); }
  // 0 for a thread never seen: all of its messages are new.
  std::int64_t last(const std::string& thread) const;

  // Classifies a message; on kHeld, takes `frame` (moved from).
  Offer offer(const std::string& thread, std::int64_t seq, json::object& frame);
  void printed(const std::string& thread, std::int64_t seq);
  // The held message that now comes next, if any. With `force` (the replay
  // ended, nothing more will fill the gap), the oldest held one regardless.
  std::optional<json::object> take_next(const std::string& thread, bool force);

  // Drops a thread's position and anything held: the user is no longer in it.
  void forget(const std::string& thread) {
    last_.erase(thread);
    held_.erase(thread);
  }

  const Positions& positions() const { return last_; }

 private:
  Positions last_;
  std::map<std::string, std::map<std::int64_t, json::object>> held_;
};

}  // namespace parley::cli
