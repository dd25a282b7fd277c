#include "app/commands.h"
#include "app/config_file.h"
#include "app/maintenance.h"
#include "app/store_options.h"
#include "app/seed.h"
#include "app/migrate_store.h"
#include "app/user_admin.h"
#include "app/webhook_options.h"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>
#include <arpa/inet.h>
#include <sys/stat.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>

#include "auth/jwt.h"
#include "auth/password.h"
#include "store/sqlite_backup.h"
#include "bus/bus.h"
#include "redis/redis_bus.h"
#include "redis/redis_connection_limiter.h"
#include "redis/redis_login_limits.h"
#include "redis/redis_presence.h"
#include "redis/redis_poll_forwarder.h"
#include "chat/account_watcher.h"
#include "chat/chat_service.h"
#include "common/allocator.h"
#include "common/atomic_file.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/ids.h"
#include "common/redact.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "net/asio_reactor.h"
#include "net/server.h"
#include "protocol/encode.h"
#include "store/data_dir_lock.h"
#include "store/group_commit.h"
#include "store/store.h"

namespace parley {

namespace {

namespace fs = std::filesystem;

// --bind: what the listener's address parser takes (an IPv4 or IPv6 literal,
// an IPv6 scope after %), checked here so that `config check` refuses what
// `serve` would.
CLI::Validator ip_address() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        unsigned char buf[sizeof(in6_addr)];
        if (inet_pton(AF_INET, v.c_str(), buf) == 1) return {};
        const std::string host = v.substr(0, v.find('%'));
        if (inet_pton(AF_INET6, host.c_str(), buf) == 1) return {};
        return "not an IPv4 or IPv6 address: " + v;
      },
      "IP");
}

// The whole of `v` as a number, or nullopt.
std::optional<double> whole_number_text(const std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (end == v.c_str() || *end != '\0') return std::nullopt;
  return d;
}

// A number from `low` to `high`, fractions allowed (CLI::Range of doubles
// prints its bounds as 1.000000 and 1000000000.000000).
CLI::Validator number_from(double low, double high) {
  return CLI::Validator(
      [low, high](std::string& v) -> std::string {
        if (auto d = whole_number_text(v); d && *d >= low && *d <= high) return {};
        char range[64];
        std::snprintf(range, sizeof range, "%.0f to %.0f", low, high);
        return "must be a number from " + std::string(range) + ": " + v;
      },
      "NUMBER");
}

// CLI::PositiveNumber's refusal of 0 reads "not in range 0.000000 to 1.79…e308".
CLI::Validator positive() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        if (auto d = whole_number_text(v); d && *d > 0 && *d <= 1e12) return {};
        return "must be a number above 0 and at most 1e12: " + v;
      },
      "POSITIVE");
}

// Shorter than this, a jwt_secret file is damaged (cut short by a crash or a
// full disk while an older parley wrote it) or not one we made (we write 64
// hex characters): refused rather than signing tokens with a guessable key.
// A secret given by flag, environment or settings file is held to the same
// length: RFC 7518 asks HS256 for a key of 256 bits at least, and the mask
// `config check` prints ("***"), copied back as a secret, must not start a
// server whose tokens anyone can sign.
constexpr size_t kMinSecretFileChars = 32;

Status check_given_secret(const std::string& secret) {
  if (secret.size() >= kMinSecretFileChars) return Ok{};
  std::string what = secret == "***" ? "is \"***\", the mask `parley config check` prints in place of a secret"
                                     : "has " + std::to_string(secret.size()) + " characters, fewer than " +
                                           std::to_string(kMinSecretFileChars);
  return bad_input("bad_jwt_secret", "the JWT secret (--jwt-secret, PARLEY_JWT_SECRET or jwt-secret) " + what +
                                         ": give the real one, at least " + std::to_string(kMinSecretFileChars) +
                                         " characters (`openssl rand -hex 32` makes one)");
}

// The HS256 secret: from config, else <data_dir>/jwt_secret, else a new
// random one written there (mode 0600, atomically) so tokens survive restarts.
// Only a server, or a command making a new store, makes one: beside an
// existing store (or on PostgreSQL) the missing file means the server is
// given its secret, and a token signed with a new one would be refused by
// it. A command there that prints no token gets a secret used by nobody.
Result<std::string> resolve_secret(const Config& config, bool serving, bool prints_token) {
  if (!config.jwt_secret.empty()) return config.jwt_secret;  // checked by run_cli
  std::error_code ec;
  fs::path path = fs::path(config.data_dir) / "jwt_secret";
  if (!serving && !fs::exists(path, ec) &&
      (!config.database_url.empty() || fs::exists(fs::path(config.data_dir) / "parley.db", ec))) {
    if (!prints_token) return random_hex(32);
    return bad_input("no_jwt_secret",
                     path.string() + " does not exist, so the server signs tokens with a secret it is given "
                                     "(--jwt-secret or PARLEY_JWT_SECRET): pass the same one here (a new secret "
                                     "would sign tokens that server refuses)");
  }
  fs::create_directories(config.data_dir, ec);
  if (fs::exists(path, ec)) {
    std::ifstream in(path);
    std::string s;
    if (!in || !std::getline(in, s)) s.clear();
    if (!in && !in.eof()) return bad_input("bad_jwt_secret", path.string() + " cannot be read");
    if (s.size() >= kMinSecretFileChars) return s;
    return bad_input("bad_jwt_secret",
                     path.string() + " holds " + std::to_string(s.size()) + " characters, fewer than " +
                         std::to_string(kMinSecretFileChars) +
                         ": damaged or not a Parley secret. Put back a saved copy, or pass --jwt-secret, or delete "
                         "the file to have a new one made (tokens issued before are then refused)");
  }
  std::string secret = random_hex(32);
  if (auto st = write_file_atomically(path.string(), secret + "\n", 0600); !st) return st.error();
  spdlog::info("event=jwt_secret_generated path={}", path.string());
  return secret;
}

