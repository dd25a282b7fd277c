#include "push/webhook_notifier.h"

#include <boost/json.hpp>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "common/thread_pool.h"

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

// The message object the chat service serialised, with its content blanked:
// what the outbox keeps (the text stays in the message row only).
std::string message_without_content(const std::string& message_json) {
  boost::system::error_code ec;
  json::value v = json::parse(message_json, ec);
  if (ec || !v.is_object()) return "null";  // never: the chat service wrote it
  v.as_object()["content"] = "";
  return json::serialize(v);
}

// The body to POST: the stored one with its message's content and edit time
// as claim_notifications read them.
std::string body_to_send(const Notification& n) {
  if (n.message_id.empty()) return n.body;
  boost::system::error_code ec;
  json::value v = json::parse(n.body, ec);
  json::value* field = (!ec && v.is_object()) ? v.as_object().if_contains("message") : nullptr;
  json::object* message = field ? field->if_object() : nullptr;
  if (!message) return n.body;
  (*message)["content"] = n.content;
  (*message)["edited_at"] = n.edited_at ? json::value(iso8601_millis(*n.edited_at)) : json::value(nullptr);
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
  if (message.message_type == "system" || !members || members->user_ids.size() < 2) return;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      spdlog::warn("event=webhook_dropped_on_stop message_id={}", message.id);
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
// store_until_: messages already acknowledged keep their push.
void WebhookNotifier::intake_loop() {
  std::unique_lock lock(mu_);
  while (true) {
    intake_cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) return;  // stopping, nothing left
    if (stopping_ && Clock::now() >= store_until_) {
      spdlog::warn("event=webhook_dropped_on_stop messages={}", pending_.size());
      pending_.clear();
      return;
    }
    Pending p = std::move(pending_.front());
    pending_.pop_front();
    lock.unlock();
    store_notifications(p);
    lock.lock();
  }
}

void WebhookNotifier::store_notifications(const Pending& p) {
  // One read for the whole thread (not one per recipient of every thread they are in).
  std::vector<ParticipantUnread> unread;
  if (auto counts = store_.thread_unread_counts(p.message.thread_id); counts) unread = std::move(*counts);
  auto unread_of = [&unread](const std::string& user_id) -> int64_t {
    for (const auto& u : unread)
      if (u.user_id == user_id) return u.unread_count;
    return 0;
  };
  // The message goes in as the chat service serialised it, less its content
  // (added at each POST from the message row); the envelope is ours.
  const std::string head = ",\"thread_id\":" + json::serialize(json::value(p.message.thread_id)) +
                           ",\"message\":" + message_without_content(p.message_json) + ",\"unread_count\":";
  std::vector<Notification> batch;
  const Micros now = now_micros();
  for (const auto& user_id : p.members->user_ids) {
    if (user_id == p.message.sender_id || presence_.connected(user_id)) continue;
    std::string body = "{\"type\":\"message\",\"recipient_id\":" + json::serialize(json::value(user_id)) + head +
                       std::to_string(unread_of(user_id)) + "}";
    Notification n;
    n.id = new_uuid();
    n.recipient_id = user_id;
    n.body = std::move(body);
    n.next_attempt_at = now;
    n.message_id = p.message.id;
    batch.push_back(std::move(n));
  }
  if (batch.empty()) return;
  const size_t n = batch.size();
  store_.enqueue_notifications(std::move(batch), [this, n, id = p.message.id](Status st) {
    if (!st) {
      spdlog::warn("event=webhook_enqueue_failed message_id={} code={}", id, st.error().code);
      return;
    }
    Metrics::get().webhook_queued.fetch_add(n, std::memory_order_relaxed);
    {
      std::lock_guard lock(mu_);
      wake_delivery_ = true;
    }
    delivery_cv_.notify_one();
  });
}

void WebhookNotifier::delivery_loop() {
  const int concurrency = std::max(1, config_.concurrency);
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    const Micros now = now_micros();
    auto claimed = store_.claim_notifications(now, now + kLeaseMicros, concurrency);
    if (!claimed) spdlog::warn("event=webhook_claim_failed code={}", claimed.error().code);
    if (claimed && !claimed->empty()) {
      // At most `concurrency` POSTs at once: one thread each, joined before the next claim.
      std::vector<std::thread> senders;
      for (const auto& n : *claimed) senders.emplace_back([this, n] { deliver(n); });
      for (auto& t : senders) t.join();
      continue;  // there may be more due
    }
    wait_for_due();
  }
}

void WebhookNotifier::count_dead_letters() {
  dead_counted_at_ = Clock::now();
  if (auto dead = store_.dead_notification_count(); dead)
    Metrics::get().webhook_dead_letters.store(static_cast<uint64_t>(*dead), std::memory_order_relaxed);
}

void WebhookNotifier::wait_for_due() {
  if (Clock::now() - dead_counted_at_ >= kDeadLetterRecount) count_dead_letters();
  auto wait = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::milliseconds(config_.idle_poll_ms));
  if (auto due = store_.next_notification_due(); due && *due) {
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
