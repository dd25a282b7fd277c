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
  for (const auto& f : frames) out.emplace_back(f->payload());
  return out;
}

// What abandon released, answers marked "sent…" by their own text.
std::vector<std::string> texts(const DeliveryCursor::Abandoned& a) {
  std::vector<std::string> out;
  for (const auto& [f, answer] : a.frames) out.emplace_back(f->payload());
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
  for (auto& s : texts(c.end_replay(t, since, last).frames)) sent.push_back(s);
  return sent;
}

using Seqs = std::vector<std::string>;

TEST(DeliveryCursor, NothingSentYet) { EXPECT_EQ(DeliveryCursor().last_sent(kT), 0); }

TEST(DeliveryCursor, LiveInOrderSendsEachOnce) {
  DeliveryCursor c;
  for (int64_t s = 1; s <= 3; ++s) EXPECT_TRUE(c.live(kT, s, frame(s)).send) << s;
  EXPECT_EQ(c.last_sent(kT), 3);
}

TEST(DeliveryCursor, LiveRepeatsDropped) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 1, frame(1)).send);
  EXPECT_TRUE(c.live(kT, 2, frame(2)).send);
  EXPECT_FALSE(c.live(kT, 2, frame(2)).send);
  EXPECT_FALSE(c.live(kT, 1, frame(1)).send);
  EXPECT_TRUE(c.live(kT, 3, frame(3)).send);
  EXPECT_EQ(c.last_sent(kT), 3);
}

TEST(DeliveryCursor, LiveFirstMessageNeedNotBeSeqOne) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 41, frame(41)).send);
  EXPECT_FALSE(c.live(kT, 41, frame(41)).send);
  EXPECT_TRUE(c.live(kT, 42, frame(42)).send);
  EXPECT_EQ(c.last_sent(kT), 42);
}

// Several nodes: seq 3, committed on this node, can arrive before 1 and 2
// from other nodes. The first message is held and a fill reads what came
// before it (the connection skips what predates it); 1 and 2 arriving live
// afterwards are not sent again.
TEST(DeliveryCursor, FirstMessageWithAWindowIsHeldAndFilledFromBefore) {
  DeliveryCursor c;
  c.fill_before_first(32);
  auto d = c.live(kT, 3, frame(3));
  EXPECT_FALSE(d.send);
  EXPECT_TRUE(d.first);
  EXPECT_EQ(d.fill_from, 0);
  EXPECT_FALSE(c.live(kT, 1, frame(1)).send);  // held while the fill runs
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), (Seqs{"m1", "m2", "m3"}));
  EXPECT_FALSE(c.live(kT, 2, frame(2)).send);
  EXPECT_TRUE(c.live(kT, 4, frame(4)).send);
  // A deep thread: the fill looks back 32 seqs, not to the start.
  auto deep = c.live(kU, 1000, frame(1000));
  EXPECT_TRUE(deep.first);
  EXPECT_EQ(deep.fill_from, 1000 - 1 - 32);
  // Seq 1 first needs no fill.
  DeliveryCursor fresh;
  fresh.fill_before_first(32);
  EXPECT_TRUE(fresh.live(kT, 1, frame(1)).send);
}

TEST(DeliveryCursor, ThreadsAreIndependent) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 5, frame(5)).send);
  EXPECT_TRUE(c.live(kU, 1, frame(1)).send);
  EXPECT_EQ(c.last_sent(kT), 5);
  EXPECT_EQ(c.last_sent(kU), 1);
  c.begin_replay(kU, 1);
  EXPECT_TRUE(c.live(kT, 6, frame(6)).send) << "a replay of another thread must not hold this one";
  EXPECT_FALSE(c.live(kU, 2, frame(2)).send);  // held
  EXPECT_EQ(texts(c.end_replay(kU, 1, 1).frames), Seqs({"m2"}));
}

TEST(DeliveryCursor, LiveDuringReplayIsHeldAndFlushedAfterInOrder) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 4, frame(4)).send);
  EXPECT_FALSE(c.live(kT, 5, frame(5)).send);
  // The replay read 1..3 (committed before 4 and 5).
  EXPECT_TRUE(c.replayed(kT, 1));
  EXPECT_TRUE(c.replayed(kT, 2));
  EXPECT_TRUE(c.replayed(kT, 3));
  EXPECT_EQ(texts(c.end_replay(kT, 0, 3).frames), Seqs({"m4", "m5"}));
  EXPECT_EQ(c.last_sent(kT), 5);
}

TEST(DeliveryCursor, HeldMessagesTheReplayAlsoReadAreNotSentTwice) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 2, frame(2)).send);
  EXPECT_FALSE(c.live(kT, 3, frame(3)).send);
  EXPECT_FALSE(c.live(kT, 4, frame(4)).send);
  // The replay's read saw 1..3; 4 committed after it.
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), Seqs({"m1", "m2", "m3", "m4"}));
  EXPECT_EQ(c.last_sent(kT), 4);
  EXPECT_FALSE(c.live(kT, 4, frame(4)).send);
  EXPECT_TRUE(c.live(kT, 5, frame(5)).send);
}

