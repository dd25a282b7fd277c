// LoginLimiter: counts failed logins per account and per client address in a
// sliding window and refuses further attempts past the limit. Thread-safe.
// Memory is bounded: entries older than the window are pruned as it runs.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>

namespace parley {

class LoginLimiter {
 public:
  LoginLimiter(int per_account, int per_address, int window_seconds);

  // True when a login for this account from this address may be tried now.
  bool allowed(const std::string& account, const std::string& address, int64_t now_seconds);
  void record_failure(const std::string& account, const std::string& address, int64_t now_seconds);
  // A success clears the account's failures (not the address's).
  void record_success(const std::string& account);

 private:
  using Times = std::deque<int64_t>;
  void prune(Times& t, int64_t now);
  std::mutex mu_;
  int per_account_, per_address_, window_;
  std::unordered_map<std::string, Times> accounts_, addresses_;
  int64_t last_sweep_ = 0;
};

}  // namespace parley
