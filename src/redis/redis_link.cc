#include "redis/redis_link.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <utility>

namespace parley {

namespace {

constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{2000};
constexpr std::chrono::milliseconds kReplyCheck{1000};
constexpr int64_t kReplyTimeoutMs = 3000;

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// What a command's callback needs: its link's list of replies awaited (to
// count this one) and the caller's function.
struct PendingReply {
  std::deque<int64_t>* waiting;
  RedisLink::ReplyFn done;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX -> the byte; false on a '%' not followed by two hex digits (the
// caller's error must not quote the text: it is a password).
bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

}  // namespace

bool RedisEndpoint::no_password_set(std::string_view error) {
  return error.find("no password is set") != std::string_view::npos ||
         error.find("without any password configured") != std::string_view::npos;
}

Result<RedisEndpoint> RedisEndpoint::parse(const std::string& url) {
  constexpr std::string_view kScheme = "redis://";
  auto bad = [&] { return bad_input("invalid_redis_url", "expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]"); };
  if (url.compare(0, kScheme.size(), kScheme) != 0) return bad();
  std::string rest = url.substr(kScheme.size());
  RedisEndpoint e;
  // The last '@': a password may hold a raw '@' or '/' (a generated one
  // often does); host, port and DB never hold an '@'.
  if (auto at = rest.rfind('@'); at != std::string::npos) {
    std::string_view auth = std::string_view(rest).substr(0, at);
    auto colon = auth.find(':');
    std::string_view user = colon == std::string_view::npos ? std::string_view() : auth.substr(0, colon);
    std::string_view password = colon == std::string_view::npos ? auth : auth.substr(colon + 1);
    if (!percent_decode(user, e.user) || !percent_decode(password, e.password))
      return bad_input("invalid_redis_url",
                       "the user or password of the Redis URL has a '%' not followed by two hex digits; "
                       "write '%' as %25 (and '/' as %2F, '@' as %40, ':' as %3A)");
    rest = rest.substr(at + 1);
  }
  if (auto slash = rest.find('/'); slash != std::string::npos) rest.resize(slash);  // a /DB suffix is ignored: pub/sub has no databases
  std::string port;
  if (!rest.empty() && rest[0] == '[') {  // [::1]:6379
    auto close = rest.find(']');
    if (close == std::string::npos) return bad();
    e.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') return bad();
      port = rest.substr(close + 2);
    }
  } else {
    auto colon = rest.rfind(':');
    e.host = rest.substr(0, colon);
    if (colon != std::string::npos) port = rest.substr(colon + 1);
  }
  if (e.host.empty()) return bad();
  if (!port.empty()) {
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), e.port);
    if (ec != std::errc() || p != port.data() + port.size() || e.port < 1 || e.port > 65535) return bad();
  }
  return e;
}

std::vector<std::string> RedisEndpoint::auth_command() const {
  if (password.empty()) return {};
  // A one-argument AUTH logs in as `default`, and Redis before 6 knows no other form.
  if (user.empty() || user == "default") return {"AUTH", password};
  return {"AUTH", user, password};
}