TEST(DeliveryCursor, HeldFramesSortedBySeq) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 3, frame(3)).send);
  EXPECT_FALSE(c.live(kT, 2, frame(2)).send);
  EXPECT_EQ(texts(c.end_replay(kT, 0, 1).frames), Seqs({"m2", "m3"}));
}

TEST(DeliveryCursor, LiveSentBeforeReplayIsNotReplayedAgain) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 5, frame(5)).send);
  EXPECT_TRUE(c.live(kT, 6, frame(6)).send);
  EXPECT_EQ(replay(c, kT, 2, {3, 4, 5, 6, 7}), Seqs({"m3", "m4", "m7"}));
  EXPECT_EQ(c.last_sent(kT), 7);
  EXPECT_FALSE(c.live(kT, 7, frame(7)).send);
  EXPECT_TRUE(c.live(kT, 8, frame(8)).send);
}

TEST(DeliveryCursor, ReplayFromBeforeEverythingSentLiveFillsTheGapOnly) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 3, frame(3)).send);
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), Seqs({"m1", "m2"}));
  EXPECT_EQ(c.last_sent(kT), 3);
  // A second full replay sends nothing again.
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), Seqs({}));
}

TEST(DeliveryCursor, ReplayAfterLastSentSendsOnlyNewer) {
  DeliveryCursor c;
  for (int64_t s = 1; s <= 3; ++s) ASSERT_TRUE(c.live(kT, s, frame(s)).send);
  c.begin_replay(kT, 3);
  EXPECT_FALSE(c.live(kT, 5, frame(5)).send);
  EXPECT_TRUE(c.replayed(kT, 4));
  EXPECT_EQ(texts(c.end_replay(kT, 3, 4).frames), Seqs({"m5"}));
  EXPECT_EQ(c.last_sent(kT), 5);
}

TEST(DeliveryCursor, ReplayWithNothingToReadFlushesHeld) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 1, frame(1)).send);
  // The replay's read ran before message 1 committed: it saw nothing.
  EXPECT_EQ(texts(c.end_replay(kT, 0, 0).frames), Seqs({"m1"}));
  EXPECT_EQ(c.last_sent(kT), 1);
}

TEST(DeliveryCursor, EmptyReplayLeavesLastSentAlone) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 1, frame(1)).send);
  EXPECT_TRUE(c.live(kT, 2, frame(2)).send);
  EXPECT_EQ(replay(c, kT, 2, {}), Seqs({}));
  EXPECT_EQ(c.last_sent(kT), 2);
  EXPECT_TRUE(c.live(kT, 3, frame(3)).send);
}

TEST(DeliveryCursor, EmptyReplayOnFreshThread) {
  DeliveryCursor c;
  EXPECT_EQ(replay(c, kT, 0, {}), Seqs({}));
  EXPECT_EQ(c.last_sent(kT), 0);
  EXPECT_TRUE(c.live(kT, 1, frame(1)).send);
}

// A client up to date (since_seq 5 is the thread's last): the replay reads
// nothing, yet the client has 1..5. On several nodes seqs 6..40 may come late
// (their node was cut off Redis) after seq 41: that is a gap to fill from 5,
// not a thread's first message, whose fill looks back only 32 seqs.
TEST(DeliveryCursor, AReplayThatFoundNothingAfterSinceSeqStillSetsThePosition) {
  DeliveryCursor c;
  c.fill_before_first(32);
  c.begin_replay(kT, 5);
  c.caught_up(kT, 5);
  EXPECT_TRUE(c.end_replay(kT, 5, 5).frames.empty());
  EXPECT_EQ(c.last_sent(kT), 5);
  auto d = c.live(kT, 41, frame(41));
  EXPECT_FALSE(d.send);
  EXPECT_FALSE(d.first);
  EXPECT_EQ(d.fill_from, 5);
  std::vector<int64_t> missed;
  for (int64_t seq = 6; seq <= 41; ++seq) missed.push_back(seq);
  Seqs sent = replay(c, kT, 5, missed);
  ASSERT_EQ(sent.size(), 36u);
  EXPECT_EQ(sent.front(), "m6");
  EXPECT_EQ(sent.back(), "m41");
  EXPECT_FALSE(c.live(kT, 6, frame(6)).send) << "a late event of the cut-off node";
  // Past what the client has, a message sent live stands; a lower claim changes nothing.
  c.caught_up(kT, 3);
  EXPECT_EQ(c.last_sent(kT), 41);
  c.caught_up(kT, 0);
  DeliveryCursor fresh;
  fresh.caught_up(kU, 0);
  EXPECT_EQ(fresh.threads(), 0u) << "nothing claimed: no entry";
}

