// TypingLapse: on several nodes, stops for a node's own sessions the typing
// of another node's typist whose stop never comes.
//
// The typist's node relays `is_typing: false` when the typist goes quiet for
// the typing timeout or its connection closes. A node killed, or cut off
// from the bus with the stop in flight, never sends it, and the typist would
// show as typing on every other node for good. So the receiving node
// remembers each remote typist it was told is typing, per thread, with the
// event's recipients, and when neither another typing event of that typist
// in that thread nor the stop has come within `lapse` (the typing timeout
// plus a grace for the bus), makes the stop itself, to be delivered to its
// own sessions only. A stop that comes late after all is sent twice, which
// is harmless; a typist shown typing forever is not.
//
// Not thread-safe: RedisBus calls it on its reactor's loop only.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "bus/bus.h"
#include "common/clock.h"

namespace parley {

class TypingLapse {
 public:
  explicit TypingLapse(Micros lapse) : lapse_(lapse) {}
  // Every event another node published; only `typing` events count.
  void observe(const BusEventPtr& event, Micros now);
  // The stops due at `now` (each forgotten once returned), for local delivery.
  std::vector<BusEventPtr> expired(Micros now);
  size_t size() const { return typing_.size(); }

 private:
  struct Typing {
    Micros deadline = 0;
    BusEventPtr started;  // the last `is_typing: true` event: its thread, recipients and fields
  };
  Micros lapse_;
  std::unordered_map<std::string, Typing> typing_;  // key: thread id, '\n', user id
};

}  // namespace parley
