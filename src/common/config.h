// Config: every setting of a running server, with the defaults of
// CONTRACT.md section 5. Filled once at start (flags, environment, then the
// --config file for what neither set), read-only afterwards, so any thread may read it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace parley {

struct Limits {
  size_t max_frame_bytes = 64 * 1024;        // WebSocket frame / HTTP body; larger closes 1009 / 413
  size_t max_content_chars = 4000;           // message content, Unicode code points
  double messages_per_second = 200;          // token bucket refill per connection
  double message_burst = 1000;               // token bucket size
  int flood_strikes = 50;                    // frames refused by the bucket before the connection is closed
  double rest_writes_per_second = 200;       // token bucket refill per user, REST requests other than GET/HEAD
  double rest_write_burst = 1000;            // its size
  int max_connections_per_user = 20;
  int max_group_members = 1000;              // a group's participants, its creator included
  int idle_timeout_seconds = 60;             // no traffic for this long: server pings, then closes
  int auth_timeout_seconds = 10;             // time to send the `auth` frame when no token came with the upgrade
  size_t max_outbound_bytes = 8 * 1024 * 1024;  // queued, unsent bytes per connection; past it the connection is dropped
  int login_failures_per_account = 10;       // within login_window_seconds
  int login_failures_per_address = 50;
  int login_window_seconds = 15 * 60;
  int registrations_per_address = 30;        // within registration_window_seconds (REST only; `parley user add` is not limited)
  int registration_window_seconds = 10 * 60;
  int presence_grace_seconds = 3;
  int typing_timeout_seconds = 6;
  // HTTP: slow clients (slowloris) are cut off; the header timeout also
  // bounds how long an idle keep-alive connection waits for its next request.
  int http_header_timeout_seconds = 10;      // to receive a request's headers
  int http_body_timeout_seconds = 30;        // to receive its body, once the headers are in
  int http_keepalive_requests = 1000;        // requests per connection; the last one is answered with Connection: close
  int edit_window_seconds = 15 * 60;         // a sender may edit a message this long after sending it
  int account_poll_ms = 1000;                // how often a server reads account changes (disable, revoke-tokens)
  // A retried send (same client_msg_id) whose original is at most this old
  // is published again (ChatService::store_and_publish). Not an option.
  int redeliver_retry_seconds = 120;
};

// Push for offline participants (CONTRACT.md section 9; docs/webhooks.md).
struct WebhookConfig {
  std::string url;     // http://HOST:PORT/PATH; empty = no webhook
  std::string secret;  // HMAC-SHA256 key of X-Parley-Signature
  int max_attempts = 8;          // then the notification is a dead letter
  int initial_backoff_ms = 1000;  // doubled after every failed attempt
  int max_backoff_ms = 5 * 60 * 1000;
  int timeout_ms = 5000;         // one POST
  int concurrency = 4;           // POSTs in flight at once
  // Idle delivery polls the outbox at least this often (notifications other
  // nodes queued); a retry due sooner wakes it at its due time. Not an option:
  // tests lengthen it to tell the two apart.
  int idle_poll_ms = 500;
  // Tests only (PARLEY_TEST_WEBHOOK_INTAKE_PAUSE_MS): the intake waits this
  // long before each batch, so a test can kill the server with pushes owed.
  int intake_pause_ms = 0;
};

// HTTPS and WSS on the listening port (both files PEM); empty: plain TCP.
// SIGHUP reloads both; new handshakes use the new pair.
struct TlsConfig {
  std::string cert_file;  // the certificate chain, leaf first
  std::string key_file;   // its private key
};

// Socket.IO clients: Engine.IO v4 at `path` (CONTRACT.md section 7).
struct SocketIoConfig {
  std::string path = "/socket.io/";
  int ping_interval_ms = 25000;
  int ping_timeout_ms = 20000;
  size_t max_payload = 1000000;  // bytes of one polling POST; larger: 413
  int max_pending_per_address = 1000;  // polling sessions not yet connected, per client address (IPv6: /64); more: 429
};

struct Config {
  std::string bind = "127.0.0.1";
  uint16_t port = 3000;
  std::string data_dir = "./data";
  std::string database_url;               // postgres://…: the PostgreSQL store; empty = SQLite in data_dir
  std::string jwt_secret;                 // HS256; generated into data_dir when empty
  std::string jwt_public_key_file;        // optional PEM for RS256/ES256 tokens of an outside provider
  int token_ttl_seconds = 7 * 24 * 3600;
  std::string log_level = "info";
  int threads = 0;                        // network event loops; 0 = one per core
  bool fsync_commits = false;             // true: every group commit survives power loss (synchronous=FULL)
  int wal_checkpoint_pages = 16000;       // SQLite: WAL pages (4 KiB) that start a checkpoint (store.h)
  bool metrics_enabled = true;
  std::string registration = "open";      // "open": anyone who reaches the port may register; "closed": only `parley user add`
  std::vector<std::string> allowed_origins;  // empty = any Origin
  std::string redis_url;                  // redis://HOST:PORT: the Redis bus and shared state; empty = in-process
  std::string config_file;                // --config: settings file (flags > environment > file > defaults)
  int shutdown_timeout_seconds = 10;      // SIGTERM/SIGINT: the drain and the final commit end within this
  // The roles a user may take (registration, `parley user add`); empty: any
  // text (a role is free text). A user registered without one gets
  // kDefaultRole, which must then be among them too.
  std::vector<std::string> roles;
  Limits limits;
  SocketIoConfig socketio;
  WebhookConfig webhook;
  TlsConfig tls;
};

inline constexpr const char* kDefaultRole = "member";

inline bool known_role(const Config& config, const std::string& role) {
  if (config.roles.empty()) return true;
  for (const std::string& r : config.roles) {
    if (r == role) return true;
  }
  return false;
}

}  // namespace parley
