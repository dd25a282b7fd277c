// The per-user connection limit and the failed-login limits counted across
// nodes on a real redis-server: two limiters in one process stand for two nodes.
#include "redis/redis_connection_limiter.h"
#include "redis/redis_login_limits.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <memory>

#include "net/asio_reactor.h"
#include "redis_server.h"

namespace parley {
namespace {

RedisEndpoint endpoint(const RedisServer& redis) { return *RedisEndpoint::parse(redis.url()); }

bool acquire(ConnectionLimiter& limiter, const std::string& user) {
  std::promise<bool> p;
  limiter.acquire(user, [&p](bool admitted) { p.set_value(admitted); });
  return p.get_future().get();
}

// Both nodes' heartbeats (RedisPresenceDirectory sets them in the server).
void heartbeats(const RedisServer& redis) { redis.cli("MSET parley:node:node-a 1 parley:node:node-b 1"); }

struct TwoNodes {
  RedisServer redis;
  ReactorThread loop;
  RedisConnectionLimiter a, b;
  explicit TwoNodes(int limit)
      : a(loop.reactor(), endpoint(redis), "node-a", limit), b(loop.reactor(), endpoint(redis), "node-b", limit) {
    heartbeats(redis);
    a.start();
    b.start();
  }
  // The limiters connect asynchronously; a field written shows both are up.
  void wait_up() {
    for (auto* l : {&a, &b}) {
      ASSERT_TRUE(eventually([&] {
        acquire(*l, "probe");  // admitted, through Redis or (not up yet) by this node alone
        bool written = redis.cli("HLEN parley:user-conns:probe").find('1') != std::string::npos;
        l->release("probe");
        return written;
      }));
      ASSERT_TRUE(eventually([&] { return redis.cli("HLEN parley:user-conns:probe").find('0') != std::string::npos; }));
    }
  }
};

TEST(RedisConnectionLimiter, ConnectionsSpreadOverNodesStopAtTheLimit) {
  TwoNodes n(3);
  n.wait_up();
  EXPECT_TRUE(acquire(n.a, "u"));
  EXPECT_TRUE(acquire(n.a, "u"));
  EXPECT_TRUE(acquire(n.b, "u"));
  EXPECT_FALSE(acquire(n.b, "u")) << "the 4th, on the node that has one";
  EXPECT_FALSE(acquire(n.a, "u")) << "the 4th, on the node that has two";
  EXPECT_TRUE(acquire(n.b, "other")) << "per user";
  n.a.release("u");
  EXPECT_TRUE(eventually([&] { return acquire(n.b, "u"); })) << "a released one makes room on the other node";
  EXPECT_FALSE(acquire(n.a, "u"));
}

TEST(RedisConnectionLimiter, ConcurrentConnectsOnTwoNodesNeverPassTheLimit) {
  TwoNodes n(5);
  n.wait_up();
  std::atomic<int> admitted{0}, answered{0};
  for (int i = 0; i < 12; ++i) {
    for (auto* l : {&n.a, &n.b}) {
      l->acquire("u", [&](bool ok) {
        admitted += ok;
        ++answered;
      });
    }
  }
  ASSERT_TRUE(eventually([&] { return answered.load() == 24; }));
  EXPECT_EQ(admitted.load(), 5);
}

TEST(RedisConnectionLimiter, ADeadNodesConnectionsStopCounting) {
  TwoNodes n(2);
  n.wait_up();
  EXPECT_TRUE(acquire(n.a, "u"));
  EXPECT_TRUE(acquire(n.a, "u"));
  EXPECT_FALSE(acquire(n.b, "u"));
  n.redis.cli("DEL parley:node:node-a");  // node a's heartbeat expired
  EXPECT_TRUE(acquire(n.b, "u"));
  EXPECT_TRUE(acquire(n.b, "u"));
  EXPECT_FALSE(acquire(n.b, "u")) << "node b's own count still counts";
}

TEST(RedisConnectionLimiter, WithRedisDownEachNodeLimitsItsOwnAndRedisGetsTheCountsBack) {
  TwoNodes n(2);
  n.wait_up();
  n.redis.stop();
  EXPECT_TRUE(eventually([&] { return acquire(n.a, "u"); }));
  EXPECT_TRUE(acquire(n.a, "u"));
  EXPECT_FALSE(acquire(n.a, "u")) << "this node's own limit still holds";
  n.redis.start();  // empty: no persistence
  heartbeats(n.redis);
  EXPECT_TRUE(eventually([&] { return n.redis.cli("HGET parley:user-conns:u node-a").find('2') != std::string::npos; },
                         20s))
      << "node a wrote its counts again";
  EXPECT_FALSE(acquire(n.b, "u")) << "and they count at node b";
}

TEST(RedisLoginLimits, FailuresSpreadOverNodesLockTheAccountOnEveryNode) {
  RedisServer redis;
  RedisLoginLimits a(endpoint(redis), 5s, 3, 100, 900), b(endpoint(redis), 5s, 3, 100, 900);
  EXPECT_TRUE(a.admit("acct", "10.0.0.1", 1000));
  EXPECT_TRUE(b.admit("acct", "10.0.0.2", 1001));
  EXPECT_TRUE(a.admit("acct", "10.0.0.3", 1002));
  EXPECT_FALSE(b.admit("acct", "10.0.0.4", 1003)) << "three failures over two nodes";
  EXPECT_FALSE(a.admit("acct", "10.0.0.4", 1003));
  EXPECT_TRUE(a.admit("other", "10.0.0.4", 1003)) << "per account";
  EXPECT_TRUE(b.admit("acct", "10.0.0.4", 1000 + 900)) << "the oldest left the window";
}

TEST(RedisLoginLimits, ASuccessClearsTheAccountOnEveryNode) {
  RedisServer redis;
  RedisLoginLimits a(endpoint(redis), 5s, 3, 100, 900), b(endpoint(redis), 5s, 3, 100, 900);
  EXPECT_TRUE(a.admit("acct", "x", 1000));
  EXPECT_TRUE(a.admit("acct", "x", 1001));
  EXPECT_TRUE(b.admit("acct", "y", 1002));
  b.record_success("acct", "y", 1002);
  EXPECT_TRUE(a.admit("acct", "x", 1003));
  EXPECT_TRUE(b.admit("acct", "x", 1004));
  EXPECT_TRUE(a.admit("acct", "x", 1005));
  EXPECT_FALSE(b.admit("acct", "x", 1006));
}

TEST(RedisLoginLimits, PerAddressAcrossNodes) {
  RedisServer redis;
  RedisLoginLimits a(endpoint(redis), 5s, 100, 2, 900), b(endpoint(redis), 5s, 100, 2, 900);
  EXPECT_TRUE(a.admit("one", "10.0.0.9", 1000));
  EXPECT_TRUE(b.admit("two", "10.0.0.9", 1000));
  EXPECT_FALSE(a.admit("three", "10.0.0.9", 1000));
}

TEST(RedisLoginLimits, WithRedisDownEachNodeCountsWhatItSawAndNobodyIsLockedOut) {
  RedisServer redis;
  RedisLoginLimits a(endpoint(redis), 250ms, 3, 100, 900), b(endpoint(redis), 250ms, 3, 100, 900);
  EXPECT_TRUE(a.admit("acct", "x", 1000));
  EXPECT_TRUE(a.admit("acct", "x", 1001));
  redis.stop();
  EXPECT_TRUE(a.admit("acct", "x", 1002)) << "node a's own count: 2 before the outage";
  EXPECT_FALSE(a.admit("acct", "x", 1003)) << "the limit still holds on node a";
  EXPECT_TRUE(b.admit("acct", "x", 1003)) << "node b saw none: a Redis outage locks nobody out";
  EXPECT_TRUE(b.admit("fresh", "x", 1003));
  redis.start();  // empty again
  std::this_thread::sleep_for(1100ms);  // past the client's reconnect pause
  EXPECT_TRUE(eventually([&] {
    return a.admit("back", "x", 1004) && redis.cli("ZCARD parley:login-fail:account:back").find('1') != std::string::npos;
  })) << "counted in Redis again";
}

}  // namespace
}  // namespace parley
