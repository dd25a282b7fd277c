// RedisPollForwarder against a real redis-server: two forwarders in one
// process stand for two nodes; the owner's serve hook stands for its
// Engine.IO sessions.
#include "redis/redis_poll_forwarder.h"

#include <gtest/gtest.h>

#include <future>
#include <memory>
#include <mutex>
#include <vector>

#include "net/asio_reactor.h"
#include "redis_server.h"

namespace parley {
namespace {

RedisEndpoint endpoint(const RedisServer& redis) { return *RedisEndpoint::parse(redis.url()); }

// Forwards and waits (bounded) for the outcome; nullopt inside: given up.
std::optional<std::optional<PollAnswer>> forward_and_wait(PollForwarder& from, const std::string& node, PollRequest req,
                                                          std::chrono::milliseconds deadline,
                                                          std::chrono::seconds limit = 15s) {
  auto p = std::make_shared<std::promise<std::optional<PollAnswer>>>();
  auto f = p->get_future();
  from.forward(node, std::move(req), deadline, [p](std::optional<PollAnswer> a) { p->set_value(std::move(a)); });
  if (f.wait_for(limit) != std::future_status::ready) return std::nullopt;
  return f.get();
}

// An owner that holds every request until the test answers it.
struct HeldRequests {
  std::mutex mu;
  std::vector<std::pair<PollRequest, PollForwarder::AnswerFn>> held;
  size_t size() {
    std::lock_guard lock(mu);
    return held.size();
  }
};

TEST(SidOwner, NamesTheNodeOfOurSidsOnly) {
  EXPECT_EQ(sid_owner(node_sid("3f2a9c1e0b7d4a66", "0b1c-22")), "3f2a9c1e0b7d4a66");
  EXPECT_EQ(sid_owner("0b1c2d3e-0000-4000-8000-000000000000"), "") << "a plain uuid (embedded server)";
  EXPECT_EQ(sid_owner(".abc"), "");
  EXPECT_EQ(sid_owner("node.with space"), "") << "the wire between nodes splits on spaces";
  EXPECT_EQ(sid_owner("node.x\nQ1"), "");
  EXPECT_EQ(sid_owner("n." + std::string(200, 'a')), "");
}

TEST(RedisPollForwarder, ARequestAndItsAnswerTravelByteForByte) {
  RedisServer redis;
  ReactorThread loop;
  RedisPollForwarder a(loop.reactor(), endpoint(redis), "node-a"), b(loop.reactor(), endpoint(redis), "node-b");
  b.serve_with([](PollRequest r, PollForwarder::AnswerFn answer) {
    answer(PollAnswer{r.post ? 200 : 400, "text/plain; charset=UTF-8", (r.post ? "P|" : "G|") + r.sid + "|" + r.body});
  });
  a.start();
  b.start();
  ASSERT_TRUE(eventually([&] { return a.healthy() && b.healthy(); }));
  std::string body = "4{\"a b\"}\x1e" "42[\"x\",\"line\\nbreak\"]\nQ9 node-x G sid\n";
  auto post = forward_and_wait(a, "node-b", PollRequest{true, "node-b.s1", body}, 5s);
  ASSERT_TRUE(post && *post);
  EXPECT_EQ((*post)->status, 200);
  EXPECT_EQ((*post)->content_type, "text/plain; charset=UTF-8");
  EXPECT_EQ((*post)->body, "P|node-b.s1|" + body);
  auto get = forward_and_wait(a, "node-b", PollRequest{false, "node-b.s2", ""}, 5s);
  ASSERT_TRUE(get && *get);
  EXPECT_EQ((*get)->status, 400);
  EXPECT_EQ((*get)->body, "G|node-b.s2|");
}

TEST(RedisPollForwarder, ANodeNobodyRunsIsGivenUpAtOnce) {
  RedisServer redis;
  ReactorThread loop;
  RedisPollForwarder a(loop.reactor(), endpoint(redis), "node-a");
  a.start();
  ASSERT_TRUE(eventually([&] { return a.healthy(); }));
  // A deadline far beyond the wait: only "nobody got the PUBLISH" can answer in time.
  auto r = forward_and_wait(a, "node-gone", PollRequest{false, "node-gone.s", ""}, 600s, 10s);
  ASSERT_TRUE(r) << "never answered";
  EXPECT_FALSE(*r);
}

TEST(RedisPollForwarder, AHeldRequestIsGivenUpWhenTheOwnerLeavesRedis) {
  RedisServer redis;
  ReactorThread loop;
  RedisPollForwarder a(loop.reactor(), endpoint(redis), "node-a");
  auto held = std::make_shared<HeldRequests>();
  auto b = std::make_unique<RedisPollForwarder>(loop.reactor(), endpoint(redis), "node-b");
  b->serve_with([held](PollRequest r, PollForwarder::AnswerFn answer) {
    std::lock_guard lock(held->mu);
    held->held.emplace_back(std::move(r), std::move(answer));
  });
  a.start();
  b->start();
  ASSERT_TRUE(eventually([&] { return a.healthy() && b->healthy(); }));
  auto p = std::make_shared<std::promise<std::optional<PollAnswer>>>();
  auto f = p->get_future();
  a.forward("node-b", PollRequest{false, "node-b.s", ""}, 600s, [p](std::optional<PollAnswer> x) { p->set_value(std::move(x)); });
  ASSERT_TRUE(eventually([&] { return held->size() == 1; })) << "the owner holds the poll";
  EXPECT_EQ(f.wait_for(1500ms), std::future_status::timeout) << "still held while the owner lives";
  b.reset();  // the owner goes away (its subscription closes, as a killed process's would)
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready) << "given up once the owner's channel has no subscriber";
  EXPECT_FALSE(f.get());
  // The owner's answer after that goes nowhere, and harms nothing.
  std::lock_guard lock(held->mu);
  held->held[0].second(PollAnswer{200, "text/plain", "late"});
}

TEST(RedisPollForwarder, TheDeadlineGivesUpAndALateAnswerIsDropped) {
  RedisServer redis;
  ReactorThread loop;
  RedisPollForwarder a(loop.reactor(), endpoint(redis), "node-a"), b(loop.reactor(), endpoint(redis), "node-b");
  auto held = std::make_shared<HeldRequests>();
  b.serve_with([held](PollRequest r, PollForwarder::AnswerFn answer) {
    if (r.sid == "node-b.hold") {
      std::lock_guard lock(held->mu);
      held->held.emplace_back(std::move(r), std::move(answer));
      return;
    }
    answer(PollAnswer{200, "text/plain", "now"});
  });
  a.start();
  b.start();
  ASSERT_TRUE(eventually([&] { return a.healthy() && b.healthy(); }));
  auto r = forward_and_wait(a, "node-b", PollRequest{false, "node-b.hold", ""}, 1500ms);
  ASSERT_TRUE(r) << "never answered";
  EXPECT_FALSE(*r) << "given up at the deadline";
  {
    std::lock_guard lock(held->mu);
    ASSERT_EQ(held->held.size(), 1u);
    held->held[0].second(PollAnswer{200, "text/plain", "too late"});
  }
  auto next = forward_and_wait(a, "node-b", PollRequest{false, "node-b.other", ""}, 5s);
  ASSERT_TRUE(next && *next);
  EXPECT_EQ((*next)->body, "now") << "the late answer was not taken for this one";
}

TEST(RedisPollForwarder, RequestsFromOneNodeReachTheOwnerInTheOrderSent) {
  RedisServer redis;
  ReactorThread loop;
  RedisPollForwarder a(loop.reactor(), endpoint(redis), "node-a"), b(loop.reactor(), endpoint(redis), "node-b");
  std::mutex mu;
  std::vector<std::string> seen;
  b.serve_with([&](PollRequest r, PollForwarder::AnswerFn answer) {
    {
      std::lock_guard lock(mu);
      seen.push_back(r.body);
    }
    answer(PollAnswer{200, "text/html", "ok"});
  });
  a.start();
  b.start();
  ASSERT_TRUE(eventually([&] { return a.healthy() && b.healthy(); }));
  constexpr int kRequests = 200;
  std::atomic<int> ok{0};
  for (int i = 0; i < kRequests; ++i)
    a.forward("node-b", PollRequest{true, "node-b.s", std::to_string(i)}, 10s, [&ok](std::optional<PollAnswer> x) {
      if (x && x->body == "ok") ok.fetch_add(1);
    });
  ASSERT_TRUE(eventually([&] { return ok.load() == kRequests; }));
  std::lock_guard lock(mu);
  ASSERT_EQ(seen.size(), static_cast<size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(seen[i], std::to_string(i));
}

}  // namespace
}  // namespace parley
