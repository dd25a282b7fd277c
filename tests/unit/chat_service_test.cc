#include "chat/chat_service.h"
#include "store_test_support.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "auth/password.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "protocol/encode.h"

namespace parley {
namespace {

namespace json = boost::json;

using Ids = std::set<std::string>;

// Every BusEvent the service publishes. Events arrive on the store's
// completion thread (sends) or the caller's thread (mark_read, relay).
class Recorder {
 public:
  void record(const BusEventPtr& e) {
    std::lock_guard lock(mu_);
    events_.push_back(e);
  }
  size_t size() {
    std::lock_guard lock(mu_);
    return events_.size();
  }
  BusEventPtr at(size_t i) {
    std::lock_guard lock(mu_);
    return i < events_.size() ? events_[i] : nullptr;
  }
  BusEventPtr last() {
    std::lock_guard lock(mu_);
    return events_.empty() ? nullptr : events_.back();
  }
  size_t count(const std::string& type) {
    std::lock_guard lock(mu_);
    return std::count_if(events_.begin(), events_.end(), [&](const BusEventPtr& e) { return e->type == type; });
  }

 private:
  std::mutex mu_;
  std::vector<BusEventPtr> events_;
};

Ids recipients(const BusEvent& e) { return e.recipients ? Ids(e.recipients->begin(), e.recipients->end()) : Ids{}; }

json::value parse(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  EXPECT_FALSE(ec) << text;
  return v;
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

class ChatServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    spdlog::set_level(spdlog::level::warn);
    ASSERT_TRUE(init_crypto());
  }

  void SetUp() override {
    char tmpl[] = "/tmp/parley_chat_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    StoreOptions options;
    options.data_dir = dir_ + "/data";
    auto store = open_sqlite_store(options);
    ASSERT_TRUE(store.ok()) << store.error().message;
    store_ = std::move(*store);
    bus_ = make_local_bus();
    // Control events (members_changed) apart, so counts of frames stay exact.
    bus_->set_receiver([this](const BusEventPtr& e) { (e->members_changed ? changes_ : events_).record(e); });
    auto jwt = JwtVerifier::create("test-secret");
    ASSERT_TRUE(jwt.ok());
    jwt_ = *jwt;
    start();
  }

  void TearDown() override {
    service_.reset();
    if (store_) store_->close();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // (Re)builds the service from config_.
  void start() { service_ = std::make_unique<ChatService>(*store_, *bus_, jwt_, config_); }

  // A user stored directly (no password): fast, for tests not about identity.
  User user(const std::string& username) {
    User u;
    u.id = new_uuid();
    u.username = username;
    u.full_name = "Full " + username;
    u.role = "member";
    auto r = store_->create_user(u);
    EXPECT_TRUE(r.ok()) << r.error().code;
    return r.ok() ? *r : User{};
  }

  Thread direct(const User& a, const User& b) {
    auto r = service_->create_thread(a, {"direct", {b.id}, {}, ""});
    EXPECT_TRUE(r.ok()) << r.error().code;
    return r.ok() ? r->thread : Thread{};
  }

  Thread group(const User& admin, const std::vector<User>& others, const std::string& title = "class") {
    ChatService::CreateThreadRequest req{"group", {}, {}, title};
    for (const auto& u : others) req.participant_ids.push_back(u.id);
    auto r = service_->create_thread(admin, req);
    EXPECT_TRUE(r.ok()) << r.error().code;
    return r.ok() ? r->thread : Thread{};
  }

  Result<SendOutcome> send(SendRequest req, ChatService* via = nullptr) {
    auto p = std::make_shared<std::promise<Result<SendOutcome>>>();
    auto f = p->get_future();
    (via ? via : service_.get())->send(std::move(req), [p](Result<SendOutcome> r) { p->set_value(std::move(r)); });
    if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      ADD_FAILURE() << "send callback never ran";
      return internal_error("timeout");
    }
    return f.get();
  }

  Result<SendOutcome> send_text(const User& from, const Thread& t, const std::string& content,
                                const std::string& client_msg_id = "", const std::string& origin = "") {
    SendRequest r;
    r.sender_id = from.id;
    r.thread_id = t.id;
    r.content = content;
    r.client_msg_id = client_msg_id;
    r.origin_session = origin;
    return send(std::move(r));
  }

  std::string send_code(const User& from, const std::string& thread_id, const std::string& content,
                        const std::string& type = "text", ChatService* via = nullptr) {
    SendRequest r;
    r.sender_id = from.id;
    r.thread_id = thread_id;
    r.content = content;
    r.message_type = type;
    auto out = send(std::move(r), via);
    return out.ok() ? "<ok>" : out.error().code;
  }

  std::vector<int64_t> history_seqs(const User& who, const Thread& t, HistoryQuery q) {
    auto h = service_->history(who, t.id, q);
    EXPECT_TRUE(h.ok()) << h.error().code;
    std::vector<int64_t> seqs;
    if (h.ok())
      for (const auto& m : *h) seqs.push_back(m.seq);
    return seqs;
  }

  int64_t unread(const User& who, const Thread& t) {
    for (const auto& u : ok(service_->unread_counts(who)))
      if (u.thread_id == t.id) return u.unread_count;
    ADD_FAILURE() << "no unread entry for thread";
    return -1;
  }

  // A message's status in `viewer`'s history of the thread ("missing": not there).
  std::string status_in_history(const User& viewer, const Thread& t, int64_t seq) {
    auto h = service_->history(viewer, t.id, HistoryQuery{});
    EXPECT_TRUE(h.ok());
    for (const auto& m : h.ok() ? *h : std::vector<Message>{})
      if (m.seq == seq) return m.status;
    return "missing";
  }

  RegisterRequest reg(const std::string& username, const std::string& password = "correct horse") {
    RegisterRequest r;
    r.username = username;
    r.password = password;
    r.full_name = "Name of " + username;
    return r;
  }

  std::string dir_;
  Config config_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Bus> bus_;
  std::shared_ptr<JwtVerifier> jwt_;
  Recorder events_;
  Recorder changes_;
  std::unique_ptr<ChatService> service_;
};

SendRequest request(const std::string& sender_id, const std::string& thread_id, const std::string& username,
                    const std::string& content) {
  SendRequest r;
  r.sender_id = sender_id;
  r.thread_id = thread_id;
  r.username = username;
  r.content = content;
  return r;
}

int64_t now_s() { return now_micros() / 1000000; }

// ================================================================ identity

TEST_F(ChatServiceTest, RegisterReturnsTokenForTheNewUser) {
  auto r = service_->register_user(reg("Alice"));
  ASSERT_TRUE(r.ok()) << r.error().code;
  EXPECT_EQ(r->user.username, "alice");
  EXPECT_TRUE(is_uuid(r->user.id));
  EXPECT_GT(r->expires_at, now_micros());
  auto who = service_->authenticate(r->token);
  ASSERT_TRUE(who.ok()) << who.error().code;
  EXPECT_EQ(who->user.id, r->user.id);
}

TEST_F(ChatServiceTest, RegisterRejectsInvalidUsername) {
  for (const std::string& name : std::vector<std::string>{"ab", "has space", "bad!", "émile", std::string(33, 'a')}) {
    auto r = service_->register_user(reg(name));
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.error().code, "invalid_username") << name;
  }
}