TEST(DeliveryCursor, LastSentAfterReplayIsHighestReplayed) {
  DeliveryCursor c;
  EXPECT_EQ(replay(c, kT, 10, {11, 12}), Seqs({"m11", "m12"}));
  EXPECT_EQ(c.last_sent(kT), 12);
  EXPECT_FALSE(c.live(kT, 12, frame(12)).send);
  EXPECT_TRUE(c.live(kT, 13, frame(13)).send);
}

// A client acknowledges each message as it comes: those of a replay that
// is still reading (its next page, or past an ended membership) count as
// sent before last_sent moves.
TEST(DeliveryCursor, WhatARunningReplaySentWasSent) {
  DeliveryCursor c;
  c.begin_catch_up(kT);
  EXPECT_TRUE(c.replayed(kT, 3));
  EXPECT_TRUE(c.replayed(kT, 4));
  EXPECT_EQ(c.last_sent(kT), 0);
  EXPECT_TRUE(c.was_sent(kT, 3));
  EXPECT_TRUE(c.was_sent(kT, 4));
  EXPECT_FALSE(c.was_sent(kT, 2));
  EXPECT_FALSE(c.was_sent(kT, 5));
  EXPECT_FALSE(c.was_sent("other", 3));
  c.end_replay(kT, 2, 4);
  EXPECT_TRUE(c.was_sent(kT, 4));
  EXPECT_FALSE(c.was_sent(kT, 5));
  EXPECT_FALSE(c.was_sent(kT, 2)) << "below what this connection was sent";
  EXPECT_FALSE(c.was_sent(kT, 0));
}

TEST(DeliveryCursor, OverlappingReplaysSameSinceSendEachOnce) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 4, frame(4)).send);
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), Seqs({"m1", "m2", "m3"}));  // first ends: others still running
  EXPECT_FALSE(c.live(kT, 5, frame(5)).send);                             // still held
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

TEST(DeliveryCursor, OverlappingReplaysInterleavedPagesSendEachOnce) {
  // A thread longer than a replay page, subscribed twice at once: one
  // replay's page goes out while the other has sent a page and reads its next.
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  c.begin_replay(kT, 2);
  Seqs sent;
  auto page = [&](std::vector<int64_t> seqs) {
    for (int64_t seq : seqs)
      if (c.replayed(kT, seq)) sent.push_back("m" + std::to_string(seq));
  };
  page({1, 2, 3});  // since 0, page 1
  page({3, 4, 5});  // since 2, page 1
  page({4, 5, 6});  // since 0, page 2 (the last)
  for (auto& s : texts(c.end_replay(kT, 0, 6).frames)) sent.push_back(s);
  page({6});        // since 2, page 2 (the last)
  for (auto& s : texts(c.end_replay(kT, 2, 6).frames)) sent.push_back(s);
  EXPECT_EQ(sent, Seqs({"m1", "m2", "m3", "m4", "m5", "m6"}));
  EXPECT_EQ(c.last_sent(kT), 6);
}

TEST(DeliveryCursor, OverlappingReplaysAroundALiveRangeSendTheRestOnce) {
  DeliveryCursor c;
  for (int64_t s = 5; s <= 6; ++s) EXPECT_TRUE(c.live(kT, s, frame(s)).send);
  c.begin_replay(kT, 0);
  c.begin_replay(kT, 1);
  Seqs sent;
  for (int64_t seq : {1, 2, 3})
    if (c.replayed(kT, seq)) sent.push_back("m" + std::to_string(seq));
  for (int64_t seq : {2, 3, 4, 5, 6, 7})
    if (c.replayed(kT, seq)) sent.push_back("m" + std::to_string(seq));
  for (auto& s : texts(c.end_replay(kT, 1, 7).frames)) sent.push_back(s);
  for (int64_t seq : {4, 5, 6, 7})
    if (c.replayed(kT, seq)) sent.push_back("m" + std::to_string(seq));
  for (auto& s : texts(c.end_replay(kT, 0, 7).frames)) sent.push_back(s);
  EXPECT_EQ(sent, Seqs({"m1", "m2", "m3", "m4", "m7"}));
  EXPECT_EQ(c.last_sent(kT), 7);
}

// ---- gaps: the bus missed events, the store fills them

TEST(DeliveryCursor, GapHoldsTheMessageAndAsksForAFillFromLastSent) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_TRUE(c.live(kT, 2, frame(2)).send);
  auto d = c.live(kT, 5, frame(5));
  EXPECT_FALSE(d.send);
  EXPECT_EQ(d.fill_from, 2);
  EXPECT_EQ(c.last_sent(kT), 2) << "nothing past the gap counts as sent before the fill";
  // The fill reads 3..5 from the store: 3 and 4 go out from it, 5 too (held
  // frame 5 is then a duplicate and dropped).
  EXPECT_EQ(replay(c, kT, 2, {3, 4, 5}), Seqs({"m3", "m4", "m5"}));
  EXPECT_EQ(c.last_sent(kT), 5);
  EXPECT_FALSE(c.live(kT, 5, frame(5)).send);
  EXPECT_TRUE(c.live(kT, 6, frame(6)).send);
}

