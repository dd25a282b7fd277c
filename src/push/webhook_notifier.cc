#include "push/webhook_notifier.h"

#include <boost/json.hpp>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>

#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "common/thread_pool.h"
#include "protocol/encode.h"

namespace parley {

namespace json = boost::json;

namespace {

// Past this many messages waiting for the intake thread (a store outage),
// new ones get no push rather than unbounded memory; logged and counted.
constexpr size_t kMaxPending = 100000;
// How long a claimed notification is ours: longer than a POST may take, so
// no other node takes it meanwhile; after it (we died), others may.
constexpr Micros kLeaseMicros = 60 * 1000000;
// stop() without a deadline: how long the intake may go on storing.
constexpr auto kDefaultStoreOnStop = std::chrono::seconds(2);
// How often the idle delivery thread counts the dead letters in the store.
constexpr auto kDeadLetterRecount = std::chrono::seconds(5);
// A message owed its push this long is taken as lost by its intake (its
// node died, or dropped it): far longer than an intake takes, so a sweep
// rarely races a live one (and the settle decides if it does).
constexpr Micros kOverdueMicros = 30 * 1000000;
// How often the delivery thread looks for overdue pushes, and how many at once.
constexpr auto kOverdueSweep = std::chrono::seconds(10);
constexpr int kOverdueBatch = 100;
// An owed push older than this is settled without one: a notification a
// day late (webhooks were off, a long outage) is noise, not news.
constexpr Micros kOverdueMaxAge = 24LL * 3600 * 1000000;
// How many handed-over messages the intake settles in one write, and about
// how many notifications it stores in one (a few large groups' worth: the
// write holds the store's writer, on PostgreSQL every node's).
constexpr size_t kIntakeBatch = 256;
constexpr size_t kIntakeItems = 4096;

// The message object the chat service serialised, with its content blanked:
// what the outbox keeps (the text stays in the message row only).
std::string message_without_content(const std::string& message_json) {
  boost::system::error_code ec;
  json::value v = json::parse(message_json, ec);
  if (ec || !v.is_object()) return "null";  // never: the chat service wrote it
  v.as_object()["content"] = "";
  return json::serialize(v);
}

// The body to POST: the stored one with its message's content, edit time and
// change number as claim_notifications read them.
std::string body_to_send(const Notification& n) {
  if (n.message_id.empty()) return n.body;
  boost::system::error_code ec;
  json::value v = json::parse(n.body, ec);
  json::value* field = (!ec && v.is_object()) ? v.as_object().if_contains("message") : nullptr;
  json::object* message = field ? field->if_object() : nullptr;
  if (!message) return n.body;
  (*message)["content"] = n.content;
  (*message)["edited_at"] = n.edited_at ? json::value(iso8601_millis(*n.edited_at)) : json::value(nullptr);
  if (n.change_no > 0) (*message)["change_no"] = n.change_no;
  else message->erase("change_no");
  return json::serialize(v);
}

}  // namespace

std::string webhook_signature(const std::string& secret, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(body.data()),
       body.size(), mac, &len);
  static const char* kHex = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[mac[i] >> 4];
    out += kHex[mac[i] & 0xf];
  }
  return out;
}

WebhookNotifier::WebhookNotifier(const WebhookConfig& config, Store& store, const Presence& presence, WebhookPost post)
    : config_(config), store_(store), presence_(presence), post_(std::move(post)) {}

WebhookNotifier::~WebhookNotifier() { stop(); }

void WebhookNotifier::start() {
  started_at_ = now_micros();
  count_dead_letters();
  intake_ = named_thread("webhook-intake", [this] { intake_loop(); });
  delivery_ = named_thread("webhook-send", [this] { delivery_loop(); });
  spdlog::info("event=webhook_started max_attempts={} concurrency={}", config_.max_attempts, config_.concurrency);
}

void WebhookNotifier::stop() { stop(Clock::now() + kDefaultStoreOnStop); }

void WebhookNotifier::stop(Clock::time_point store_until) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    store_until_ = store_until;
    if (!pending_.empty()) spdlog::info("event=webhook_storing_on_stop messages={}", pending_.size());
  }
  abandon_.store(true, std::memory_order_relaxed);
  intake_cv_.notify_all();
  delivery_cv_.notify_all();
  if (intake_.joinable()) intake_.join();
  if (delivery_.joinable()) delivery_.join();
}