std::string RedisEndpoint::describe() const {
  bool v6 = host.find(':') != std::string::npos;
  return "redis://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

RedisLink::RedisLink(Reactor& reactor, RedisEndpoint endpoint, std::string name, std::function<void()> on_up,
                     std::function<void()> on_down)
    : reactor_(reactor),
      endpoint_(std::move(endpoint)),
      name_(std::move(name)),
      on_up_(std::move(on_up)),
      on_down_(std::move(on_down)) {}

RedisLink::~RedisLink() { *alive_ = false; }

void RedisLink::start() {
  retry_pending_ = false;
  if (stopped_ || ctx_) return;
  if (!watching_) watch_replies();
  redisAsyncContext* ac = redisAsyncConnect(endpoint_.host.c_str(), endpoint_.port);
  if (!ac) return lost("out of memory");
  if (ac->err) {
    std::string why = ac->errstr;
    redisAsyncFree(ac);
    return lost(why.c_str());
  }
  attach(ac);
}

// The hiredis event hooks, on our reactor: hiredis says which readiness it
// needs, the watch calls back when the socket has it.
void RedisLink::attach(redisAsyncContext* ac) {
  ctx_ = ac;
  ac->data = this;
  watch_ = reactor_.watch(
      ac->c.fd, [ac] { redisAsyncHandleRead(ac); }, [ac] { redisAsyncHandleWrite(ac); });
  ac->ev.data = this;
  ac->ev.addRead = [](void* p) { static_cast<RedisLink*>(p)->watch_->want_read(true); };
  ac->ev.delRead = [](void* p) { static_cast<RedisLink*>(p)->watch_->want_read(false); };
  ac->ev.addWrite = [](void* p) { static_cast<RedisLink*>(p)->watch_->want_write(true); };
  ac->ev.delWrite = [](void* p) { static_cast<RedisLink*>(p)->watch_->want_write(false); };
  ac->ev.cleanup = [](void* p) { static_cast<RedisLink*>(p)->watch_.reset(); };
  redisAsyncSetConnectCallback(ac, &RedisLink::on_connect);
  redisAsyncSetDisconnectCallback(ac, &RedisLink::on_disconnect);
}

// Connected: the link is up once Redis has answered on it. AUTH (when the
// URL has a password) or PING first: a link that counted as up on the TCP
// connect took commands that a failed AUTH then refused one by one (NOAUTH)
// for as long as the connection lasted, and a peer that is not Redis, or a
// wrong password, was retried every 100 ms, never backing off.
void RedisLink::on_connect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<RedisLink*>(ac->data);
  if (!self) return;  // dropped
  if (status != REDIS_OK) {
    // hiredis frees the context after this returns.
    self->ctx_ = nullptr;
    return self->lost(ac->errstr);
  }
  if (self->ctx_) redisEnableKeepAlive(&self->ctx_->c);
  auto hello = self->endpoint_.auth_command();
  const bool auth = !hello.empty();
  if (!auth) hello = {"PING"};
  std::vector<std::string_view> argv(hello.begin(), hello.end());
  std::weak_ptr<bool> alive = self->alive_;
  const bool sent = self->send(argv, [self, alive, auth](const redisReply* r) {
    if (auto a = alive.lock(); !a || !*a || !r) return;  // the link went meanwhile: it says so itself
    if (r->type == REDIS_REPLY_ERROR) {
      std::string why(r->str, r->len);
      if (auth && RedisEndpoint::no_password_set(why)) {
        // The URL has a password this Redis does not ask for (yet: the nodes'
        // URLs may change before Redis does): nothing to log in to, and the link works.
        if (!self->told_no_password_)
          spdlog::warn("event=redis_password_not_needed link={} error=\"{}\"", self->name_, why);
        self->told_no_password_ = true;
      } else {
        // Once per streak of refusals: the link retries with backoff.
        if (!self->refusal_logged_)
          spdlog::error("event={} link={} error=\"{}\"", auth ? "redis_auth_failed" : "redis_refused", self->name_, why);
        self->refusal_logged_ = true;
        return self->drop("refused");
      }
    }
    self->refusal_logged_ = false;
    self->up_ = true;
    self->backoff_ = kFirstBackoff;
    spdlog::info("event=redis_connected link={} endpoint={}", self->name_, self->endpoint_.describe());
    if (self->on_up_) self->on_up_();
  });
  if (!sent) {
    // Not from inside hiredis's connect callback, which frees a context at
    // once (its reply callbacks defer it) and then writes through it.
    self->reactor_.post([self, alive, ac] {
      if (auto a = alive.lock(); a && *a && self->ctx_ == ac) self->drop("could not send");
    });
  }
}

void RedisLink::on_disconnect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<RedisLink*>(ac->data);
  if (!self) return;  // dropped
  self->ctx_ = nullptr;  // hiredis frees it after this returns
  self->on_message_ = nullptr;
  self->waiting_since_ms_.clear();
  if (self->stopped_) return;
  self->lost(status == REDIS_OK ? "closed" : ac->errstr);
}