TEST(DeliveryCursor, NoGapMeansNoFill) {
  DeliveryCursor c;
  for (int64_t s = 1; s <= 4; ++s) EXPECT_EQ(c.live(kT, s, frame(s)).fill_from, -1) << s;
}

TEST(DeliveryCursor, LiveMessagesDuringAFillAreHeldThenSentOnce) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 3, frame(3)).fill_from, 1);
  auto d = c.live(kT, 4, frame(4));
  EXPECT_FALSE(d.send);
  EXPECT_EQ(d.fill_from, -1) << "one fill at a time per thread";
  EXPECT_FALSE(c.live(kT, 3, frame(3)).send);  // a late duplicate from another publisher
  // The fill's read saw 2..3 (4 committed after it).
  EXPECT_EQ(replay(c, kT, 1, {2, 3}), Seqs({"m2", "m3", "m4"}));
  EXPECT_EQ(c.last_sent(kT), 4);
}

TEST(DeliveryCursor, ReorderedEventsFromTwoNodesStillGoOutInOrderOnce) {
  // Node A publishes 2, node B publishes 3; B's reaches this node first.
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 3, frame(3)).fill_from, 1);
  EXPECT_FALSE(c.live(kT, 2, frame(2)).send);  // held during the fill
  EXPECT_EQ(replay(c, kT, 1, {2, 3}), Seqs({"m2", "m3"}));
  EXPECT_FALSE(c.live(kT, 2, frame(2)).send);
  EXPECT_FALSE(c.live(kT, 3, frame(3)).send);
}

TEST(DeliveryCursor, HeldFramesWithAGapLeftAfterTheFillStartAnotherFill) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 3, frame(3)).fill_from, 1);
  EXPECT_FALSE(c.live(kT, 6, frame(6)).send);
  // The fill read 2..3 only; 4 and 5 are still missing before held 6.
  EXPECT_TRUE(c.replayed(kT, 2));
  EXPECT_TRUE(c.replayed(kT, 3));
  auto end = c.end_replay(kT, 1, 3);
  EXPECT_TRUE(end.frames.empty());
  EXPECT_EQ(end.fill_from, 3);
  EXPECT_EQ(replay(c, kT, 3, {4, 5, 6}), Seqs({"m4", "m5", "m6"}));
  EXPECT_EQ(c.last_sent(kT), 6);
}

TEST(DeliveryCursor, OwnMessagesAdvanceTheCursorWithoutBeingSent) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  auto own = c.live(kT, 2, nullptr);
  EXPECT_FALSE(own.send);
  EXPECT_EQ(own.fill_from, -1);
  EXPECT_EQ(c.last_sent(kT), 2);
  auto next = c.live(kT, 3, frame(3));
  EXPECT_TRUE(next.send) << "the connection's own message is not a gap";
  EXPECT_EQ(next.fill_from, -1);
}

TEST(DeliveryCursor, OwnMessageInsideAFillIsNotSentBack) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 3, nullptr).fill_from, 1);  // 2 was lost; 3 is this connection's own
  EXPECT_EQ(replay(c, kT, 1, {2, 3}), Seqs({"m2"}));
  EXPECT_EQ(c.last_sent(kT), 3);
  EXPECT_TRUE(c.live(kT, 4, frame(4)).send);
}

std::vector<FramePtr> answer(int64_t seq) { return {std::make_shared<const Frame>("sent" + std::to_string(seq))}; }

TEST(DeliveryCursor, AnswerWithNoReplayRunningGoesOutAtOnce) {
  DeliveryCursor c;
  auto a = answer(1);
  EXPECT_FALSE(c.hold_answer(kT, 1, a));
  EXPECT_EQ(a.size(), 1u) << "not moved from";
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  c.begin_replay(kT, 1);
  auto past = answer(1);
  EXPECT_FALSE(c.hold_answer(kT, 1, past)) << "a seq already behind what was sent";
}

TEST(DeliveryCursor, AnswerDuringAReplayTakesItsSeqsPlace) {
  // The replay read 1..3 before the own message 5 committed; 4 came live.
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 4, frame(4)).send);
  EXPECT_FALSE(c.live(kT, 5, nullptr).send);
  auto a = answer(5);
  EXPECT_TRUE(c.hold_answer(kT, 5, a));
  EXPECT_FALSE(c.live(kT, 6, frame(6)).send);
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), Seqs({"m1", "m2", "m3", "m4", "sent5", "m6"}));
  EXPECT_EQ(c.last_sent(kT), 6);
}

