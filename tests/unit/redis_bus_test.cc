// RedisBus against a real redis-server (scripts/redis-test.sh) on loopback:
// two bus instances in one process stand for two nodes.
#include "bus/bus_codec.h"
#include "redis/redis_bus.h"
#include "redis/redis_link.h"
#include "redis/redis_sync_client.h"
#include "net/asio_reactor.h"
#include "redis_server.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace parley {
namespace {

using namespace std::chrono_literals;

BusEventPtr message(const std::string& thread, int64_t seq, std::vector<std::string> users, bool shared = true) {
  auto e = std::make_shared<BusEvent>();
  e->thread_id = thread;
  e->seq = seq;
  e->recipients = std::make_shared<const std::vector<std::string>>(std::move(users));
  e->shared_recipients = shared;
  e->type = "new_message";
  e->payload = "{\"seq\":" + std::to_string(seq) + ",\"content\":\"a\\nb \\\"q\\\"\"}";
  e->payload_is_data = true;
  e->message_id = "m-" + std::to_string(seq);
  e->exclude_session = "session-" + std::to_string(seq);
  return e;
}

// ---- the wire format, no Redis needed

TEST(BusCodec, RoundTripKeepsEveryField) {
  auto e = message("t1", 42, {"u1", "u2"});
  auto d = decode_bus_event(encode_bus_event(*e, "node-a"));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->node_id, "node-a");
  EXPECT_EQ(d->event->thread_id, "t1");
  EXPECT_EQ(d->event->seq, 42);
  EXPECT_EQ(*d->event->recipients, (std::vector<std::string>{"u1", "u2"}));
  EXPECT_TRUE(d->event->shared_recipients);
  EXPECT_EQ(d->event->exclude_session, "session-42");
  EXPECT_EQ(d->event->type, "new_message");
  EXPECT_TRUE(d->event->payload_is_data);
  EXPECT_EQ(d->event->message_id, "m-42");
  EXPECT_EQ(d->event->payload, e->payload) << "the payload travels byte for byte, newlines included";
  EXPECT_FALSE(d->event->resync);
}

TEST(BusCodec, AReceiptKeepsItsReaderAndMark) {
  BusEvent e;
  e.thread_id = "t1";
  e.recipients = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"u1"});
  e.type = "read_receipt";
  e.payload = R"({"thread_id":"t1","user_id":"u2","seq":17})";
  e.reader_id = "u2";
  e.read_seq = 17;
  auto d = decode_bus_event(encode_bus_event(e, "n"));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->event->reader_id, "u2");
  EXPECT_EQ(d->event->read_seq, 17);
  EXPECT_EQ(d->event->seq, 0) << "not a message's seq";
  auto plain = decode_bus_event(encode_bus_event(*message("t1", 3, {"u1"}), "n"));
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->event->read_seq, 0);
  EXPECT_TRUE(plain->event->reader_id.empty());
}

TEST(BusCodec, ARedeliveryStaysOne) {
  auto plain = message("t1", 7, {"u1"});
  EXPECT_FALSE(decode_bus_event(encode_bus_event(*plain, "n"))->event->redelivery);
  BusEvent e;
  e.thread_id = "t1";
  e.seq = 7;
  e.recipients = plain->recipients;
  e.type = "new_message";
  e.payload = plain->payload;
  e.payload_is_data = true;
  e.redelivery = true;
  e.created_at = 1764800000123456;
  auto d = decode_bus_event(encode_bus_event(e, "n"));
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->event->redelivery);
  EXPECT_EQ(d->event->created_at, 1764800000123456) << "the message's time, for connections opened since";
  EXPECT_EQ(d->event->seq, 7);
}

