#include "bus/typing_lapse.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace parley {
namespace {

constexpr Micros kLapse = 8'000'000;

BusEventPtr typing(const std::string& thread, const std::string& user, bool is_typing) {
  auto e = std::make_shared<BusEvent>();
  e->thread_id = thread;
  e->recipients = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"watcher"});
  e->type = "typing";
  e->payload = boost::json::serialize(boost::json::object{
      {"from_user_id", user}, {"user_id", user}, {"is_typing", is_typing}, {"thread_id", thread}});
  return e;
}

TEST(TypingLapse, ATypistWhoseStopNeverComesIsStoppedAfterTheLapse) {
  TypingLapse t(kLapse);
  t.observe(typing("t1", "alice", true), 0);
  EXPECT_TRUE(t.expired(kLapse - 1).empty());
  auto stops = t.expired(kLapse);
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0]->type, "typing");
  EXPECT_EQ(stops[0]->thread_id, "t1");
  EXPECT_EQ(*stops[0]->recipients, std::vector<std::string>{"watcher"});
  auto fields = boost::json::parse(stops[0]->payload).as_object();
  EXPECT_EQ(fields.at("user_id").as_string(), "alice");
  EXPECT_EQ(fields.at("from_user_id").as_string(), "alice");
  EXPECT_FALSE(fields.at("is_typing").as_bool());
  EXPECT_TRUE(t.expired(2 * kLapse).empty()) << "stopped once";
}

TEST(TypingLapse, TheTypistsOwnStopEndsIt) {
  TypingLapse t(kLapse);
  t.observe(typing("t1", "alice", true), 0);
  t.observe(typing("t1", "alice", false), 1000);
  EXPECT_TRUE(t.expired(kLapse).empty());
  EXPECT_EQ(t.size(), 0u);
}

TEST(TypingLapse, TypingAgainPutsTheLapseOff) {
  TypingLapse t(kLapse);
  t.observe(typing("t1", "alice", true), 0);
  t.observe(typing("t1", "alice", true), 5'000'000);
  EXPECT_TRUE(t.expired(kLapse).empty());
  EXPECT_EQ(t.expired(5'000'000 + kLapse).size(), 1u);
}

TEST(TypingLapse, EachTypistAndThreadOnItsOwn) {
  TypingLapse t(kLapse);
  t.observe(typing("t1", "alice", true), 0);
  t.observe(typing("t2", "alice", true), 0);
  t.observe(typing("t1", "bob", true), 0);
  t.observe(typing("t1", "bob", false), 0);
  EXPECT_EQ(t.expired(kLapse).size(), 2u);
}

TEST(TypingLapse, OtherEventsAndBadPayloadsAreIgnored) {
  TypingLapse t(kLapse);
  auto call = std::const_pointer_cast<BusEvent>(typing("t1", "alice", true));
  call->type = "call_offer";
  t.observe(call, 0);
  auto bad = std::const_pointer_cast<BusEvent>(typing("t1", "alice", true));
  bad->payload = "{not json";
  t.observe(bad, 0);
  EXPECT_EQ(t.size(), 0u);
}

}  // namespace
}  // namespace parley