TEST(DeliveryCursor, AnswerBeforeItsOwnEventIsHeldOnce) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  auto a = answer(3);
  EXPECT_TRUE(c.hold_answer(kT, 3, a));
  EXPECT_FALSE(c.replayed(kT, 3)) << "never sent back as new_message";
  EXPECT_FALSE(c.live(kT, 3, nullptr).send);  // the own event, after its answer
  EXPECT_EQ(replay(c, kT, 0, {1, 2}), Seqs({"m1", "m2", "sent3"}));
  EXPECT_EQ(c.last_sent(kT), 3);
  EXPECT_TRUE(c.live(kT, 4, frame(4)).send);
}

TEST(DeliveryCursor, AReplayThatReachesTheOwnMessageTakesItsAnswer) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  auto a = answer(2);
  EXPECT_TRUE(c.hold_answer(kT, 2, a));
  EXPECT_TRUE(c.replayed(kT, 1));
  EXPECT_TRUE(c.take_answer(kT, 1).empty());
  EXPECT_EQ(texts(c.take_answer(kT, 2)), Seqs({"sent2"}));
  EXPECT_FALSE(c.replayed(kT, 2));
  EXPECT_TRUE(c.replayed(kT, 3));
  EXPECT_TRUE(c.end_replay(kT, 0, 3).frames.empty()) << "the answer went out once, at its place";
  EXPECT_EQ(c.last_sent(kT), 3);
}

TEST(DeliveryCursor, AnAnswerPastAGapWaitsForTheFill) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 10, frame(10)).send);
  c.begin_replay(kT, 10);  // reads nothing
  auto a = answer(12);
  EXPECT_TRUE(c.hold_answer(kT, 12, a));  // 11 (another node's) has not come yet
  auto end = c.end_replay(kT, 10, 10);
  EXPECT_TRUE(end.frames.empty()) << "not ahead of 11";
  ASSERT_EQ(end.fill_from, 10);
  EXPECT_EQ(replay(c, kT, 10, {11, 12}), Seqs({"m11", "sent12"}));
}

TEST(DeliveryCursor, AnAbandonedFillStillAnswers) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 3, frame(3)).fill_from, 1);
  auto a = answer(4);
  EXPECT_TRUE(c.hold_answer(kT, 4, a));
  auto abandoned = c.abandon(kT);
  EXPECT_EQ(texts(abandoned), Seqs({"m3", "sent4"}));
  ASSERT_EQ(abandoned.frames.size(), 2u);
  EXPECT_FALSE(abandoned.frames[0].second);
  EXPECT_TRUE(abandoned.frames[1].second) << "the answer is marked as one";
  c.forget_left(kT, abandoned.epoch);
  EXPECT_EQ(c.threads(), 0u);
}

// A member removed on another node: the store refuses the gap's fill, but the
// events addressed to them as a member (the removal notice among them) still
// arrive, out of order. Each goes out once; none is dropped, none is filled.
TEST(DeliveryCursor, AThreadWhoseFillIsRefusedPassesItsLateMessagesThroughOnce) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 4, frame(4)).fill_from, 1);
  auto abandoned = c.abandon(kT);
  EXPECT_EQ(texts(abandoned), Seqs({"m4"}));
  auto late = c.live(kT, 3, frame(3));
  EXPECT_TRUE(late.send);
  EXPECT_EQ(late.fill_from, -1) << "the store would refuse it";
  EXPECT_TRUE(c.live(kT, 2, frame(2)).send);
  EXPECT_FALSE(c.live(kT, 3, frame(3)).send) << "once";
  EXPECT_FALSE(c.live(kT, 1, frame(1)).send) << "sent before the refusal";
  EXPECT_TRUE(c.begin_resync().empty()) << "no fill of a thread the user left";
  c.forget_left(kT, abandoned.epoch + 1);
  EXPECT_EQ(c.threads(), 1u) << "another pass-through's timer leaves this one";
  c.forget_left(kT, abandoned.epoch);
  EXPECT_EQ(c.threads(), 0u);
  // Added again and subscribing: a thread like any other.
  c.begin_replay(kT, 0);
  EXPECT_TRUE(c.replayed(kT, 1));
  EXPECT_TRUE(c.end_replay(kT, 0, 1).frames.empty());
  EXPECT_EQ(c.live(kT, 3, frame(3)).fill_from, 1);
}

