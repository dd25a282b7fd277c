#include "chat/change_watermark.h"
#include "chat/newest_change.h"

#include <gtest/gtest.h>

namespace parley {
namespace {

TEST(ChangeWatermark, AdvancesThroughContiguousNumbersOnly) {
  ChangeWatermark w(10);
  EXPECT_EQ(w.through(), 10);
  w.received(11);
  EXPECT_EQ(w.through(), 11);
  w.received(13);  // 12 is still on its way (another node's event)
  w.received(14);
  EXPECT_EQ(w.through(), 11);
  w.received(12);
  EXPECT_EQ(w.through(), 14);
  w.received(9);  // older than the start, or a repeat: nothing
  w.received(14);
  EXPECT_EQ(w.through(), 14);
}

// A resync answers the number the connections re-read after (below the
// first missing one), then counts everything received so far as received.
TEST(ChangeWatermark, ResyncReadsFromTheFirstHoleThenMovesPastWhatCame) {
  ChangeWatermark w(0);
  w.received(1);
  w.received(3);  // 2 was lost with the bus
  w.received(5);
  EXPECT_EQ(w.resync(), 1);
  EXPECT_EQ(w.through(), 5);
  w.received(6);
  EXPECT_EQ(w.through(), 6);
  EXPECT_EQ(w.resync(), 6) << "nothing missing: nothing before the last number to re-read";
}

TEST(ChangeWatermark, ResetStartsAgain) {
  ChangeWatermark w;
  w.received(2);
  w.reset(7);
  EXPECT_EQ(w.through(), 7);
  w.received(8);
  EXPECT_EQ(w.resync(), 8);
}

// Change events of one message pass in the order of their numbers: one that
// comes after a newer change of the same message is dropped; other
// messages' changes are not held back by it.
TEST(NewestChange, DropsAChangeOlderThanOnePassedOnForTheSameMessage) {
  NewestChange n;
  EXPECT_TRUE(n.admit("m1", 11)) << "a deletion, published first";
  EXPECT_FALSE(n.admit("m1", 10)) << "an edit committed before it, published late";
  EXPECT_FALSE(n.admit("m1", 11)) << "the same change twice";
  EXPECT_TRUE(n.admit("m2", 9)) << "another message's older number";
  EXPECT_TRUE(n.admit("m1", 12));
}

}  // namespace
}  // namespace parley
