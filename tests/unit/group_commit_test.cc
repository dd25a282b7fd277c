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

// A failed batch leaves the store unhealthy until something commits: the
// probe, once a second while nothing is queued, clears it when the database
// is back, with no write needed; a writer without a probe waits for one.
TEST(GroupCommitWriter, AProbeClearsAFailureWithoutAWrite) {
  std::atomic<bool> down{true};
  std::atomic<int> probes{0};
  auto run = [&](std::vector<GroupCommitWriter::Op>& batch) -> std::optional<Error> {
    if (down) return Error{ErrorKind::kUnavailable, "storage_unavailable", "down"};
    for (auto& op : batch) op.apply();
    return std::nullopt;
  };
  GroupCommitWriter probed(8, run, [&](const std::function<bool()>&) -> std::optional<Error> {
    ++probes;
    if (down) return Error{ErrorKind::kUnavailable, "storage_unavailable", "down"};
    return std::nullopt;
  });
  GroupCommitWriter unprobed(8, run);
  for (auto* w : {&probed, &unprobed}) EXPECT_FALSE(w->submit_and_wait<int>([] { return Result<int>(1); }).ok());
  EXPECT_FALSE(probed.write_state().ok);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_GE(probes.load(), 1) << "probed while down";
  EXPECT_FALSE(probed.write_state().ok) << "still down";
  down = false;
  for (int i = 0; i < 40 && !probed.write_state().ok; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(probed.write_state().ok) << "back, with no write";
  EXPECT_FALSE(unprobed.write_state().ok) << "no probe: the next batch tells";
  const int after = probes.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(probes.load(), after) << "no probing while healthy";
  EXPECT_TRUE(unprobed.submit_and_wait<int>([] { return Result<int>(1); }).ok());
  EXPECT_TRUE(unprobed.write_state().ok);
  probed.stop();
  unprobed.stop();
}

}  // namespace
}  // namespace parley
