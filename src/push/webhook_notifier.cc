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
// Idle delivery polls the outbox this often (other nodes' notifications,
// retries coming due).
constexpr auto kIdlePoll = std::chrono::milliseconds(500);

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
  if (auto dead = store_.dead_notification_count(); dead)
    Metrics::get().webhook_dead_letters.store(static_cast<uint64_t>(*dead), std::memory_order_relaxed);
  intake_ = named_thread("webhook-intake", [this] { intake_loop(); });
  delivery_ = named_thread("webhook-send", [this] { delivery_loop(); });
  spdlog::info("event=webhook_started max_attempts={} concurrency={}", config_.max_attempts, config_.concurrency);
}

void WebhookNotifier::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    if (!pending_.empty()) spdlog::warn("event=webhook_dropped_on_stop messages={}", pending_.size());
  }
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
    if (stopping_) return;
    if (pending_.size() >= kMaxPending) {
      spdlog::warn("event=webhook_backlog_full message_id={}", message.id);
      return;
    }
    pending_.push_back(Pending{message, message_json, members});
  }
  intake_cv_.notify_one();
}

void WebhookNotifier::intake_loop() {
  std::unique_lock lock(mu_);
  while (true) {
    intake_cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (stopping_) return;
    Pending p = std::move(pending_.front());
    pending_.pop_front();
    lock.unlock();
    store_notifications(p);
    lock.lock();
  }
}

void WebhookNotifier::store_notifications(const Pending& p) {
  std::vector<Notification> batch;
  const Micros now = now_micros();
  for (const auto& user_id : p.members->user_ids) {
    if (user_id == p.message.sender_id || presence_.online(user_id)) continue;
    int64_t unread = 0;
    if (auto counts = store_.unread_counts(user_id); counts) {
      for (const auto& c : *counts)
        if (c.thread_id == p.message.thread_id) unread = c.unread_count;
    }
    // The message goes in as the chat service serialised it; the envelope is ours.
    std::string body = "{\"type\":\"message\",\"recipient_id\":" + json::serialize(json::value(user_id)) +
                       ",\"thread_id\":" + json::serialize(json::value(p.message.thread_id)) +
                       ",\"message\":" + p.message_json + ",\"unread_count\":" + std::to_string(unread) + "}";
    batch.push_back(Notification{new_uuid(), user_id, std::move(body), 0, now});
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
    std::unique_lock lock(mu_);
    delivery_cv_.wait_for(lock, kIdlePoll, [this] { return stopping_ || wake_delivery_; });
    wake_delivery_ = false;
  }
}

Micros WebhookNotifier::backoff(int attempts) const {
  int64_t ms = config_.initial_backoff_ms;
  for (int i = 1; i < attempts && ms < config_.max_backoff_ms; ++i) ms *= 2;
  return std::min<int64_t>(ms, config_.max_backoff_ms) * 1000;
}

void WebhookNotifier::deliver(const Notification& n) {
  auto status = post_(n.body, {{"X-Parley-Signature", webhook_signature(config_.secret, n.body)},
                               {"X-Parley-Delivery", n.id},
                               {"X-Parley-Attempt", std::to_string(n.attempts + 1)}});
  auto& metrics = Metrics::get();
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