// --jwt-public-key: the PEM text itself (as an environment variable holds
// it), or the path of a file holding it. A key given and not found is an
// error: started without it, every provider token would be refused.
Result<std::string> jwt_public_key(const std::string& value) {
  if (value.empty() || value.starts_with("-----BEGIN")) return value;
  std::ifstream in(value);
  if (!in) return Error{ErrorKind::kInternal, "invalid_config", "cannot read the --jwt-public-key file " + value};
  std::string pem(std::istreambuf_iterator<char>(in), {});
  if (pem.empty()) return Error{ErrorKind::kInternal, "invalid_config", "the --jwt-public-key file " + value + " is empty"};
  return pem;
}

// Everything a command needs to talk to the data: store, bus, chat service.
// Members are destroyed in reverse: the chat service, then the bus, then
// the loop the bus runs on.
struct Core {
  std::unique_ptr<Store> store;
  std::unique_ptr<ReactorThread> bus_loop;  // only with Redis
  std::unique_ptr<Bus> bus;
  std::unique_ptr<RedisPresenceDirectory> redis_presence;  // only with Redis
  std::unique_ptr<RedisPollForwarder> poll_forwarder;      // only with Redis
  std::unique_ptr<ChatService> chat;
};

// The bus backend and the state nodes share: Redis when configured and the
// command serves clients (one-shot commands such as `user add` publish to
// nobody), else in-process.
Status open_bus(const Config& config, bool serving, Core& core) {
  if (!serving || config.redis_url.empty()) {
    core.bus = make_local_bus();
    return Ok{};
  }
  auto endpoint = RedisEndpoint::parse(config.redis_url);
  if (!endpoint) return endpoint.error();
  std::string node_id = random_hex(8);
  core.bus_loop = std::make_unique<ReactorThread>();
  // Another node's typist whose stop has not come 2 s after the typing
  // timeout is stopped here (bus/typing_lapse.h): that node died or lost Redis.
  Micros typing_lapse = (static_cast<Micros>(config.limits.typing_timeout_seconds) + 2) * 1'000'000;
  auto bus = std::make_unique<RedisBus>(core.bus_loop->reactor(),
                                        RedisBusOptions{*endpoint, "parley:events", 10000, node_id, typing_lapse});
  core.redis_presence = std::make_unique<RedisPresenceDirectory>(core.bus_loop->reactor(), *endpoint, node_id);
  // A node killed with events it had not published (acknowledged messages
  // among them) leaves no resync behind: the node that learns of its death
  // hands its own sessions one. (The presence directory goes before the bus.)
  core.redis_presence->set_node_gone_hook([b = bus.get()](const std::string& node) { b->resync_here(node); });
  core.bus = std::move(bus);
  core.poll_forwarder = std::make_unique<RedisPollForwarder>(core.bus_loop->reactor(), *endpoint, node_id);
  return Ok{};
}

// `prints_token`: the command shows a token it signs (token, user add --json).
Result<Core> open_core(const Config& config, bool serving = false, bool prints_token = true) {
  if (!init_crypto()) return internal_error("libsodium failed to initialise");
  // Before anything is written into the data dir (a generated secret), which
  // would then make the restore's retry refuse it as not empty.
  if (config.database_url.empty())
    if (auto st = no_unfinished_restore(config.data_dir); !st) return st.error();
  auto secret = resolve_secret(config, serving, prints_token);
  if (!secret) return secret.error();
  auto pem = jwt_public_key(config.jwt_public_key_file);
  if (!pem) return pem.error();
  auto jwt = JwtVerifier::create(*secret, *pem);
  if (!jwt) return jwt.error();
  StoreOptions options = store_options(config);
  options.beside_server = !serving;  // `user add`, `token`: no DataDirLock of their own
  auto store = open_store(options);
  if (!store) return store.error();
  Core core;
  core.store = std::move(*store);
  auto bus = open_bus(config, serving, core);
  if (!bus) return bus.error();
  core.chat = std::make_unique<ChatService>(*core.store, *core.bus, *jwt, config);
  if (core.redis_presence) {
    core.chat->presence().set_directory(core.redis_presence.get());
    // The per-user connection limit counted across nodes (owned by the chat
    // service, on the bus loop, under this node's heartbeat).
    auto limiter = std::make_unique<RedisConnectionLimiter>(core.bus_loop->reactor(), core.redis_presence->endpoint(),
                                                           core.redis_presence->node_id(),
                                                           config.limits.max_connections_per_user);
    limiter->start();
    core.redis_presence->set_registered_again_hook(limiter->write_all_hook());
    core.chat->use_connection_limiter(std::move(limiter));
    // Failed logins counted across nodes; a blocking client on the login
    // workers, which gives up on Redis after 250 ms (then counts locally).
    const auto& l = config.limits;
    core.chat->identity().use_login_limits(std::make_unique<RedisLoginLimits>(
        core.redis_presence->endpoint(), std::chrono::milliseconds(250), l.login_failures_per_account,
        l.login_failures_per_address, l.login_window_seconds));
    // Dead nodes are removed by a node that can announce their users
    // offline: this one once its event loops run (serve).
    core.redis_presence->set_reaping(false);
    core.redis_presence->start();
  }
  return core;
}

int fail(const Error& e) {
  std::cerr << "parley: " << e.code << ": " << e.message << "\n";
  return 1;
}

// Refuses a data dir that holds no store (a restore left unfinished says so
// first, as serve would).
Status no_store_refusal(const fs::path& dir, const char* hint) {
  if (auto st = no_unfinished_restore(dir.string()); !st) return st.error();
  std::error_code ec;
  if (fs::exists(dir / "parley.db", ec)) return Ok{};
  if (ec) return internal_error("cannot look into the data dir " + dir.string() + ": " + ec.message());
  return not_found("no_database", "no store (parley.db) in the data dir " + dir.string() +
                                      " (pass the server's --data-dir or PARLEY_DATA_DIR" + hint + ")");
}

