// RestApi's route questions the network layer asks before a request runs.
#include "api/rest_api.h"
#include "api/rest_write_limiter.h"

#include <gtest/gtest.h>

namespace parley {
namespace {

HttpRequest request(std::string method, std::string path) {
  HttpRequest r;
  r.method = std::move(method);
  r.path = std::move(path);
  return r;
}

// Every spelling the router sends to register or login runs on the password
// pool, with its bound: an extra slash must not reach the general workers.
TEST(RestRoutes, EveryPathToRegisterOrLoginHashesPasswords) {
  for (const char* path : {"/api/auth/login", "/api/auth/login/", "/api//auth/login", "//api/auth/register",
                           "/api/auth//register/", "/api/auth/register"})
    EXPECT_TRUE(RestApi::hashes_passwords(request("POST", path))) << path;
  EXPECT_FALSE(RestApi::hashes_passwords(request("GET", "/api/auth/login")));
  EXPECT_FALSE(RestApi::hashes_passwords(request("POST", "/api/auth/logins")));
  EXPECT_FALSE(RestApi::hashes_passwords(request("POST", "/api/auth/login/x")));
  EXPECT_FALSE(RestApi::hashes_passwords(request("POST", "/api/chat/threads")));
}

// An encoded slash is data inside a segment: it must not make a route that a
// proxy's rules, reading the raw path, would not see.
TEST(RestRoutes, AnEncodedSlashSplitsNoSegment) {
  EXPECT_EQ(decode_path("/api%2Fusers%2fme"), "/api%2Fusers%2fme");
  EXPECT_EQ(decode_path("/api/users/%6De"), "/api/users/me");
  EXPECT_EQ(decode_path("/a%20b/%2"), "/a b/%2");
  EXPECT_EQ(RestApi::allowed_methods(decode_path("/api%2Fusers%2Fme")), "");
  EXPECT_EQ(percent_decode("a%2Fb", false), "a/b") << "query values decode it";
}

TEST(RestRoutes, TheWebAppIsReadOnly) {
  EXPECT_EQ(RestApi::allowed_methods("/app"), "GET, HEAD, OPTIONS");
  EXPECT_EQ(RestApi::allowed_methods("/app/index.html"), "GET, HEAD, OPTIONS");
  EXPECT_EQ(RestApi::allowed_methods("/apps"), "");
}

TEST(RestRoutes, AllowedMethodsFollowTheRouterSplit) {
  EXPECT_EQ(RestApi::allowed_methods("/api//auth/login"), RestApi::allowed_methods("/api/auth/login"));
  EXPECT_NE(RestApi::allowed_methods("/api/auth/login"), "");
}

// A burst, then the sustained rate; each user has a bucket of their own, and
// a bucket that has refilled is forgotten.
TEST(RestWriteLimiter, BurstThenRatePerUser) {
  RestWriteLimiter l(/*per_second=*/2, /*burst=*/3);
  const int64_t t0 = 1'000'000'000;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(l.admit("alice", t0)) << i;
  EXPECT_FALSE(l.admit("alice", t0));
  EXPECT_TRUE(l.admit("bob", t0)) << "bob has a bucket of his own";
  EXPECT_FALSE(l.admit("alice", t0 + 400'000)) << "0.8 of a token";
  EXPECT_TRUE(l.admit("alice", t0 + 500'000)) << "one token after half a second";
  EXPECT_FALSE(l.admit("alice", t0 + 500'000));
  // 2,000 users writing once each, then quiet long enough to refill: the
  // next sweep (once the map has doubled) drops them all.
  for (int i = 0; i < 2000; ++i) l.admit("user" + std::to_string(i), t0 + 600'000);
  EXPECT_GE(l.users_tracked(), 2000u);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(l.admit("later" + std::to_string(i), t0 + 10'000'000));
  EXPECT_LT(l.users_tracked(), 200u);
}

}  // namespace
}  // namespace parley
