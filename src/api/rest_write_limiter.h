// RestWriteLimiter: a token bucket per user for the REST requests that change
// something (every method but GET, HEAD and OPTIONS; --rest-rate-per-second,
// --rest-rate-burst), as a WebSocket connection has one for its frames: a
// client looping on POST /messages or on creating groups is refused with 429
// instead of taking the workers and the writer from everyone else. Counted
// in this process only.
//
// Threading: any thread (REST runs on the worker pools); one mutex.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace parley {

class RestWriteLimiter {
 public:
  RestWriteLimiter(double per_second, double burst) : per_second_(per_second), burst_(burst) {}
  // True, and one token taken, when the user may write now.
  bool admit(const std::string& user_id, int64_t now_us);
  size_t users_tracked();

 private:
  struct Bucket {
    double tokens;
    int64_t at_us;
  };
  void forget_full(int64_t now_us);

  const double per_second_, burst_;
  std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
  size_t sweep_at_ = 1024;
};

}  // namespace parley