// `parley migrate`: brings the store's schema up to date and exits (serve
// does the same at start; this is for deployments that migrate first). On
// SQLite it acts on an existing data dir only (run in the wrong directory it
// would make a new empty store and report success) and, as an offline writer
// that may rewrite the messages table, not beside a running server (which
// would keep running on the schema it knows; data_dir_lock.h).
int migrate(const Config& config) {
  std::unique_ptr<DataDirLock> lock;
  if (config.database_url.empty()) {
    std::error_code ec;
    if (!fs::is_directory(config.data_dir, ec))
      return fail(not_found("no_data_dir", "no data dir at " + config.data_dir +
                                               " (pass the server's --data-dir or PARLEY_DATA_DIR)"));
    if (auto st = no_store_refusal(config.data_dir, ""); !st) return fail(st.error());
    auto held = DataDirLock::acquire(config.data_dir);
    if (!held) return fail(held.error());
    lock = std::move(*held);
  }
  auto store = open_store(store_options(config));
  if (!store) return fail(store.error());
  std::cout << "migrated " << (*store)->describe() << "\n";
  (*store)->close();
  return 0;
}

// The variable of a setting is PARLEY_ + the flag's name, as for every other
// one; the database and Redis URLs were first read from a name ending in _URL,
// which still works (the flag's own name wins when both are set).
std::string env_name(const char* name, const char* older_name) {
  auto set = [](const char* var) {
    const char* v = std::getenv(var);
    return v && *v;
  };
  return set(older_name) && !set(name) ? older_name : name;
}

// Every command: where the data is, and how much it logs.
void add_data_options(CLI::App& cmd, Config& c) {
  cmd.add_option("--data-dir", c.data_dir, "Storage directory (SQLite database, generated secret)")
      ->envname("PARLEY_DATA_DIR")
      ->capture_default_str();
  cmd.add_option("--database", c.database_url, "postgres://USER:PASS@HOST:PORT/DB: use PostgreSQL (default: SQLite in the data dir; "
                 "PARLEY_DATABASE_URL also works)")
      ->envname(env_name("PARLEY_DATABASE", "PARLEY_DATABASE_URL"));
  cmd.add_option("--log-level", c.log_level, "trace, debug, info, warn, error, off (commands other than serve: warn unless given)")
      ->envname("PARLEY_LOG_LEVEL")
      ->capture_default_str();
  cmd.add_option("--config", c.config_file, "Settings file (key = value lines; flags and PARLEY_* variables win over it)")
      ->envname("PARLEY_CONFIG");
}

// Commands that sign or check tokens.
void add_token_options(CLI::App& cmd, Config& c) {
  cmd.add_option("--jwt-secret", c.jwt_secret, "HS256 secret for tokens (default: generated into the data dir)")
      ->envname("PARLEY_JWT_SECRET");
  cmd.add_option("--token-ttl,--ttl", c.token_ttl_seconds, "Lifetime of issued tokens, seconds (1-315360000)")
      ->envname("PARLEY_TOKEN_TTL")
      ->check(CLI::Range(1, 315360000))
      ->capture_default_str();
}

void add_roles_option(CLI::App& cmd, Config& c) {
  cmd.add_option("--roles", c.roles,
                 "The only roles users may take, comma-separated (default: any text; e.g. parent,student, so that "
                 "no one registers as a teacher)")
      ->envname("PARLEY_ROLES")
      ->delimiter(',');
}