TEST_F(ChatServiceTest, RegisterRejectsWeakPassword) {
  auto r = service_->register_user(reg("alice", "short"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "weak_password");
  EXPECT_FALSE(ok(store_->user_by_username("alice")));
}

TEST_F(ChatServiceTest, RegisterDuplicateIsUsernameTaken) {
  ASSERT_TRUE(service_->register_user(reg("alice")).ok());
  auto again = service_->register_user(reg("ALICE"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, "username_taken");
  EXPECT_EQ(again.error().kind, ErrorKind::kConflict);
}

TEST_F(ChatServiceTest, LoginByUsername) {
  auto r = service_->register_user(reg("alice"));
  ASSERT_TRUE(r.ok());
  auto in = service_->login("alice", "correct horse", "10.0.0.1");
  ASSERT_TRUE(in.ok()) << in.error().code;
  EXPECT_EQ(in->user.id, r->user.id);
  auto who = service_->authenticate(in->token);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->user.id, r->user.id);
}

TEST_F(ChatServiceTest, LoginByPhoneNumber) {
  RegisterRequest req = reg("alice");
  req.phone_number = "+1 555 0100";
  auto r = service_->register_user(req);
  ASSERT_TRUE(r.ok()) << r.error().code;
  auto in = service_->login("+1 555 0100", "correct horse", "10.0.0.1");
  ASSERT_TRUE(in.ok()) << in.error().code;
  EXPECT_EQ(in->user.id, r->user.id);
}

TEST_F(ChatServiceTest, PhoneNumberWithoutDigitsIsRefused) {
  for (const char* phone : {"   ", "+-+ -", "+1 -"}) {
    RegisterRequest req = reg("nodigits");
    req.phone_number = phone;
    auto r = service_->register_user(req);
    ASSERT_FALSE(r.ok()) << "'" << phone << "'";
    EXPECT_EQ(r.error().code, "invalid_field");
  }
}

TEST_F(ChatServiceTest, WrongPasswordIsInvalidCredentials) {
  ASSERT_TRUE(service_->register_user(reg("alice")).ok());
  auto in = service_->login("alice", "wrong horse!", "10.0.0.1");
  ASSERT_FALSE(in.ok());
  EXPECT_EQ(in.error().code, "invalid_credentials");
  EXPECT_EQ(in.error().kind, ErrorKind::kUnauthorized);
}

TEST_F(ChatServiceTest, UnknownAccountIsInvalidCredentials) {
  auto in = service_->login("nobody", "correct horse", "10.0.0.1");
  ASSERT_FALSE(in.ok());
  EXPECT_EQ(in.error().code, "invalid_credentials");
}

TEST_F(ChatServiceTest, LoginRateLimitedAfterTooManyFailures) {
  config_.limits.login_failures_per_account = 3;
  start();
  ASSERT_TRUE(service_->register_user(reg("alice")).ok());
  for (int i = 0; i < 3; ++i) {
    auto in = service_->login("alice", "wrong horse!", "10.0.0.1");
    ASSERT_FALSE(in.ok());
    EXPECT_EQ(in.error().code, "invalid_credentials") << i;
  }
  auto fourth = service_->login("alice", "correct horse", "10.0.0.1");
  ASSERT_FALSE(fourth.ok());
  EXPECT_EQ(fourth.error().code, "rate_limited");
  EXPECT_EQ(fourth.error().kind, ErrorKind::kRateLimited);
}

// One client holds a whole IPv6 /64: its addresses count as one, for failed
// logins and registrations alike; another /64 and IPv4 count apart.
TEST_F(ChatServiceTest, PerAddressLimitsCountAnIpv6SlashSixtyFourAsOneClient) {
  config_.limits.login_failures_per_address = 3;
  config_.limits.registrations_per_address = 2;
  start();
  ASSERT_TRUE(service_->register_user(reg("user1"), "2001:db8:1:2::1").ok());
  ASSERT_TRUE(service_->register_user(reg("user2"), "2001:db8:1:2::2").ok());
  auto third = service_->register_user(reg("user3"), "2001:db8:1:2:ffff::3");
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.error().code, "rate_limited");
  ASSERT_TRUE(service_->register_user(reg("user4"), "2001:db8:1:3::1").ok()) << "another /64";
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(service_->login("user4", "wrong horse!", "2001:db8:9:9::" + std::to_string(i + 1)).error().code,
              "invalid_credentials");
  EXPECT_EQ(service_->login("user1", "correct horse", "2001:db8:9:9:1:2:3:4").error().code, "rate_limited");
  EXPECT_TRUE(service_->login("user1", "correct horse", "2001:db8:9:a::1").ok());
  EXPECT_TRUE(service_->login("user1", "correct horse", "10.0.0.1").ok());
}

TEST_F(ChatServiceTest, LoginRateLimitIsPerAccountWhicheverLoginNameIsUsed) {
  config_.limits.login_failures_per_account = 3;
  start();
  RegisterRequest req = reg("alice");
  req.phone_number = "+1 555 0100";
  ASSERT_TRUE(service_->register_user(req).ok());
  for (int i = 0; i < 3; ++i) ASSERT_FALSE(service_->login("alice", "wrong horse!", "10.0.0.1").ok());
  auto by_phone = service_->login("+1 555 0100", "correct horse", "10.0.0.1");
  ASSERT_FALSE(by_phone.ok()) << "3 failures on the account, then a 4th try through its phone number succeeded";
  EXPECT_EQ(by_phone.error().code, "rate_limited");
}

TEST_F(ChatServiceTest, LoginRateLimitForAnUnknownNumberCountsEverySpelling) {
  config_.limits.login_failures_per_account = 3;
  start();
  for (const char* spelling : {"+1 555 0199", "1-555-0199", "(1) 555.0199"})
    ASSERT_EQ(service_->login(spelling, "wrong horse!", "10.0.0.1").error().code, "invalid_credentials") << spelling;
  auto fourth = service_->login("15550199", "wrong horse!", "10.0.0.1");
  ASSERT_FALSE(fourth.ok());
  EXPECT_EQ(fourth.error().code, "rate_limited") << "each spelling of one number counted on its own";
  EXPECT_EQ(service_->login("nobody", "wrong horse!", "10.0.0.1").error().code, "invalid_credentials")
      << "another login text has its own count";
}

TEST_F(ChatServiceTest, AuthenticateExpiredToken) {
  User a = user("alice");
  std::string token = jwt_->sign(a.id, now_s() - 7200, 60);
  auto r = service_->authenticate(token);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "token_expired");
}

TEST_F(ChatServiceTest, AuthenticateGarbageToken) {
  for (const std::string t : {"", "garbage", "a.b.c"}) {
    auto r = service_->authenticate(t);
    ASSERT_FALSE(r.ok()) << t;
    EXPECT_EQ(r.error().code, "invalid_token") << t;
    EXPECT_EQ(r.error().kind, ErrorKind::kUnauthorized);
  }
}

TEST_F(ChatServiceTest, AuthenticateTokenOfOtherSecretRefused) {
  User a = user("alice");
  auto other = JwtVerifier::create("another-secret");
  ASSERT_TRUE(other.ok());
  auto r = service_->authenticate((*other)->sign(a.id, now_s(), 3600));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "invalid_token");
}

TEST_F(ChatServiceTest, ProvisionsUserFromProviderTokenWithEmail) {
  std::string sub = new_uuid();
  std::string token = jwt_->sign(sub, now_s(), 3600, json::object{{"email", "zed.smith@example.com"}});
  auto r = service_->authenticate(token);
  ASSERT_TRUE(r.ok()) << r.error().code;
  EXPECT_EQ(r->user.id, sub);
  EXPECT_EQ(r->user.username, "zed.smith");
  ASSERT_TRUE(ok(store_->user_by_id(sub)));
  size_t users = ok(store_->user_count());
  auto again = service_->authenticate(token);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->user.id, sub);
  EXPECT_EQ(ok(store_->user_count()), users) << "second use must not create another user";
}

TEST_F(ChatServiceTest, ProvisionsUserFromProviderTokenWithUserMetadata) {
  std::string sub = new_uuid();
  json::object extra{{"user_metadata", json::object{{"full_name", "Mary Major"}, {"role", "teacher"}}}};
  auto r = service_->authenticate(jwt_->sign(sub, now_s(), 3600, extra));
  ASSERT_TRUE(r.ok()) << r.error().code;
  EXPECT_EQ(r->user.id, sub);
  EXPECT_EQ(r->user.full_name, "Mary Major");
  EXPECT_EQ(r->user.role, "teacher");
  auto stored = ok(store_->user_by_id(sub));
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->role, "teacher");
}

// C1 (here U+009B, a terminal's CSI) goes as C0 does; U+00A0 and é stay.
TEST_F(ChatServiceTest, ProvisionedProfileLosesC1ControlCharacters) {
  std::string sub = new_uuid();
  json::object extra{{"user_metadata", json::object{{"full_name", "Ren\xC3\xA9\xC2\x9B" "31m\xC2\xA0Roe\x01"}}}};
  auto r = service_->authenticate(jwt_->sign(sub, now_s(), 3600, extra));
  ASSERT_TRUE(r.ok()) << r.error().code;
  EXPECT_EQ(r->user.full_name, "Ren\xC3\xA9" "31m\xC2\xA0Roe");
}

TEST_F(ChatServiceTest, RegisterAndGroupTitleRefuseC1ControlCharacters) {
  RegisterRequest req;
  req.username = "c1user";
  req.password = "long-enough-pw";
  req.full_name = "ab\xC2\x9B" "cd";
  auto reg = service_->register_user(req, "127.0.0.1");
  ASSERT_FALSE(reg.ok());
  EXPECT_EQ(reg.error().code, "invalid_field");
  User a = user("alice"), b = user("bob");
  auto group = service_->create_thread(a, {"group", {b.id}, {}, "t\xC2\x9Bx"});
  ASSERT_FALSE(group.ok());
  EXPECT_EQ(group.error().code, "invalid_field");
}

// docs/protocol.md: a full_name with nothing visible left becomes the
// username, also the one made unique when the e-mail's local part is taken.
TEST_F(ChatServiceTest, ProvisionedBlankFullNameIsTheUsernameItGot) {
  user("zoe.q");
  std::string sub = new_uuid();
  json::object extra{{"email", "zoe.q@example.org"}, {"user_metadata", json::object{{"full_name", "\x01 \x02"}}}};
  auto r = service_->authenticate(jwt_->sign(sub, now_s(), 3600, extra));
  ASSERT_TRUE(r.ok()) << r.error().code;
  EXPECT_NE(r->user.username, "zoe.q");
  EXPECT_EQ(r->user.full_name, r->user.username);
  EXPECT_EQ(ok(store_->user_by_id(sub))->full_name, r->user.username);
}

TEST_F(ChatServiceTest, TokenOfUnknownUserWithoutProfileRefused) {
  std::string sub = new_uuid();
  auto r = service_->authenticate(jwt_->sign(sub, now_s(), 3600));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnauthorized);
  EXPECT_FALSE(ok(store_->user_by_id(sub)));
}

// ================================================================ threads