TEST(BusCodec, EventWithoutSeqOrExclusion) {
  BusEvent e;
  e.thread_id = "t";
  e.recipients = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"u"});
  e.type = "typing";
  e.payload = "{\"is_typing\":true}";
  auto d = decode_bus_event(encode_bus_event(e, "n"));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->event->seq, 0);
  EXPECT_FALSE(d->event->shared_recipients);
  EXPECT_FALSE(d->event->payload_is_data);
  EXPECT_TRUE(d->event->message_id.empty());
  EXPECT_TRUE(d->event->exclude_session.empty());
  EXPECT_EQ(d->event->type, "typing");
  EXPECT_EQ(d->event->payload, "{\"is_typing\":true}");
}

TEST(BusCodec, ResyncControlEvent) {
  BusEvent e;
  e.resync = true;
  auto d = decode_bus_event(encode_bus_event(e, "n"));
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->event->resync);
}

TEST(BusCodec, MembersChangedControlEvent) {
  BusEvent e;
  e.members_changed = true;
  e.thread_id = "t-1";
  auto d = decode_bus_event(encode_bus_event(e, "n"));
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->event->members_changed);
  EXPECT_FALSE(d->event->resync);
  EXPECT_EQ(d->event->thread_id, "t-1");
  EXPECT_FALSE(decode_bus_event("{\"v\":1,\"node\":\"n\",\"members_changed\":true}\n"))
      << "which thread's members changed is required";
}

TEST(BusCodec, RefusesWhatIsNotAnEventOfThisVersion) {
  EXPECT_FALSE(decode_bus_event(""));
  EXPECT_FALSE(decode_bus_event("hello"));
  EXPECT_FALSE(decode_bus_event("{\"v\":2,\"node\":\"n\"}\n{}"));
  EXPECT_FALSE(decode_bus_event("[1]\n{}"));
  EXPECT_FALSE(decode_bus_event("{\"v\":1,\"node\":\n"));
  EXPECT_FALSE(decode_bus_event("{\"v\":1,\"node\":\"n\",\"type\":\"typing\"}\nnot an object"));
  EXPECT_FALSE(decode_bus_event("{\"v\":1,\"node\":\"n\"}\n{}")) << "an event without a type";
}

// ---- against redis-server

RedisBusOptions options(const RedisEndpoint& endpoint) {
  RedisBusOptions o;
  o.endpoint = endpoint;
  return o;
}

RedisBusOptions options(const RedisServer& redis) { return options(*RedisEndpoint::parse(redis.url())); }

// Two nodes' buses on one endpoint (a URL with a user or password).
struct BusPair {
  explicit BusPair(const RedisEndpoint& endpoint)
      : a(loop.reactor(), options(endpoint)), b(loop.reactor(), options(endpoint)) {
    a.set_receiver(std::ref(at_a));
    b.set_receiver(std::ref(at_b));
  }
  bool both_healthy() const { return a.healthy() && b.healthy(); }
  // An event published by a reaches b (sent again each second until it does).
  bool carries_an_event() {
    return eventually([&] {
      a.publish(message("t", 1, {"u1"}));
      return at_b.wait([](auto& ev) { return !ev.empty(); }, 1s);
    });
  }
  ReactorThread loop;
  Inbox at_a, at_b;
  RedisBus a, b;
};

TEST(RedisEndpoint, Parses) {
  auto e = RedisEndpoint::parse("redis://127.0.0.1:6380");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, 6380);
  EXPECT_EQ(RedisEndpoint::parse("redis://localhost")->port, 6379);
  auto p = RedisEndpoint::parse("redis://:s3cret@[::1]:7000/0");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->host, "::1");
  EXPECT_EQ(p->port, 7000);
  EXPECT_EQ(p->password, "s3cret");
  EXPECT_EQ(p->describe(), "redis://[::1]:7000") << "never the password";
  EXPECT_FALSE(RedisEndpoint::parse("http://x:1"));
  EXPECT_FALSE(RedisEndpoint::parse("redis://:1"));
  EXPECT_FALSE(RedisEndpoint::parse("redis://h:99999"));
  EXPECT_FALSE(RedisEndpoint::parse("redis://h:12x"));
}