void add_serve_options(CLI::App& cmd, Config& c) {
  Limits& l = c.limits;
  cmd.add_option("--jwt-public-key", c.jwt_public_key_file, "PEM public key accepting RS256/ES256 provider tokens: a file's path, or the PEM text itself")
      ->envname("PARLEY_JWT_PUBLIC_KEY");
  add_roles_option(cmd, c);
  cmd.add_option("--port", c.port, "TCP port (0 = any free port)")->envname("PARLEY_PORT")->capture_default_str();
  cmd.add_option("--bind", c.bind, "Address to listen on (an IPv4 or IPv6 address)")
      ->envname("PARLEY_BIND")
      ->check(ip_address())
      ->capture_default_str();
  cmd.add_option("--threads", c.threads, "Network event loops (0 = one per core; at most 256)")
      ->envname("PARLEY_THREADS")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  cmd.add_flag("--fsync", c.fsync_commits, "fsync every group commit (survive power loss, not just kill -9)")
      ->envname("PARLEY_FSYNC");
  cmd.add_option("--wal-checkpoint-pages", c.wal_checkpoint_pages,
                 "SQLite: WAL pages (4 KiB) that start a checkpoint; more = less copying per message, more disk")
      ->envname("PARLEY_WAL_CHECKPOINT_PAGES")
      ->check(CLI::Range(100, 50000))
      ->capture_default_str();
  cmd.add_option("--allowed-origins", c.allowed_origins, "Browser Origins allowed to connect (default: any)")
      ->envname("PARLEY_ALLOWED_ORIGINS")
      ->delimiter(',');
  cmd.add_option("--shutdown-timeout", c.shutdown_timeout_seconds,
                 "SIGTERM/SIGINT: seconds to drain clients and commit before exiting (1-3600)")
      ->envname("PARLEY_SHUTDOWN_TIMEOUT")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  cmd.add_option("--redis", c.redis_url, "redis://[[USER]:PASSWORD@]HOST:PORT: several nodes share fan-out and live state (default: in-process; "
                 "PARLEY_REDIS_URL also works)")
      ->envname(env_name("PARLEY_REDIS", "PARLEY_REDIS_URL"));
  cmd.add_option("--socketio-path", c.socketio.path, "Where Socket.IO (Engine.IO v4) clients connect")
      ->envname("PARLEY_SOCKETIO_PATH")
      ->capture_default_str();
  // Both go to clients in the open packet as they are. The server's pings
  // and pong deadlines run on its once-a-second sweep, so below a second it
  // would ping later than it told the client and every client would time out
  // in a loop; past an hour their sum (the client's heartbeat timer; the
  // server's longest poll) stops making sense.
  cmd.add_option("--socketio-ping-interval", c.socketio.ping_interval_ms,
                 "Engine.IO ping interval, milliseconds (1000-3600000)")
      ->envname("PARLEY_SOCKETIO_PING_INTERVAL")
      ->check(CLI::Range(1000, 3600000))
      ->capture_default_str();
  cmd.add_option("--socketio-ping-timeout", c.socketio.ping_timeout_ms,
                 "Engine.IO: milliseconds to answer a ping before the session closes (1000-3600000)")
      ->envname("PARLEY_SOCKETIO_PING_TIMEOUT")
      ->check(CLI::Range(1000, 3600000))
      ->capture_default_str();
  cmd.add_option("--socketio-max-pending-per-address", c.socketio.max_pending_per_address,
                 "Engine.IO polling sessions not yet connected, per client address (IPv6: its /64); more get 429")
      ->envname("PARLEY_SOCKETIO_MAX_PENDING_PER_ADDRESS")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  // A callback, not a negated bool flag: CLI11 would print that as "--no-metrics{false}".
  cmd.add_flag_callback("--no-metrics", [&c] { c.metrics_enabled = false; }, "Disable GET /metrics")
      ->envname("PARLEY_NO_METRICS");
  cmd.add_option("--max-frame-bytes", l.max_frame_bytes,
                 "Largest WebSocket frame / HTTP body / Socket.IO event (Engine.IO carries up to maxPayload; "
                 "1024-67108864)")
      ->envname("PARLEY_MAX_FRAME_BYTES")
      ->check(CLI::Range(size_t{1024}, size_t{64} << 20))
      ->capture_default_str();
  cmd.add_option("--max-content-chars", l.max_content_chars, "Longest message, in Unicode code points (1-1000000)")
      ->envname("PARLEY_MAX_CONTENT_CHARS")
      ->check(CLI::Range(size_t{1}, size_t{1000000}))
      ->capture_default_str();
  cmd.add_option("--rate-per-second", l.messages_per_second, "Frames per second per connection, sustained (> 0)")
      ->envname("PARLEY_RATE_PER_SECOND")
      ->check(positive())
      ->capture_default_str();
  cmd.add_option("--rate-burst", l.message_burst, "Frames per connection in a burst (1-1000000000)")
      ->envname("PARLEY_RATE_BURST")
      ->check(number_from(1, 1e9))
      ->capture_default_str();
  cmd.add_option("--rest-rate-per-second", l.rest_writes_per_second,
                 "REST requests that change something (not GET or HEAD) per second per user, sustained (> 0)")
      ->envname("PARLEY_REST_RATE_PER_SECOND")
      ->check(positive())
      ->capture_default_str();
  cmd.add_option("--rest-rate-burst", l.rest_write_burst, "Such REST requests per user in a burst (1-1000000000)")
      ->envname("PARLEY_REST_RATE_BURST")
      ->check(number_from(1, 1e9))
      ->capture_default_str();
  cmd.add_option("--max-connections-per-user", l.max_connections_per_user, "Open connections per user (1-1000000)")
      ->envname("PARLEY_MAX_CONNECTIONS_PER_USER")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd.add_option("--max-group-members", l.max_group_members, "Participants of a group, its creator included")
      ->envname("PARLEY_MAX_GROUP_MEMBERS")
      ->check(CLI::Range(2, 1000000))
      ->capture_default_str();
  cmd.add_option("--idle-timeout", l.idle_timeout_seconds,
                 "Seconds without traffic before a connection is closed (2-86400)")
      ->envname("PARLEY_IDLE_TIMEOUT")
      ->check(CLI::Range(2, 86400))
      ->capture_default_str();
  cmd.add_option("--max-outbound-bytes", l.max_outbound_bytes,
                 "Unsent bytes per connection before it is dropped (65536-1073741824)")
      ->envname("PARLEY_MAX_OUTBOUND_BYTES")
      ->check(CLI::Range(size_t{64} << 10, size_t{1} << 30))
      ->capture_default_str();
  cmd.add_option("--login-failures-per-account", l.login_failures_per_account,
                 "Failed logins per account per window before 429 (1-1000000)")
      ->envname("PARLEY_LOGIN_FAILURES_PER_ACCOUNT")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd.add_option("--login-failures-per-address", l.login_failures_per_address,
                 "Failed logins per client address per window before 429 (1-1000000)")
      ->envname("PARLEY_LOGIN_FAILURES_PER_ADDRESS")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd.add_option("--registration", c.registration, "open: anyone may POST /api/auth/register; closed: only `parley user add`")
      ->envname("PARLEY_REGISTRATION")
      ->check(CLI::IsMember({"open", "closed"}))
      ->capture_default_str();
  add_webhook_options(cmd, c);
  add_moderation_options(cmd, c);
  cmd.add_option("--registrations-per-address", l.registrations_per_address,
                 "Registrations per client address per 10 minutes before 429 (1-1000000)")
      ->envname("PARLEY_REGISTRATIONS_PER_ADDRESS")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd.add_option("--header-timeout", l.http_header_timeout_seconds,
                 "Seconds to receive an HTTP request's headers (and idle keep-alive time)")
      ->envname("PARLEY_HEADER_TIMEOUT")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  cmd.add_option("--body-timeout", l.http_body_timeout_seconds, "Seconds to receive an HTTP request's body")
      ->envname("PARLEY_BODY_TIMEOUT")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  cmd.add_option("--keepalive-requests", l.http_keepalive_requests, "HTTP requests per connection before it is closed")
      ->envname("PARLEY_KEEPALIVE_REQUESTS")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  auto* cert = cmd.add_option("--tls-cert", c.tls.cert_file, "PEM certificate chain: serve HTTPS and WSS (reloaded on SIGHUP)")
                   ->envname("PARLEY_TLS_CERT");
  auto* key = cmd.add_option("--tls-key", c.tls.key_file, "PEM private key of --tls-cert")->envname("PARLEY_TLS_KEY");
  cert->needs(key);
  key->needs(cert);
}

// Half the time between now and the exit watchdog (2 s when none is armed:
// the loops were stopped without a drain).
std::chrono::steady_clock::time_point webhook_store_until(std::chrono::steady_clock::time_point exit_at) {
  const auto now = std::chrono::steady_clock::now();
  if (exit_at == std::chrono::steady_clock::time_point::max()) return now + std::chrono::seconds(2);
  return now + std::max(std::chrono::steady_clock::duration::zero(), (exit_at - now) / 2);
}

