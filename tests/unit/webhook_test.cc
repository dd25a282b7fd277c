// The webhook's signature (push/webhook_notifier.h): HMAC-SHA256 in the
// X-Parley-Signature form, checked against RFC 4231's test vectors; the
// notifier against a real SQLite store (what the outbox holds, edits and
// deletes, stop, retry timing); HttpPoster's abandon.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <sqlite3.h>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/clock.h"
#include "net/http_post.h"
#include "protocol/encode.h"
#include "push/webhook_notifier.h"
#include "store_test_support.h"

namespace parley {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

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

// The notifier against a real SqliteStore and a scripted receiver.
class WebhookNotifierTest : public StoreFixture {
 protected:
  using Clock = std::chrono::steady_clock;

  void SetUp() override {
    char tmpl[] = "/tmp/parley_webhook_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    reopen();
    alice_ = make_user("alice");
    bob_ = make_user("bob");
    thread_ = make_group({alice_.id, bob_.id});
    members_ = std::make_shared<ThreadMembers>();
    members_->user_ids = {alice_.id, bob_.id};
  }
  void TearDown() override {
    notifier_.reset();
    store_.reset();
    std::filesystem::remove_all(root_);
  }
  Result<std::unique_ptr<Store>> open_store() override { return parley::open_store(StoreOptions{root_ + "/data", false, 512, ""}); }
  uint64_t commit_count() override { return 0; }

  // The receiver: answers each POST with the next of `statuses` (then 200).
  struct Receiver {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> bodies;
    std::vector<Clock::time_point> times;
    std::deque<int> statuses;
  };
  WebhookConfig config(int max_attempts, int backoff_ms) {
    WebhookConfig c;
    c.url = "http://127.0.0.1:1/";
    c.secret = "s";
    c.max_attempts = max_attempts;
    c.initial_backoff_ms = backoff_ms;
    c.max_backoff_ms = backoff_ms;
    c.concurrency = 2;
    return c;
  }
  void start(const WebhookConfig& c, WebhookPost post) {
    notifier_ = std::make_unique<WebhookNotifier>(c, *store_, presence_, std::move(post));
    notifier_->start();
  }
  void start(const WebhookConfig& c) {
    start(c, [r = &receiver_](const std::string& body, const auto&, const std::atomic<bool>&) -> Result<int> {
      std::lock_guard lock(r->mu);
      r->bodies.push_back(body);
      r->times.push_back(Clock::now());
      int status = 200;
      if (!r->statuses.empty()) {
        status = r->statuses.front();
        r->statuses.pop_front();
      }
      r->cv.notify_all();
      return status;
    });
  }
  // Waits (at most `wait`) until the receiver got `n` POSTs.
  bool posts(size_t n, std::chrono::milliseconds wait = std::chrono::seconds(5)) {
    std::unique_lock lock(receiver_.mu);
    return receiver_.cv.wait_for(lock, wait, [&] { return receiver_.bodies.size() >= n; });
  }
  // A message as the chat service stores it with webhooks on: owing its push.
  Message message(const std::string& content) {
    auto sent = store_->append_and_wait(AppendRequest{thread_.id, alice_.id, content, "text", "", true});
    EXPECT_TRUE(sent.ok());
    return sent.ok() ? sent->message : Message{};
  }
  void observe(const Message& m) { notifier_->observe(m, message_json_text(m), members_); }
  static std::string content_of(const std::string& body) {
    return std::string(json::parse(body).at("message").at("content").as_string());
  }

