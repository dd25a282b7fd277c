// TypingBoard: an implicit stop is relayed only when no other session of the
// same user types in that thread.
#include "chat/typing_board.h"

#include <gtest/gtest.h>

namespace parley {
namespace {

TEST(TypingBoard, LastSessionToStopIsTheOneThatRelays) {
  TypingBoard board;
  board.start("u", "t", "phone");
  board.start("u", "t", "laptop");
  board.start("u", "t", "laptop");  // again: one entry
  EXPECT_FALSE(board.stop("u", "t", "phone")) << "the laptop still types";
  EXPECT_TRUE(board.stop("u", "t", "laptop"));
  EXPECT_TRUE(board.stop("u", "t", "laptop")) << "nothing left: a stop again relays";
}

TEST(TypingBoard, UsersAndThreadsAreApart) {
  TypingBoard board;
  board.start("u", "t1", "s1");
  board.start("u", "t2", "s2");
  board.start("v", "t1", "s3");
  EXPECT_TRUE(board.stop("u", "t1", "s1")) << "u's other session types in another thread";
  EXPECT_TRUE(board.stop("v", "t1", "s3")) << "another user in the same thread is not u";
  EXPECT_TRUE(board.stop("u", "t2", "s2"));
}

TEST(TypingBoard, StopOfASessionThatNeverStartedRelays) {
  TypingBoard board;
  EXPECT_TRUE(board.stop("u", "t", "s"));
  board.start("u", "t", "a");
  EXPECT_FALSE(board.stop("u", "t", "b")) << "b was not typing; a still is";
  EXPECT_TRUE(board.stop("u", "t", "a"));
}

// Keys cannot run into each other: "ab" + "c" is not "a" + "bc".
TEST(TypingBoard, KeyPartsDoNotRunTogether) {
  TypingBoard board;
  board.start("ab", "c", "s1");
  EXPECT_TRUE(board.stop("a", "bc", "s2"));
  EXPECT_TRUE(board.stop("ab", "c", "s1"));
}

}  // namespace
}  // namespace parley