// SIGTERM or SIGINT before the server's own handling begins (Server::start):
// a start held up by its store (a lock, a migration, a slow database) ends
// in a clean stop and exit 0, not a death by signal, and with Redis, once
// its heartbeat is there, with a leave that makes no other node resync. It
// finishes starting, then drains at once. A second signal before then
// kills it (a start that hangs can still be stopped with Ctrl-C twice).
namespace {
// Atomic, not only volatile: the handler may run on any of the process's
// threads (the bus's, the store's) while the main thread reads it.
std::atomic<int> stop_asked_while_starting{0};
static_assert(std::atomic<int>::is_always_lock_free, "set from a signal handler");

void on_signal_while_starting(int sig) {
  if (stop_asked_while_starting.exchange(sig) != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}
}  // namespace

int serve(Config& config) {
  std::signal(SIGTERM, on_signal_while_starting);
  std::signal(SIGINT, on_signal_while_starting);
  spdlog::info("event=starting version={} allocator=\"{}\" data_dir={}", PARLEY_VERSION, allocator_name(),
               config.data_dir);
  // Held until serve returns: one server per data dir (see data_dir_lock.h).
  // With --database the database's own locking and seq rules apply instead.
  Result<std::unique_ptr<DataDirLock>> lock = std::unique_ptr<DataDirLock>();
  if (config.database_url.empty()) lock = DataDirLock::acquire(config.data_dir);
  if (!lock) return fail(lock.error());
  // A file-size limit (or a full disk) must fail writes, which the store reports, not kill the server.
  std::signal(SIGXFSZ, SIG_IGN);
  // hiredis writes to Redis with plain write(): a link Redis closed under it
  // (a restart) must be a write error that the link reconnects from, not a
  // signal that kills the server. (Asio's sockets pass MSG_NOSIGNAL, libpq
  // masks the signal itself.)
  std::signal(SIGPIPE, SIG_IGN);
  auto core = open_core(config, /*serving=*/true);
  if (!core) return fail(core.error());
  // A start that fails before it serves has published nothing: the other
  // nodes need not resync their sessions when they reap it (a node that a
  // supervisor restarts into a taken port every few seconds made every
  // other node re-read the store for every connection each time).
  auto fail_unserved = [&core](const Error& e) {
    if (core->redis_presence) core->redis_presence->close(/*published_all=*/true);
    return fail(e);
  };
  auto workers = std::make_unique<ThreadPool>(std::max(4u, 2 * std::thread::hardware_concurrency()));
  Bus* bus = core->bus.get();
  // /health's bus state covers every use of Redis that clients notice: the
  // fan-out and the forwarding of Socket.IO polling requests.
  RedisPollForwarder* forwarder = core->poll_forwarder.get();
  auto server = std::make_unique<Server>(config, *core->chat, *workers, bus->describe(),
                                         [bus, forwarder] { return bus->healthy() && (!forwarder || forwarder->healthy()); });
  if (auto counted = core->chat->start_counting_changes(); !counted) return fail_unserved(counted.error());
  // Edits and deletions are published from the workers that wrote them: two
  // changes of one message at once must reach the loops in the order
  // NewestChange admitted them (a deletion then the edit before it would
  // show the text again), so for those the two steps are one. So for read
  // receipts: another node's, admitted on the bus thread, and this node's,
  // admitted on the worker that marked, must not pass each other either.
  // A resync too: it moves the change watermark, and a change mark handed
  // to the loops after it must reach them after it (ChatService::change_order).
  // The receiver and the forwarder point into `server`: on every way out of
  // here, a failed start included, they stop before it goes (Bus::close).
  struct StopBeforeServer {
    Bus* bus;
    RedisPollForwarder* forwarder;
    ~StopBeforeServer() {
      bus->close();
      if (forwarder) forwarder->close();
    }
  } stop_before_server{bus, forwarder};
  core->bus->set_receiver([srv = server.get(), chat = core->chat.get()](const BusEventPtr& e) {
    std::unique_lock<std::mutex> lock;
    if (e->change_no > 0 || e->read_seq > 0 || e->resync) lock = std::unique_lock(chat->change_order());
    if (auto out = chat->on_bus(e)) srv->fanout()(out);
  });
  core->chat->set_change_marks([srv = server.get()](const BusEventPtr& e) { srv->fanout()(e); });
  if (core->poll_forwarder) {
    server->set_poll_forwarder(core->poll_forwarder.get());
    core->poll_forwarder->start();
  }
  // Accounts disabled or revoked by `parley user …` in another process: the
  // next upgrade reads the store again, and open connections close on every
  // loop (every node polls for itself).
  AccountWatcher accounts(*core->store, std::chrono::milliseconds(config.limits.account_poll_ms),
                          [srv = server.get(), chat = core->chat.get()](const AccountState& a) {
                            chat->identity().forget_user(a.user_id);
                            srv->fanout().each_loop([a](Hub& hub) { hub.account_changed(a); });
                          });
  auto webhook = start_webhook(config, *core->chat, *core->store);
  if (!webhook) return fail_unserved(webhook.error());
  server->set_idle_check([] { return GroupCommitWriter::ops_in_flight() == 0; });
  auto port = server->start();
  if (!port) return fail_unserved(port.error());
  // Dead nodes are reaped by this node while it can announce their users
  // offline: from now until its drain begins (its loops stop at the end).
  // (Not at all for a node already asked to stop.)
  const int stop_asked = stop_asked_while_starting.load();
  if (core->redis_presence) {
    RedisPresenceDirectory* presence = core->redis_presence.get();
    server->set_drain_hook([presence] { presence->set_reaping(false); });
    if (!stop_asked) presence->set_reaping(true);
  }
  if (stop_asked) {
    spdlog::info("event=shutdown signal={} while=starting", stop_asked);
    server->drain();
  }
  accounts.start();
  // After the watcher started: no account change falls between the two.
  // (Not for a server already stopping, whose drain would wait for it.)
  if (!stop_asked)
    workers->submit([chat = core->chat.get()] { chat->identity().warm(Identity::kMaxCachedUsers / 2); });
  server->run();
  if (core->redis_presence) core->redis_presence->set_reaping(false);  // stopped without a drain
  accounts.stop();
  // Acknowledged messages still waiting for the webhook's intake go into the
  // outbox before the store closes, in at most half the time left before the
  // exit watchdog (the rest is for closing the store and the bus).
  if (*webhook) (*webhook)->stop(webhook_store_until(server->exit_deadline()));
  // Loops are stopped: let blocking work finish, then commit what is queued.
  workers.reset();
  core->store->close();
  // The node's heartbeat gets its last 3 s (its users' grace), and the others
  // then reap it; with its bus connected, its events are out, and they need not resync.
  if (core->redis_presence) core->redis_presence->close(/*published_all=*/core->bus->healthy());
  core->bus->close();
  if (core->poll_forwarder) core->poll_forwarder->close();
  const bool clean = server->drained_cleanly();
  server.reset();
  spdlog::info("event=stopped clean={}", clean);
  spdlog::default_logger()->flush();
  Server::disarm_exit_watchdog();
  // Non-zero when the drain was cut short (timeout or a second signal): what
  // was queued is committed all the same, but clients were dropped and work
  // may have been unanswered; docs/operations.md.
  return clean ? 0 : 1;
}

// Admin commands act on an existing data dir, and say which: run in the
// wrong directory, they would otherwise make a new ./data (and a new JWT
// secret) and report success. `create` (--create) makes it.
// `needs_secret`: the command shows a token it signs (token, user add --json); disable,
// enable and revoke-tokens only write the store. `offers_create`: the
// command has --create (user add), so the refusal may point at it.
bool use_data_dir(const Config& config, bool create, bool needs_secret, bool offers_create) {
  const char* create_hint = offers_create ? ", or --create to start a new one" : "";
  std::error_code ec;
  fs::path dir = fs::absolute(config.data_dir, ec).lexically_normal();
  if (ec) dir = config.data_dir;
  // With PostgreSQL the data dir holds nothing they need but a generated
  // secret: nothing at all when the secret is given or not needed.
  if (!config.database_url.empty() && (!config.jwt_secret.empty() || !needs_secret)) {
    std::string where = redact_url_password(config.database_url);  // never the password
    size_t scheme = where.find("://"), at = where.rfind('@');
    if (scheme != std::string::npos && at != std::string::npos && at > scheme)
      where.erase(scheme + 3, at + 1 - (scheme + 3));  // nor the user
    std::cerr << "parley: database " << where << "\n";
    return true;
  }
  // On PostgreSQL a data dir serves only for the secret the servers share:
  // without it, the secret is what is missing (as resolve_secret says),
  // not a data dir, and no new one may be made for it.
  if (!config.database_url.empty() && !fs::exists(dir / "jwt_secret", ec)) {
    std::cerr << "parley: no_jwt_secret: no " << (dir / "jwt_secret").string()
              << ", and the servers on PostgreSQL sign tokens with a secret they are given: pass the same one "
                 "here (--jwt-secret or PARLEY_JWT_SECRET), or the --data-dir whose jwt_secret file they use\n";
    return false;
  }
  bool exists = fs::is_directory(dir, ec);
  if (!exists && !create) {
    std::cerr << "parley: no_data_dir: no data dir at " << dir.string()
              << " (pass the server's --data-dir or PARLEY_DATA_DIR" << create_hint << ")\n";
    return false;
  }
  // A directory without a store is the wrong one as surely as a missing
  // one (the parent of the server's, an empty mount): the same refusal.
  // (On PostgreSQL the dir holds only the secret.)
  if (exists && !create && config.database_url.empty()) {
    if (auto st = no_store_refusal(dir, create_hint); !st) {
      std::cerr << "parley: " << st.error().code << ": " << st.error().message << "\n";
      return false;
    }
  }
  bool has_store = exists && (!config.database_url.empty() || fs::exists(dir / "parley.db", ec));
  std::cerr << "parley: data dir " << dir.string() << (has_store ? "" : " (new)") << "\n";
  return true;
}

int user_add(Config& config, RegisterRequest& req, bool phone_set, const std::string& phone, bool as_json) {
  auto core = open_core(config, /*serving=*/false, /*prints_token=*/as_json);
  if (!core) return fail(core.error());
  if (phone_set) req.phone_number = phone;
  auto r = core->chat->register_user(req);
  core->store->close();
  if (!r) return fail(r.error());
  if (as_json) {
    std::cout << boost::json::serialize(boost::json::object{{"user", user_json(r->user)}, {"token", r->token}}) << "\n";
  } else {
    std::cout << "created user " << r->user.username << " (" << r->user.role << ") id " << r->user.id << "\n";
  }
  return 0;
}

int token(Config& config, const std::string& username) {
  auto core = open_core(config);
  if (!core) return fail(core.error());
  auto u = core->store->user_by_username(username);
  if (!u || !*u) {
    core->store->close();
    return fail(u ? not_found("user_not_found", "no user named " + username) : u.error());
  }
  if ((*u)->disabled) {  // the server would refuse the token: say why here
    core->store->close();
    return fail(Error{ErrorKind::kForbidden, "account_disabled",
                      "the account " + username + " is disabled (parley user enable " + username + ")"});
  }
  std::cout << core->chat->issue_token(**u).token << "\n";
  core->store->close();
  return 0;
}

std::string command_names(const CLI::App& app) {
  std::string names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    names += (names.empty() ? "" : ", ") + sub->get_name();
  }
  return names;
}

