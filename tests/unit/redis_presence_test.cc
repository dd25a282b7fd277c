// RedisPresenceDirectory against a real redis-server: two directories in one
// process stand for two nodes.
#include "redis/redis_presence.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"
#include "net/asio_reactor.h"
#include "redis_server.h"

namespace parley {
namespace {

bool ask_online(PresenceDirectory& d, const std::string& user) {
  std::promise<bool> p;
  d.node_online(user, [&p](bool first) { p.set_value(first); });
  return p.get_future().get();
}

bool ask_offline(PresenceDirectory& d, const std::string& user) {
  std::promise<bool> p;
  d.node_offline(user, [&p](bool last) { p.set_value(last); });
  return p.get_future().get();
}

RedisEndpoint endpoint(const RedisServer& redis) { return *RedisEndpoint::parse(redis.url()); }

// Two nodes on one Redis, as two directories in this process.
class PresenceOnTwoNodes : public ::testing::Test {
 protected:
  // Starts both and waits until both are connected; hooks are set before.
  void start() {
    a.start();
    b.start();
    ASSERT_TRUE(eventually([&] { return a.healthy() && b.healthy(); }));
  }

  RedisServer redis;
  ReactorThread loop;
  RedisPresenceDirectory a{loop.reactor(), endpoint(redis), "node-a"};
  RedisPresenceDirectory b{loop.reactor(), endpoint(redis), "node-b"};
};

TEST_F(PresenceOnTwoNodes, OnlineWhileAnyNodeHasTheUser) {
  start();
  EXPECT_TRUE(ask_online(a, "u1")) << "first node: the user comes online";
  EXPECT_FALSE(ask_online(b, "u1")) << "second node: already online";
  EXPECT_TRUE(eventually([&] { return a.known_online("u1") && b.known_online("u1"); }));
  EXPECT_FALSE(ask_offline(a, "u1")) << "still on node b";
  EXPECT_TRUE(b.known_online("u1"));
  EXPECT_TRUE(ask_offline(b, "u1")) << "last node: offline";
  EXPECT_TRUE(eventually([&] { return !a.known_online("u1") && !b.known_online("u1"); }));
}

// Push and calls ask whether a user has a connection open now: a user in
// one node's grace period is online (no offline announced yet) but not
// connected, at every other node.
TEST_F(PresenceOnTwoNodes, ConnectedElsewhereFollowsTheOtherNodesOpenConnections) {
  start();
  EXPECT_TRUE(ask_online(a, "u"));
  EXPECT_TRUE(eventually([&] { return b.known_connected_elsewhere("u"); }));
  EXPECT_FALSE(a.known_connected_elsewhere("u")) << "this node's own connections are not elsewhere";
  a.node_live("u", false);  // its last connection on a closed: the grace period
  EXPECT_TRUE(eventually([&] { return !b.known_connected_elsewhere("u"); }));
  EXPECT_TRUE(b.known_online("u")) << "still online until the grace period ends";
  a.node_live("u", true);  // back within the grace period
  EXPECT_TRUE(eventually([&] { return b.known_connected_elsewhere("u"); }));
  // A third node started now learns it from Redis, not from an announcement.
  RedisPresenceDirectory c(loop.reactor(), endpoint(redis), "node-c");
  c.start();
  EXPECT_TRUE(eventually([&] { return c.healthy() && c.known_connected_elsewhere("u"); }));
  EXPECT_TRUE(ask_offline(a, "u")) << "the grace period ended: the last node";
  EXPECT_TRUE(eventually([&] { return !b.known_connected_elsewhere("u") && !c.known_connected_elsewhere("u"); }));
  EXPECT_TRUE(eventually([&] { return !b.known_online("u") && !c.known_online("u"); }));
  c.close();
}

// A node of an older version (a rolling upgrade) keeps no set of its users
// with a connection open: its users count as connected, as they did.
TEST_F(PresenceOnTwoNodes, AnOlderNodesUsersCountAsConnected) {
  start();
  // What an older node leaves in Redis: a heartbeat and its users, nothing more.
  redis.cli("EVAL \"redis.call('SET','parley:node:node-old',1,'PX',60000); redis.call('SADD','parley:nodes','node-old'); "
            "redis.call('HSET','parley:conns:v','node-old',1); redis.call('SADD','parley:node-users:node-old','v'); "
            "redis.call('SADD','parley:online','v')\" 0");
  redis.cli("CLIENT KILL TYPE pubsub");  // b subscribes again, which reloads its copy
  EXPECT_TRUE(eventually([&] { return b.known_connected_elsewhere("v"); }));
  EXPECT_TRUE(ask_online(a, "u"));
  EXPECT_TRUE(eventually([&] { return b.known_connected_elsewhere("u"); }));
  a.node_live("u", false);
  EXPECT_TRUE(eventually([&] { return !b.known_connected_elsewhere("u"); })) << "a node that reports it is not taken for an older one";
}

// One node on its own Redis that records whom it is told went offline.
class Survivor : public ::testing::Test {
 protected:
  void SetUp() override {
    survivor.set_gone_hook([this](const std::string& user, int64_t last_heard) {
      std::lock_guard lock(mu);
      gone.push_back(user);
      heard[user] = last_heard;
    });
    survivor.start();
  }
  std::vector<std::string> gone_now() {
    std::lock_guard lock(mu);
    return gone;
  }

