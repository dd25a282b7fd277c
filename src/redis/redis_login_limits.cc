#include "redis/redis_login_limits.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <atomic>

#include "common/ids.h"

namespace parley {

namespace {

// KEYS: account key, address key. ARGV: now, window, account limit, address
// limit, a unique member. 1 = admitted (counted in both), 0 = over a limit.
constexpr const char* kAdmitScript = R"(
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local limits = {tonumber(ARGV[3]), tonumber(ARGV[4])}
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= limits[i] then return 0 end
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now, ARGV[5])
  -- only the newest `limit` attempts decide: older ones go
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(limits[i] + 1))
  redis.call('EXPIRE', KEYS[i], window)
end
return 1)";

// KEYS: account key, address key. ARGV: the admitted attempt's time.
// Clears the account's failures, takes one attempt of that time back from the address.
constexpr const char* kSuccessScript = R"(
redis.call('DEL', KEYS[1])
local one = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], ARGV[1], 'LIMIT', 0, 1)
if #one > 0 then redis.call('ZREM', KEYS[2], one[1]) end
return 1)";

std::string account_key(const std::string& account) { return "parley:login-fail:account:" + account; }
std::string address_key(const std::string& address) { return "parley:login-fail:address:" + address; }

// Members must differ between attempts in the same second, on every node.
std::string attempt_id() {
  static const std::string process = random_hex(6);
  static std::atomic<uint64_t> counter{0};
  return process + ":" + std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
}

}  // namespace

RedisLoginLimits::RedisLoginLimits(RedisEndpoint endpoint, std::chrono::milliseconds timeout, int per_account,
                                   int per_address, int window_seconds)
    : redis_(std::move(endpoint), timeout),
      local_(per_account, per_address, window_seconds),
      per_account_(per_account),
      per_address_(per_address),
      window_(window_seconds) {}

void RedisLoginLimits::answered(bool ok) {
  if (!ok && !degraded_.exchange(true))
    spdlog::warn("event=login_limits_degraded reason=\"redis not answering\" effect=\"failed logins counted on this node only\"");
  if (ok && degraded_.exchange(false)) spdlog::info("event=login_limits_restored");
}

bool RedisLoginLimits::admit(const std::string& account, const std::string& address, int64_t now_seconds) {
  auto reply = redis_.command({"EVAL", kAdmitScript, "2", account_key(account), address_key(address),
                               std::to_string(now_seconds), std::to_string(window_), std::to_string(per_account_),
                               std::to_string(per_address_), attempt_id()});
  bool ok = reply && reply->type == REDIS_REPLY_INTEGER;
  if (reply && reply->type == REDIS_REPLY_ERROR)
    spdlog::warn("event=login_limits_error error=\"{}\"", std::string(reply->str, reply->len));
  answered(ok);
  if (!ok) return local_.admit(account, address, now_seconds);
  // This node's own count follows, for the next outage.
  if (reply->integer == 1) local_.record_failure(account, address, now_seconds);
  return reply->integer == 1;
}

void RedisLoginLimits::record_success(const std::string& account, const std::string& address, int64_t admitted_at) {
  local_.record_success(account, address, admitted_at);
  auto reply = redis_.command(
      {"EVAL", kSuccessScript, "2", account_key(account), address_key(address), std::to_string(admitted_at)});
  answered(reply && reply->type == REDIS_REPLY_INTEGER);
}

}  // namespace parley
