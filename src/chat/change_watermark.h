// ChangeWatermark: which edits and deletions this node has received on the
// bus, by the number the store gives each (Store::last_change: in commit
// order across every node, without gaps), so that when the bus may have lost
// some (a resync) the node's connections know from which number to read them
// from the store. Across nodes the bus may reorder events: numbers received
// above a missing one wait for it, and the watermark stays below it until it
// comes or a resync covers it. A number that never comes (its node died
// between COMMIT and PUBLISH) only makes the next resync re-read more.
// Thread-safe: events come from the bus thread and from publishing threads.
#pragma once

#include <cstdint>
#include <mutex>
#include <set>

namespace parley {

class ChangeWatermark {
 public:
  // `last`: the store's last change number when this node began listening.
  explicit ChangeWatermark(int64_t last = 0) : through_(last) {}
  // Starts again from `last` (forgets what was received).
  void reset(int64_t last);
  // The event of change number `n` reached this node.
  void received(int64_t n);
  // Every change numbered up to this has been received.
  int64_t through() const;
  // The bus may have lost events: returns through(), above which the
  // connections now re-read the changes of their threads from the store.
  // What was received meanwhile counts as received from then on: the reads
  // come after the resync, so they cover every number missing below it.
  int64_t resync();

 private:
  // Bounds the numbers kept above a hole. Past it they are not kept: the
  // watermark then stops at the first one not kept (more to re-read on the
  // next resync, never less).
  static constexpr size_t kMaxAhead = 65536;

  mutable std::mutex mu_;
  int64_t through_;
  std::set<int64_t> ahead_;  // received, above through_ + 1
};

}  // namespace parley