  RedisServer redis;
  ReactorThread loop;
  RedisPresenceDirectory survivor{loop.reactor(), endpoint(redis), "node-s"};
  std::mutex mu;
  std::vector<std::string> gone;
  std::map<std::string, int64_t> heard;  // user -> when their node was last heard of
};

TEST_F(Survivor, ADeadNodesUsersGoOfflineAtTheOthers) {
  {
    RedisPresenceDirectory doomed(loop.reactor(), endpoint(redis), "node-d");
    doomed.start();
    ASSERT_TRUE(eventually([&] { return doomed.healthy() && survivor.healthy(); }));
    EXPECT_TRUE(ask_online(doomed, "only-on-d"));
    EXPECT_TRUE(ask_online(doomed, "on-both"));
    EXPECT_FALSE(ask_online(survivor, "on-both"));
    ASSERT_TRUE(eventually([&] { return survivor.known_online("only-on-d"); }));
    ASSERT_TRUE(eventually([&] { return survivor.known_connected_elsewhere("on-both"); }));
    // Leaves without a word (as after kill -9): its heartbeat stops.
  }
  ASSERT_TRUE(eventually([&] { return !gone_now().empty(); }));
  std::this_thread::sleep_for(1500ms);  // a second report would come meanwhile
  EXPECT_EQ(gone_now(), std::vector<std::string>{"only-on-d"}) << "reported once; a user still on a live node is not";
  EXPECT_FALSE(survivor.known_online("only-on-d"));
  EXPECT_TRUE(survivor.known_online("on-both"));
  EXPECT_FALSE(survivor.known_connected_elsewhere("on-both")) << "nothing is open on a dead node";
  EXPECT_TRUE(eventually([&] { return redis.cli("HLEN parley:reaped") == "0\n"; })) << "announced, and said so";
}

// A node that cannot announce (starting, or stopped) does not reap: a dead
// node's users wait for one that can, rather than be taken off Redis by a
// reap whose announcement goes nowhere. Their last_seen is when their node
// was last heard of, however late the reap (the last node of a cluster
// stopped, and the next one started hours later).
TEST_F(Survivor, ANodeThatDoesNotReapLeavesTheDeadNodeToOneThatDoes) {
  survivor.set_reaping(false);
  int64_t died_at = 0;
  {
    RedisPresenceDirectory doomed(loop.reactor(), endpoint(redis), "node-d");
    doomed.start();
    ASSERT_TRUE(eventually([&] { return doomed.healthy() && survivor.healthy(); }));
    EXPECT_TRUE(ask_online(doomed, "only-on-d"));
    ASSERT_TRUE(eventually([&] { return survivor.known_online("only-on-d"); }));
    died_at = now_micros();
  }
  std::this_thread::sleep_for(5s);  // its heartbeat expired 3 s after it died
  EXPECT_EQ(gone_now(), std::vector<std::string>{});
  EXPECT_EQ(redis.cli("SISMEMBER parley:online only-on-d"), "1\n") << "not reaped";
  survivor.set_reaping(true);
  ASSERT_TRUE(eventually([&] { return !gone_now().empty(); }));
  EXPECT_EQ(gone_now(), std::vector<std::string>{"only-on-d"});
  std::lock_guard lock(mu);
  EXPECT_LE(heard["only-on-d"], died_at + 100'000) << "the reap's own time is 5 s later";
  EXPECT_GE(heard["only-on-d"], died_at - 1'500'000) << "its heartbeat, every second";
  EXPECT_EQ(redis.cli("HLEN parley:node-seen"), "1\n") << "only the survivor's is left";
}

// A reap whose reply went to a link its caller had given up on (Redis hung,
// then ran what was queued): the users it took offline are still owed their
// announcement, and the next reap, 2 s on, hands them out again; one who is
// back online by then is not.
TEST_F(Survivor, UsersOfAReapWhoseAnswerWasLostAreAnnouncedByALaterOne) {
  ASSERT_TRUE(eventually([&] { return survivor.healthy(); }));
  EXPECT_TRUE(ask_online(survivor, "back-online"));
  // What the lost reap left, 5 s ago: neither announced. And one from long
  // ago (an older version's leftovers), too late to announce.
  const std::string time = redis.cli("TIME");
  const int64_t now_ms = std::stoll(time) * 1000 + std::stoll(time.substr(time.find('\n') + 1)) / 1000;
  const std::string stamp = std::to_string(now_ms - 5000);
  redis.cli("HSET parley:reaped lost-user " + stamp + " back-online " + stamp + " long-ago 1");
  const int64_t seen_ms = now_ms - 7000;  // when the lost user's node was last heard of
  redis.cli("HSET parley:reaped-seen lost-user " + stamp + ":" + std::to_string(seen_ms) + " long-ago 1:1");
  // Left behind by reapers of an older version: a user no longer owed, a node gone.
  redis.cli("HSET parley:reaped-seen settled-user " + stamp + ":" + std::to_string(seen_ms));
  redis.cli("HSET parley:node-seen node-gone-long-ago 1");
  ASSERT_TRUE(eventually([&] { return !gone_now().empty(); }));
  std::this_thread::sleep_for(1500ms);  // a second report would come meanwhile
  EXPECT_EQ(gone_now(), std::vector<std::string>{"lost-user"}) << "once; not one a node has, nor one past 30 s";
  {
    std::lock_guard lock(mu);
    EXPECT_NEAR(heard["lost-user"], seen_ms * 1000, 100'000);
  }
  EXPECT_TRUE(eventually([&] { return redis.cli("HLEN parley:reaped") == "0\n"; }));
  EXPECT_TRUE(eventually([&] { return redis.cli("HLEN parley:reaped-seen") == "0\n"; }));
  EXPECT_EQ(redis.cli("HEXISTS parley:node-seen node-gone-long-ago"), "0\n");
  EXPECT_EQ(redis.cli("HLEN parley:node-seen"), "1\n") << "the survivor's own";
}

// A node removed after it stopped with its events published ('C' before its
// 'X') is no reason for the others to resync; one that went without saying
// so (killed, or its bus cut off) is.
TEST(RedisPresence, TheNodeGoneHookTellsADeathFromALeaving) {
  RedisServer redis;
  ReactorThread loop;
  RedisPresenceDirectory survivor(loop.reactor(), endpoint(redis), "node-s");
  std::mutex mu;
  std::vector<std::string> gone;
  survivor.set_node_gone_hook([&](const std::string& node) {
    std::lock_guard lock(mu);
    gone.push_back(node);
  });
  survivor.start();
  {
    RedisPresenceDirectory left(loop.reactor(), endpoint(redis), "node-left");
    RedisPresenceDirectory died(loop.reactor(), endpoint(redis), "node-died");
    left.start();
    died.start();
    ASSERT_TRUE(eventually([&] { return left.healthy() && died.healthy() && survivor.healthy(); }));
    EXPECT_TRUE(ask_online(left, "left-user"));
    left.close(/*published_all=*/true);
    died.close(/*published_all=*/false);
    // A node that stops gives its users the grace their connections had: its
    // heartbeat lasts 3 s more, so one who reconnects elsewhere meanwhile is
    // never taken offline.
    std::this_thread::sleep_for(1500ms);
    EXPECT_TRUE(survivor.known_online("left-user")) << "still online 1.5 s after its node stopped";
    std::lock_guard lock(mu);
    EXPECT_TRUE(gone.empty()) << "no node removed yet";
  }
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return !gone.empty();
  }));
  std::this_thread::sleep_for(1500ms);  // the other removal comes within a second
  std::lock_guard lock(mu);
  EXPECT_EQ(gone, std::vector<std::string>{"node-died"});
  EXPECT_EQ(redis.cli("SCARD parley:left"), "0\n") << "the reaper forgets who left";
}

TEST_F(PresenceOnTwoNodes, RedisRestartedEmptyGetsThisNodesUsersBack) {
  start();
  EXPECT_TRUE(ask_online(a, "u"));
  redis.stop();
  ASSERT_TRUE(eventually([&] { return !a.healthy(); }));
  redis.start();  // no persistence: it comes back empty
  ASSERT_TRUE(eventually([&] { return a.healthy() && b.healthy(); }, 20s));
  // Node a's first heartbeat finds its key gone and registers its user again,
  // a round trip later. Node b's copy may still say "u" from before the
  // restart until it reloads, so it is no sign that a is done: Redis is.
  ASSERT_TRUE(eventually([&] { return redis.cli("HEXISTS parley:conns:u node-a").find('1') != std::string::npos; }))
      << "node a registered its user again";
  EXPECT_TRUE(eventually([&] { return b.known_online("u"); }));
  EXPECT_FALSE(ask_online(b, "u")) << "node b sees the user on node a";
}

// Two nodes that record whom they announce offline, and a third that dies
// while Redis is away (stopped: no persistence, it comes back empty).
class LostWithRedis : public PresenceOnTwoNodes {
 protected:
  void SetUp() override {
    a.set_gone_hook(recorder());
    b.set_gone_hook(recorder());
    start();
  }
  std::function<void(const std::string&, int64_t)> recorder() {
    return [this](const std::string& user, int64_t) {
      std::lock_guard lock(mu);
      gone.push_back(user);
    };
  }
  std::vector<std::string> gone_now() {
    std::lock_guard lock(mu);
    return gone;
  }
  // Node d, with its user on-d, dies after Redis stopped.
  void a_node_dies_while_redis_is_away() {
    RedisPresenceDirectory doomed(loop.reactor(), endpoint(redis), "node-d");
    doomed.start();
    ASSERT_TRUE(eventually([&] { return doomed.healthy(); }));
    EXPECT_TRUE(ask_online(doomed, "on-d"));
    ASSERT_TRUE(eventually([&] { return a.known_online("on-d") && b.known_online("on-d"); }));
    redis.stop();
    ASSERT_TRUE(eventually([&] { return !a.healthy() && !b.healthy(); }));
  }

