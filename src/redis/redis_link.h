// RedisLink: one hiredis asynchronous connection to Redis, run on a Reactor,
// that reconnects by itself with backoff (100 ms doubling to 2 s) when Redis
// goes away or refuses it (a wrong password); it is up once Redis has
// answered its AUTH (or a PING). A password Redis does not ask for is no
// refusal: the link works. The Redis bus keeps two: one for commands (PUBLISH, presence,
// counters) and one in subscriber mode. A command whose reply has not come
// within 3 s drops the connection (its callers get nullptr and it
// reconnects): a Redis that hangs, or a peer gone without a reset, must not
// hold their callers for as long as TCP takes to give up. An idle connection
// (a subscriber) is kept honest by TCP keepalive instead.
//
// Threading: construct anywhere; every other method, and every callback,
// runs on the reactor's loop thread. stop() must run there before the link
// is destroyed. Owned by its user (the bus).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/reactor.h"
#include "common/error.h"

struct redisAsyncContext;
struct redisReply;

namespace parley {

// redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (the port defaults to 6379;
// the DB is ignored: pub/sub has no databases). USER and PASSWORD may be
// percent-encoded (%2F for '/', %40 for '@', %3A for ':', %25 for '%'); the
// user info is everything before the last '@', and the user ends at its
// first ':', so a raw '/', '@' or ':' in a password works too. Without ':'
// the whole user info is the password (as redis-cli reads it).
struct RedisEndpoint {
  std::string host;
  int port = 6379;
  std::string user;  // a Redis 6 ACL user; empty: the default user
  std::string password;
  static Result<RedisEndpoint> parse(const std::string& url);
  std::string describe() const;  // redis://HOST:PORT, never the password
  // The AUTH command to send on connecting (empty: none).
  std::vector<std::string> auth_command() const;
  // Whether an error answering AUTH says Redis has no password to check
  // (Redis 5: "Client sent AUTH, but no password is set"; 6 and later:
  // "…called without any password configured…"): the connection works.
  static bool no_password_set(std::string_view error);
};

class RedisLink {
 public:
  // Called with nullptr when the link dropped before the reply came.
  using ReplyFn = std::function<void(const redisReply*)>;

  // on_up: connected (again): send SUBSCRIBE or queued work now. on_down:
  // the connection was lost (or a connect failed); a retry is scheduled.
  RedisLink(Reactor& reactor, RedisEndpoint endpoint, std::string name, std::function<void()> on_up,
            std::function<void()> on_down);
  ~RedisLink();

  void start();
  void stop();
  bool up() const { return up_; }
  // Sends a command if the link is up (false: it is not, nothing sent).
  // done runs once, with the reply or nullptr.
  bool command(const std::vector<std::string_view>& argv, ReplyFn done = {});
  // Subscriber mode: every reply for the subscription (confirmations and
  // messages) goes to on_message until the link drops.
  bool subscribe(const std::string& channel, ReplyFn on_message);
  // Drops the connection (it reconnects): for a Redis that stopped
  // answering, or refused it; `why` is logged.
  void drop(const char* why = "no answer");

 private:
  static void on_connect(const redisAsyncContext* ac, int status);
  static void on_disconnect(const redisAsyncContext* ac, int status);
  static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_subscription(redisAsyncContext* ac, void* reply, void* privdata);
  void lost(const char* why);
  // command() without the check that the link is up (its AUTH or PING).
  bool send(const std::vector<std::string_view>& argv, ReplyFn done);
  void attach(redisAsyncContext* ac);
  void watch_replies();

  Reactor& reactor_;
  RedisEndpoint endpoint_;
  std::string name_;
  std::function<void()> on_up_, on_down_;
  redisAsyncContext* ctx_ = nullptr;
  std::unique_ptr<SocketWatch> watch_;
  ReplyFn on_message_;
  bool up_ = false;
  bool stopped_ = false;
  bool retry_pending_ = false;
  bool watching_ = false;  // watch_replies() is scheduled
  bool refusal_logged_ = false;     // Redis refused the link's AUTH or PING since it was last up
  bool told_no_password_ = false;   // warned that the URL's password is not needed
  // When each command still awaiting its reply was sent (steady ms), oldest
  // first: Redis answers a connection's commands in order.
  std::deque<int64_t> waiting_since_ms_;
  std::chrono::milliseconds backoff_{100};
  // Guards callbacks scheduled on the reactor against a destroyed link.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace parley