  std::string root_;
  Presence presence_{std::chrono::milliseconds(0)};
  User alice_, bob_;
  Thread thread_;
  std::shared_ptr<ThreadMembers> members_;
  Receiver receiver_;
  std::unique_ptr<WebhookNotifier> notifier_;
};

// A retry after an edit carries the new text; after a delete nothing is sent
// again and nothing of the message is left in the outbox.
TEST_F(WebhookNotifierTest, RetriesCarryTheMessageAsItIsNow) {
  receiver_.statuses = {500, 500, 500, 500, 500, 500, 500, 500};
  start(config(8, 100));
  Message m = message("original text");
  observe(m);
  ASSERT_TRUE(posts(1));
  auto edit = store_->edit_message(m.id, "", "edited text", now_micros());
  ASSERT_TRUE(edit.ok());
  // The attempts under way during the edit (one, or more on a loaded
  // machine: the backoff is 100 ms) carry the old text; the next the new.
  bool edited = false;
  for (size_t n = 2; n <= 8 && !edited; ++n) {
    ASSERT_TRUE(posts(n));
    std::lock_guard lock(receiver_.mu);
    edited = content_of(receiver_.bodies.back()) == "edited text";
  }
  ASSERT_TRUE(edited) << "a retry after the edit carries the new text";
  {
    std::lock_guard lock(receiver_.mu);
    EXPECT_EQ(content_of(receiver_.bodies.front()), "original text");
    EXPECT_FALSE(json::parse(receiver_.bodies.front()).at("message").as_object().contains("change_no"));
    const json::value last_body = json::parse(receiver_.bodies.back());
    const json::object& last = last_body.at("message").as_object();
    EXPECT_FALSE(last.at("edited_at").is_null());
    ASSERT_TRUE(last.contains("change_no")) << "the edit's number, as protocol.md's message has it";
    EXPECT_EQ(last.at("change_no").as_int64(), edit->change_no);
  }
  ASSERT_TRUE(store_->delete_message(m.id, "").ok());
  size_t sent = 0;
  {
    std::lock_guard lock(receiver_.mu);
    sent = receiver_.bodies.size();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // several backoffs
  std::lock_guard lock(receiver_.mu);
  EXPECT_LE(receiver_.bodies.size(), sent + 1);  // at most the one under way during the delete
  for (size_t i = sent; i < receiver_.bodies.size(); ++i) EXPECT_NE(content_of(receiver_.bodies[i]), "original text");
  EXPECT_FALSE(ok(store_->next_notification_due()).has_value());
}

// Push goes to whoever has nothing live: not to a connected user, but to one
// in the grace period after their last connection closed (still shown online,
// yet nothing would show them the message).
TEST_F(WebhookNotifierTest, PushSkipsConnectedUsersNotThoseInTheGracePeriod) {
  std::function<void()> grace;
  presence_.set_hooks([&](std::chrono::milliseconds, std::function<void()> fn) { grace = std::move(fn); },
                      [](PresenceChange) {});
  start(config(3, 100));
  presence_.connect(bob_.id);
  observe(message("while connected"));
  EXPECT_FALSE(posts(1, std::chrono::milliseconds(1000))) << "Bob is connected: no push";
  presence_.disconnect(bob_.id);
  ASSERT_TRUE(grace);
  ASSERT_TRUE(presence_.online(bob_.id));
  observe(message("in the grace period"));
  ASSERT_TRUE(posts(1));
  std::lock_guard lock(receiver_.mu);
  EXPECT_EQ(content_of(receiver_.bodies.front()), "in the grace period");
}

// What the outbox stores has no message text; the claim brings it.
TEST_F(WebhookNotifierTest, OutboxHoldsNoMessageText) {
  start(config(8, 60000), [](const std::string&, const auto&, const std::atomic<bool>&) -> Result<int> { return 500; });
  observe(message("a secret"));
  notifier_->stop();
  auto claimed = ok(store_->claim_notifications(now_micros() + 3600'000'000LL, now_micros() + 7200'000'000LL, 10));
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].body.find("a secret"), std::string::npos) << claimed[0].body;
  EXPECT_EQ(content_of(claimed[0].body), "");
  EXPECT_EQ(claimed[0].content, "a secret");
  EXPECT_EQ(claimed[0].recipient_id, bob_.id);
}

// A clean stop stores what the intake had not yet stored: every message
// handed over gets its notification in the outbox.
TEST_F(WebhookNotifierTest, StopStoresWhatTheIntakeStillHolds) {
  constexpr int kObserved = 300;
  std::vector<Message> messages;
  for (int i = 0; i < kObserved; ++i) messages.push_back(message("hello " + std::to_string(i)));
  start(config(8, 60000), [](const std::string&, const auto&, const std::atomic<bool>&) -> Result<int> { return 500; });
  for (const auto& m : messages) observe(m);
  notifier_->stop(Clock::now() + std::chrono::seconds(20));
  size_t stored = 0;
  const Micros later = now_micros() + 3600'000'000LL;
  for (int round = 0; round < kObserved; ++round) {
    auto claimed = ok(store_->claim_notifications(later, later + 1, 500));
    if (claimed.empty()) break;
    stored += claimed.size();
  }
  EXPECT_EQ(stored, static_cast<size_t>(kObserved));
  // Read after the claims, which the store's writer ran after every enqueue.
  EXPECT_EQ(ok(store_->overdue_pushes(later, 10)), std::vector<std::string>{});
}