  std::mutex mu;
  std::vector<std::string> gone;
};

// Redis restarts empty while a node is dead: nothing in Redis remembers that
// node or its users, so no reaper finds them. The first node back announces
// offline those its copy had whom no live node registered again.
TEST_F(LostWithRedis, UsersOfANodeThatDiedWhileRedisWasAwayGoOfflineWhenItComesBackEmpty) {
  EXPECT_TRUE(ask_online(a, "on-a"));
  EXPECT_TRUE(ask_online(b, "on-b"));
  a_node_dies_while_redis_is_away();
  redis.start();
  ASSERT_TRUE(eventually([&] { return a.healthy() && b.healthy(); }, 20s));
  ASSERT_TRUE(eventually([&] { return !gone_now().empty(); }, 15s)) << "the dead node's user was announced offline";
  std::this_thread::sleep_for(1500ms);  // a second report would come meanwhile
  EXPECT_EQ(gone_now(), std::vector<std::string>{"on-d"}) << "once, by one node; the live nodes' users are not";
  EXPECT_FALSE(a.known_online("on-d"));
  EXPECT_TRUE(eventually([&] { return a.known_online("on-b") && b.known_online("on-a"); }));
}

// A node started while Redis was away has no copy of who was online: back
// first, it must not take the job of announcing the lost users (one SET NX)
// from the nodes that have one, or nobody announces them.
TEST_F(LostWithRedis, ANodeStartedWhileRedisWasAwayLeavesTheLostUsersToThoseWhoKnewThem) {
  a_node_dies_while_redis_is_away();
  // a and b now retry every 2 s; a node started meanwhile retries sooner,
  // so it is back first.
  std::this_thread::sleep_for(4s);
  RedisPresenceDirectory fresh(loop.reactor(), endpoint(redis), "node-n");
  fresh.set_gone_hook(recorder());
  fresh.start();
  std::this_thread::sleep_for(150ms);
  redis.start();
  ASSERT_TRUE(eventually([&] { return a.healthy() && b.healthy() && fresh.healthy(); }, 20s));
  ASSERT_TRUE(eventually([&] { return !gone_now().empty(); }, 15s)) << "the dead node's user was announced offline";
  EXPECT_EQ(gone_now(), std::vector<std::string>{"on-d"});
}

TEST_F(PresenceOnTwoNodes, ANodeReapedWhileCutOffRegistersItsUsersAgainAndSaysSo) {
  std::mutex mu;
  std::vector<std::string> back;
  a.set_back_hook([&](const std::string& user, bool elsewhere) {
    std::lock_guard lock(mu);
    if (!elsewhere) back.push_back(user);
  });
  start();
  EXPECT_TRUE(ask_online(a, "u"));
  ASSERT_TRUE(eventually([&] { return b.known_online("u"); }));
  // What another node's reaper does to a node whose heartbeat expired while
  // it was cut off, in one step, so the next heartbeat of node a finds it so.
  redis.cli(
      "EVAL \"redis.call('DEL','parley:node:node-a'); redis.call('HDEL','parley:conns:u','node-a'); "
      "redis.call('SREM','parley:online','u'); redis.call('DEL','parley:node-users:node-a'); "
      "redis.call('SREM','parley:nodes','node-a'); redis.call('PUBLISH','parley:presence','-u')\" 0");
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return !back.empty();
  })) << "node a noticed and registered its user again";
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(back, std::vector<std::string>{"u"});
  }
  EXPECT_TRUE(eventually([&] { return b.known_online("u"); })) << "online again at the other node";
  EXPECT_FALSE(ask_online(b, "u")) << "registered in Redis again";
  std::this_thread::sleep_for(1500ms);  // a second report would come meanwhile
  std::lock_guard lock(mu);
  EXPECT_EQ(back.size(), 1u) << "once";
}

