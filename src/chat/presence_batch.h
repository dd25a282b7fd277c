// PresenceBatch: gathers presence changes for a short while, then hands them
// over as one batch, so that a burst of connects is announced by one task (one
// worker wake-up, one read of the store) instead of one per user. Changes
// keep their order within a batch, and batches are handed over in order
// when `schedule` runs its callbacks in order on one thread (an event
// loop's timers), so announcing batches in order keeps each user's order.
// Thread-safe: add() may be called from any thread; `flush` is called on
// the thread that runs the scheduled callback, without locks held.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "chat/presence.h"

namespace parley {

class PresenceBatch : public std::enable_shared_from_this<PresenceBatch> {
 public:
  using Flush = std::function<void(std::vector<PresenceChange>)>;

  // `schedule` must call its function once, after the delay (it may hold
  // this object: the batch lives as long as a scheduled flush does).
  static std::shared_ptr<PresenceBatch> create(std::chrono::milliseconds gather, Presence::Scheduler schedule,
                                               Flush flush);

  // Queues a change; the first change of a batch schedules its flush.
  void add(PresenceChange change);
  // No change waits to be handed over (a drain waits for it: a stopped
  // loop would never run the flush).
  bool idle();

 private:
  PresenceBatch(std::chrono::milliseconds gather, Presence::Scheduler schedule, Flush flush);
  void flush_now();

  const std::chrono::milliseconds gather_;
  const Presence::Scheduler schedule_;
  const Flush flush_;
  std::mutex mu_;
  std::vector<PresenceChange> pending_;
};

}  // namespace parley
