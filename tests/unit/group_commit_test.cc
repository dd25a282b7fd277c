// GroupCommitWriter on its own: callbacks run once each, in the order the ops
// were queued, whether a batch is answered on the writer (small, nothing
// ahead of it) or on the completion thread (large, or behind another).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "store/group_commit.h"

namespace parley {
namespace {

TEST(GroupCommitWriter, CallbacksRunOnceInQueueOrderWhateverTheBatchSize) {
  std::atomic<int> slow_batches{0};
  GroupCommitWriter writer(64, [&](std::vector<GroupCommitWriter::Op>& batch) -> std::optional<Error> {
    for (auto& op : batch) op.apply();
    // Now and then a slow commit, so later ops pile up into large batches.
    if (batch.size() == 1 && slow_batches.fetch_add(1) % 50 == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return std::nullopt;
  });
  constexpr int kSubmitters = 3;
  constexpr int kOps = 3000;
  std::mutex mu;
  std::vector<std::vector<int>> seen(kSubmitters);
  std::vector<std::thread> submitters;
  for (int s = 0; s < kSubmitters; ++s) {
    submitters.emplace_back([&, s] {
      for (int i = 0; i < kOps; ++i) {
        writer.submit<int>([i] { return Result<int>(i); },
                           [&, s](Result<int> r) {
                             ASSERT_TRUE(r.ok());
                             std::lock_guard lock(mu);
                             seen[s].push_back(*r);
                           });
        if (i % 100 == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));
      }
    });
  }
  for (auto& t : submitters) t.join();
  writer.stop();
  for (int s = 0; s < kSubmitters; ++s) {
    ASSERT_EQ(seen[s].size(), static_cast<size_t>(kOps)) << "submitter " << s;
    for (int i = 0; i < kOps; ++i) ASSERT_EQ(seen[s][i], i) << "submitter " << s;
  }
  EXPECT_EQ(GroupCommitWriter::ops_in_flight(), 0);
}

TEST(GroupCommitWriter, ACallbackCannotWaitOnTheWriter) {
  GroupCommitWriter writer(8, [](std::vector<GroupCommitWriter::Op>& batch) -> std::optional<Error> {
    for (auto& op : batch) op.apply();
    return std::nullopt;
  });
  std::promise<Result<int>> inner;
  writer.submit<int>([] { return Result<int>(1); },
                     [&](Result<int>) { inner.set_value(writer.submit_and_wait<int>([] { return Result<int>(2); })); });
  auto got = inner.get_future().get();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code, "internal_error");
  writer.stop();
}

}  // namespace
}  // namespace parley