// A blip shorter than the heartbeat's expiry: Redis keeps everything, but an
// offline sent while the link was down never arrived. Reconnecting repairs it.
TEST_F(PresenceOnTwoNodes, AnOfflineLostInABlipIsRepairedOnReconnect) {
  start();
  EXPECT_TRUE(ask_online(a, "u"));
  EXPECT_TRUE(ask_online(a, "stays"));
  EXPECT_TRUE(ask_offline(a, "u"));
  // What Redis holds when that offline's script was lost: u still on node a.
  redis.cli("EVAL \"redis.call('HSET','parley:conns:u','node-a',1); redis.call('SADD','parley:online','u'); "
            "redis.call('SADD','parley:node-users:node-a','u')\" 0");
  ASSERT_TRUE(eventually([&] { return b.known_online("u"); })) << "b's reload sees the stale state";
  redis.cli("CLIENT KILL TYPE normal");  // the blip: every command link drops and reconnects
  EXPECT_TRUE(eventually([&] { return redis.cli("HEXISTS parley:conns:u node-a").find('0') != std::string::npos; }))
      << "node a removed the field it no longer has";
  EXPECT_TRUE(eventually([&] { return !b.known_online("u"); })) << "offline at the other node too";
  EXPECT_TRUE(redis.cli("SISMEMBER parley:online u").find('0') != std::string::npos);
  EXPECT_TRUE(redis.cli("HEXISTS parley:conns:stays node-a").find('1') != std::string::npos) << "its own user kept";
  EXPECT_TRUE(b.known_online("stays"));
}