TEST_F(ChatServiceTest, DirectThreadIsUniqueWhicheverUserAsks) {
  User a = user("alice"), b = user("bob");
  auto first = service_->create_thread(a, {"direct", {b.id}, {}, ""});
  ASSERT_TRUE(first.ok()) << first.error().code;
  EXPECT_TRUE(first->created);
  EXPECT_EQ(first->thread.type, ThreadType::kDirect);
  auto again = service_->create_thread(a, {"direct", {b.id}, {}, ""});
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->thread.id, first->thread.id);
  auto other_side = service_->create_thread(b, {"direct", {}, {"alice"}, ""});
  ASSERT_TRUE(other_side.ok()) << other_side.error().code;
  EXPECT_FALSE(other_side->created);
  EXPECT_EQ(other_side->thread.id, first->thread.id);
  // A direct thread has no title: one given is ignored, whatever it holds.
  for (const std::string& title : std::vector<std::string>{"x\a", "   ", std::string(500, 'a')}) {
    auto titled = service_->create_thread(b, {"direct", {a.id}, {}, title});
    ASSERT_TRUE(titled.ok()) << titled.error().code;
    EXPECT_EQ(titled->thread.id, first->thread.id);
    EXPECT_EQ(titled->thread.title, "");
  }
}

TEST_F(ChatServiceTest, GroupCreatorIsTheAdmin) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c}, "Class 5B");
  EXPECT_EQ(t.type, ThreadType::kGroup);
  EXPECT_EQ(t.title, "Class 5B");
  ASSERT_EQ(t.participants.size(), 3u);
  for (const auto& p : t.participants) EXPECT_EQ(p.is_admin, p.user_id == a.id) << p.user_id;
}

// ================================================================ send

TEST_F(ChatServiceTest, SendStoresWithIncreasingSeq) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  auto m1 = send_text(a, t, "Hello!");
  ASSERT_TRUE(m1.ok()) << m1.error().code;
  auto m2 = send_text(b, t, "Hi");
  ASSERT_TRUE(m2.ok()) << m2.error().code;
  EXPECT_EQ(m1->message.seq, 1);
  EXPECT_EQ(m2->message.seq, 2);
  EXPECT_EQ(m1->message.content, "Hello!");
  EXPECT_EQ(m1->message.sender_id, a.id);
  EXPECT_FALSE(m1->duplicate);
  EXPECT_EQ(parse(m1->message_json).at("id"), json::value(m1->message.id));
}

TEST_F(ChatServiceTest, BlankContentIsEmptyContent) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  EXPECT_EQ(send_code(a, t.id, "   "), "empty_content");
  EXPECT_EQ(send_code(a, t.id, ""), "empty_content");
  EXPECT_EQ(send_code(a, t.id, "\n\t "), "empty_content");
}

TEST_F(ChatServiceTest, ContentLengthCountsCodePoints) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  size_t max = config_.limits.max_content_chars;
  std::string e_acute = "\xC3\xA9";        // 2 bytes
  std::string emoji = "\xF0\x9F\x98\x80";  // 4 bytes
  EXPECT_EQ(send_code(a, t.id, repeat(e_acute, static_cast<int>(max))), "<ok>");
  EXPECT_EQ(send_code(a, t.id, repeat(emoji, static_cast<int>(max))), "<ok>");
  EXPECT_EQ(send_code(a, t.id, repeat(e_acute, static_cast<int>(max) + 1)), "content_too_long");
  EXPECT_EQ(send_code(a, t.id, repeat("a", static_cast<int>(max) + 1)), "content_too_long");
}

TEST_F(ChatServiceTest, ContentStoredExactlyAsSent) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  std::string content = "  caf\xC3\xA9 \xF0\x9F\x98\x80\n\"quoted\"  ";
  auto m = send_text(a, t, content);
  ASSERT_TRUE(m.ok());
  auto h = service_->history(b, t.id, HistoryQuery{});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 1u);
  EXPECT_EQ((*h)[0].content, content);
}

TEST_F(ChatServiceTest, ClientsCannotSendSystemOrUnknownTypes) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  EXPECT_EQ(send_code(a, t.id, "x", "system"), "invalid_message_type");
  EXPECT_EQ(send_code(a, t.id, "x", "video"), "invalid_message_type");
  EXPECT_EQ(send_code(a, t.id, "https://x/y.png", "image"), "<ok>");
  EXPECT_EQ(send_code(a, t.id, "https://x/y.pdf", "file"), "<ok>");
}

TEST_F(ChatServiceTest, InvalidUtf8Refused) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  EXPECT_EQ(send_code(a, t.id, "abc\xff"), "invalid_utf8");
  EXPECT_EQ(send_code(a, t.id, "\xED\xA0\x80"), "invalid_utf8");  // encoded surrogate U+D800
}

TEST_F(ChatServiceTest, NonParticipantAndUnknownThreadLookTheSame) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = direct(a, b);
  SendRequest to_real = request(c.id, t.id, "", "hi");
  SendRequest to_none = request(c.id, new_uuid(), "", "hi");
  auto r1 = send(to_real);
  auto r2 = send(to_none);
  ASSERT_FALSE(r1.ok());
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r1.error().code, "forbidden");
  EXPECT_EQ(r2.error().code, "forbidden");
  EXPECT_EQ(r1.error().kind, ErrorKind::kForbidden);
  EXPECT_EQ(r1.error().message, r2.error().message);
  EXPECT_EQ(events_.size(), 0u);
}

TEST_F(ChatServiceTest, SendByUsernameCreatesTheDirectThread) {
  User a = user("alice"), b = user("bob");
  SendRequest req = request(a.id, "", "BOB", "hello bob");
  auto m = send(req);
  ASSERT_TRUE(m.ok()) << m.error().code;
  auto t = service_->thread(b, m->message.thread_id);
  ASSERT_TRUE(t.ok()) << t.error().code;
  EXPECT_EQ(t->type, ThreadType::kDirect);
  Ids members;
  for (const auto& p : t->participants) members.insert(p.user_id);
  EXPECT_EQ(members, Ids({a.id, b.id}));
  auto second = send(request(a.id, "", "bob", "again"));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->message.thread_id, m->message.thread_id);
  EXPECT_EQ(second->message.seq, 2);
}

TEST_F(ChatServiceTest, SendToOwnUsernameIsInvalidRecipient) {
  User a = user("alice");
  auto r = send(request(a.id, "", "alice", "note to self"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "invalid_recipient");
  auto upper = send(request(a.id, "", "ALICE", "note to self"));
  ASSERT_FALSE(upper.ok());
  EXPECT_EQ(upper.error().code, "invalid_recipient");
}

TEST_F(ChatServiceTest, SendToUnknownUsernameIsUserNotFound) {
  User a = user("alice");
  auto r = send(request(a.id, "", "ghost", "hello?"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "user_not_found");
  EXPECT_EQ(r.error().kind, ErrorKind::kNotFound);
}

TEST_F(ChatServiceTest, SendPublishesOneNewMessageEventToAllParticipants) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  size_t before = events_.size();
  auto m = send_text(b, t, "hello class", "c-1", "session-b1");
  ASSERT_TRUE(m.ok()) << m.error().code;
  ASSERT_EQ(events_.size(), before + 1);
  BusEventPtr e = events_.last();
  EXPECT_EQ(e->thread_id, t.id);
  EXPECT_EQ(recipients(*e), Ids({a.id, b.id, c.id}));
  EXPECT_EQ(e->exclude_session, "session-b1");
  EXPECT_EQ(e->seq, m->message.seq);
  EXPECT_GT(e->seq, 0);
  json::value f = parse(encode_event(*e));
  EXPECT_EQ(f.at("type"), json::value("new_message"));
  ASSERT_TRUE(f.at("data").is_object());
  EXPECT_EQ(f.at("data").at("id"), json::value(m->message.id));
  EXPECT_EQ(f.at("data").at("seq").to_number<int64_t>(), m->message.seq);
  EXPECT_EQ(f.at("data").at("content"), json::value("hello class"));
  EXPECT_EQ(f.at("data").at("client_msg_id"), json::value("c-1"));
  EXPECT_EQ(f.at("data").at("sender").at("username"), json::value("bob"));
}

// The retry is stored once and answered with the original. Its new_message
// goes out again (each connection's DeliveryCursor drops what it was sent):
// the original may have been committed and never published.
TEST_F(ChatServiceTest, RetriedClientMsgIdIsDuplicateAndPublishedAgain) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  auto first = send_text(a, t, "once", "c-17");
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(first->duplicate);
  size_t after_first = events_.size();
  const auto messages_in = Metrics::get().messages_in.load();
  auto retry = send_text(a, t, "once", "c-17", "session-2");
  ASSERT_TRUE(retry.ok()) << retry.error().code;
  EXPECT_TRUE(retry->duplicate);
  EXPECT_EQ(retry->message.id, first->message.id);
  EXPECT_EQ(retry->message.seq, first->message.seq);
  ASSERT_EQ(events_.size(), after_first + 1);
  BusEventPtr again = events_.at(after_first);
  EXPECT_EQ(again->type, "new_message");
  EXPECT_EQ(again->seq, first->message.seq);
  EXPECT_EQ(again->exclude_session, "session-2") << "the retrying connection has it as message_sent";
  EXPECT_TRUE(again->redelivery);
  EXPECT_EQ(again->created_at, first->message.created_at);
  EXPECT_EQ(recipients(*again), (Ids{a.id, b.id}));
  EXPECT_EQ(Metrics::get().messages_in.load(), messages_in) << "not counted as a second message";
  EXPECT_EQ(history_seqs(a, t, HistoryQuery{}), std::vector<int64_t>({1}));
}