// Passwords are whatever an operator generated: '/', '@', ':' and '%' are
// written percent-encoded (as in any URL), and raw '/', '@' and ':' work too,
// the user info being everything before the last '@'.
TEST(RedisEndpoint, PasswordsWithSlashAtColonAndPercent) {
  auto e = RedisEndpoint::parse("redis://user:p%2Fss@127.0.0.1:6379/0");
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, 6379);
  EXPECT_EQ(e->password, "p/ss");
  auto all = RedisEndpoint::parse("redis://:a%2Fb%40c%3Ad%25e%2fx@h:7000");
  ASSERT_TRUE(all);
  EXPECT_EQ(all->password, "a/b@c:d%e/x");
  EXPECT_EQ(all->host, "h");
  EXPECT_EQ(all->port, 7000);
  EXPECT_EQ(all->describe(), "redis://h:7000") << "never the password";

  auto raw_slash = RedisEndpoint::parse("redis://:p/ss@127.0.0.1:6380/0");
  ASSERT_TRUE(raw_slash) << raw_slash.error().message;
  EXPECT_EQ(raw_slash->password, "p/ss");
  EXPECT_EQ(raw_slash->host, "127.0.0.1");
  EXPECT_EQ(raw_slash->port, 6380);
  auto raw_at = RedisEndpoint::parse("redis://:p@ss@127.0.0.1:6380");
  ASSERT_TRUE(raw_at);
  EXPECT_EQ(raw_at->password, "p@ss");
  EXPECT_EQ(raw_at->host, "127.0.0.1");
  auto raw_mixed = RedisEndpoint::parse("redis://:a:b/c@d@[::1]:7001/2");
  ASSERT_TRUE(raw_mixed);
  EXPECT_EQ(raw_mixed->password, "a:b/c@d");
  EXPECT_EQ(raw_mixed->host, "::1");
  EXPECT_EQ(raw_mixed->port, 7001);
  auto bare = RedisEndpoint::parse("redis://s3cret@h");  // no ':': the whole user info is the password (redis-cli)
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->password, "s3cret");
  EXPECT_EQ(bare->port, 6379);
}

TEST(RedisEndpoint, BadPercentEncodingIsAClearErrorThatDoesNotQuoteThePassword) {
  for (const char* url : {"redis://:50%off@h:6379", "redis://:abc%4@h", "redis://:abc%@h", "redis://u%zz:pw@h"}) {
    auto e = RedisEndpoint::parse(url);
    ASSERT_FALSE(e) << url;
    EXPECT_EQ(e.error().code, "invalid_redis_url") << url;
    EXPECT_NE(e.error().message.find("%25"), std::string::npos) << e.error().message;
    EXPECT_EQ(e.error().message.find("off"), std::string::npos) << e.error().message;
  }
}

TEST(RedisEndpoint, UserNameIsDecodedAndSentWithAuth) {
  auto e = RedisEndpoint::parse("redis://al%40ice:p%2Fss@127.0.0.1:6379/0");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->user, "al@ice");
  EXPECT_EQ(e->password, "p/ss");
  EXPECT_EQ(e->auth_command(), (std::vector<std::string>{"AUTH", "al@ice", "p/ss"}));
  EXPECT_EQ(RedisEndpoint::parse("redis://:pw@h")->auth_command(), (std::vector<std::string>{"AUTH", "pw"}));
  // `default` is who a one-argument AUTH logs in as: the same, and Redis 5 understands it.
  EXPECT_EQ(RedisEndpoint::parse("redis://default:pw@h")->auth_command(), (std::vector<std::string>{"AUTH", "pw"}));
  EXPECT_TRUE(RedisEndpoint::parse("redis://h:1")->auth_command().empty());
  EXPECT_TRUE(RedisEndpoint::parse("redis://:@h:1")->auth_command().empty());
}