// Node a could not reach Redis when u's last connection there closed, so it
// announced u offline by itself; node b still has u. When a is back, Redis
// tells it another node holds u: a announces u online again (the back hook,
// `elsewhere`), and u stays online in Redis.
TEST_F(PresenceOnTwoNodes, AnOfflineAnnouncedWhileCutOffIsTakenBackWhenAnotherNodeHasTheUser) {
  std::mutex mu;
  std::vector<std::pair<std::string, bool>> back;
  a.set_back_hook([&](const std::string& user, bool elsewhere) {
    std::lock_guard lock(mu);
    back.emplace_back(user, elsewhere);
  });
  start();
  EXPECT_TRUE(ask_online(a, "u"));
  EXPECT_FALSE(ask_online(b, "u"));
  EXPECT_FALSE(ask_offline(a, "u"));
  // What Redis holds when a's offline never reached it: u still on node a.
  redis.cli("EVAL \"redis.call('HSET','parley:conns:u','node-a',1); redis.call('SADD','parley:node-users:node-a','u')\" 0");
  redis.cli("CLIENT KILL TYPE normal");  // a's links drop and reconnect
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return std::find(back.begin(), back.end(), std::make_pair(std::string("u"), true)) != back.end();
  })) << "announced online again";
  EXPECT_TRUE(redis.cli("HEXISTS parley:conns:u node-a").find('0') != std::string::npos);
  EXPECT_TRUE(redis.cli("HEXISTS parley:conns:u node-b").find('1') != std::string::npos);
  EXPECT_TRUE(b.known_online("u"));
}

}  // namespace
}  // namespace parley
