#include "app/webhook_options.h"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdlib>

#include "net/http_post.h"

namespace parley {

void add_webhook_options(CLI::App& cmd, Config& c) {
  WebhookConfig& w = c.webhook;
  cmd.add_option("--webhook-url", w.url, "http://HOST:PORT/PATH: POST a notification per message to offline participants")
      ->envname("PARLEY_WEBHOOK_URL");
  cmd.add_option("--webhook-secret", w.secret, "Key of the X-Parley-Signature HMAC-SHA256 (required with --webhook-url)")
      ->envname("PARLEY_WEBHOOK_SECRET");
  cmd.add_option("--webhook-max-attempts", w.max_attempts, "POSTs per notification before it is a dead letter")
      ->envname("PARLEY_WEBHOOK_MAX_ATTEMPTS")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd.add_option("--webhook-backoff-ms", w.initial_backoff_ms, "Wait before the first retry, doubled after each")
      ->envname("PARLEY_WEBHOOK_BACKOFF_MS")
      ->check(CLI::Range(1, 3600000))
      ->capture_default_str();
  cmd.add_option("--webhook-max-backoff-ms", w.max_backoff_ms, "Longest wait between retries")
      ->envname("PARLEY_WEBHOOK_MAX_BACKOFF_MS")
      ->check(CLI::Range(1, 86400000))
      ->capture_default_str();
  cmd.add_option("--webhook-concurrency", w.concurrency, "Webhook POSTs in flight at once")
      ->envname("PARLEY_WEBHOOK_CONCURRENCY")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
}

Status check_webhook(const WebhookConfig& w) {
  if (w.url.empty()) return Ok{};
  if (w.secret.empty()) return bad_input("invalid_config", "--webhook-url needs --webhook-secret");
  if (auto poster = HttpPoster::create(w.url, std::chrono::milliseconds(w.timeout_ms)); !poster) return poster.error();
  return Ok{};
}

Result<std::unique_ptr<WebhookNotifier>> start_webhook(const Config& config, ChatService& chat, Store& store) {
  WebhookConfig w = config.webhook;
  if (w.url.empty()) return std::unique_ptr<WebhookNotifier>();
  // Tests only: see WebhookConfig::intake_pause_ms.
  if (const char* pause = std::getenv("PARLEY_TEST_WEBHOOK_INTAKE_PAUSE_MS")) w.intake_pause_ms = std::atoi(pause);
  if (auto st = check_webhook(w); !st) return st.error();
  auto poster = HttpPoster::create(w.url, std::chrono::milliseconds(w.timeout_ms));
  if (!poster) return poster.error();
  auto notifier = std::make_unique<WebhookNotifier>(
      w, store, chat.presence(),
      [p = *poster](const std::string& body, const std::vector<std::pair<std::string, std::string>>& headers,
                    const std::atomic<bool>& abandon) { return p->post(body, headers, abandon); });
  WebhookNotifier* n = notifier.get();
  chat.set_message_observer([n](const Message& m, const std::string& json,
                                const std::shared_ptr<const ThreadMembers>& members) { n->observe(m, json, members); });
  chat.set_records_owed_pushes(true);
  notifier->start();
  spdlog::info("event=webhook_enabled host={}", (*poster)->host());
  return notifier;
}

}  // namespace parley
