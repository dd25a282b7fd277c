#include "chat/arrival_log.h"

#include <algorithm>

namespace parley {

ArrivalLog::ArrivalLog(Micros keep, size_t max_threads) : keep_(keep), max_threads_(max_threads) {}

void ArrivalLog::note(const std::string& thread_id, int64_t seq, Micros at) {
  auto it = threads_.find(thread_id);
  if (it == threads_.end()) {
    if (threads_.size() >= max_threads_) forget_quiet(at);
    it = threads_.emplace(thread_id, LastTwo{}).first;
  }
  it->second.previous = it->second.latest;
  it->second.latest = {seq, at};
}

// Past the bound, the threads quiet for `keep`; if that leaves it full, all:
// a connection's first fill then falls back on the creation times.
void ArrivalLog::forget_quiet(Micros now) {
  std::erase_if(threads_, [&](const auto& entry) { return entry.second.latest.at < now - keep_; });
  if (threads_.size() >= max_threads_) threads_.clear();
}

int64_t ArrivalLog::arrived_before(const std::string& thread_id, Micros before) const {
  auto it = threads_.find(thread_id);
  if (it == threads_.end()) return 0;
  const LastTwo& t = it->second;
  int64_t seq = 0;
  for (const Arrival& a : {t.latest, t.previous})
    if (a.at < before) seq = std::max(seq, a.seq);  // a delayed one may have come last
  return seq;
}

}  // namespace parley