// An ACL user whose password has every awkward character, and no way in
// without it: both nodes' links (commands and subscriber) log in with it.
TEST(RedisBus, LogsInAsTheUrlsUserWithAPercentEncodedPassword) {
  RedisServer redis;
  redis.cli("ACL SETUSER parley on '>p/ss@w:rd%' '~*' '&*' '+@all'");
  redis.cli("ACL SETUSER default off");
  const std::string url = "redis://parley:p%2Fss%40w%3Ard%25@127.0.0.1:" + redis.url().substr(redis.url().rfind(':') + 1);
  auto endpoint = RedisEndpoint::parse(url);
  ASSERT_TRUE(endpoint);
  BusPair n(*endpoint);
  ASSERT_TRUE(eventually([&] { return n.both_healthy(); }));
  ASSERT_TRUE(n.carries_an_event());
  RedisSyncClient sync(*endpoint, 2000ms);
  auto who = sync.command({"ACL", "WHOAMI"});
  ASSERT_TRUE(who);
  ASSERT_EQ(who->type, REDIS_REPLY_STRING);
  EXPECT_EQ(std::string(who->str, who->len), "parley");
}

// A password Redis refuses: the links back off (not a reconnection every
// 100 ms) and the bus is degraded; once Redis takes it (a rotation that the
// node's URL was ahead of), every link comes up and events flow. A link that
// counted as up on the TCP connect kept taking commands Redis refused
// (NOAUTH) while /health said ok.
TEST(RedisBus, AWrongPasswordBacksOffAndTheRightOneLaterWorks) {
  RedisServer redis;
  redis.cli("CONFIG SET requirepass right-password");
  const std::string port = redis.url().substr(redis.url().rfind(':') + 1);
  auto endpoint = RedisEndpoint::parse("redis://:later-password@127.0.0.1:" + port);
  ASSERT_TRUE(endpoint);
  auto connections = [&](const char* password) {
    std::string info = redis.cli(std::string("-a ") + password + " --no-auth-warning INFO stats");
    const std::string key = "total_connections_received:";
    auto at = info.find(key);
    return at == std::string::npos ? -1L : std::stol(info.substr(at + key.size()));
  };
  const long before = connections("right-password");
  BusPair n(*endpoint);
  std::this_thread::sleep_for(2500ms);
  EXPECT_FALSE(n.a.healthy());
  EXPECT_FALSE(n.b.healthy());
  // Two buses of two links each: backing off from 100 ms, about five
  // attempts a link in 2.5 s (at 100 ms each, 25).
  const long tried = connections("right-password") - before - 1;
  EXPECT_LE(tried, 30) << "reconnections in 2.5 s";
  EXPECT_GE(tried, 4);
  redis.cli("-a right-password --no-auth-warning CONFIG SET requirepass later-password");
  ASSERT_TRUE(eventually([&] { return n.both_healthy(); }, 10s));
  ASSERT_TRUE(n.carries_an_event());
}

// A password in the URL that Redis does not ask for (the nodes' URLs were
// changed before Redis got it): Redis refuses the AUTH as needless, and the
// link works all the same.
TEST(RedisBus, APasswordRedisDoesNotAskForIsNoReasonToStayDown) {
  RedisServer redis;
  const std::string port = redis.url().substr(redis.url().rfind(':') + 1);
  auto endpoint = RedisEndpoint::parse("redis://:coming-password@127.0.0.1:" + port);
  ASSERT_TRUE(endpoint);
  BusPair n(*endpoint);
  ASSERT_TRUE(eventually([&] { return n.both_healthy(); }));
  ASSERT_TRUE(n.carries_an_event());
  // The blocking client (failed logins across nodes) likewise.
  RedisSyncClient sync(*endpoint, 2000ms);
  auto pong = sync.command({"PING"});
  ASSERT_TRUE(pong);
  EXPECT_EQ(pong->type, REDIS_REPLY_STATUS);
}

