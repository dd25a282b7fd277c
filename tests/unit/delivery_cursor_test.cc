#include "chat/delivery_cursor.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace parley {
namespace {

const std::string kT = "thread-a";
const std::string kU = "thread-b";

FramePtr frame(int64_t seq) { return std::make_shared<const Frame>("m" + std::to_string(seq)); }

std::vector<std::string> texts(const std::vector<FramePtr>& frames) {
  std::vector<std::string> out;
  for (const auto& f : frames) out.push_back(*f);
  return out;
}

// Plays one replay the way a connection does: begin, every message of the
// read page through replayed(), end. Returns what went out, in order.
std::vector<std::string> replay(DeliveryCursor& c, const std::string& t, int64_t since, std::vector<int64_t> page) {
  std::vector<std::string> sent;
  int64_t last = since;
  for (int64_t seq : page) {
    last = seq;
    if (c.replayed(t, seq)) sent.push_back("m" + std::to_string(seq));
  }
  for (auto& s : texts(c.end_replay(t, since, last))) sent.push_back(s);
  return sent;
}

using Seqs = std::vector<std::string>;

TEST(DeliveryCursor, NothingSentYet) { EXPECT_EQ(DeliveryCursor().last_sent(kT), 0); }

TEST(DeliveryCursor, LiveInOrderSendsEachOnce) {
  DeliveryCursor c;
  for (int64_t s = 1; s <= 3; ++s) EXPECT_TRUE(c.live(kT, s, frame(s))) << s;
  EXPECT_EQ(c.last_sent(kT), 3);
}

TEST(DeliveryCursor, LiveRepeatsDropped) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 1, frame(1)));
  EXPECT_TRUE(c.live(kT, 2, frame(2)));
  EXPECT_FALSE(c.live(kT, 2, frame(2)));
  EXPECT_FALSE(c.live(kT, 1, frame(1)));
  EXPECT_TRUE(c.live(kT, 3, frame(3)));
  EXPECT_EQ(c.last_sent(kT), 3);
}

TEST(DeliveryCursor, LiveFirstMessageNeedNotBeSeqOne) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 41, frame(41)));
  EXPECT_FALSE(c.live(kT, 41, frame(41)));
  EXPECT_TRUE(c.live(kT, 42, frame(42)));
  EXPECT_EQ(c.last_sent(kT), 42);
}

TEST(DeliveryCursor, ThreadsAreIndependent) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 5, frame(5)));
  EXPECT_TRUE(c.live(kU, 1, frame(1)));
  EXPECT_EQ(c.last_sent(kT), 5);
  EXPECT_EQ(c.last_sent(kU), 1);
  c.begin_replay(kU, 1);
  EXPECT_TRUE(c.live(kT, 6, frame(6))) << "a replay of another thread must not hold this one";
  EXPECT_FALSE(c.live(kU, 2, frame(2)));  // held
  EXPECT_EQ(texts(c.end_replay(kU, 1, 1)), Seqs({"m2"}));
}

TEST(DeliveryCursor, LiveDuringReplayIsHeldAndFlushedAfterInOrder) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 4, frame(4)));
  EXPECT_FALSE(c.live(kT, 5, frame(5)));
  // The replay read 1..3 (committed before 4 and 5).
  EXPECT_TRUE(c.replayed(kT, 1));
  EXPECT_TRUE(c.replayed(kT, 2));
  EXPECT_TRUE(c.replayed(kT, 3));
  EXPECT_EQ(texts(c.end_replay(kT, 0, 3)), Seqs({"m4", "m5"}));
  EXPECT_EQ(c.last_sent(kT), 5);
}

TEST(DeliveryCursor, HeldMessagesTheReplayAlsoReadAreNotSentTwice) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 2, frame(2)));
  EXPECT_FALSE(c.live(kT, 3, frame(3)));
  EXPECT_FALSE(c.live(kT, 4, frame(4)));
  // The replay's read saw 1..3; 4 committed after it.
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), Seqs({"m1", "m2", "m3", "m4"}));
  EXPECT_EQ(c.last_sent(kT), 4);
  EXPECT_FALSE(c.live(kT, 4, frame(4)));
  EXPECT_TRUE(c.live(kT, 5, frame(5)));
}

TEST(DeliveryCursor, HeldFramesSortedBySeq) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 3, frame(3)));
  EXPECT_FALSE(c.live(kT, 2, frame(2)));
  EXPECT_EQ(texts(c.end_replay(kT, 0, 1)), Seqs({"m2", "m3"}));
}

