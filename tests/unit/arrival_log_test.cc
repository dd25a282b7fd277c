#include "chat/arrival_log.h"

#include <gtest/gtest.h>

namespace parley {
namespace {

TEST(ArrivalLogTest, TheHighestSeqArrivedBeforeATime) {
  ArrivalLog log(/*keep=*/1'000'000, /*max_threads=*/100);
  EXPECT_EQ(log.arrived_before("t", 50), 0) << "nothing logged";
  log.note("t", 1, 10);
  log.note("t", 2, 20);
  EXPECT_EQ(log.arrived_before("t", 25), 2);
  EXPECT_EQ(log.arrived_before("t", 15), 1);
  EXPECT_EQ(log.arrived_before("t", 10), 0) << "at the same instant is not before";
  log.note("t", 3, 30);
  EXPECT_EQ(log.arrived_before("t", 15), 0) << "only the last two are kept: seq 1 is forgotten";
  EXPECT_EQ(log.arrived_before("t", 25), 2);
  EXPECT_EQ(log.arrived_before("other", 100), 0);
}

TEST(ArrivalLogTest, ADelayedLowerSeqDoesNotHideTheHigherOne) {
  ArrivalLog log(1'000'000, 100);
  log.note("t", 5, 10);
  log.note("t", 4, 20);  // from a slower node
  EXPECT_EQ(log.arrived_before("t", 30), 5);
}

TEST(ArrivalLogTest, PastItsBoundItForgetsQuietThreadsThenAll) {
  ArrivalLog log(/*keep=*/100, /*max_threads=*/3);
  log.note("a", 1, 0);
  log.note("b", 1, 0);
  log.note("c", 1, 150);
  log.note("d", 1, 200);  // full: a and b were quiet for more than 100
  EXPECT_EQ(log.threads(), 2u);
  EXPECT_EQ(log.arrived_before("a", 1000), 0);
  EXPECT_EQ(log.arrived_before("c", 1000), 1);
  log.note("e", 1, 210);
  log.note("f", 1, 220);  // full again, nobody quiet: all forgotten, then f
  EXPECT_EQ(log.threads(), 1u);
  EXPECT_EQ(log.arrived_before("f", 1000), 1);
}

}  // namespace
}  // namespace parley