TEST(RedisBus, EventsReachTheOtherNodeInOrderAndTheOwnNodeOnce) {
  RedisServer redis;
  ReactorThread loop;
  Inbox at_a, at_b;
  RedisBus a(loop.reactor(), options(redis)), b(loop.reactor(), options(redis));
  a.set_receiver(std::ref(at_a));
  b.set_receiver(std::ref(at_b));
  ASSERT_TRUE(eventually([&] { return a.healthy() && b.healthy(); }));
  const int n = 500;
  std::thread publisher([&] {
    for (int i = 1; i <= n; ++i) a.publish(message("t", i, {"u1", "u2"}));
  });
  publisher.join();
  ASSERT_TRUE(at_b.wait([&](auto& ev) { return ev.size() >= n; })) << "got " << at_b.count_messages();
  std::this_thread::sleep_for(200ms);  // anything extra (an echo, a duplicate) would arrive meanwhile
  std::lock_guard lock_b(at_b.mu);
  ASSERT_EQ(at_b.events.size(), size_t{n});
  for (int i = 0; i < n; ++i) {
    const BusEvent& e = *at_b.events[i];
    EXPECT_EQ(e.seq, i + 1);
    EXPECT_EQ(e.thread_id, "t");
    EXPECT_EQ(e.payload, message("t", i + 1, {})->payload);
    EXPECT_EQ(e.type, "new_message");
    EXPECT_EQ(e.exclude_session, "session-" + std::to_string(i + 1));
    ASSERT_TRUE(e.recipients);
    EXPECT_EQ(*e.recipients, (std::vector<std::string>{"u1", "u2"}));
  }
  // One list per thread on the receiving side, so the Hubs' caches keep working.
  EXPECT_EQ(at_b.events.front()->recipients.get(), at_b.events.back()->recipients.get());
  std::lock_guard lock_a(at_a.mu);
  EXPECT_EQ(at_a.events.size(), size_t{n}) << "the publishing node delivers locally, and ignores its own echo";
}

TEST(RedisBus, PublishesFromManyThreadsAllArrive) {
  RedisServer redis;
  ReactorThread loop;
  Inbox at_a, at_b;
  RedisBus a(loop.reactor(), options(redis)), b(loop.reactor(), options(redis));
  a.set_receiver(std::ref(at_a));
  b.set_receiver(std::ref(at_b));
  ASSERT_TRUE(eventually([&] { return a.healthy() && b.healthy(); }));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 1; i <= 100; ++i) a.publish(message("t" + std::to_string(t), i, {"u"}));
    });
  for (auto& t : threads) t.join();
  ASSERT_TRUE(at_b.wait([](auto& ev) { return ev.size() >= 400; }));
  // Per publishing thread (and so per conversation here), order holds.
  std::lock_guard lock(at_b.mu);
  std::map<std::string, int64_t> last;
  for (auto& e : at_b.events) {
    EXPECT_EQ(e->seq, last[e->thread_id] + 1) << e->thread_id;
    last[e->thread_id] = e->seq;
  }
}

TEST(RedisBus, RedisRestartDegradesThenRecoversAndAsksForAResync) {
  RedisServer redis;
  ReactorThread loop;
  Inbox at_a, at_b;
  RedisBus a(loop.reactor(), options(redis)), b(loop.reactor(), options(redis));
  a.set_receiver(std::ref(at_a));
  b.set_receiver(std::ref(at_b));
  ASSERT_TRUE(eventually([&] { return a.healthy() && b.healthy(); }));
  a.publish(message("t", 1, {"u"}));
  ASSERT_TRUE(at_b.wait([](auto& ev) { return ev.size() >= 1; }));
  ASSERT_TRUE(at_b.wait_resyncs(1)) << "the first subscription";

  redis.stop();
  ASSERT_TRUE(eventually([&] { return !a.healthy() && !b.healthy(); })) << "both nodes notice Redis is gone";
  a.publish(message("t", 2, {"u"}));
  EXPECT_TRUE(at_a.wait([](auto& ev) { return ev.size() >= 2; }, 2s)) << "local delivery goes on without Redis";

  redis.start();
  // Which of the two is back first is their own backoffs' doing (1.6 s apart
  // once, under a sanitizer): watched here, to the millisecond.
  std::optional<std::chrono::steady_clock::time_point> a_back, b_back;
  ASSERT_TRUE(eventually(
      [&] {
        const auto now = std::chrono::steady_clock::now();
        if (!a_back && a.healthy()) a_back = now;
        if (!b_back && b.healthy()) b_back = now;
        if (a_back && b_back) return true;
        std::this_thread::sleep_for(1ms);
        return false;
      },
      20s))
      << "both reconnect by themselves";
  // B lost its subscription: it tells its own sessions to resync (they catch
  // up from the store). Event 2, queued on A while Redis was down, is
  // published as A's link comes back: B gets it when it was subscribed again
  // by then. Pub/sub keeps nothing for a subscriber not yet back, so when B
  // came back after A (50 ms of slack: A publishes before it reports
  // healthy) the resync is what covers it.
  EXPECT_TRUE(at_b.wait_resyncs(2));
  const bool b_first = *b_back + 50ms < *a_back;
  const bool got2 = at_b.wait(
      [](auto& ev) {
        for (auto& e : ev)
          if (e->seq == 2) return true;
        return false;
      },
      b_first ? 10s : 2s);
  if (b_first) {
    EXPECT_TRUE(got2) << "B was subscribed again before A published event 2";
  }
  // And the bus works again.
  a.publish(message("t", 3, {"u"}));
  EXPECT_TRUE(at_b.wait([](auto& ev) { return ev.back()->seq == 3; }));
}