void RedisLink::lost(const char* why) {
  bool was_up = up_;
  up_ = false;
  if (stopped_) return;
  if (was_up || backoff_ == kFirstBackoff)
    spdlog::warn("event=redis_down link={} endpoint={} error=\"{}\" retry_ms={}", name_, endpoint_.describe(), why,
                 backoff_.count());
  if (on_down_) on_down_();
  if (retry_pending_) return;
  retry_pending_ = true;
  std::weak_ptr<bool> alive = alive_;
  reactor_.schedule(backoff_, [this, alive] {
    if (auto a = alive.lock(); a && *a) start();
  });
  backoff_ = std::min(backoff_ * 2, kMaxBackoff);
}

void RedisLink::stop() {
  stopped_ = true;
  up_ = false;
  if (ctx_) {
    redisAsyncContext* ac = ctx_;
    ctx_ = nullptr;
    redisAsyncFree(ac);  // pending callbacks run with a null reply
  }
  waiting_since_ms_.clear();
  watch_.reset();
}

// Frees the context at once: redisAsyncDisconnect would wait for the pending
// replies, which a Redis that stopped answering never sends, and the link
// would look up (taking publishes nobody receives) until TCP gave up.
void RedisLink::drop(const char* why) {
  if (!ctx_) return;
  redisAsyncContext* ac = std::exchange(ctx_, nullptr);
  ac->data = nullptr;  // its connect and disconnect callbacks: this reports the loss itself
  on_message_ = nullptr;
  redisAsyncFree(ac);  // pending callbacks run with a null reply
  waiting_since_ms_.clear();
  watch_.reset();
  lost(why);
}

// Once a second while the link lives: a reply overdue drops the connection.
void RedisLink::watch_replies() {
  watching_ = true;
  std::weak_ptr<bool> alive = alive_;
  reactor_.schedule(kReplyCheck, [this, alive] {
    if (auto a = alive.lock(); !a || !*a) return;
    if (stopped_) return void(watching_ = false);
    if (!waiting_since_ms_.empty()) {
      const int64_t waited = steady_ms() - waiting_since_ms_.front();
      if (waited > kReplyTimeoutMs) {
        spdlog::warn("event=redis_unresponsive link={} waited_ms={}", name_, waited);
        drop();
      }
    }
    watch_replies();
  });
}

bool RedisLink::command(const std::vector<std::string_view>& argv, ReplyFn done) {
  if (!up_) return false;
  return send(argv, std::move(done));
}

bool RedisLink::send(const std::vector<std::string_view>& argv, ReplyFn done) {
  if (!ctx_) return false;
  std::vector<const char*> args;
  std::vector<size_t> lens;
  args.reserve(argv.size());
  lens.reserve(argv.size());
  for (auto a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  // Every command gets a callback, with or without `done`: each reply is
  // counted, so the oldest one waiting is always the front of waiting_since_ms_.
  auto* pending = new PendingReply{&waiting_since_ms_, std::move(done)};
  int rc = redisAsyncCommandArgv(ctx_, &RedisLink::on_reply, pending, static_cast<int>(args.size()), args.data(),
                                 lens.data());
  if (rc != REDIS_OK) {
    delete pending;
    return false;
  }
  waiting_since_ms_.push_back(steady_ms());
  return true;
}

// Runs on the loop (hiredis calls it from a read, or with nullptr while the
// context is freed by stop() or drop(), which the link outlives).
void RedisLink::on_reply(redisAsyncContext*, void* reply, void* privdata) {
  std::unique_ptr<PendingReply> pending(static_cast<PendingReply*>(privdata));
  if (!pending->waiting->empty()) pending->waiting->pop_front();
  if (pending->done) pending->done(static_cast<const redisReply*>(reply));
}

bool RedisLink::subscribe(const std::string& channel, ReplyFn on_message) {
  if (!ctx_ || !up_) return false;
  on_message_ = std::move(on_message);
  const char* args[] = {"SUBSCRIBE", channel.data()};
  size_t lens[] = {9, channel.size()};
  return redisAsyncCommandArgv(ctx_, &RedisLink::on_subscription, this, 2, args, lens) == REDIS_OK;
}

void RedisLink::on_subscription(redisAsyncContext*, void* reply, void* privdata) {
  auto* self = static_cast<RedisLink*>(privdata);
  if (reply && self->on_message_) self->on_message_(static_cast<const redisReply*>(reply));
}

}  // namespace parley
