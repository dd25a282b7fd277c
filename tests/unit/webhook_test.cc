// The webhook's signature (push/webhook_notifier.h): HMAC-SHA256 in the
// X-Parley-Signature form, checked against RFC 4231's test vectors.
#include <gtest/gtest.h>

#include "push/webhook_notifier.h"

namespace parley {
namespace {

TEST(WebhookSignature, MatchesRfc4231TestCase2) {
  EXPECT_EQ(webhook_signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(WebhookSignature, DependsOnKeyAndEveryByte) {
  const std::string body = R"({"type":"message","unread_count":1})";
  EXPECT_NE(webhook_signature("a", body), webhook_signature("b", body));
  EXPECT_NE(webhook_signature("a", body), webhook_signature("a", body + " "));
  EXPECT_EQ(webhook_signature("a", body).size(), 7u + 64u);
}

}  // namespace
}  // namespace parley