// A message committed whose new_message was never published (its node died
// between the two): the sender's retry publishes it.
TEST_F(ChatServiceTest, ARetryPublishesAnOriginalThatWasStoredButNeverPublished) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  AppendRequest stored{t.id, a.id, "committed, then the node died", "text", "c-9"};
  auto original = store_->append_and_wait(std::move(stored));
  ASSERT_TRUE(original.ok()) << original.error().code;
  ASSERT_EQ(events_.size(), 0u);
  auto retry = send_text(a, t, "committed, then the node died", "c-9");
  ASSERT_TRUE(retry.ok()) << retry.error().code;
  EXPECT_TRUE(retry->duplicate);
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_.at(0)->seq, original->message.seq);
  EXPECT_EQ(recipients(*events_.at(0)), (Ids{a.id, b.id}));
}

// A member removed and added back since the original was stored, or added
// since, was not there for it: its redelivery does not reach them (their
// connections may hold cursor entries from before).
TEST_F(ChatServiceTest, ARetryIsPublishedAgainOnlyToThoseWhoWereMembersThen) {
  User a = user("alice"), b = user("bob"), c = user("carol"), d = user("dave");
  Thread t = group(a, {b, c});
  auto first = send_text(a, t, "before carol left", "c-5");
  ASSERT_TRUE(first.ok()) << first.error().code;
  ASSERT_TRUE(service_->remove_participant(a, t.id, c.id).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(service_->add_participants(a, t.id, {c.id, d.id}).ok());
  const size_t before_retry = events_.size();
  auto retry = send_text(a, t, "before carol left", "c-5");
  ASSERT_TRUE(retry.ok()) << retry.error().code;
  EXPECT_TRUE(retry->duplicate);
  ASSERT_EQ(events_.size(), before_retry + 1);
  BusEventPtr again = events_.at(before_retry);
  EXPECT_TRUE(again->redelivery);
  EXPECT_EQ(recipients(*again), (Ids{a.id, b.id}));
}

TEST_F(ChatServiceTest, ARetryOfAnOldMessageIsNotPublishedAgain) {
  config_.limits.redeliver_retry_seconds = 0;
  start();
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  ASSERT_TRUE(send_text(a, t, "long ago", "c-1").ok());
  const size_t after_first = events_.size();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  auto retry = send_text(a, t, "long ago", "c-1");
  ASSERT_TRUE(retry.ok());
  EXPECT_TRUE(retry->duplicate);
  EXPECT_EQ(events_.size(), after_first) << "a connection that had nothing of the thread would take it for new";
}

TEST_F(ChatServiceTest, SameClientMsgIdFromAnotherSenderIsANewMessage) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  auto fa = send_text(a, t, "from a", "c-1");
  auto fb = send_text(b, t, "from b", "c-1");
  ASSERT_TRUE(fa.ok());
  ASSERT_TRUE(fb.ok());
  EXPECT_FALSE(fb->duplicate);
  EXPECT_NE(fb->message.id, fa->message.id);
  EXPECT_EQ(fb->message.seq, 2);
}

// ================================================================ history

TEST_F(ChatServiceTest, HistoryLimitBounds) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  for (int limit : {0, 201, -1}) {
    auto h = service_->history(a, t.id, HistoryQuery{kAllSeqs, -1, limit});
    ASSERT_FALSE(h.ok()) << limit;
    EXPECT_EQ(h.error().code, "invalid_limit") << limit;
  }
  EXPECT_TRUE(service_->history(a, t.id, HistoryQuery{kAllSeqs, -1, 1}).ok());
  EXPECT_TRUE(service_->history(a, t.id, HistoryQuery{kAllSeqs, -1, 200}).ok());
}

TEST_F(ChatServiceTest, HistoryPaging) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(send_text(a, t, "m" + std::to_string(i)).ok());
  using V = std::vector<int64_t>;
  EXPECT_EQ(history_seqs(b, t, HistoryQuery{}), V({1, 2, 3, 4, 5}));
  EXPECT_EQ(history_seqs(b, t, HistoryQuery{kAllSeqs, -1, 2}), V({4, 5}));  // newest 2
  EXPECT_EQ(history_seqs(b, t, HistoryQuery{0, -1, 2}), V({}));             // before 0: nothing
  EXPECT_EQ(history_seqs(b, t, HistoryQuery{4, -1, 2}), V({2, 3}));   // before 4
  EXPECT_EQ(history_seqs(b, t, HistoryQuery{2, -1, 2}), V({1}));      // before 2
  EXPECT_EQ(history_seqs(b, t, HistoryQuery{0, 0, 2}), V({1, 2}));    // oldest after 0
  EXPECT_EQ(history_seqs(b, t, HistoryQuery{0, 3, 10}), V({4, 5}));   // after 3
  EXPECT_EQ(history_seqs(b, t, HistoryQuery{0, 5, 10}), V({}));
}

TEST_F(ChatServiceTest, HistoryForbiddenToNonParticipants) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = direct(a, b);
  auto h = service_->history(c, t.id, HistoryQuery{});
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.error().code, "forbidden");
}

// ================================================================ membership

TEST_F(ChatServiceTest, AdminAddsParticipantWithSystemMessage) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b});
  size_t before = events_.size();
  auto r = service_->add_participants(a, t.id, {c.id});
  ASSERT_TRUE(r.ok()) << r.error().code;
  Ids members;
  for (const auto& p : r->participants) members.insert(p.user_id);
  EXPECT_EQ(members, Ids({a.id, b.id, c.id}));
  auto h = service_->history(c, t.id, HistoryQuery{});
  ASSERT_TRUE(h.ok()) << h.error().code;
  ASSERT_EQ(h->size(), 1u);
  EXPECT_EQ((*h)[0].message_type, "system");
  EXPECT_NE((*h)[0].content.find("carol"), std::string::npos) << (*h)[0].content;
  ASSERT_EQ(events_.size(), before + 1);
  EXPECT_EQ(recipients(*events_.last()), Ids({a.id, b.id, c.id}));
  ASSERT_EQ(changes_.size(), 1u) << "other processes must hear of the change";
  EXPECT_EQ(changes_.last()->thread_id, t.id);
}

TEST_F(ChatServiceTest, NonAdminCannotAddParticipants) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b});
  auto r = service_->add_participants(b, t.id, {c.id});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "forbidden");
  EXPECT_FALSE(service_->thread(c, t.id).ok());
  EXPECT_EQ(history_seqs(a, t, HistoryQuery{}), std::vector<int64_t>{});
}

TEST_F(ChatServiceTest, DirectThreadMembersCannotChange) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = direct(a, b);
  auto add = service_->add_participants(a, t.id, {c.id});
  ASSERT_FALSE(add.ok());
  EXPECT_EQ(add.error().code, "direct_thread");
  auto leave = service_->remove_participant(b, t.id, b.id);
  ASSERT_FALSE(leave.ok());
  EXPECT_EQ(leave.error().code, "direct_thread");
  EXPECT_TRUE(service_->thread(b, t.id).ok()) << "bob must still be a participant";
  EXPECT_FALSE(service_->thread(c, t.id).ok());
}

TEST_F(ChatServiceTest, ClientMsgIdIsCountedInCharacters) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  std::string e_acute = "\xC3\xA9", ok_id, long_id;
  for (int i = 0; i < 128; ++i) ok_id += e_acute;  // 128 characters, 256 bytes
  long_id = ok_id + "x";
  auto sent = send_text(a, t, "fine", ok_id);
  ASSERT_TRUE(sent.ok()) << sent.error().code;
  auto refused = send_text(a, t, "too long", long_id);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, "invalid_field");
}

// The membership ended between the service's check (its cache) and the
// store's write (a second leave sent at once, a removal by another node):
// the caller is a non-member now, told what any non-member is; a user
// removed meanwhile is not in the thread, in the same words as the check's.
TEST_F(ChatServiceTest, AMembershipEndedJustBeforeTheWriteIsAnsweredAsTheCheckWouldHave) {
  User a = user("alice"), b = user("bob"), c = user("carol"), d = user("dave");
  Thread t = group(a, {b, c, d});
  ASSERT_TRUE(send_text(a, t, "hello", "").ok());  // the member list is cached
  for (const User* u : {&b, &c, &d}) ASSERT_TRUE(store_->remove_participant_and_wait({t.id, u->id, {}, {}}).ok());
  auto leave = service_->remove_participant(b, t.id, b.id);
  ASSERT_FALSE(leave.ok());
  EXPECT_EQ(leave.error().code, "forbidden");
  auto mark = service_->mark_read(c.id, t.id, 1, "");
  ASSERT_FALSE(mark.ok());
  EXPECT_EQ(mark.error().code, "forbidden");
  auto removal = service_->remove_participant(a, t.id, d.id);
  ASSERT_FALSE(removal.ok());
  EXPECT_EQ(removal.error().code, "not_a_participant");
  EXPECT_EQ(removal.error().message, "that user is not in this thread");
}

TEST_F(ChatServiceTest, MemberMayLeave) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  auto st = service_->remove_participant(b, t.id, b.id);
  ASSERT_TRUE(st.ok()) << st.error().code;
  auto gone = service_->thread(b, t.id);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, "forbidden");
  EXPECT_EQ(send_code(b, t.id, "still here?"), "forbidden");
  auto h = service_->history(a, t.id, HistoryQuery{});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 1u);
  EXPECT_EQ((*h)[0].message_type, "system");
}

