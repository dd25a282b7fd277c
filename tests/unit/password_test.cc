#include "auth/password.h"

#include <gtest/gtest.h>

namespace parley {
namespace {

class Password : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(init_crypto()); }
};

TEST_F(Password, InitIsIdempotent) { EXPECT_TRUE(init_crypto()); }

TEST_F(Password, HashIsArgon2id) {
  std::string h = hash_password("correct horse");
  EXPECT_EQ(h.rfind("$argon2id$", 0), 0u) << h;
  EXPECT_EQ(h.find("correct horse"), std::string::npos);
}

TEST_F(Password, VerifyGoodAndBad) {
  std::string h = hash_password("correct horse");
  EXPECT_TRUE(verify_password("correct horse", h));
  EXPECT_FALSE(verify_password("correct horsE", h));
  EXPECT_FALSE(verify_password("", h));
  EXPECT_FALSE(verify_password("correct horse ", h));
}

TEST_F(Password, EmptyOrMalformedHashFails) {
  EXPECT_FALSE(verify_password("x", ""));
  EXPECT_FALSE(verify_password("", ""));
  EXPECT_FALSE(verify_password("x", "not a hash"));
  EXPECT_FALSE(verify_password("x", "$argon2id$v=19$m=65536,t=2,p=1$garbage"));
  // A truncated real hash is malformed too.
  std::string h = hash_password("x");
  EXPECT_FALSE(verify_password("x", h.substr(0, h.size() - 5)));
  EXPECT_FALSE(verify_password("x", h + std::string(1, '\0') + "tail"));
}

TEST_F(Password, SaltMakesHashesDiffer) {
  std::string a = hash_password("same password");
  std::string b = hash_password("same password");
  EXPECT_NE(a, b);
  EXPECT_TRUE(verify_password("same password", a));
  EXPECT_TRUE(verify_password("same password", b));
}

TEST_F(Password, NonAsciiPassword) {
  std::string pw = "p\xC3\xA4ssw\xC3\xB6rd \xF0\x9F\x94\x91";
  std::string h = hash_password(pw);
  EXPECT_TRUE(verify_password(pw, h));
  EXPECT_FALSE(verify_password("passwrd", h));
}

}  // namespace
}  // namespace parley
