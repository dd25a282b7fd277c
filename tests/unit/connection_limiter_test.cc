#include "chat/connection_limiter.h"

#include <gtest/gtest.h>

namespace parley {
namespace {

bool acquire(ConnectionLimiter& limiter, const std::string& user) {
  bool admitted = false, answered = false;
  limiter.acquire(user, [&](bool ok) {
    admitted = ok;
    answered = true;
  });
  EXPECT_TRUE(answered) << "the local limiter answers inline";
  return admitted;
}

TEST(LocalConnectionLimiter, RefusesPastTheLimitPerUser) {
  LocalConnectionLimiter limiter(2);
  EXPECT_TRUE(acquire(limiter, "a"));
  EXPECT_TRUE(acquire(limiter, "a"));
  EXPECT_FALSE(acquire(limiter, "a"));
  EXPECT_TRUE(acquire(limiter, "b")) << "per user";
}

TEST(LocalConnectionLimiter, AReleaseMakesRoomAndARefusalCountsNothing) {
  LocalConnectionLimiter limiter(1);
  EXPECT_TRUE(acquire(limiter, "a"));
  EXPECT_FALSE(acquire(limiter, "a"));
  EXPECT_FALSE(acquire(limiter, "a"));
  limiter.release("a");
  EXPECT_TRUE(acquire(limiter, "a")) << "the refused ones were not counted";
  limiter.release("a");
  limiter.release("a");  // one too many: ignored, never below zero
  EXPECT_TRUE(acquire(limiter, "a"));
  EXPECT_FALSE(acquire(limiter, "a"));
}

}  // namespace
}  // namespace parley