// Status counts those who left with what they had read when they went: what
// Bob read stays read for Alice; Alice's own marks never count for her.
TEST_F(ChatServiceTest, StatusKeepsTheMarksOfMembersWhoLeft) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  auto read = send_text(a, t, "read by bob");
  auto unread = send_text(a, t, "read by nobody");
  ASSERT_TRUE(read.ok() && unread.ok());
  ASSERT_TRUE(service_->mark_read(b.id, t.id, read->message.seq, "session-b").ok());
  ASSERT_TRUE(service_->remove_participant(b, t.id, b.id).ok());
  auto status = [&](int64_t seq) { return status_in_history(a, t, seq); };
  EXPECT_EQ(status(read->message.seq), "read");
  EXPECT_EQ(status(unread->message.seq), "sent");
  auto list = service_->threads(a);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  ASSERT_TRUE((*list)[0].last_message);
  EXPECT_EQ((*list)[0].last_message->status, "sent") << "bob's leave notice: read by nobody else";
}

// Joining sets a member's marks to the thread's end (nothing before is
// unread for them) without their having read any of it: what was sent before
// they joined does not become `read` for its sender by that. Their reading
// counts for what comes after; another member's reading counts as ever.
TEST_F(ChatServiceTest, StatusIgnoresTheMarksAMemberGetsByJoining) {
  User a = user("alice"), b = user("bob"), d = user("dave");
  Thread t = group(a, {b});
  auto before = send_text(a, t, "before dave");
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(service_->add_participants(a, t.id, {d.id}).ok());
  auto status = [&](int64_t seq) { return status_in_history(a, t, seq); };
  EXPECT_EQ(status(before->message.seq), "sent") << "dave joining is not dave reading";
  auto after = send_text(a, t, "after dave");
  ASSERT_TRUE(after.ok());
  ASSERT_TRUE(service_->mark_read(d.id, t.id, kAllSeqs, "session-d").ok());
  EXPECT_EQ(status(after->message.seq), "read");
  EXPECT_EQ(status(before->message.seq), "sent");
  // Nor once dave has left: the marks he leaves with count from when he joined.
  ASSERT_TRUE(service_->remove_participant(a, t.id, d.id).ok());
  EXPECT_EQ(status(before->message.seq), "sent") << "dave leaving is not dave having read";
  EXPECT_EQ(status(after->message.seq), "read") << "what dave read stays read";
  ASSERT_TRUE(service_->mark_read(b.id, t.id, before->message.seq, "session-b").ok());
  EXPECT_EQ(status(before->message.seq), "read");
}

// Offline messages and subscribe_thread replays carry the current status, as
// history does; a gap fill (which stands in for live frames) does not read it.
TEST_F(ChatServiceTest, OfflineMessagesAndReplaysCarryTheCurrentStatus) {
  User a = user("alice"), b = user("bob");
  Thread t = group(a, {b});
  auto m = send_text(b, t, "to alice");
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(service_->mark_read(a.id, t.id, kAllSeqs, "session-a").ok());
  auto offline = service_->offline_messages(a, 0);
  ASSERT_TRUE(offline.ok());
  ASSERT_EQ(offline->messages.size(), 1u);
  EXPECT_EQ(offline->messages[0].status, "read") << "bob's message, as bob sees it: alice read it";
  auto replayed = service_->replay(b.id, t.id, 0, 10);
  ASSERT_TRUE(replayed.ok());
  ASSERT_FALSE(replayed->messages.empty());
  EXPECT_EQ(replayed->messages.back().status, "read");
  auto filled = service_->replay(b.id, t.id, 0, 10, ChatService::ReplayFor::kGapFill);
  ASSERT_TRUE(filled.ok());
  ASSERT_FALSE(filled->messages.empty());
  EXPECT_EQ(filled->messages.back().status, "sent");
}

// A delivery receipt is told to the message's sender while they are in the
// thread, and to nobody once they have left it.
TEST_F(ChatServiceTest, DeliveryReceiptsGoToTheSenderOnlyWhileAMember) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  auto first = send_text(a, t, "first");
  auto second = send_text(a, t, "second");
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_TRUE(service_->acknowledge_delivery(b.id, first->message.id).ok());
  EXPECT_EQ(events_.count("message_delivered"), 1u);
  EXPECT_EQ(recipients(*events_.last()), (Ids{a.id}));
  ASSERT_TRUE(service_->remove_participant(a, t.id, a.id).ok());
  ASSERT_TRUE(service_->acknowledge_delivery(c.id, second->message.id).ok()) << "the receipt is still stored";
  EXPECT_EQ(events_.count("message_delivered"), 1u) << "alice left: nothing more of this thread for her";
}

// A member added later who acknowledges a message from before they joined
// (a replay from since_seq 0 sent it): the receipt is kept, but the sender
// is not told, as it never makes the message delivered (annotate).
TEST_F(ChatServiceTest, AReceiptOfWhatCameBeforeJoiningTellsTheSenderNothing) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b});
  auto old = send_text(a, t, "before carol");
  ASSERT_TRUE(old.ok());
  ASSERT_TRUE(service_->add_participants(a, t.id, {c.id}).ok());
  auto fresh = send_text(a, t, "after carol");
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE(service_->acknowledge_delivery(c.id, old->message.id).ok());
  EXPECT_EQ(events_.count("message_delivered"), 0u) << "no tick the history would not show";
  auto h = service_->history(a, t.id, HistoryQuery{});
  ASSERT_TRUE(h.ok());
  for (const auto& m : *h) {
    if (m.id == old->message.id) {
      EXPECT_EQ(m.status, "sent");
    }
  }
  ASSERT_TRUE(service_->acknowledge_delivery(c.id, fresh->message.id).ok());
  EXPECT_EQ(events_.count("message_delivered"), 1u) << "what came since she joined is ticked";
  EXPECT_EQ(recipients(*events_.last()), (Ids{a.id}));
}

TEST_F(ChatServiceTest, NonAdminCannotRemoveOthers) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  auto st = service_->remove_participant(b, t.id, c.id);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "forbidden");
  EXPECT_TRUE(service_->thread(c, t.id).ok()) << "carol must still be a participant";
}

TEST_F(ChatServiceTest, AdminRemovesOthers) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  ASSERT_TRUE(service_->remove_participant(a, t.id, c.id).ok());
  EXPECT_FALSE(service_->thread(c, t.id).ok());
  EXPECT_TRUE(service_->thread(b, t.id).ok());
}

Ids admins_of(ChatService& service, const User& asker, const Thread& t) {
  Ids out;
  auto th = service.thread(asker, t.id);
  EXPECT_TRUE(th.ok()) << th.error().code;
  if (th.ok())
    for (const auto& p : th->participants)
      if (p.is_admin) out.insert(p.user_id);
  return out;
}

// The only admin leaving must not leave a group nobody can manage: the
// member there longest takes over, and everyone (the leaver too) is told.
TEST_F(ChatServiceTest, LastAdminLeavingMakesTheLongestStandingMemberAdmin) {
  User a = user("alice"), b = user("bob"), c = user("carol"), d = user("dave"), e = user("erin");
  Thread t = group(a, {c});
  std::this_thread::sleep_for(std::chrono::milliseconds(2));  // bob and dave join after carol
  ASSERT_TRUE(service_->add_participants(a, t.id, {b.id, d.id}).ok());
  size_t before = events_.size();
  ASSERT_TRUE(service_->remove_participant(a, t.id, a.id).ok());
  EXPECT_EQ(admins_of(*service_, b, t), Ids({c.id}));
  auto h = service_->history(b, t.id, HistoryQuery{});
  ASSERT_TRUE(h.ok());
  ASSERT_GE(h->size(), 2u);
  const Message& last = h->back();
  EXPECT_EQ(last.message_type, "system");
  EXPECT_EQ(last.content, "carol is now an admin");
  ASSERT_EQ(events_.size(), before + 3) << "the leave and the new admin, as new_message, then the leaver's typing stop";
  EXPECT_EQ(recipients(*events_.at(before + 1)), Ids({a.id, b.id, c.id, d.id})) << "the leaver is told too";
  EXPECT_EQ(events_.last()->type, "typing");
  EXPECT_EQ(recipients(*events_.last()), Ids({b.id, c.id, d.id})) << "to those left";
  EXPECT_TRUE(service_->add_participants(c, t.id, {e.id}).ok()) << "the new admin manages the group";
  EXPECT_FALSE(service_->add_participants(b, t.id, {e.id}).ok());
}

TEST_F(ChatServiceTest, LastAdminLeavingWithEqualJoinTimesPromotesTheLowestUserId) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});  // bob and carol joined at the same moment
  ASSERT_TRUE(service_->remove_participant(a, t.id, a.id).ok());
  EXPECT_EQ(admins_of(*service_, b, t), Ids({std::min(b.id, c.id)}));
}

TEST_F(ChatServiceTest, LeavingWhileAnotherAdminRemainsPromotesNobody) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b});
  ASSERT_TRUE(service_->remove_participant(b, t.id, b.id).ok());
  EXPECT_EQ(admins_of(*service_, a, t), Ids({a.id}));
  ASSERT_TRUE(service_->add_participants(a, t.id, {c.id}).ok());
  ASSERT_TRUE(service_->remove_participant(a, t.id, a.id).ok());
  EXPECT_EQ(admins_of(*service_, c, t), Ids({c.id})) << "the only one left";
  ASSERT_TRUE(service_->remove_participant(c, t.id, c.id).ok()) << "the last member may leave too";
}