// "unknown command 'foo' (commands: ...)" for the first word that names no
// command of `app` (or of the command before it), instead of CLI11's
// "A subcommand is required"; nullopt when the words are fine.
std::optional<std::string> unknown_command(const CLI::App& app, int argc, char** argv) {
  const CLI::App* level = &app;
  std::string path;
  for (int i = 1; i < argc; ++i) {
    std::string word = argv[i];
    if (word.empty() || word[0] == '-') return std::nullopt;  // options: CLI11 explains those
    auto subs = level->get_subcommands([](const CLI::App*) { return true; });
    if (subs.empty()) return std::nullopt;                    // a positional argument of a command
    const CLI::App* next = nullptr;
    for (const CLI::App* sub : subs) {
      if (sub->check_name(word)) next = sub;
    }
    path += (path.empty() ? "" : " ") + word;
    if (!next) {
      return "unknown command '" + path + "' (commands: " + command_names(*level) + "; parley " +
             path.substr(0, path.size() - word.size()) + "--help)";
    }
    level = next;
  }
  return std::nullopt;
}

// "parley user disable --help": where to read how the command the words name
// is called (its leading words that name commands).
std::string help_hint(const CLI::App& app, int argc, char** argv) {
  const CLI::App* level = &app;
  std::string path = "parley";
  for (int i = 1; i < argc; ++i) {
    const CLI::App* next = nullptr;
    for (const CLI::App* sub : level->get_subcommands([](const CLI::App*) { return true; }))
      if (sub->check_name(argv[i])) next = sub;
    if (!next) break;
    path += " " + next->get_name();
    level = next;
  }
  return path + " --help";
}

