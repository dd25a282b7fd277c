#include "auth/address_block.h"
#include "auth/login_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace parley {
namespace {

TEST(LoginLimiter, FreshIsAllowed) {
  LoginLimiter l(3, 3, 60);
  EXPECT_TRUE(l.allowed("alice", "10.0.0.1", 0));
}

TEST(LoginLimiter, PerAccountLimit) {
  LoginLimiter l(3, 100, 60);
  // From different addresses, so only the account count can trip.
  l.record_failure("alice", "10.0.0.1", 0);
  l.record_failure("alice", "10.0.0.2", 1);
  EXPECT_TRUE(l.allowed("alice", "10.0.0.3", 2));
  l.record_failure("alice", "10.0.0.3", 2);
  EXPECT_FALSE(l.allowed("alice", "10.0.0.4", 3));
  EXPECT_TRUE(l.allowed("bob", "10.0.0.1", 3));
}

TEST(LoginLimiter, PerAddressLimit) {
  LoginLimiter l(100, 3, 60);
  l.record_failure("a", "10.0.0.9", 0);
  l.record_failure("b", "10.0.0.9", 0);
  EXPECT_TRUE(l.allowed("c", "10.0.0.9", 0));
  l.record_failure("c", "10.0.0.9", 0);
  EXPECT_FALSE(l.allowed("d", "10.0.0.9", 1));
  EXPECT_FALSE(l.allowed("a", "10.0.0.9", 1));
  EXPECT_TRUE(l.allowed("d", "10.0.0.10", 1));
}

TEST(LoginLimiter, WindowExpiry) {
  LoginLimiter l(2, 100, 60);
  l.record_failure("alice", "ip", 0);
  l.record_failure("alice", "ip", 10);
  EXPECT_FALSE(l.allowed("alice", "ip", 59));
  EXPECT_TRUE(l.allowed("alice", "ip", 60));  // the failure at 0 left the window
  l.record_failure("alice", "ip", 60);
  EXPECT_FALSE(l.allowed("alice", "ip", 61));
  EXPECT_TRUE(l.allowed("alice", "ip", 120));
}

TEST(LoginLimiter, ManyFailuresStillExpireByNewest) {
  LoginLimiter l(3, 100, 60);
  for (int t = 0; t < 10; ++t) l.record_failure("alice", "ip", t);
  // Failures at 7, 8, 9 are the newest three: refused until 7 leaves the window.
  EXPECT_FALSE(l.allowed("alice", "ip", 66));
  EXPECT_TRUE(l.allowed("alice", "ip", 67));
}

TEST(LoginLimiter, SuccessClearsAccountNotAddress) {
  LoginLimiter l(3, 3, 60);
  for (int i = 0; i < 3; ++i) l.record_failure("alice", "10.0.0.1", i);
  EXPECT_FALSE(l.allowed("alice", "10.0.0.2", 5));
  l.record_success("alice");
  EXPECT_TRUE(l.allowed("alice", "10.0.0.2", 5));
  EXPECT_FALSE(l.allowed("alice", "10.0.0.1", 5));  // the address keeps its failures
  l.record_success("nobody");                        // unknown account is harmless
  EXPECT_TRUE(l.allowed("alice", "10.0.0.2", 5));
}

TEST(LoginLimiter, SweepKeepsCounts) {
  LoginLimiter l(3, 100, 600);
  for (int i = 0; i < 3; ++i) l.record_failure("alice", "a", i);
  l.record_failure("carol", "c", 0);
  l.record_failure("carol", "c", 0);
  // Failures a minute apart trigger sweeps while alice is still in her window.
  for (int t = 100; t <= 500; t += 100) {
    l.record_failure("x" + std::to_string(t), "b", t);
    EXPECT_FALSE(l.allowed("alice", "z", t)) << t;
  }
  // At 700 carol's entries are stale and swept; her count restarts from zero.
  l.record_failure("other", "d", 700);
  EXPECT_TRUE(l.allowed("carol", "c", 700));
  l.record_failure("carol", "c", 700);
  l.record_failure("carol", "c", 700);
  EXPECT_TRUE(l.allowed("carol", "c", 701));
  l.record_failure("carol", "c", 701);
  EXPECT_FALSE(l.allowed("carol", "c", 702));
  EXPECT_TRUE(l.allowed("alice", "z", 700));  // her failures at 0..2 expired
}

TEST(LoginLimiter, AdmitIsExactUnderConcurrency) {
  LoginLimiter l(1000, 50, 60);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i)
        if (l.admit("acct" + std::to_string(t * 100 + i), "10.0.0.1", 5)) admitted.fetch_add(1);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(admitted.load(), 50);  // 200 attempts at once, a limit of 50
}

TEST(LoginLimiter, AdmittedSuccessIsTakenBackFromTheAddress) {
  LoginLimiter l(3, 2, 60);
  ASSERT_TRUE(l.admit("alice", "ip", 1));
  l.record_success("alice", "ip", 1);  // a success does not use up the address
  EXPECT_TRUE(l.admit("bob", "ip", 2));
  EXPECT_TRUE(l.admit("carol", "ip", 2));
  EXPECT_FALSE(l.admit("dave", "ip", 2));  // two failures counted: the limit
}

TEST(AddressBlock, Ipv4IsItselfAndIpv6CountsByItsSlashSixtyFour) {
  EXPECT_EQ(address_block("203.0.113.7"), "203.0.113.7");
  EXPECT_EQ(address_block("::ffff:203.0.113.7"), "203.0.113.7");
  EXPECT_EQ(address_block("2001:db8:1:2:a:b:c:d"), "2001:db8:1:2::/64");
  EXPECT_EQ(address_block("2001:db8:1:2::1"), address_block("2001:db8:1:2:ffff:ffff:ffff:ffff"));
  EXPECT_NE(address_block("2001:db8:1:2::1"), address_block("2001:db8:1:3::1"));
  EXPECT_EQ(address_block("::1"), "::/64");
  EXPECT_EQ(address_block(""), "");
  EXPECT_EQ(address_block("not:an:address"), "not:an:address");
}

}  // namespace
}  // namespace parley
