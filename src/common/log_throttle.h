// A log line that a failure repeated in a tight loop would print thousands of
// times a second (a full disk under a client that retries at once): the first
// goes out at once, then at most one per interval, saying how many were held
// back since the one before, so the log keeps the news and its rate without
// drowning everything else; when it stops, one line says so with the count
// held back since the last (recovered()). Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>

namespace parley {

class LogThrottle {
 public:
  using Clock = std::chrono::steady_clock;

  explicit LogThrottle(Clock::duration interval = std::chrono::seconds(1)) : interval_(interval) {}

  // Whether to log this occurrence: the number of occurrences held back since
  // the last line (0 for the first), or nullopt to stay quiet.
  std::optional<uint64_t> admit(Clock::time_point now = Clock::now()) {
    std::lock_guard lock(mu_);
    failing_.store(true, std::memory_order_relaxed);
    if (logged_ && now - last_ < interval_) {
      ++held_back_;
      return std::nullopt;
    }
    logged_ = true;
    last_ = now;
    return std::exchange(held_back_, 0);
  }

  // The failure stopped (the operation it counts succeeded). If any
  // occurrence came since the last recovery: the number held back since the
  // last line, so the log says the end and the occurrences it never showed;
  // the next occurrence is then logged at once. Otherwise nullopt. Cheap
  // when nothing failed (one relaxed load): meant for every success.
  std::optional<uint64_t> recovered() {
    if (!failing_.load(std::memory_order_relaxed)) return std::nullopt;
    std::lock_guard lock(mu_);
    if (!failing_.exchange(false, std::memory_order_relaxed)) return std::nullopt;
    logged_ = false;
    return std::exchange(held_back_, 0);
  }

 private:
  const Clock::duration interval_;
  std::mutex mu_;
  bool logged_ = false;
  Clock::time_point last_{};
  uint64_t held_back_ = 0;
  std::atomic<bool> failing_{false};  // admit() ran since the last recovered()
};

}  // namespace parley