// Whether the option was given (flag or environment) to the command that ran.
bool option_given(const CLI::App& app, const std::string& name) {
  for (const CLI::App* sub : app.get_subcommands()) {
    const CLI::Option* opt = sub->get_option_no_throw(name);
    if (opt && opt->count() > 0) return true;
    if (option_given(*sub, name)) return true;
  }
  return false;
}

}  // namespace

int run_cli(int argc, char** argv) {
  // What parley writes (the data dir, the database with its password hashes
  // and every message, the JWT secret, backups) is for its own user alone,
  // whatever umask it was started with (022 in most shells and in systemd):
  // files 0600, directories 0700. A stricter umask stays as it is.
  ::umask(::umask(077) | 077);
  CLI::App app{"Parley: a real-time chat server"};
  app.require_subcommand(1);
  Config config;

  auto* serve_cmd = app.add_subcommand("serve", "Run the server");
  add_data_options(*serve_cmd, config);
  add_token_options(*serve_cmd, config);
  add_serve_options(*serve_cmd, config);

  auto* user_cmd = app.add_subcommand("user", "Manage users");
  user_cmd->require_subcommand(1);
  bool create_data_dir = false;
  auto add_create_option = [&](CLI::App& cmd) {
    cmd.add_flag("--create", create_data_dir, "Make the data dir when it does not exist (a new, empty store)");
  };

  auto* add_cmd = user_cmd->add_subcommand("add", "Create a user (prints one line; --json for the user and a token)");
  add_data_options(*add_cmd, config);
  add_create_option(*add_cmd);
  RegisterRequest reg;
  std::string phone;
  bool user_add_json = false;
  add_cmd->add_option("--username", reg.username, "3-32 of a-z 0-9 _ .")->required();
  auto* password_opt = add_cmd->add_option("--password", reg.password, "At least 8 characters (required without --id)");
  add_cmd->add_option("--full-name", reg.full_name, "Display name")->required();
  add_cmd->add_option("--role", reg.role, "Free text, or one of --roles when given (default: no role, shown as member)");
  auto* phone_opt = add_cmd->add_option("--phone", phone, "Phone number (login alternative)");
  std::string user_id;
  auto* id_opt = add_cmd->add_option(
      "--id", user_id,
      "The id (UUID) an outside identity provider's tokens give as sub: the account exists before their first token, "
      "so others can message them; without --password they sign in only through the provider");
  add_roles_option(*add_cmd, config);
  add_cmd->add_flag("--json", user_add_json, "Print {user, token} as JSON (the token lasts --token-ttl)");
  add_token_options(*add_cmd, config);

  // disable / enable / revoke-tokens (src/app/user_admin.cc).
  std::string admin_user;
  std::vector<std::pair<CLI::App*, UserAdminAction>> admin_cmds;
  for (auto [name, action, help] :
       {std::tuple{"disable", UserAdminAction::kDisable, "Lock an account: its connections close (4403), its tokens get 401"},
        std::tuple{"enable", UserAdminAction::kEnable, "Unlock a disabled account"},
        std::tuple{"revoke-tokens", UserAdminAction::kRevokeTokens, "Refuse every token of a user issued before now"}}) {
    auto* cmd = user_cmd->add_subcommand(name, help);
    add_data_options(*cmd, config);
    add_token_options(*cmd, config);  // accepted so one set of flags serves every admin command
    cmd->add_option("username", admin_user, "Username")->required();
    admin_cmds.push_back({cmd, action});
  }

  auto* token_cmd = app.add_subcommand("token", "Print a valid token for a user");
  add_data_options(*token_cmd, config);
  add_token_options(*token_cmd, config);
  std::string token_user;
  token_cmd->add_option("username", token_user, "Username")->required();

  // seed makes its data dir when missing: making fresh benchmark data is what it is for.
  auto* seed_cmd = app.add_subcommand("seed", "Create benchmark users and group threads with deterministic ids");
  add_data_options(*seed_cmd, config);
  add_token_options(*seed_cmd, config);
  SeedOptions seed_opts;
  seed_cmd->add_option("--users", seed_opts.users, "Users bench_0..bench_<N-1>")->required();
  seed_cmd->add_option("--group-size", seed_opts.group_size, "Users per group thread (user i is in group i/G)")->required();
  seed_cmd->add_option("--threads", seed_opts.threads, "Concurrent creates (group-committed)")->capture_default_str();

  auto* migrate_cmd = app.add_subcommand("migrate", "Apply the store's schema migrations and exit");
  add_data_options(*migrate_cmd, config);

  auto* migrate_store_cmd =
      app.add_subcommand("migrate-store", "Copy an embedded (SQLite) installation into PostgreSQL; resumable, checked by counts");
  MigrateStoreOptions migrate_store_opts;
  migrate_store_cmd->add_option("--from", migrate_store_opts.from, "sqlite:DIR, the data dir of the stopped server")->required();
  migrate_store_cmd->add_option("--to", migrate_store_opts.to, "postgres://USER:PASS@HOST:PORT/DB, empty or this copy's")
      ->required();
  migrate_store_cmd->add_option("--batch-rows", migrate_store_opts.batch_rows, "Rows per transaction (1-5000)")
      ->capture_default_str();
  migrate_store_cmd->add_option("--log-level", config.log_level, "trace, debug, info, warn, error, off (default: warn)");
  auto* backup_cmd = app.add_subcommand("backup", "Copy a (running) server's SQLite database to a new file, consistently");
  add_data_options(*backup_cmd, config);
  std::string backup_to;
  backup_cmd->add_option("--to", backup_to, "The backup file to write (must not exist)")->required();

  auto* restore_cmd = app.add_subcommand("restore", "Restore a backup into a new or empty data dir");
  add_data_options(*restore_cmd, config);
  std::string restore_from;
  restore_cmd->add_option("--from", restore_from, "The backup file (made by parley backup)")->required();

  auto* check_cmd = app.add_subcommand("check", "Verify the store's integrity and invariants (exit 1 on a problem)");
  add_data_options(*check_cmd, config);
  bool check_json = false;
  check_cmd->add_flag("--json", check_json, "Print the report as JSON");

  auto* config_cmd = app.add_subcommand("config", "Settings");
  config_cmd->require_subcommand(1);
  auto* config_check_cmd =
      config_cmd->add_subcommand("check", "Validate settings (flags, PARLEY_*, --config file) and print serve's effective ones");
  Config checked;  // what serve would run with
  add_data_options(*config_check_cmd, checked);
  add_token_options(*config_check_cmd, checked);
  add_serve_options(*config_check_cmd, checked);

  app.add_subcommand("version", "Print the version");

  if (auto unknown = unknown_command(app, argc, argv)) {
    std::cerr << "parley: " << *unknown << "\n";
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const bool checking_config = config_check_cmd->parsed() || (argc > 1 && std::string(argv[1]) == "config");
    if (checking_config && e.get_exit_code() != 0) {
      std::cerr << "parley: bad_setting: " << e.what() << "\n";
      return 1;
    }
    // A wrong, missing or unexpected argument: one line like every other
    // error, and exit 2 like an unknown command (CLI11's own is two lines and
    // codes 104-114). --help still prints the help and exits 0.
    if (e.get_exit_code() != 0) {
      std::cerr << "parley: bad_arguments: " << e.what() << " (" << help_hint(app, argc, argv) << ")\n";
      return 2;
    }
    return app.exit(e);
  }
  // The --config file fills in what neither a flag nor the environment set.
  CLI::App* running = &app;
  for (bool deeper = true; deeper;) {
    deeper = false;
    for (CLI::App* sub : running->get_subcommands()) {
      running = sub;
      deeper = true;
      break;
    }
  }
  SettingSources sources = given_settings(*running, argc, argv);
  const std::string& config_file = config_check_cmd->parsed() ? checked.config_file : config.config_file;
  if (!config_file.empty()) {
    const std::string section = config_check_cmd->parsed() ? "serve" : running->get_name();
    if (auto st = apply_config_file(config_file, app, *running, section, sources); !st) return fail(st.error());
  }
  // Admin commands are quiet: only warnings and their result. serve logs
  // one line per event from info up.
  if (!serve_cmd->parsed() && !option_given(app, "--log-level")) config.log_level = "warn";
  const std::string& level = config_check_cmd->parsed() ? checked.log_level : config.log_level;
  if (!valid_log_level(level) || !init_logging(config.log_level)) {
    std::cerr << "parley: bad_setting: unknown log level " << level << " (trace, debug, info, warn, error, off)\n";
    return 1;
  }
  if (config_check_cmd->parsed()) {
    // What serve would refuse at start, refused here too.
    if (auto st = check_webhook(checked.webhook); !st) return fail(st.error());
    if (!checked.jwt_secret.empty())
      if (auto st = check_given_secret(checked.jwt_secret); !st) return fail(st.error());
    std::cout << describe_settings(*config_check_cmd, sources);
    std::cerr << "parley: settings ok" << (config_file.empty() ? "" : " (" + config_file + ")") << "\n";
    return 0;
  }
  // Before any command that signs with it touches the data dir. (disable,
  // enable and revoke-tokens sign nothing: an emergency lock-out must not
  // wait on a secret's rotation.)
  const bool signs = serve_cmd->parsed() || token_cmd->parsed() || add_cmd->parsed() || seed_cmd->parsed();
  if (signs && !config.jwt_secret.empty())
    if (auto st = check_given_secret(config.jwt_secret); !st) return fail(st.error());
  if (serve_cmd->parsed()) return serve(config);
  if (backup_cmd->parsed()) return backup(config, backup_to);
  if (restore_cmd->parsed()) return restore(config, restore_from);
  if (check_cmd->parsed()) return check(config, check_json);
  if (add_cmd->parsed()) {
    if (password_opt->count() == 0 && id_opt->count() == 0)
      return fail(bad_input("missing_field", "--password is required (or --id, for a user of an outside identity provider)"));
    if (id_opt->count() > 0) reg.id = user_id;
    if (!use_data_dir(config, create_data_dir, /*needs_secret=*/user_add_json, /*offers_create=*/true)) return 1;
    return user_add(config, reg, phone_opt->count() > 0, phone, user_add_json);
  }
  for (auto& [cmd, action] : admin_cmds) {
    if (!cmd->parsed()) continue;
    if (!use_data_dir(config, false, /*needs_secret=*/false, /*offers_create=*/false)) return 1;
    return run_user_admin(config, action, admin_user);
  }
  if (token_cmd->parsed()) {
    if (!use_data_dir(config, false, /*needs_secret=*/true, /*offers_create=*/false)) return 1;
    return token(config, token_user);
  }
  if (seed_cmd->parsed()) return run_seed(config, seed_opts);
  if (migrate_cmd->parsed()) return migrate(config);
  if (migrate_store_cmd->parsed()) return run_migrate_store(migrate_store_opts);
  std::cout << "parley " << PARLEY_VERSION << "\nallocator: " << allocator_name() << "\n";
  return 0;
}

}  // namespace parley