void WebhookNotifier::observe(const Message& message, const std::string& message_json,
                              const std::shared_ptr<const ThreadMembers>& members) {
  // A system line owes no push. Every other message is settled, even one
  // with nobody to notify: its owed-push record must go.
  if (message.message_type == "system") return;
  {
    std::lock_guard lock(mu_);
    // Left owed in the store: the overdue sweep (here or on another node) makes it.
    if (stopping_) {
      spdlog::warn("event=webhook_deferred_on_stop message_id={}", message.id);
      return;
    }
    if (pending_.size() >= kMaxPending) {
      spdlog::warn("event=webhook_backlog_full message_id={}", message.id);
      return;
    }
    pending_.push_back(Pending{message, message_json, members});
  }
  intake_cv_.notify_one();
}

// On stop it goes on until everything handed over is stored (the store is
// closed only after stop() returns, and commits what is queued), or until
// store_until_, checked before each message: messages already acknowledged
// keep their push, and those left then stay owed.
void WebhookNotifier::intake_loop() {
  std::unique_lock lock(mu_);
  while (true) {
    intake_cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (config_.intake_pause_ms > 0)
      intake_cv_.wait_for(lock, std::chrono::milliseconds(config_.intake_pause_ms), [this] { return stopping_; });
    if (pending_.empty()) return;  // stopping, nothing left
    Settlement settlement;
    while (!pending_.empty() && settlement.settles.size() < kIntakeBatch && settlement.items.size() < kIntakeItems) {
      if (stopping_ && Clock::now() >= store_until_) {
        spdlog::warn("event=webhook_deferred_on_stop messages={}", pending_.size());
        pending_.clear();
        break;
      }
      Pending p = std::move(pending_.front());
      pending_.pop_front();
      lock.unlock();
      std::vector<std::string> recipients;
      if (p.members)
        for (const auto& user_id : p.members->user_ids)
          if (user_id != p.message.sender_id && !presence_.connected(user_id)) recipients.push_back(user_id);
      add(settlement, p.message, p.message_json, recipients);
      lock.lock();
    }
    lock.unlock();
    store(std::move(settlement), {});
    lock.lock();
  }
}

// One notification per recipient (none: the message is only settled), each
// with its recipient's unread count.
void WebhookNotifier::add(Settlement& settlement, const Message& message, const std::string& message_json,
                          const std::vector<std::string>& recipients) {
  settlement.settles.push_back(message.id);
  if (recipients.empty()) return;
  std::vector<ParticipantUnread> unread;
  // One read for the whole thread (not one per recipient of every thread they are in).
  if (auto counts = store_.thread_unread_counts(message.thread_id); counts) unread = std::move(*counts);
  auto unread_of = [&unread](const std::string& user_id) -> int64_t {
    for (const auto& u : unread)
      if (u.user_id == user_id) return u.unread_count;
    return 0;
  };
  // The message goes in as the chat service serialised it, less its content
  // (added at each POST from the message row); the envelope is ours.
  const std::string head = ",\"thread_id\":" + json::serialize(json::value(message.thread_id)) +
                           ",\"message\":" + message_without_content(message_json) + ",\"unread_count\":";
  const Micros now = now_micros();
  for (const auto& user_id : recipients) {
    Notification n;
    n.id = new_uuid();
    n.recipient_id = user_id;
    n.body = "{\"type\":\"message\",\"recipient_id\":" + json::serialize(json::value(user_id)) + head +
             std::to_string(unread_of(user_id)) + "}";
    n.next_attempt_at = now;
    n.message_id = message.id;
    settlement.items.push_back(std::move(n));
  }
}

// One write for the lot; `then` (may be empty) gets whether it committed.
void WebhookNotifier::store(Settlement settlement, std::function<void(bool)> then) {
  if (settlement.settles.empty() && settlement.items.empty()) {
    if (then) then(true);
    return;
  }
  const size_t messages = settlement.settles.size(), made = settlement.items.size();
  store_.enqueue_notifications(
      std::move(settlement.items), std::move(settlement.settles),
      [this, messages, made, then = std::move(then)](Result<size_t> stored) {
        if (!stored) {
          // The messages stay owed: the overdue sweep makes their push.
          spdlog::warn("event=webhook_enqueue_failed messages={} code={}", messages, stored.error().code);
        } else if (*stored < made) {
          spdlog::debug("event=webhook_settled_elsewhere notifications={}", made - *stored);
        }
        if (stored && *stored > 0) {
          Metrics::get().webhook_queued.fetch_add(*stored, std::memory_order_relaxed);
          {
            std::lock_guard lock(mu_);
            wake_delivery_ = true;
          }
          delivery_cv_.notify_one();
        }
        if (then) then(stored.ok());
      });
}