// Removed while this node was cut off from the others (the resync's fill is
// refused), then added back: the messages that then pass through are the
// member's. When the pass-through ends, a fill from where it began sends
// what it missed (an event lost meanwhile) and skips what it sent; the next
// message follows on. (Forgotten instead, on several nodes the next
// message's first fill began 32 seqs back and sent them all again.)
TEST(DeliveryCursor, APassThroughThatCarriedNewerMessagesEndsInAFillNotAForgetting) {
  DeliveryCursor c;
  c.fill_before_first(32);
  ASSERT_TRUE(c.begin_unseen_fill(kT));
  EXPECT_EQ(replay(c, kT, 0, {1, 2}), Seqs({"m1", "m2"}));
  auto resync = c.begin_resync();
  ASSERT_EQ(resync.size(), 1u);
  EXPECT_EQ(resync[0].second, 2);
  auto abandoned = c.abandon(kT);  // the fill from 2 refused: removed meanwhile
  EXPECT_TRUE(abandoned.frames.empty());
  for (int64_t s : {3, 4, 5, 7, 8, 9}) EXPECT_TRUE(c.live(kT, s, frame(s)).send) << s;  // added back; 6 lost
  EXPECT_EQ(c.forget_left(kT, abandoned.epoch), 2) << "a fill from where the pass-through began";
  EXPECT_EQ(c.threads(), 1u);
  EXPECT_FALSE(c.live(kT, 10, frame(10)).send) << "held behind the fill";
  EXPECT_EQ(replay(c, kT, 2, {3, 4, 5, 6, 7, 8, 9, 10}), Seqs({"m6", "m10"})) << "only what it missed, then the held one";
  EXPECT_EQ(c.last_sent(kT), 10);
  auto next = c.live(kT, 11, frame(11));
  EXPECT_TRUE(next.send) << "follows on";
  EXPECT_EQ(next.fill_from, -1);
  EXPECT_FALSE(c.live(kT, 5, frame(5)).send) << "a stray older one, once";
}

// The pass-through sent nothing past what abandon released: forgotten, no fill.
TEST(DeliveryCursor, APassThroughOfStrayEventsOnlyIsForgotten) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 4, frame(4)).fill_from, 1);
  auto abandoned = c.abandon(kT);
  EXPECT_TRUE(c.live(kT, 3, frame(3)).send);
  EXPECT_EQ(c.forget_left(kT, abandoned.epoch), -1);
  EXPECT_EQ(c.threads(), 0u);
}

// A fill whose first page went out and whose next read was refused: what
// the first page sent is not sent again, neither from what was held nor by
// the pass-through.
TEST(DeliveryCursor, ARefusedFillDoesNotSendAgainWhatItsFirstPageSent) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 5, frame(5)).fill_from, 1);
  EXPECT_TRUE(c.live(kT, 3, frame(3)).fill_from < 0);  // held behind the fill
  EXPECT_TRUE(c.replayed(kT, 2));
  EXPECT_TRUE(c.replayed(kT, 3));  // the first page reached 3; the next read is refused
  EXPECT_EQ(texts(c.abandon(kT)), Seqs({"m5"})) << "3 went out with the page";
  EXPECT_FALSE(c.live(kT, 2, frame(2)).send);
  EXPECT_TRUE(c.live(kT, 4, frame(4)).send);
}

TEST(DeliveryCursor, FillThatReadNothingAsksForAnotherFill) {
  // A fill whose read failed (store down) ends with nothing read: the held
  // frames cannot be sent before the gap, so another fill is asked for.
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 3, frame(3)).fill_from, 1);
  auto end = c.end_replay(kT, 1, 1);
  EXPECT_TRUE(end.frames.empty());
  EXPECT_EQ(end.fill_from, 1);
  EXPECT_EQ(replay(c, kT, 1, {2, 3}), Seqs({"m2", "m3"}));
}

TEST(DeliveryCursor, ResyncFillsEveryThreadWithoutAReplayRunning) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 4, frame(4)).send);
  ASSERT_TRUE(c.live(kU, 9, frame(9)).send);
  c.begin_replay(kU, 0);
  auto fills = c.begin_resync();
  ASSERT_EQ(fills.size(), 1u);
  EXPECT_EQ(fills[0], std::make_pair(kT, int64_t{4}));
  // The bus lost 5 and 6 of kT and nothing else comes: the fill finds them.
  EXPECT_EQ(replay(c, kT, 4, {5, 6}), Seqs({"m5", "m6"}));
  EXPECT_EQ(replay(c, kU, 0, {}), Seqs({}));
  EXPECT_EQ(c.last_sent(kT), 6);
}

// A replay that read its last page before the bus lost messages of its
// thread would end without them, and nothing later need show the gap: the
// resync's fill begins when that replay ends.
TEST(DeliveryCursor, ResyncDuringAReplayFillsWhenItEnds) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 4, frame(4)).send);
  c.begin_replay(kT, 0);
  EXPECT_TRUE(c.begin_resync().empty()) << "the replay is running";
  auto end = c.end_replay(kT, 0, 4);
  EXPECT_TRUE(end.frames.empty());
  EXPECT_EQ(end.fill_from, 4) << "the resync's fill, from what was sent";
  EXPECT_EQ(replay(c, kT, 4, {5}), Seqs({"m5"}));
  c.begin_replay(kT, 5);
  EXPECT_EQ(c.end_replay(kT, 5, 5).fill_from, -1) << "only once";
}

TEST(DeliveryCursor, ResyncSkipsThreadsNothingWasSentOn) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_EQ(replay(c, kT, 0, {}), Seqs({}));
  EXPECT_TRUE(c.begin_resync().empty());
}

