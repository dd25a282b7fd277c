#include "auth/login_limiter.h"

namespace parley {

namespace {
constexpr int64_t kSweepIntervalSeconds = 60;
}

LoginLimiter::LoginLimiter(int per_account, int per_address, int window_seconds)
    : per_account_(per_account), per_address_(per_address), window_(window_seconds) {}

void LoginLimiter::prune(Times& t, int64_t now) {
  while (!t.empty() && t.front() <= now - window_) t.pop_front();
}

bool LoginLimiter::admit(const std::string& account, const std::string& address, int64_t now_seconds) {
  std::lock_guard lock(mu_);
  if (over_limit(account, address, now_seconds)) return false;
  add_failure(account, address, now_seconds);
  return true;
}

void LoginLimiter::record_success(const std::string& account, const std::string& address, int64_t admitted_at) {
  std::lock_guard lock(mu_);
  accounts_.erase(account);
  if (auto it = addresses_.find(address); it != addresses_.end()) {
    auto& t = it->second;
    for (auto i = t.rbegin(); i != t.rend(); ++i) {
      if (*i == admitted_at) {
        t.erase(std::next(i).base());
        break;
      }
    }
  }
}

bool LoginLimiter::allowed(const std::string& account, const std::string& address, int64_t now_seconds) {
  std::lock_guard lock(mu_);
  return !over_limit(account, address, now_seconds);
}

bool LoginLimiter::over_limit(const std::string& account, const std::string& address, int64_t now_seconds) {
  // find, not operator[]: probing must not create entries.
  auto over = [&](std::unordered_map<std::string, Times>& map, const std::string& key, int limit) {
    auto it = map.find(key);
    if (it == map.end()) return limit <= 0;
    prune(it->second, now_seconds);
    return static_cast<int64_t>(it->second.size()) >= limit;
  };
  return over(accounts_, account, per_account_) || over(addresses_, address, per_address_);
}

void LoginLimiter::record_failure(const std::string& account, const std::string& address, int64_t now_seconds) {
  std::lock_guard lock(mu_);
  add_failure(account, address, now_seconds);
}

void LoginLimiter::add_failure(const std::string& account, const std::string& address, int64_t now_seconds) {
  auto add = [&](Times& t, int limit) {
    t.push_back(now_seconds);
    prune(t, now_seconds);
    // Only the newest `limit` failures decide whether the limit is reached,
    // so older ones can go: each entry stays small however hard it is hit.
    while (t.size() > 1 && static_cast<int64_t>(t.size()) > limit) t.pop_front();
  };
  add(accounts_[account], per_account_);
  add(addresses_[address], per_address_);

  // Entries of accounts and addresses that stopped failing would otherwise
  // stay forever; a full pass is O(n), so do it at most once a minute.
  if (now_seconds - last_sweep_ >= kSweepIntervalSeconds) {
    last_sweep_ = now_seconds;
    for (auto* map : {&accounts_, &addresses_}) {
      for (auto it = map->begin(); it != map->end();) {
        prune(it->second, now_seconds);
        it = it->second.empty() ? map->erase(it) : std::next(it);
      }
    }
  }
}

void LoginLimiter::record_success(const std::string& account) {
  std::lock_guard lock(mu_);
  accounts_.erase(account);
}

}  // namespace parley
