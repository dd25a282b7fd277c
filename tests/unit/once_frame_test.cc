// OnceFrame (bus/bus.h): an event's frame is made once, whichever loops ask
// for it at the same time, and a make() that throws is retried by the next.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "bus/bus.h"

namespace parley {
namespace {

TEST(OnceFrame, MadeOnceForThreadsAskingTogether) {
  for (int round = 0; round < 200; ++round) {
    OnceFrame once;
    std::atomic<int> made{0};
    std::atomic<bool> go{false};
    std::vector<const Frame*> seen(4, nullptr);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < seen.size(); ++t) {
      threads.emplace_back([&, t] {
        while (!go.load()) std::this_thread::yield();
        const FramePtr& f = once.get([&] {
          made.fetch_add(1);
          std::this_thread::yield();  // widen the window for the others
          return std::make_shared<const Frame>(std::string("{\"type\":\"x\"}"));
        });
        seen[t] = f.get();
      });
    }
    go.store(true);
    for (auto& th : threads) th.join();
    ASSERT_EQ(made.load(), 1) << "round " << round;
    for (const Frame* f : seen) {
      ASSERT_NE(f, nullptr);
      EXPECT_EQ(f, seen[0]);
      EXPECT_EQ(*f, "{\"type\":\"x\"}");
    }
  }
}

TEST(OnceFrame, AMakeThatThrowsIsRetried) {
  OnceFrame once;
  EXPECT_THROW(once.get([]() -> FramePtr { throw std::runtime_error("no memory"); }), std::runtime_error);
  int calls = 0;
  const FramePtr& f = once.get([&] {
    ++calls;
    return std::make_shared<const Frame>(std::string("ok"));
  });
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(*f, "ok");
  once.get([&] {
    ++calls;
    return FramePtr();
  });
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace parley