// A process killed between a message's commit and its intake storing the
// notifications left the message owing its push: the next start makes it,
// for members with no device that acknowledged it, and only once.
TEST_F(WebhookNotifierTest, APushOwedWhenTheProcessDiedIsMadeAtTheNextStart) {
  User carol = make_user("carol"), dave = make_user("dave");
  Thread t = make_group({alice_.id, bob_.id, carol.id});
  auto owed = store_->append_and_wait(AppendRequest{t.id, alice_.id, "sent, then killed", "text", "", true});
  ASSERT_TRUE(owed.ok());
  ASSERT_TRUE(store_->mark_delivered(t.id, carol.id, owed->message.seq).ok());  // carol's phone had it
  ASSERT_TRUE(store_->add_participants(t.id, {dave.id}).ok());  // dave came later
  auto gone = store_->append_and_wait(AppendRequest{t.id, alice_.id, "deleted before the restart", "text", "", true});
  ASSERT_TRUE(gone.ok());
  ASSERT_TRUE(store_->delete_message(gone->message.id, "").ok());
  start(config(3, 100));
  ASSERT_TRUE(posts(1));
  EXPECT_FALSE(posts(2, std::chrono::milliseconds(700))) << "one push: bob's";
  {
    std::lock_guard lock(receiver_.mu);
    json::value body = json::parse(receiver_.bodies.front());
    EXPECT_EQ(body.at("recipient_id"), json::value(bob_.id));
    EXPECT_EQ(content_of(receiver_.bodies.front()), "sent, then killed");
    EXPECT_EQ(body.at("unread_count").to_number<int64_t>(), 1);
  }
  EXPECT_EQ(ok(store_->overdue_pushes(now_micros() + 3600'000'000LL, 10)), std::vector<std::string>{});
  // The intake, late with the same message, finds it settled and stores nothing.
  notifier_->observe(owed->message, message_json_text(owed->message), members_);
  EXPECT_FALSE(posts(2, std::chrono::milliseconds(700)));
}

// A push owed for over a day (webhooks were off, a long outage) is settled
// without one: a notification that late is noise.
TEST_F(WebhookNotifierTest, APushOwedForOverADayIsSettledWithoutOne) {
  Message m = message("yesterday's news");
  store_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((root_ + "/data/parley.db").c_str(), &db), SQLITE_OK);
  const std::string age = "UPDATE messages SET created_at = created_at - 90000000000 WHERE id = '" + m.id + "'";
  EXPECT_EQ(sqlite3_exec(db, age.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
  reopen();
  ASSERT_EQ(ok(store_->overdue_pushes(now_micros() + 1, 10)), std::vector<std::string>{m.id});
  start(config(3, 100));
  EXPECT_FALSE(posts(1, std::chrono::milliseconds(1000)));
  notifier_->stop();
  EXPECT_EQ(ok(store_->overdue_pushes(now_micros() + 1, 10)), std::vector<std::string>{}) << "settled";
}

// A POST to a receiver that does not answer is abandoned at stop, at once,
// and its notification is due again (not counted as an attempt).
TEST_F(WebhookNotifierTest, StopAbandonsAPostUnderWay) {
  std::atomic<bool> posting{false};
  start(config(8, 100), [&posting](const std::string&, const auto&, const std::atomic<bool>& abandon) -> Result<int> {
    posting = true;
    for (int i = 0; i < 1000 && !abandon.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return Error{ErrorKind::kUnavailable, "webhook_abandoned", "abandoned"};
  });
  observe(message("hello"));
  for (int i = 0; i < 500 && !posting.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(posting.load());
  auto t0 = Clock::now();
  notifier_->stop();
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(5000)) << "abandoned: the post would last 10 s";
  auto again = ok(store_->claim_notifications(now_micros() + 1000, now_micros() + 60'000'000, 10));
  ASSERT_EQ(again.size(), 1u);  // not leased for a minute
  EXPECT_EQ(again[0].attempts, 0);
}

// The voluntary context switches so far of this process's threads named
// `name`, summed (a POST's thread inherits its starter's name); -1 if none.
long voluntary_switches(const std::string& name) {
  long sum = -1;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string n;
    std::getline(comm, n);
    if (n != name) continue;
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) sum = std::max(sum, 0L) + std::stol(line.substr(line.find(':') + 1));
    }
  }
  return sum;
}

