// ArrivalLog: for each thread, the last two messages one event loop's Hub
// was handed, and when. A connection that opened at T was sent nothing of
// what came before T (it was not there yet), and all of it, with every
// lower seq of its thread, was committed before T: history the client reads
// itself (subscribe_thread with since_seq), not what the fill of the
// connection's first message of the thread should send again. That first
// message is the thread's first arrival since T, so the arrival before it is
// the one to ask for (Connection::admit_live; several nodes only).
//
// Threading: the loop's thread only, like its Hub. Threads quiet for longer
// than `keep` are forgotten once more than `max_threads` are logged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "model/model.h"

namespace parley {

class ArrivalLog {
 public:
  ArrivalLog(Micros keep, size_t max_threads);

  void note(const std::string& thread_id, int64_t seq, Micros at);
  // The highest seq of thread_id known to have arrived before `before`; 0
  // when none is known (never logged, forgotten, or both logged arrivals
  // came after it).
  int64_t arrived_before(const std::string& thread_id, Micros before) const;
  size_t threads() const { return threads_.size(); }

 private:
  struct Arrival {
    int64_t seq = 0;
    Micros at = 0;
  };
  struct LastTwo {
    Arrival latest, previous;
  };
  void forget_quiet(Micros now);

  Micros keep_;
  size_t max_threads_;
  std::unordered_map<std::string, LastTwo> threads_;
};

}  // namespace parley
