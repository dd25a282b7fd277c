#include "redis/redis_sync_client.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>
#include <sys/time.h>

namespace parley {

namespace {
constexpr std::chrono::seconds kReconnectEvery{1};

timeval to_timeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000), static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}
}  // namespace

void RedisSyncClient::ReplyDeleter::operator()(redisReply* r) const { freeReplyObject(r); }

RedisSyncClient::RedisSyncClient(RedisEndpoint endpoint, std::chrono::milliseconds timeout)
    : endpoint_(std::move(endpoint)), timeout_(timeout) {}

RedisSyncClient::~RedisSyncClient() {
  std::lock_guard lock(mu_);
  drop();
}

void RedisSyncClient::drop() {
  if (ctx_) redisFree(ctx_);
  ctx_ = nullptr;
}

bool RedisSyncClient::connect() {
  auto now = std::chrono::steady_clock::now();
  if (now < next_connect_) return false;
  next_connect_ = now + kReconnectEvery;
  timeval tv = to_timeval(timeout_);
  ctx_ = redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, tv);
  if (!ctx_ || ctx_->err) {
    drop();
    return false;
  }
  if (redisSetTimeout(ctx_, tv) != REDIS_OK) {
    drop();
    return false;
  }
  if (auto argv = endpoint_.auth_command(); !argv.empty()) {
    std::vector<const char*> args;
    std::vector<size_t> lens;
    for (const auto& a : argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply auth(static_cast<redisReply*>(redisCommandArgv(ctx_, static_cast<int>(args.size()), args.data(), lens.data())));
    // A password Redis does not ask for is no refusal (as for RedisLink).
    if (!auth || (auth->type == REDIS_REPLY_ERROR &&
                  !RedisEndpoint::no_password_set(std::string_view(auth->str, auth->len)))) {
      drop();
      return false;
    }
  }
  return true;
}

RedisSyncClient::Reply RedisSyncClient::command(const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const auto& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  std::lock_guard lock(mu_);
  if (!ctx_ && !connect()) return nullptr;
  auto send = [&] {
    return Reply(static_cast<redisReply*>(redisCommandArgv(ctx_, static_cast<int>(args.size()), args.data(), lens.data())));
  };
  Reply reply = send();
  if (reply) return reply;
  // I/O error or timeout: the connection is unusable now. Once more on a new
  // one (Redis may have restarted since the last call), unless one was
  // attempted within the last second.
  drop();
  if (connect()) reply = send();
  if (!reply) drop();
  return reply;
}

}  // namespace parley