// With every slot held by a slow receiver and more notifications due, the
// delivery loop waits for a sender to end: it used to wake every millisecond
// (and read the store each time) until one did.
TEST_F(WebhookNotifierTest, AllSlotsBusyDoNotSpinTheLoop) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> posting{0};
  WebhookConfig c = config(3, 100);
  c.concurrency = 1;
  start(c, [&](const std::string&, const auto&, const std::atomic<bool>& abandon) -> Result<int> {
    ++posting;
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return release || abandon.load(); });
    return 200;
  });
  observe(message("one"));
  observe(message("two"));  // due behind the first, with no slot free
  for (int i = 0; i < 500 && posting.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(posting.load(), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the second is due by now
  const long before = voluntary_switches("webhook-send");
  ASSERT_GE(before, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const long woke = voluntary_switches("webhook-send") - before;
  EXPECT_LT(woke, 50) << "the delivery loop woke " << woke << " times in 1 s with no slot free";
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  for (int i = 0; i < 500 && posting.load() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(posting.load(), 2) << "the second goes once the slot is free";
}

// A claim that fails while the store's reads answer (here a trigger refuses
// the claim's UPDATE): the loop asks again at the idle poll, not every
// millisecond with a warning each time; once claims work, it delivers.
TEST_F(WebhookNotifierTest, AFailingClaimDoesNotSpinTheLoop) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((root_ + "/data/parley.db").c_str(), &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  const char* refuse =
      "CREATE TRIGGER refuse_claims BEFORE UPDATE OF next_attempt_at ON webhook_outbox "
      "BEGIN SELECT RAISE(ABORT, 'claims refused by the test'); END";
  ASSERT_EQ(sqlite3_exec(db, refuse, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  WebhookConfig c = config(3, 100);
  c.idle_poll_ms = 200;
  start(c);
  observe(message("one"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // stored and due, its claims refused
  const long before = voluntary_switches("webhook-send");
  ASSERT_GE(before, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const long woke = voluntary_switches("webhook-send") - before;
  EXPECT_LT(woke, 60) << "the delivery loop woke " << woke << " times in 1 s of failing claims";
  EXPECT_TRUE(receiver_.bodies.empty());
  ASSERT_EQ(sqlite3_exec(db, "DROP TRIGGER refuse_claims", nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
  EXPECT_TRUE(posts(1)) << "delivered once claims work again";
}

// A retry goes out when --webhook-backoff-ms says, not at the next idle poll.
TEST_F(WebhookNotifierTest, RetryFiresAtItsBackoff) {
  receiver_.statuses = {500};
  WebhookConfig c = config(3, 150);
  c.idle_poll_ms = 10'000;  // a retry left to the idle poll would come 10 s later
  start(c);
  observe(message("hello"));
  ASSERT_TRUE(posts(2));
  std::lock_guard lock(receiver_.mu);
  auto gap = receiver_.times[1] - receiver_.times[0];
  EXPECT_GE(gap, std::chrono::milliseconds(150));
  EXPECT_LT(gap, std::chrono::milliseconds(3000)) << "at its backoff, not at the idle poll (slack for a loaded machine)";
}

TEST(HttpPoster, RefusesURLsItCannotPostTo) {
  using namespace std::chrono_literals;
  for (const char* url : {"http://127.0.0.1:99999/x", "http://127.0.0.1:0/x", "http://127.0.0.1:/x",
                          "http://127.0.0.1:80a/x", "https://127.0.0.1/x", "http:///x",
                          // What the request line cannot carry as it is, and a fragment.
                          "http://127.0.0.1:4990/h\r\nX-Evil: 1", "http://127.0.0.1:4990/ho ok",
                          "http://127.0.0.1:4990/hook#frag", "http://127.0.0.1:4990/caf\xc3\xa9", "http://127.0.0.1/\x7f"}) {
    auto p = HttpPoster::create(url, 1000ms);
    ASSERT_FALSE(p.ok()) << url;
    EXPECT_EQ(p.error().code, "invalid_webhook_url") << url;
  }
  EXPECT_TRUE(HttpPoster::create("http://127.0.0.1:65535/x", 1000ms).ok());
  EXPECT_TRUE(HttpPoster::create("HTTP://127.0.0.1:8088/x", 1000ms).ok()) << "the scheme is case-insensitive";
  EXPECT_EQ(HttpPoster::create("HTTPS://127.0.0.1/x", 1000ms).error().message.find("https"), 0u);
  EXPECT_TRUE(HttpPoster::create("http://127.0.0.1/x", 1000ms).ok());
  EXPECT_TRUE(HttpPoster::create("http://127.0.0.1/caf%C3%A9?a=1&b=%20", 1000ms).ok());
  // A host name with a non-ASCII byte is told to use punycode, not percent-encoding.
  auto idn = HttpPoster::create("http://\xc3\xa9" "cole.example:8088/hook", 1000ms);
  ASSERT_FALSE(idn.ok());
  EXPECT_NE(idn.error().message.find("punycode"), std::string::npos) << idn.error().message;
  auto path = HttpPoster::create("http://127.0.0.1/\xc3\xa9" "cole", 1000ms);
  ASSERT_FALSE(path.ok());
  EXPECT_NE(path.error().message.find("percent-encode"), std::string::npos) << path.error().message;
  auto query = HttpPoster::create("http://127.0.0.1?x=\xc3\xa9", 1000ms);
  ASSERT_FALSE(query.ok());
  EXPECT_NE(query.error().message.find("percent-encode"), std::string::npos) << query.error().message;
}

// HttpPoster gives up a POST under way when told to, long before its timeout.
TEST(HttpPoster, AbandonEndsAPostUnderWay) {
  // A listener that never accepts: the kernel completes the handshake, nobody answers.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  auto poster = HttpPoster::create("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/hook",
                                   std::chrono::milliseconds(5000));
  ASSERT_TRUE(poster.ok());
  std::atomic<bool> abandon{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    abandon = true;
  });
  auto t0 = std::chrono::steady_clock::now();
  auto r = (*poster)->post("{}", {}, abandon);
  auto took = std::chrono::steady_clock::now() - t0;
  stopper.join();
  ::close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "webhook_abandoned");
  EXPECT_LT(took, std::chrono::milliseconds(3000)) << "abandoned: the timeout is 5 s";
}

// Accepts one connection on loopback (IPv4, or IPv6 with v6), keeps the
// request's head, writes `answer` and holds the connection open until
// destroyed: a receiver whose body never ends.
class OneAnswerServer {
 public:
  OneAnswerServer(std::string answer, bool v6 = false) {
    fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    sockaddr_storage ss{};
    socklen_t len;
    if (v6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_loopback;
      len = sizeof *a;
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof *a;
    }
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
      return;
    port_ = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    server_ = std::thread([this, answer = std::move(answer)] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      while (head_.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        head_.append(buf, static_cast<size_t>(n));
      }
      for (size_t off = 0; off < answer.size();) {
        ssize_t n = ::write(c, answer.data() + off, answer.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(10), [this] { return done_; });
      ::close(c);
    });
  }
  ~OneAnswerServer() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    ::shutdown(fd_, SHUT_RDWR);
    if (server_.joinable()) server_.join();
    ::close(fd_);
  }
  int port() const { return port_; }
  std::string head() {
    std::lock_guard lock(mu_);
    return head_;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::string head_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread server_;
};

// Only the status is used: a 2xx ends the delivery however its body goes on
// (longer than any limit, or never ending on a kept-alive connection), or
// the notification would be retried and pushed twice.
TEST(HttpPoster, A2xxIsTheAnswerWhateverItsBodyDoes) {
  std::atomic<bool> abandon{false};
  {
    OneAnswerServer big("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + std::string(100000, 'x'));
    auto poster = HttpPoster::create("http://127.0.0.1:" + std::to_string(big.port()) + "/hook", 3000ms);
    ASSERT_TRUE(poster.ok());
    auto r = (*poster)->post("{}", {}, abandon);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(*r, 200);
  }
  {
    OneAnswerServer endless("HTTP/1.1 202 Accepted\r\nConnection: keep-alive\r\n\r\npartial");
    auto poster = HttpPoster::create("http://127.0.0.1:" + std::to_string(endless.port()) + "/hook", 3000ms);
    ASSERT_TRUE(poster.ok());
    auto t0 = std::chrono::steady_clock::now();
    auto r = (*poster)->post("{}", {}, abandon);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(*r, 202);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2000ms) << "not held until the timeout";
  }
}

// An IPv6 literal goes into Host in brackets (RFC 9110), as in the URL.
TEST(HttpPoster, HostHeaderOfAnIpv6ReceiverHasBrackets) {
  OneAnswerServer v6("HTTP/1.1 204 No Content\r\n\r\n", /*v6=*/true);
  if (v6.port() == 0) GTEST_SKIP() << "no IPv6 loopback here";
  auto poster = HttpPoster::create("http://[::1]:" + std::to_string(v6.port()) + "/hook", 3000ms);
  ASSERT_TRUE(poster.ok());
  std::atomic<bool> abandon{false};
  auto r = (*poster)->post("{}", {}, abandon);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, 204);
  EXPECT_NE(v6.head().find("\r\nHost: [::1]:" + std::to_string(v6.port()) + "\r\n"), std::string::npos) << v6.head();
}

// A URL with a query and no path: the host and port end where the query
// starts, and the request asks for "/?…" (it was refused as a bad port).
TEST(HttpPoster, AQueryWithNoPathIsAskedForAtTheRoot) {
  OneAnswerServer srv("HTTP/1.1 204 No Content\r\n\r\n");
  auto poster = HttpPoster::create("http://127.0.0.1:" + std::to_string(srv.port()) + "?key=1", 3000ms);
  ASSERT_TRUE(poster.ok()) << poster.error().message;
  EXPECT_EQ((*poster)->host(), "127.0.0.1");
  std::atomic<bool> abandon{false};
  auto r = (*poster)->post("{}", {}, abandon);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, 204);
  EXPECT_EQ(srv.head().rfind("POST /?key=1 HTTP/1.1\r\n", 0), 0u) << srv.head();
}

// An IPv6 host with a zone, written %25 as RFC 6874 has it, goes to the
// resolver as fe80::1%lo, which takes it (its scope: lo). Nothing is sent:
// the test uses loopback only, and lo has no link-local address. A zone
// written otherwise is refused at start.
TEST(HttpPoster, AnIpv6HostWithAZoneGoesToTheResolverAsItWantsIt) {
  auto poster = HttpPoster::create("http://[fe80::1%25lo]:8080/hook", 3000ms);
  ASSERT_TRUE(poster.ok()) << poster.error().message;
  EXPECT_EQ((*poster)->host(), "fe80::1%lo");
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST;
  addrinfo* found = nullptr;
  ASSERT_EQ(::getaddrinfo((*poster)->host().c_str(), "8080", &hints, &found), 0);
  ASSERT_EQ(found->ai_family, AF_INET6);
  EXPECT_EQ(reinterpret_cast<sockaddr_in6*>(found->ai_addr)->sin6_scope_id, ::if_nametoindex("lo"));
  ::freeaddrinfo(found);
  // A bare % (RFC 6874 asks to accept it) and a zone name with other characters Linux allows.
  auto bare = HttpPoster::create("http://[fe80::1%lo]:8080/hook", 3000ms);
  ASSERT_TRUE(bare.ok()) << bare.error().message;
  EXPECT_EQ((*bare)->host(), "fe80::1%lo");
  auto plus = HttpPoster::create("http://[fe80::1%25br+1]:8080/hook", 3000ms);
  ASSERT_TRUE(plus.ok()) << plus.error().message;
  EXPECT_EQ((*plus)->host(), "fe80::1%br+1");
  for (const char* url : {"http://[fe80::1%]:80/x", "http://[fe80::1%25]:80/x",
                          "http://[fe80::1%25eth0%25x]/x", "http://[fe80::1%25%65th0]/x", "http://[foo%25lo]/x",
                          "http://[example.com]/x", "http://fe80::1%25eth0/x", "http://::1/x", "http://fe80::1/x",
                          "http://host:80:90/x", "http://host%25x:80/x", "http://%65xample.com/x"}) {
    auto bad = HttpPoster::create(url, 1000ms);
    ASSERT_FALSE(bad.ok()) << url;
    EXPECT_EQ(bad.error().code, "invalid_webhook_url") << url;
  }
}

}  // namespace
}  // namespace parley