// Another process on the same store (a second node): its member cache
// learns of this one's changes only through the bus.
class TwoProcessesTest : public ChatServiceTest {
 protected:
  void SetUp() override {
    ChatServiceTest::SetUp();
    other_bus_ = make_local_bus();
    other_bus_->set_receiver([this](const BusEventPtr& e) {
      if (!e->members_changed) other_events_.record(e);
    });
    other_ = std::make_unique<ChatService>(*store_, *other_bus_, jwt_, config_);
  }
  void TearDown() override {
    other_.reset();
    ChatServiceTest::TearDown();
  }
  // What the Redis bus does with this process's events: hands them to the other.
  void carry_changes() {
    for (size_t i = 0; i < changes_.size(); ++i) EXPECT_FALSE(other_->on_bus_event(*changes_.at(i)));
  }

  std::unique_ptr<Bus> other_bus_;
  std::unique_ptr<ChatService> other_;
  Recorder other_events_;  // what the other process published, members' changes apart
};

TEST_F(TwoProcessesTest, RemovalHereRefusesSendsThere) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  ASSERT_EQ(send_code(c, t.id, "cached there", "text", other_.get()), "<ok>");
  ASSERT_TRUE(service_->remove_participant(a, t.id, c.id).ok());
  carry_changes();
  EXPECT_EQ(send_code(c, t.id, "after removal", "text", other_.get()), "forbidden");
}

// A removed member's receipt through a node whose member list has not heard
// of the removal yet: the store decides, and their ended membership's mark moves.
TEST_F(TwoProcessesTest, AReceiptThroughANodeThatMissedTheRemovalCountsOnTheEndedMembership) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  auto said = send_text(a, t, "before carol left");
  ASSERT_TRUE(said.ok());
  ASSERT_EQ(send_code(c, t.id, "cached there", "text", other_.get()), "<ok>");
  ASSERT_TRUE(service_->remove_participant(a, t.id, c.id).ok());
  EXPECT_TRUE(other_->acknowledge_delivery(c.id, said->message.id).ok());
  auto th = store_->thread(t.id);
  ASSERT_TRUE(th.ok() && *th);
  int64_t carol_delivered = -1;
  for (const auto& f : (*th)->former_marks)
    if (f.user_id == c.id) carol_delivered = f.last_delivered_seq;
  EXPECT_EQ(carol_delivered, said->message.seq);
  auto after = send_text(a, t, "after carol left");
  ASSERT_TRUE(after.ok());
  auto refused = other_->acknowledge_delivery(c.id, after->message.id);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, ErrorKind::kForbidden) << "past her membership's end";
}

// A member added again here, whose receipt goes through a node that has not
// heard of it yet: the store decides, the mark moves and the sender is told.
TEST_F(TwoProcessesTest, AReceiptThroughANodeThatMissedTheReadditionCounts) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  ASSERT_TRUE(service_->remove_participant(a, t.id, c.id).ok());
  carry_changes();
  ASSERT_EQ(send_code(c, t.id, "not a member there", "text", other_.get()), "forbidden") << "cached there";
  ASSERT_TRUE(service_->add_participants(a, t.id, {c.id}).ok());
  auto said = send_text(a, t, "welcome back");
  ASSERT_TRUE(said.ok());
  ASSERT_TRUE(other_->acknowledge_delivery(c.id, said->message.id).ok());
  auto th = store_->thread(t.id);
  ASSERT_TRUE(th.ok() && *th);
  int64_t carol_delivered = -1;
  for (const auto& p : (*th)->participants)
    if (p.user_id == c.id) carol_delivered = p.last_delivered_seq;
  EXPECT_EQ(carol_delivered, said->message.seq) << "recorded, not dropped";
  ASSERT_GE(other_events_.size(), 1u);
  EXPECT_EQ(other_events_.last()->type, "message_delivered");
  EXPECT_EQ(recipients(*other_events_.last()), (Ids{a.id})) << "the sender hears of it";
  EXPECT_EQ(send_code(c, t.id, "back there too", "text", other_.get()), "<ok>") << "the list there was read again";
}

TEST_F(TwoProcessesTest, AdditionHereReachesTheNewMemberFromThere) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b});
  ASSERT_EQ(send_code(b, t.id, "cached there", "text", other_.get()), "<ok>");
  ASSERT_TRUE(service_->add_participants(a, t.id, {c.id}).ok());
  carry_changes();
  ASSERT_EQ(send_code(c, t.id, "now a member", "text", other_.get()), "<ok>");
}

// A bus whose health the test sets; publishing goes nowhere.
class SwitchableBus final : public Bus {
 public:
  void set_receiver(BusReceiver) override {}
  void publish(BusEventPtr) override {}
  std::string describe() const override { return "switchable"; }
  bool healthy() const override { return healthy_.load(); }
  std::atomic<bool> healthy_{true};
};

TEST_F(ChatServiceTest, MemberCacheIsNotTrustedWhileTheBusIsDown) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  SwitchableBus bus;
  MemberCache cache(*store_, bus);
  ASSERT_TRUE(cache.get(t.id).ok());
  ASSERT_NE(cache.cached(t.id), nullptr);
  bus.healthy_ = false;  // another node's change could be missed from now on
  EXPECT_EQ(cache.cached(t.id), nullptr);
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, c.id, {}, {}}).ok());
  auto fresh = cache.get(t.id);
  ASSERT_TRUE(fresh.ok() && *fresh);
  EXPECT_FALSE(MemberCache::contains(**fresh, c.id)) << "read from the store, not the old entry";
  bus.healthy_ = true;
  cache.forget_all();  // what the bus's resync does on reconnecting
  auto after = cache.get(t.id);
  ASSERT_TRUE(after.ok() && *after);
  EXPECT_FALSE(MemberCache::contains(**after, c.id));
  EXPECT_EQ(cache.cached(t.id), *after) << "cached again once the bus is back";
}

// In the grace period after a user's last connection closed, the API still
// says online (no offline was announced), but nothing of theirs is live: a
// call to them is refused, as it would ring nobody.
TEST_F(ChatServiceTest, InTheGracePeriodTheAPISaysOnlineButACallIsRefused) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  std::function<void()> grace;
  service_->presence().set_hooks([&](std::chrono::milliseconds, std::function<void()> fn) { grace = std::move(fn); },
                                 [](PresenceChange) {});
  service_->presence().connect(b.id);
  const json::object offer{{"payload", json::object{{"sdp", "x"}}}};
  EXPECT_TRUE(service_->relay(a.id, t.id, "call_offer", offer, "session-a").ok()) << "Bob is connected";
  service_->presence().disconnect(b.id);
  ASSERT_TRUE(grace);
  auto info = service_->presence_of(a, b.id);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->online) << "no offline announced yet";
  auto refused = service_->relay(a.id, t.id, "call_offer", offer, "session-a");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, "callee_offline");
  grace();
  info = service_->presence_of(a, b.id);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->online);
}

TEST_F(ChatServiceTest, MemberCacheEntriesAreUsedForMaxAgeOnly) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  SwitchableBus bus;
  // Long enough that the commit below (slow on a loaded machine) ends well within it.
  MemberCache cache(*store_, bus, std::chrono::milliseconds(2000));
  ASSERT_TRUE(cache.get(t.id).ok());
  // Changed by another node whose event never came: no forget here.
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, c.id, {}, {}}).ok());
  auto old = cache.cached(t.id);
  ASSERT_NE(old, nullptr);
  EXPECT_TRUE(MemberCache::contains(*old, c.id)) << "within max_age the entry stands";
  std::this_thread::sleep_for(std::chrono::milliseconds(2200));
  EXPECT_EQ(cache.cached(t.id), nullptr) << "past max_age it is not used";
  auto fresh = cache.get(t.id);
  ASSERT_TRUE(fresh.ok() && *fresh);
  EXPECT_FALSE(MemberCache::contains(**fresh, c.id));
  EXPECT_EQ(cache.cached(t.id), *fresh);
}

// Every direct pair is a thread: a table that kept each list ever loaded
// grew for as long as the server ran (about 0.5 KB a thread).
TEST_F(ChatServiceTest, MemberCacheDropsListsPastMaxAgeAsItGrows) {
  User a = user("alice");
  std::vector<Thread> threads;
  for (int i = 0; i < 6; ++i) threads.push_back(group(a, {user("member" + std::to_string(i))}));
  SwitchableBus bus;
  MemberCache cache(*store_, bus, std::chrono::milliseconds(1000), /*sweep_from=*/4);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cache.get(threads[i].id).ok());
  EXPECT_EQ(cache.size(), 3u);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  // The fourth reaches sweep_from: the three past max_age go.
  ASSERT_TRUE(cache.get(threads[3].id).ok());
  EXPECT_EQ(cache.size(), 1u);
  // Fresh lists stay, and the next sweep waits for the table to double.
  for (int i = 4; i < 6; ++i) ASSERT_TRUE(cache.get(threads[i].id).ok());
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_NE(cache.cached(threads[5].id), nullptr);
}

TEST_F(TwoProcessesTest, ResyncForgetsEveryCachedList) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  ASSERT_EQ(send_code(c, t.id, "cached there", "text", other_.get()), "<ok>");
  ASSERT_TRUE(service_->remove_participant(a, t.id, c.id).ok());
  // The members_changed event is lost (the bus was down); the bus says so.
  BusEvent resync;
  resync.resync = true;
  EXPECT_TRUE(other_->on_bus_event(resync)) << "a resync is for the sessions too";
  EXPECT_EQ(send_code(c, t.id, "after removal", "text", other_.get()), "forbidden");
}