TEST(DeliveryCursor, LiveSentBeforeReplayIsNotReplayedAgain) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 5, frame(5)));
  EXPECT_TRUE(c.live(kT, 6, frame(6)));
  EXPECT_EQ(replay(c, kT, 2, {3, 4, 5, 6, 7}), Seqs({"m3", "m4", "m7"}));
  EXPECT_EQ(c.last_sent(kT), 7);
  EXPECT_FALSE(c.live(kT, 7, frame(7)));
  EXPECT_TRUE(c.live(kT, 8, frame(8)));
}

TEST(DeliveryCursor, ReplayFromBeforeEverythingSentLiveFillsTheGapOnly) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 3, frame(3)));
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), Seqs({"m1", "m2"}));
  EXPECT_EQ(c.last_sent(kT), 3);
  // A second full replay sends nothing again.
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), Seqs({}));
}

TEST(DeliveryCursor, ReplayAfterLastSentSendsOnlyNewer) {
  DeliveryCursor c;
  for (int64_t s = 1; s <= 3; ++s) ASSERT_TRUE(c.live(kT, s, frame(s)));
  c.begin_replay(kT, 3);
  EXPECT_FALSE(c.live(kT, 5, frame(5)));
  EXPECT_TRUE(c.replayed(kT, 4));
  EXPECT_EQ(texts(c.end_replay(kT, 3, 4)), Seqs({"m5"}));
  EXPECT_EQ(c.last_sent(kT), 5);
}

TEST(DeliveryCursor, ReplayWithNothingToReadFlushesHeld) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 1, frame(1)));
  // The replay's read ran before message 1 committed: it saw nothing.
  EXPECT_EQ(texts(c.end_replay(kT, 0, 0)), Seqs({"m1"}));
  EXPECT_EQ(c.last_sent(kT), 1);
}

TEST(DeliveryCursor, EmptyReplayLeavesLastSentAlone) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 1, frame(1)));
  EXPECT_TRUE(c.live(kT, 2, frame(2)));
  EXPECT_EQ(replay(c, kT, 2, {}), Seqs({}));
  EXPECT_EQ(c.last_sent(kT), 2);
  EXPECT_TRUE(c.live(kT, 3, frame(3)));
}

TEST(DeliveryCursor, EmptyReplayOnFreshThread) {
  DeliveryCursor c;
  EXPECT_EQ(replay(c, kT, 0, {}), Seqs({}));
  EXPECT_EQ(c.last_sent(kT), 0);
  EXPECT_TRUE(c.live(kT, 1, frame(1)));
}

TEST(DeliveryCursor, LastSentAfterReplayIsHighestReplayed) {
  DeliveryCursor c;
  EXPECT_EQ(replay(c, kT, 10, {11, 12}), Seqs({"m11", "m12"}));
  EXPECT_EQ(c.last_sent(kT), 12);
  EXPECT_FALSE(c.live(kT, 12, frame(12)));
  EXPECT_TRUE(c.live(kT, 13, frame(13)));
}

TEST(DeliveryCursor, OverlappingReplaysSameSinceSendEachOnce) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 4, frame(4)));
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), Seqs({"m1", "m2", "m3"}));  // first ends: others still running
  EXPECT_FALSE(c.live(kT, 5, frame(5)));                             // still held
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3, 4}), Seqs({"m4", "m5"}));
  EXPECT_EQ(c.last_sent(kT), 5);
}

TEST(DeliveryCursor, OverlappingReplaysWiderFinishingLast) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  c.begin_replay(kT, 2);
  // The wider replay (since 0) answers first.
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3, 4}), Seqs({"m1", "m2", "m3", "m4"}));
  EXPECT_EQ(replay(c, kT, 2, {3, 4}), Seqs({}));
  EXPECT_EQ(c.last_sent(kT), 4);
}

TEST(DeliveryCursor, OverlappingReplaysNarrowFinishingFirstStillSendsEverything) {
  // A client subscribes with since_seq 3, then (say, after a UI reset) with
  // since_seq 0; the narrower replay's page comes back first.
  DeliveryCursor c;
  c.begin_replay(kT, 3);
  c.begin_replay(kT, 0);
  EXPECT_EQ(replay(c, kT, 3, {4, 5}), Seqs({"m4", "m5"}));
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3, 4, 5}), Seqs({"m1", "m2", "m3"}));
  EXPECT_EQ(c.last_sent(kT), 5);
}

TEST(DeliveryCursor, OverlappingReplaysEmptyNarrowFirstDoesNotHideWiderOne) {
  DeliveryCursor c;
  c.begin_replay(kT, 5);
  c.begin_replay(kT, 0);
  EXPECT_EQ(replay(c, kT, 5, {}), Seqs({}));  // nothing after 5
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3, 4, 5}), Seqs({"m1", "m2", "m3", "m4", "m5"}));
}

}  // namespace
}  // namespace parley