// Messages whose push their intake never stored (a node killed after the
// commit, a backlog or a stop that left them): made now, for the thread's
// members with no device that acknowledged it (or read it) and nothing live
// now. A member who joined after it has marks at or past its seq (a new
// member's marks start at the thread's last seq), and one who left is no
// member now.
void WebhookNotifier::sweep_overdue() {
  next_sweep_ = Clock::now() + kOverdueSweep;
  const Micros now = now_micros();
  auto overdue = store_.overdue_pushes(std::max(started_at_, now - kOverdueMicros), kOverdueBatch);
  if (!overdue || overdue->empty()) return;
  Settlement settlement;
  size_t looked_at = 0;
  int failed_reads = 0;
  for (const auto& id : *overdue) {
    if (abandon_.load(std::memory_order_relaxed)) break;  // stopping: the rest stays owed
    // A failed read leaves the message owed for the next sweep; two in a
    // row, the store is failing: the rest waits too.
    auto message = store_.message(id);
    if (!message && ++failed_reads >= 2) break;
    if (!message) continue;
    if (!*message || (*message)->deleted) {
      settlement.settles.push_back(id);
      ++looked_at;
      continue;
    }
    const Message& m = **message;
    if (m.created_at < now - kOverdueMaxAge) {
      spdlog::info("event=webhook_overdue_expired message_id={}", id);
      settlement.settles.push_back(id);
      ++looked_at;
      continue;
    }
    auto thread = store_.thread(m.thread_id);
    if (!thread && ++failed_reads >= 2) break;
    if (!thread) continue;
    failed_reads = 0;
    std::vector<std::string> recipients;
    if (*thread)
      for (const auto& p : (*thread)->participants)
        if (p.user_id != m.sender_id && std::max(p.last_delivered_seq, p.last_read_seq) < m.seq &&
            !presence_.connected(p.user_id))
          recipients.push_back(p.user_id);
    spdlog::info("event=webhook_overdue message_id={} recipients={}", id, recipients.size());
    add(settlement, m, message_json_text(m), recipients);
    ++looked_at;
  }
  // Waited for, so the next sweep does not read these again; a full batch
  // wholly settled (a crash under load left many) is followed by the next at once.
  auto committed = std::make_shared<std::promise<bool>>();
  store(std::move(settlement), [committed](bool ok) { committed->set_value(ok); });
  const bool ok = committed->get_future().get();
  if (ok && looked_at == static_cast<size_t>(kOverdueBatch)) next_sweep_ = Clock::now();
}

// At most `concurrency` POSTs at once, one thread each. A slot is claimed
// again as soon as its POST ends: one slow receiver holds one slot, not
// the notifications due behind it (the senders wake this loop as they end).
void WebhookNotifier::delivery_loop() {
  const int concurrency = std::max(1, config_.concurrency);
  struct Sender {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Sender> senders;
  auto reap = [&senders] {
    std::erase_if(senders, [](Sender& s) {
      if (!s.done->load()) return false;
      s.thread.join();
      return true;
    });
  };
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
    }
    reap();
    if (Clock::now() >= next_sweep_) sweep_overdue();
    const int free = concurrency - static_cast<int>(senders.size());
    bool claim_failed = false;
    if (free > 0) {
      const Micros now = now_micros();
      auto claimed = store_.claim_notifications(now, now + kLeaseMicros, free);
      if (!claimed) {
        spdlog::warn("event=webhook_claim_failed code={}", claimed.error().code);
        claim_failed = true;
      }
      if (claimed && !claimed->empty()) {
        for (const auto& n : *claimed) {
          auto done = std::make_shared<std::atomic<bool>>(false);
          senders.push_back({std::thread([this, n, done] {
                               deliver(n);
                               done->store(true);
                               {
                                 std::lock_guard lock(mu_);
                                 wake_delivery_ = true;
                               }
                               delivery_cv_.notify_one();
                             }),
                             done});
        }
        continue;  // there may be more due
      }
    }
    // A claim that failed (the writer down, reads still answering) waits for
    // the idle poll: what is due is due still, and asking at once would fail
    // again, every millisecond.
    wait_for_due(free > 0 && !claim_failed);
  }
  for (auto& s : senders) s.thread.join();
}