// After a resync, a thread nothing was sent on is read from a window before
// its last seq; what the fill reads starts the sent range, and live messages
// that come meanwhile wait for it.
TEST(DeliveryCursor, UnseenFillStartsAThreadNothingWasSentOn) {
  DeliveryCursor c;
  c.fill_before_first(32);
  ASSERT_TRUE(c.begin_unseen_fill(kT));
  EXPECT_FALSE(c.begin_unseen_fill(kT)) << "one fill at a time";
  EXPECT_FALSE(c.live(kT, 8, frame(8)).send) << "held behind the fill";
  EXPECT_EQ(replay(c, kT, 4, {5, 6, 7}), Seqs({"m5", "m6", "m7", "m8"}));
  EXPECT_EQ(c.last_sent(kT), 8);
  EXPECT_TRUE(c.live(kT, 9, frame(9)).send);
}

// A live message that comes while the resync's thread list is read takes
// the thread's entry before the unseen fill can: its first fill looks back
// as far as the unseen fill would have, not the narrower first window.
TEST(DeliveryCursor, FirstMessageDuringAnUnseenReadFillsTheUnseenWindow) {
  DeliveryCursor c;
  c.fill_before_first(32);
  c.begin_unseen_read(500);
  auto d = c.live(kT, 1000, frame(1000));
  EXPECT_TRUE(d.first);
  EXPECT_EQ(d.fill_from, 1000 - 1 - 500);
  EXPECT_FALSE(c.begin_unseen_fill(kT)) << "the live message's fill covers it";
  c.end_unseen_read();
  EXPECT_EQ(c.live(kU, 1000, frame(1000)).fill_from, 1000 - 1 - 32) << "back to the first window";
  c.end_unseen_read();  // an extra end changes nothing
  EXPECT_EQ(c.live("thread-c", 1000, frame(1000)).fill_from, 1000 - 1 - 32);
}

TEST(DeliveryCursor, UnseenFillLeavesThreadsWithAnEntryAlone) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  EXPECT_FALSE(c.begin_unseen_fill(kT)) << "begin_resync fills it";
  ASSERT_TRUE(c.begin_unseen_fill(kU));
  EXPECT_EQ(replay(c, kU, 0, {}), Seqs({}));
  EXPECT_EQ(c.threads(), 1u) << "a fill that found nothing leaves no entry";
}

TEST(DeliveryCursor, SkippingAGapSendsTheHeldFramesInOrder) {
  DeliveryCursor c;
  ASSERT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 4, frame(4)).fill_from, 1);
  EXPECT_FALSE(c.live(kT, 3, frame(3)).send);
  EXPECT_FALSE(c.live(kT, 3, frame(3)).send);
  EXPECT_EQ(texts(c.skip_gap(kT)), Seqs({"m3", "m4"})) << "once each, in seq order";
  EXPECT_EQ(c.last_sent(kT), 4);
  EXPECT_TRUE(c.live(kT, 5, frame(5)).send);
}

FramePtr change(const std::string& text) { return std::make_shared<const Frame>(text); }

TEST(DeliveryCursor, ChangesGoOutAtOnceWithNoReplayRunning) {
  DeliveryCursor c;
  EXPECT_TRUE(c.changed(kT, change("deleted 1"))) << "nothing sent on the thread yet";
  EXPECT_TRUE(c.live(kT, 1, frame(1)).send);
  EXPECT_TRUE(c.changed(kT, change("deleted 1")));
}

// A message deleted while a replay of its thread runs: the page (read before
// the deletion) and a live message encoded before it go out first, the
// deletion after, so the client ends with the message deleted.
TEST(DeliveryCursor, ChangesWaitForTheReplayAndComeAfterItsHeldMessages) {
  DeliveryCursor c;
  c.begin_replay(kT, 0);
  EXPECT_FALSE(c.live(kT, 3, frame(3)).send);
  EXPECT_FALSE(c.changed(kT, change("deleted 2")));
  EXPECT_FALSE(c.changed(kT, change("deleted 3")));
  EXPECT_TRUE(c.changed(kU, change("other thread"))) << "no replay runs on that thread";
  EXPECT_EQ(replay(c, kT, 0, {1, 2, 3}), Seqs({"m1", "m2", "m3", "deleted 2", "deleted 3"}));
  EXPECT_TRUE(c.changed(kT, change("deleted 1")));
}

TEST(DeliveryCursor, ChangesHeldUntilNoGapIsLeft) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 1, frame(1)).send);
  auto d = c.live(kT, 4, frame(4));  // 2 and 3 lost: a fill from 1
  ASSERT_EQ(d.fill_from, 1);
  EXPECT_FALSE(c.changed(kT, change("edited 4")));
  // The fill read only seq 2: still a gap before 4, so nothing goes out yet.
  EXPECT_TRUE(c.replayed(kT, 2));
  auto end = c.end_replay(kT, 1, 2);
  EXPECT_TRUE(end.frames.empty());
  ASSERT_EQ(end.fill_from, 2);
  EXPECT_TRUE(c.replayed(kT, 3));
  EXPECT_EQ(texts(c.end_replay(kT, 2, 3).frames), Seqs({"m4", "edited 4"}));
  EXPECT_TRUE(c.changed(kT, change("edited 4 again")));
}