// ================================================================ read state

TEST_F(ChatServiceTest, MarkReadPublishesReadReceipt) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  ASSERT_TRUE(send_text(a, t, "one").ok());
  ASSERT_TRUE(send_text(a, t, "two").ok());
  size_t before = events_.size();
  auto seq = service_->mark_read(b.id, t.id, kAllSeqs, "session-b");
  ASSERT_TRUE(seq.ok()) << seq.error().code;
  EXPECT_EQ(*seq, 2);
  ASSERT_EQ(events_.size(), before + 1);
  BusEventPtr e = events_.last();
  EXPECT_EQ(e->thread_id, t.id);
  EXPECT_EQ(recipients(*e), Ids({a.id, b.id}));
  EXPECT_EQ(e->exclude_session, "session-b");
  EXPECT_EQ(e->seq, 0) << "only new_message events carry a seq";
  json::value f = parse(encode_event(*e));
  EXPECT_EQ(f.at("type"), json::value("read_receipt"));
  EXPECT_EQ(f.at("thread_id"), json::value(t.id));
  EXPECT_EQ(f.at("user_id"), json::value(b.id));
  EXPECT_EQ(f.at("seq").to_number<int64_t>(), 2);
}

// A mark that moves nothing tells nobody anything new (a receipt a networked
// bus lost is announced again by the resync after the loss, not by a repeat).
TEST_F(ChatServiceTest, MarkThatMovesNothingIsAnnouncedToNobody) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  ASSERT_TRUE(send_text(a, t, "one").ok());
  ASSERT_TRUE(send_text(a, t, "two").ok());
  ASSERT_TRUE(service_->mark_read(b.id, t.id, kAllSeqs, "session-b").ok());
  size_t before = events_.size();
  auto again = service_->mark_read(b.id, t.id, kAllSeqs, "session-b");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 2);
  auto lower = service_->mark_read(b.id, t.id, 1, "session-b");
  ASSERT_TRUE(lower.ok());
  EXPECT_EQ(*lower, 2) << "the mark as it is, for the reply";
  EXPECT_EQ(events_.size(), before) << "no receipt for marks that moved nothing";
}

TEST_F(ChatServiceTest, MarkReadByNonParticipantForbidden) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = direct(a, b);
  size_t before = events_.size();
  auto r = service_->mark_read(c.id, t.id, kAllSeqs);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "forbidden");
  EXPECT_EQ(events_.size(), before);
}

TEST_F(ChatServiceTest, UnreadCountsFollowSendsAndMarkRead) {
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(send_text(a, t, "m").ok());
  EXPECT_EQ(unread(b, t), 3);
  EXPECT_EQ(unread(a, t), 0) << "one's own messages are read";
  ASSERT_TRUE(service_->mark_read(b.id, t.id, 2).ok());
  EXPECT_EQ(unread(b, t), 1);
  ASSERT_TRUE(service_->mark_read(b.id, t.id, 0).ok());
  EXPECT_EQ(unread(b, t), 1) << "up to 0 reads nothing";
  ASSERT_TRUE(service_->mark_read(b.id, t.id, kAllSeqs).ok());
  EXPECT_EQ(unread(b, t), 0);
  ASSERT_TRUE(send_text(a, t, "m").ok());
  EXPECT_EQ(unread(b, t), 1);
}

// ================================================================ relays

TEST_F(ChatServiceTest, TypingReachesOnlyTheOtherParticipants) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = group(a, {b, c});
  size_t before = events_.size();
  auto st = service_->relay(a.id, t.id, "typing", json::object{{"user_id", a.id}, {"is_typing", true}}, "session-a");
  ASSERT_TRUE(st.ok()) << st.error().code;
  ASSERT_EQ(events_.size(), before + 1);
  BusEventPtr e = events_.last();
  EXPECT_EQ(recipients(*e), Ids({b.id, c.id}));
  EXPECT_EQ(e->exclude_session, "session-a");
  EXPECT_EQ(e->seq, 0);
  json::value f = parse(encode_event(*e));
  EXPECT_EQ(f.at("type"), json::value("typing"));
  EXPECT_EQ(f.at("thread_id"), json::value(t.id));
  EXPECT_EQ(f.at("user_id"), json::value(a.id));
  EXPECT_EQ(f.at("is_typing"), json::value(true));
}

// Typing relayed while a member is removed reaches them before the notice
// of their removal or not at all: never after it. A relay reads the member
// list before it publishes, and the removal may commit and be announced in
// between; each removal here races a relay loop on another thread.
TEST_F(ChatServiceTest, NoRelayReachesARemovedMemberAfterTheirRemovalNotice) {
  User a = user("alice"), b = user("bob"), x = user("xena");
  Thread t = group(a, {b, x});
  std::atomic<bool> stop{false};
  std::atomic<int> relayed{0};
  std::thread typist([&] {
    while (!stop.load()) {
      if (service_->relay(b.id, t.id, "typing", json::object{{"is_typing", true}}, "session-b").ok()) ++relayed;
    }
  });
  // The one removed types too: nothing of theirs reaches the others after the notice either.
  std::thread removed_typist([&] {
    while (!stop.load()) service_->relay(x.id, t.id, "typing", json::object{{"user_id", x.id}}, "session-x");
  });
  const int rounds = 150;
  int late = 0;
  for (int i = 0; i < rounds && late == 0; ++i) {
    size_t from = events_.size();
    ASSERT_TRUE(service_->remove_participant(a, t.id, x.id).ok());
    // Let relays run after the removal, then look at what was published.
    std::this_thread::sleep_for(std::chrono::microseconds(300));
    size_t to = events_.size();
    bool told = false;
    for (size_t k = from; k < to; ++k) {
      BusEventPtr e = events_.at(k);
      if (e->type == "new_message" && recipients(*e).count(x.id)) told = true;
      else if (told && e->type == "typing" && recipients(*e).count(x.id)) ++late;
      else if (told && e->type == "typing" && e->payload.find(x.id) != std::string::npos &&
               e->payload.find(R"("is_typing":false)") == std::string::npos)  // the removal's own stop is due
        ++late;
    }
    EXPECT_TRUE(told) << "round " << i << ": the removal's notice reaches the one removed";
    ASSERT_TRUE(service_->add_participants(a, t.id, {x.id}).ok());
  }
  // A typist starved of the cores (sanitizers, a loaded CI machine) has had
  // fewer turns than the rounds: give it time to race at least that often.
  for (int i = 0; i < 1000 && relayed.load() <= rounds; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  stop = true;
  typist.join();
  removed_typist.join();
  EXPECT_GT(relayed.load(), rounds) << "the relays raced the removals";
  EXPECT_EQ(late, 0) << "typing reached a member, or came from one, after the notice of their removal";
}

TEST_F(ChatServiceTest, RelayByNonParticipantForbidden) {
  User a = user("alice"), b = user("bob"), c = user("carol");
  Thread t = direct(a, b);
  size_t before = events_.size();
  auto st = service_->relay(c.id, t.id, "typing", json::object{{"is_typing", true}}, "session-c");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, "forbidden");
  EXPECT_EQ(events_.size(), before);
}

// The WebSocket upgrade's path: no store read for an account read recently;
// `parley user disable` / revoke-tokens reach it through forget_user().
TEST_F(ChatServiceTest, CachedAuthenticationAnswersOnlyForAccountsReadRecently) {
  User a = user("alice");
  Identity& id = service_->identity();
  // Read the clock once: a second may tick between the signing and the checks.
  const int64_t issued_at = now_s() - 10;
  std::string token = jwt_->sign(a.id, issued_at, 3600);
  EXPECT_FALSE(id.authenticate_cached(token).has_value()) << "never read: the store must be asked";

  auto first = service_->authenticate(token);
  ASSERT_TRUE(first.ok()) << first.error().code;
  EXPECT_EQ(first->issued_at, issued_at);
  EXPECT_EQ(first->expires_at, issued_at + 3600);
  auto cached = id.authenticate_cached(token);
  ASSERT_TRUE(cached.has_value());
  ASSERT_TRUE(cached->ok()) << cached->error().code;
  EXPECT_EQ((*cached)->user.id, a.id);
  EXPECT_TRUE((*cached)->user.password_hash.empty()) << "the cache keeps no password hash";
  EXPECT_EQ((*cached)->expires_at, first->expires_at);

  auto bad = id.authenticate_cached("a.b.c");
  ASSERT_TRUE(bad.has_value()) << "a bad token is refused without the store";
  ASSERT_FALSE(bad->ok());
  EXPECT_EQ(bad->error().code, "invalid_token");

  // Disabled by another process: cached until the watcher's forget_user().
  ASSERT_TRUE(store_->set_user_disabled(a.id, true).ok());
  auto before_poll = id.authenticate_cached(token);
  EXPECT_TRUE(before_poll.has_value() && before_poll->ok()) << "the window the watcher's poll closes";
  id.forget_user(a.id);
  EXPECT_FALSE(id.authenticate_cached(token).has_value());
  auto refused = service_->authenticate(token);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, "account_disabled");
  EXPECT_FALSE(id.authenticate_cached(token).has_value()) << "refusals are the store's: enable works at once";
  ASSERT_TRUE(store_->set_user_disabled(a.id, false).ok());
  ASSERT_TRUE(service_->authenticate(token).ok());
  ASSERT_TRUE(id.authenticate_cached(token).has_value());

  // Tokens revoked after this one was issued.
  ASSERT_TRUE(store_->revoke_tokens(a.id, now_s()).ok());
  id.forget_user(a.id);
  auto revoked = service_->authenticate(token);
  ASSERT_FALSE(revoked.ok());
  EXPECT_EQ(revoked.error().code, "token_revoked");
  EXPECT_FALSE(id.authenticate_cached(token).has_value()) << "left to the store";
  auto fresh = id.authenticate_cached(jwt_->sign(a.id, now_s() + 1, 3600));
  ASSERT_TRUE(fresh.has_value());
  EXPECT_TRUE(fresh->ok()) << "a token issued after the revocation is accepted";
}

