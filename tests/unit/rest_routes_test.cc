// RestApi's route questions the network layer asks before a request runs.
#include "api/rest_api.h"

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

TEST(RestRoutes, AllowedMethodsFollowTheRouterSplit) {
  EXPECT_EQ(RestApi::allowed_methods("/api//auth/login"), RestApi::allowed_methods("/api/auth/login"));
  EXPECT_NE(RestApi::allowed_methods("/api/auth/login"), "");
}

}  // namespace
}  // namespace parley
