#include "chat/hub.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace parley {
namespace {

// Records what the Hub told it.
class RecordingSession final : public ClientSession {
 public:
  RecordingSession(std::string session_id, std::string user_id)
      : session_id_(std::move(session_id)), user_id_(std::move(user_id)) {}
  const std::string& session_id() const override { return session_id_; }
  const std::string& user_id() const override { return user_id_; }
  void deliver(Delivery& delivery) override { delivered.push_back(delivery.event().seq); }
  void excluded(const BusEvent& event) override { excluded_seqs.push_back(event.seq); }
  void resync(int64_t) override { ++resyncs; }
  void account_changed(const AccountState&) override {}

  std::vector<int64_t> delivered, excluded_seqs;
  int resyncs = 0;

 private:
  std::string session_id_, user_id_;
};

// BusEvent holds once-only encodings, so it is made in place, not returned by value.
std::unique_ptr<BusEvent> message_event(std::vector<std::string> users, int64_t seq, std::string exclude = "") {
  auto made = std::make_unique<BusEvent>();
  BusEvent& e = *made;
  e.thread_id = "t";
  e.recipients = std::make_shared<const std::vector<std::string>>(std::move(users));
  e.type = "new_message";
  e.payload = "{}";
  e.payload_is_data = true;
  e.seq = seq;
  e.exclude_session = std::move(exclude);
  return made;
}

TEST(Hub, DeliversToEverySessionOfEachRecipientOnly) {
  Hub hub;
  RecordingSession a1("s1", "alice"), a2("s2", "alice"), b("s3", "bob"), c("s4", "carol");
  for (auto* s : {&a1, &a2, &b, &c}) hub.add(s);
  hub.dispatch(*message_event({"alice", "bob"}, 7));
  EXPECT_EQ(a1.delivered, std::vector<int64_t>{7});
  EXPECT_EQ(a2.delivered, std::vector<int64_t>{7});
  EXPECT_EQ(b.delivered, std::vector<int64_t>{7});
  EXPECT_TRUE(c.delivered.empty());
}

TEST(Hub, TheSendersOwnSessionIsToldButNotDelivered) {
  Hub hub;
  RecordingSession mine("s1", "alice"), other_device("s2", "alice");
  hub.add(&mine);
  hub.add(&other_device);
  hub.dispatch(*message_event({"alice"}, 3, "s1"));
  EXPECT_TRUE(mine.delivered.empty());
  EXPECT_EQ(mine.excluded_seqs, std::vector<int64_t>{3}) << "so its own seq is not taken for a gap";
  EXPECT_EQ(other_device.delivered, std::vector<int64_t>{3});
  EXPECT_TRUE(other_device.excluded_seqs.empty());
}

// A retried send's original published again: the sender's session has its
// answer, and must not take it for an own message still to be answered.
TEST(Hub, ARedeliveryIsNotToldToTheSendersSession) {
  Hub hub;
  RecordingSession mine("s1", "alice"), other_device("s2", "alice");
  hub.add(&mine);
  hub.add(&other_device);
  auto again = message_event({"alice"}, 3, "s1");
  again->redelivery = true;
  hub.dispatch(*again);
  EXPECT_TRUE(mine.delivered.empty());
  EXPECT_TRUE(mine.excluded_seqs.empty());
  EXPECT_EQ(other_device.delivered, std::vector<int64_t>{3}) << "the session decides whether it wants it";
}

TEST(Hub, ResyncEventReachesEverySessionAndDeliversNothing) {
  Hub hub;
  RecordingSession a("s1", "alice"), b("s2", "bob");
  hub.add(&a);
  hub.add(&b);
  BusEvent e;
  e.resync = true;
  hub.dispatch(e);
  EXPECT_EQ(a.resyncs, 1);
  EXPECT_EQ(b.resyncs, 1);
  EXPECT_TRUE(a.delivered.empty());
  hub.remove(&b);
  hub.dispatch(e);
  EXPECT_EQ(a.resyncs, 2);
  EXPECT_EQ(b.resyncs, 1);
}

}  // namespace
}  // namespace parley