// A refresh re-reads the account once its token is signed: a revocation or
// a disabling that committed after the request was authenticated refuses it.
TEST_F(ChatServiceTest, ATokenIssuedToAnAccountChangedSinceItWasReadIsRefused) {
  User a = user("alice");
  Identity& id = service_->identity();
  auto authenticated = service_->authenticate(jwt_->sign(a.id, now_s() - 10, 3600));
  ASSERT_TRUE(authenticated.ok());
  const User as_read = authenticated->user;
  EXPECT_TRUE(id.unchanged_since(as_read).ok());
  ASSERT_TRUE(store_->revoke_tokens(a.id, now_s() + 1).ok());
  auto revoked = id.unchanged_since(as_read);
  ASSERT_FALSE(revoked.ok());
  EXPECT_EQ(revoked.error().code, "token_revoked");
  auto again = service_->authenticate(jwt_->sign(a.id, now_s() + 1, 3600));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(id.unchanged_since(again->user).ok()) << "read after the revocation";
  ASSERT_TRUE(store_->set_user_disabled(a.id, true).ok());
  auto disabled = id.unchanged_since(again->user);
  ASSERT_FALSE(disabled.ok());
  EXPECT_EQ(disabled.error().code, "account_disabled");
}

// A connection authenticated before an account change and registered after
// the watcher closed the user's connections finds out by the generation.
TEST_F(ChatServiceTest, AccountChangeAfterAuthenticationMovesTheGeneration) {
  User a = user("alice");
  Identity& id = service_->identity();
  std::string token = jwt_->sign(a.id, now_s() - 10, 3600);
  auto first = service_->authenticate(token);
  ASSERT_TRUE(first.ok());
  auto cached = id.authenticate_cached(token);
  ASSERT_TRUE(cached.has_value() && cached->ok());
  EXPECT_EQ((*cached)->generation, id.generation()) << "nothing changed: no re-read needed";

  ASSERT_TRUE(store_->set_user_disabled(a.id, true).ok());
  id.forget_user(a.id);  // the watcher's poll
  EXPECT_NE((*cached)->generation, id.generation());
  auto state = id.account_state(a.id);
  ASSERT_TRUE(state.ok());
  EXPECT_TRUE(state->disabled);
  auto gone = id.account_state(new_uuid());
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(gone->disabled) << "an account that is not there keeps nothing connected";
}

TEST_F(ChatServiceTest, WarmCachesEnabledAccountsForUpgrades) {
  User a = user("alice");
  User b = user("bob");
  ASSERT_TRUE(store_->set_user_disabled(b.id, true).ok());
  Identity& id = service_->identity();
  std::string ta = jwt_->sign(a.id, now_s(), 3600);
  std::string tb = jwt_->sign(b.id, now_s(), 3600);
  EXPECT_FALSE(id.authenticate_cached(ta).has_value());
  id.warm(100);
  auto cached = id.authenticate_cached(ta);
  ASSERT_TRUE(cached.has_value());
  ASSERT_TRUE(cached->ok());
  EXPECT_EQ((*cached)->user.id, a.id);
  EXPECT_FALSE(id.authenticate_cached(tb).has_value()) << "a disabled account is the store's to refuse";
}

// Another node's edit published after this node passed on a later change of
// the same message (its deletion) is not passed on: the last frame a client
// gets about a message shows it as it is now.
TEST_F(ChatServiceTest, AChangeEventOlderThanOnePassedOnIsDropped) {
  auto change = [](const std::string& type, int64_t n) {
    auto e = std::make_shared<BusEvent>();
    e->thread_id = "t";
    e->type = type;
    e->message_id = "m1";
    e->change_no = n;
    e->payload = "{}";
    return e;
  };
  EXPECT_TRUE(service_->on_bus(change("message_deleted", 11)));
  EXPECT_FALSE(service_->on_bus(change("message_edited", 10)));
  EXPECT_TRUE(service_->on_bus(change("message_edited", 12)));
}

// Two nodes' receipts of one reader (two devices marking at once) can reach
// Redis in either order: a receipt below one passed on is dropped, so a
// reader's receipts never go backwards. Other readers and threads count apart.
TEST_F(ChatServiceTest, AReadReceiptBelowOnePassedOnIsDropped) {
  auto receipt = [](const std::string& thread, const std::string& reader, int64_t seq) {
    auto e = std::make_shared<BusEvent>();
    e->thread_id = thread;
    e->type = "read_receipt";
    e->reader_id = reader;
    e->read_seq = seq;
    e->payload = "{}";
    return e;
  };
  EXPECT_TRUE(service_->on_bus(receipt("t", "b", 120)));
  EXPECT_FALSE(service_->on_bus(receipt("t", "b", 87)));
  EXPECT_FALSE(service_->on_bus(receipt("t", "b", 120))) << "the same mark again tells nothing";
  EXPECT_TRUE(service_->on_bus(receipt("t", "c", 5))) << "another reader";
  EXPECT_TRUE(service_->on_bus(receipt("u", "b", 3))) << "another thread";
  EXPECT_TRUE(service_->on_bus(receipt("t", "b", 121)));
  // Marks made here carry reader and seq (a receipt from an older node, without them, passes).
  User a = user("alice"), b = user("bob");
  Thread t = direct(a, b);
  ASSERT_TRUE(send_text(a, t, "one").ok());
  size_t before = events_.size();
  ASSERT_TRUE(service_->mark_read(b.id, t.id, kAllSeqs).ok());
  ASSERT_EQ(events_.size(), before + 1);
  EXPECT_EQ(events_.last()->reader_id, b.id);
  EXPECT_EQ(events_.last()->read_seq, 1);
}

// An offline change is announced and stored with its own time (when the
// last connection closed), not the time the announcement ran.
TEST_F(ChatServiceTest, PresenceAnnouncesAndStoresTheTimeOfTheChange) {
  User a = user("a");
  User b = user("b");
  direct(a, b);
  const Micros closed_at = now_micros() - 3'000'000;  // the grace period ago
  const size_t before = events_.size();
  service_->announce_presence({{a.id, false, closed_at}});
  ASSERT_EQ(events_.size(), before + 1);
  auto v = parse(events_.last()->payload).as_object();
  EXPECT_FALSE(v.at("online").as_bool());
  EXPECT_EQ(v.at("last_seen").as_string(), iso8601_millis(closed_at));
  auto seen = service_->presence_of(b, a.id);
  ASSERT_TRUE(seen.ok());
  EXPECT_EQ(seen->last_seen, closed_at);
}

// As the presence events: the user themself and those who share a thread.
TEST_F(ChatServiceTest, PresenceIsToldToContactsOnly) {
  User a = user("alice"), b = user("bob"), stranger = user("stranger");
  direct(a, b);
  EXPECT_TRUE(service_->presence_of(a, b.id).ok());
  EXPECT_TRUE(service_->presence_of(b, a.id).ok());
  EXPECT_TRUE(service_->presence_of(stranger, stranger.id).ok());
  auto refused = service_->presence_of(stranger, a.id);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, "forbidden");
  EXPECT_EQ(service_->presence_of(stranger, "00000000-0000-4000-8000-000000000000").error().code, "user_not_found");
}

// A burst of presence changes (more than one chunk of the store reads) is
// announced in the order given, each to exactly that user's contacts; a user
// with no contacts gets no event.
TEST_F(ChatServiceTest, PresenceBurstIsAnnouncedInOrderToEachUsersContacts) {
  User hub = user("hub");
  User loner = user("loner");
  std::vector<User> others;
  for (int i = 0; i < 300; ++i) {
    others.push_back(user("p" + std::to_string(i)));
    direct(hub, others.back());
  }
  std::vector<ChatService::PresenceChange> changes;
  for (const auto& u : others) changes.push_back({u.id, true});
  changes.push_back({loner.id, true});
  changes.push_back({hub.id, false});
  const size_t before = events_.size();
  service_->announce_presence(changes);
  ASSERT_EQ(events_.size(), before + others.size() + 1);
  for (size_t i = 0; i < others.size(); ++i) {
    auto e = events_.at(before + i);
    ASSERT_EQ(e->type, "presence");
    auto v = parse(e->payload).as_object();
    EXPECT_EQ(v.at("user_id").as_string(), others[i].id) << i;
    EXPECT_TRUE(v.at("online").as_bool());
    EXPECT_EQ(recipients(*e), Ids{hub.id}) << i;
  }
  auto last = events_.at(before + others.size());
  auto v = parse(last->payload).as_object();
  EXPECT_EQ(v.at("user_id").as_string(), hub.id);
  EXPECT_FALSE(v.at("online").as_bool());
  EXPECT_EQ(recipients(*last).size(), others.size());
}

}  // namespace
}  // namespace parley