void WebhookNotifier::count_dead_letters() {
  dead_counted_at_ = Clock::now();
  if (auto dead = store_.dead_notification_count(); dead)
    Metrics::get().webhook_dead_letters.store(static_cast<uint64_t>(*dead), std::memory_order_relaxed);
}

void WebhookNotifier::wait_for_due(bool can_claim) {
  if (Clock::now() - dead_counted_at_ >= kDeadLetterRecount) count_dead_letters();
  auto wait = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::milliseconds(config_.idle_poll_ms));
  wait = std::min(wait, std::max(std::chrono::duration_cast<std::chrono::microseconds>(next_sweep_ - Clock::now()),
                                 std::chrono::microseconds(1000)));
  // With every slot taken, what is due waits for a sender to end (it wakes
  // this loop): waking for it now would find no slot, every millisecond.
  // The same after a failed claim (delivery_loop).
  auto due = can_claim ? store_.next_notification_due() : Result<std::optional<Micros>>(std::nullopt);
  if (due && *due) {
    // At least 1 ms: a clock that reads a hair early must not spin.
    Micros until = std::max<Micros>(**due - now_micros(), 1000);
    wait = std::min(wait, std::chrono::microseconds(until));
  }
  std::unique_lock lock(mu_);
  delivery_cv_.wait_for(lock, wait, [this] { return stopping_ || wake_delivery_; });
  wake_delivery_ = false;
}

Micros WebhookNotifier::backoff(int attempts) const {
  int64_t ms = config_.initial_backoff_ms;
  for (int i = 1; i < attempts && ms < config_.max_backoff_ms; ++i) ms *= 2;
  return std::min<int64_t>(ms, config_.max_backoff_ms) * 1000;
}

void WebhookNotifier::deliver(const Notification& n) {
  const std::string body = body_to_send(n);
  auto status = post_(body,
                      {{"X-Parley-Signature", webhook_signature(config_.secret, body)},
                       {"X-Parley-Delivery", n.id},
                       {"X-Parley-Attempt", std::to_string(n.attempts + 1)}},
                      abandon_);
  auto& metrics = Metrics::get();
  if (!status && abandon_.load(std::memory_order_relaxed)) {
    // Stopping: not the receiver's failure. Due again at once (not after the
    // claim's lease), so the next start, or another node, sends it.
    spdlog::info("event=webhook_abandoned delivery_id={}", n.id);
    if (auto st = store_.retry_notification(n.id, n.attempts, now_micros()); !st)
      spdlog::warn("event=webhook_retry_failed delivery_id={} code={}", n.id, st.error().code);
    return;
  }
  if (status && *status >= 200 && *status < 300) {
    metrics.webhook_delivered.fetch_add(1, std::memory_order_relaxed);
    if (auto st = store_.finish_notification(n.id); !st)
      spdlog::warn("event=webhook_finish_failed delivery_id={} code={}", n.id, st.error().code);
    spdlog::debug("event=webhook_delivered delivery_id={} recipient_id={}", n.id, n.recipient_id);
    return;
  }
  metrics.webhook_failed_attempts.fetch_add(1, std::memory_order_relaxed);
  const int attempts = n.attempts + 1;
  const std::string why = status ? "status " + std::to_string(*status) : status.error().message;
  if (attempts >= config_.max_attempts) {
    metrics.webhook_dead_letters.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("event=webhook_dead_letter delivery_id={} recipient_id={} attempts={} last_error=\"{}\"", n.id,
                 n.recipient_id, attempts, why);
    if (auto st = store_.dead_letter_notification(n.id, attempts); !st)
      spdlog::warn("event=webhook_bury_failed delivery_id={} code={}", n.id, st.error().code);
    return;
  }
  spdlog::info("event=webhook_retry delivery_id={} attempts={} error=\"{}\"", n.id, attempts, why);
  if (auto st = store_.retry_notification(n.id, attempts, now_micros() + backoff(attempts)); !st)
    spdlog::warn("event=webhook_retry_failed delivery_id={} code={}", n.id, st.error().code);
}

}  // namespace parley