TEST(DeliveryCursor, SkippingAGapReleasesTheHeldChangesLast) {
  DeliveryCursor c;
  EXPECT_TRUE(c.live(kT, 1, frame(1)).send);
  ASSERT_EQ(c.live(kT, 3, frame(3)).fill_from, 1);
  EXPECT_FALSE(c.changed(kT, change("deleted 3")));
  EXPECT_EQ(texts(c.skip_gap(kT)), Seqs({"m3", "deleted 3"}));
}

// A client may subscribe to any id; a refused replay (not a participant) must
// not leave an entry per id behind for the connection's lifetime.
TEST(DeliveryCursor, AReplayThatSentNothingLeavesNoEntry) {
  DeliveryCursor c;
  for (int i = 0; i < 100; ++i) {
    std::string id = "no-such-thread-" + std::to_string(i);
    c.begin_replay(id, 0);
    EXPECT_TRUE(c.end_replay(id, 0, 0).frames.empty());
  }
  EXPECT_EQ(c.threads(), 0u);
  EXPECT_TRUE(c.live(kT, 1, frame(1)).send);
  EXPECT_EQ(replay(c, kT, 1, {}), Seqs{});
  EXPECT_EQ(c.threads(), 1u) << "a thread with messages sent keeps its entry";
  EXPECT_EQ(c.last_sent(kT), 1);
}

// A first fill that gives way to the client's replay (Connection::replay_send
// stops it once subscribes() moves) ends with what it went through; should
// that replay fail, the fill is resumed from where it stopped, and the held
// first message waits behind it.
TEST(DeliveryCursor, AFillThatGaveWayIsResumedWhenTheReplayFails) {
  DeliveryCursor c;
  c.fill_before_first(32);
  auto d = c.live(kT, 50, frame(50));  // the first live message: held, a fill begins
  ASSERT_GE(d.fill_from, 0);
  EXPECT_EQ(c.subscribes(kT), 0u);
  c.begin_replay(kT, 10);  // the client subscribes
  EXPECT_EQ(c.subscribes(kT), 1u);
  // The fill had sent 40 and 41, then gives way.
  EXPECT_TRUE(c.replayed(kT, 40));
  EXPECT_TRUE(c.replayed(kT, 41));
  c.gave_way(kT, 41, 0);
  EXPECT_TRUE(c.end_replay(kT, 39, 41).frames.empty());  // the client's replay still runs
  // Its read fails: the fill goes on from 41, before the replay ends.
  auto resume = c.resume_fill(kT);
  ASSERT_EQ(resume.from, 41);
  EXPECT_TRUE(c.end_replay(kT, 10, 10).frames.empty());  // the failed replay: nothing read
  EXPECT_EQ(replay(c, kT, 41, {42, 43, 44, 45, 46, 47, 48, 49, 50}),
            (std::vector<std::string>{"m42", "m43", "m44", "m45", "m46", "m47", "m48", "m49", "m50"}));
  EXPECT_EQ(c.resume_fill(kT).from, -1) << "resumed once";
}

TEST(DeliveryCursor, AFillThatGaveWayIsDroppedWhenTheReplayEndsWell) {
  DeliveryCursor c;
  c.fill_before_first(32);
  c.live(kT, 50, frame(50));
  c.begin_replay(kT, 10);
  c.gave_way(kT, 17, 0);
  EXPECT_TRUE(c.end_replay(kT, 17, 17).frames.empty());
  c.drop_gave_way(kT);
  EXPECT_EQ(c.resume_fill(kT).from, -1);
}

// A Socket.IO catch-up holds the thread's live messages like a replay, but is
// not the client's: subscribes() stays, so the client's own subscribe_thread
// stops it (Connection::replay_send). What it sent before stopping is not
// sent again; the client's replay sends the rest, then the held live message.
TEST(DeliveryCursor, ACatchUpGivesWayToTheClientsReplay) {
  DeliveryCursor c;
  c.begin_catch_up(kT);
  EXPECT_EQ(c.subscribes(kT), 0u);
  EXPECT_FALSE(c.live(kT, 9, frame(9)).send) << "held behind the catch-up";
  EXPECT_TRUE(c.replayed(kT, 3));  // the catch-up, from 2, sent 3
  c.begin_replay(kT, 1);           // the client asks from 1
  EXPECT_EQ(c.subscribes(kT), 1u);
  EXPECT_TRUE(c.end_replay(kT, 2, 3).frames.empty()) << "the client's replay still runs";
  EXPECT_EQ(replay(c, kT, 1, {2, 3, 4, 5, 6, 7, 8}), (Seqs{"m2", "m4", "m5", "m6", "m7", "m8", "m9"}));
  EXPECT_EQ(c.last_sent(kT), 9);
}

}  // namespace
}  // namespace parley