// A Redis that stops answering but keeps its connections (paused: its kernel
// still takes the bytes) is caught by the ping watchdog: both nodes degrade
// within seconds, not when TCP gives up, and recover with a resync once it
// answers again.
// Two nodes' buses on one Redis, each handing its events to its inbox.
struct TwoBuses {
  RedisServer redis;
  ReactorThread loop;
  Inbox at_a, at_b;
  RedisBus a{loop.reactor(), options(redis)}, b{loop.reactor(), options(redis)};
  TwoBuses() {
    a.set_receiver(std::ref(at_a));
    b.set_receiver(std::ref(at_b));
  }
  bool both_healthy() { return a.healthy() && b.healthy(); }
};

TEST(RedisBus, RedisThatStopsAnsweringIsDroppedThenRecovers) {
  TwoBuses n;
  ASSERT_TRUE(eventually([&] { return n.both_healthy(); }));
  ASSERT_TRUE(n.at_b.wait_resyncs(1)) << "the first subscription";

  n.redis.pause();
  n.a.publish(message("t", 1, {"u"}));
  EXPECT_TRUE(eventually([&] { return !n.a.healthy() && !n.b.healthy(); }, 12s)) << "the watchdog drops the links";
  EXPECT_TRUE(n.at_a.wait([](auto& ev) { return ev.size() >= 1; }, 2s)) << "local delivery goes on";

  n.redis.resume();
  ASSERT_TRUE(eventually([&] { return n.both_healthy(); }, 20s)) << "both reconnect by themselves";
  EXPECT_TRUE(n.at_b.wait_resyncs(2)) << "what Redis did not pass on is read again";
  n.a.publish(message("t", 2, {"u"}));
  EXPECT_TRUE(n.at_b.wait([](auto& ev) { return !ev.empty() && ev.back()->seq == 2; }));
}

// A server that answers a connection's first command (the link's PING,
// which it waits for before it counts as up) and nothing after: the kernel
// takes the bytes and no reply ever comes, like a Redis behind a link that
// drops its packets.
class SilentServer {
 public:
  SilentServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("silent server");
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~SilentServer() {
    stop_ = true;
    thread_.join();
    for (int c : clients_) ::close(c);
    ::close(fd_);
  }
  int port() const { return port_; }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      clients_.push_back(c);
      pollfd q{c, POLLIN, 0};
      char buf[256];
      if (::poll(&q, 1, 2000) > 0 && ::read(c, buf, sizeof buf) > 0) {
        [[maybe_unused]] auto n = ::write(c, "+PONG\r\n", 7);
      }
    }
  }
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<int> clients_;  // the server thread's, until the destructor joins it
  std::thread thread_;
};

