// LoginLimiter: counts failed logins per account and per client address in a
// sliding window and refuses further attempts past the limit, in this
// process (the LoginLimits of one node; auth/login_limits.h). Thread-safe.
// Memory is bounded: entries older than the window are pruned as it runs.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>

#include "auth/login_limits.h"

namespace parley {

class LoginLimiter final : public LoginLimits {
 public:
  LoginLimiter(int per_account, int per_address, int window_seconds);

  // Checks and counts in one step, under one lock: when a login for this
  // account from this address may be tried now, counts it as a failure right
  // away and returns true; call record_success(account, address, now) if it
  // then succeeds. Concurrent attempts therefore never pass the limit
  // (checking with allowed() and counting later lets every attempt in flight through).
  bool admit(const std::string& account, const std::string& address, int64_t now_seconds) override;
  // A success of an attempt admit() counted: clears the account's failures and
  // takes that one attempt back from the address.
  void record_success(const std::string& account, const std::string& address, int64_t admitted_at) override;

  // True when a login for this account from this address may be tried now.
  bool allowed(const std::string& account, const std::string& address, int64_t now_seconds);
  void record_failure(const std::string& account, const std::string& address, int64_t now_seconds);
  // A success clears the account's failures (not the address's).
  void record_success(const std::string& account);

 private:
  using Times = std::deque<int64_t>;
  void prune(Times& t, int64_t now);
  bool over_limit(const std::string& account, const std::string& address, int64_t now_seconds);  // REQUIRES: mu_ held
  void add_failure(const std::string& account, const std::string& address, int64_t now_seconds);  // REQUIRES: mu_ held
  std::mutex mu_;
  int per_account_, per_address_, window_;
  std::unordered_map<std::string, Times> accounts_, addresses_;
  int64_t last_sweep_ = 0;
};

}  // namespace parley