// Runs fn on the loop and waits for it.
void on_loop(Reactor& reactor, const std::function<void()>& fn) {
  std::promise<void> done;
  reactor.post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

// A RedisLink to a SilentServer, started; counts its ups and downs.
struct SilentLink {
  SilentServer silent;
  ReactorThread loop;
  std::atomic<int> ups{0}, downs{0};
  RedisLink link{loop.reactor(), RedisEndpoint{"127.0.0.1", silent.port(), "", ""}, "test", [this] { ++ups; },
                 [this] { ++downs; }};
  SilentLink() { on_loop(loop.reactor(), [&] { link.start(); }); }
  ~SilentLink() { on_loop(loop.reactor(), [&] { link.stop(); }); }
  void run(const std::function<void()>& fn) { on_loop(loop.reactor(), fn); }
};

// The watchdog's drop() must not wait for replies that will never come: the
// link is down at once, its pending commands are answered with null, and it
// connects again by itself.
TEST(RedisLink, DropGivesUpALinkWhoseRepliesNeverComeAndReconnects) {
  SilentLink l;
  ASSERT_TRUE(eventually([&] { return l.ups == 1; }));

  bool sent = false, up_after_drop = true;
  std::atomic<int> answers{0}, null_answers{0};
  l.run([&] {
    sent = l.link.command({"PING"}, [&](const redisReply* r) {
      ++answers;
      null_answers += r == nullptr;
    });
    l.link.drop();
    up_after_drop = l.link.up();
  });
  ASSERT_TRUE(sent);
  EXPECT_FALSE(up_after_drop);
  EXPECT_EQ(answers, 1) << "the pending PING is answered at once";
  EXPECT_EQ(null_answers, 1);
  EXPECT_EQ(l.downs, 1);
  EXPECT_TRUE(eventually([&] { return l.ups == 2; })) << "it reconnects by itself";
  l.run([&] { l.link.stop(); });
  EXPECT_EQ(answers, 1);
}

// A link that gets no reply gives up by itself within a few seconds (a
// Redis that hangs must not hold, say, every connection's admission), then
// connects again.
TEST(RedisLink, ACommandLeftUnansweredDropsTheLinkByItself) {
  SilentLink l;
  std::atomic<int> null_answers{0};
  ASSERT_TRUE(eventually([&] { return l.ups == 1; }));
  const auto sent_at = std::chrono::steady_clock::now();
  l.run([&] {
    l.link.command({"EVAL", "return 1", "0"}, [&](const redisReply* r) { null_answers += r == nullptr; });
    l.link.command({"SET", "k", "v"});  // no callback of its own: still awaited
  });
  // The awaited callbacks get their nullptr first, then the down hook runs:
  // the test thread may look in between.
  ASSERT_TRUE(eventually([&] { return null_answers == 1; }, 10s));
  const auto waited = std::chrono::steady_clock::now() - sent_at;
  EXPECT_GE(waited, 2900ms);
  EXPECT_LT(waited, 6s);
  EXPECT_TRUE(eventually([&] { return l.downs == 1; })) << "the link was reported down";
  EXPECT_TRUE(eventually([&] { return l.ups == 2; })) << "it reconnects by itself";
  l.run([&] { l.link.stop(); });
}

TEST(RedisBus, UnreachableRedisAtStartIsDegradedNotFatal) {
  RedisServer redis;
  redis.stop();
  ReactorThread loop;
  Inbox at_a;
  RedisBus a(loop.reactor(), options(redis));
  a.set_receiver(std::ref(at_a));
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(a.healthy());
  a.publish(message("t", 1, {"u"}));
  EXPECT_EQ(at_a.count_messages(), 1u);
  EXPECT_EQ(at_a.resyncs, 0);
  redis.start();
  EXPECT_TRUE(eventually([&] { return a.healthy(); }, 20s));
  // Its sessions may have connected meanwhile, and other nodes' events of
  // that time are gone: the first subscription asks for a resync too.
  EXPECT_TRUE(at_a.wait_resyncs(1));
}

}  // namespace
}  // namespace parley
