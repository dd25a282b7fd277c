// HTTP/1.1 on one connection, over TCP or TLS: reads requests, runs REST
// handlers on the worker pool and writes the answers in order; hands
// WebSocket upgrades over. Templated on the stream only because Beast's
// read and write are; everything else is the same for both.
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "common/bearer.h"
#include "common/metrics.h"
#include "net/engineio.h"
#include "net/sessions.h"
#include "protocol/client_frame.h"
#include "protocol/encode.h"

namespace parley::net {

namespace {

// Writing an answer; reading is bounded by the configured header and body timeouts.
constexpr auto kWriteTimeout = std::chrono::seconds(30);
constexpr size_t kHeaderLimit = 16 * 1024;
// A longer request target gets 414 (nginx and Node allow 8 KiB too).
constexpr size_t kMaxTargetBytes = 8 * 1024;
// The bytes read but not yet parsed. Beast's parser bounds the headers
// (kHeaderLimit) and the body (body_limit), not a chunk-size line or a
// trailer section, which it holds whole until their CRLF: without this
// bound one request could grow the buffer for as long as the body timeout.
// The body itself is parsed as it comes and never held here.
constexpr size_t kReadBufferLimit = 64 * 1024;
// A refused request's unread body is drained for at most this long and this much.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kLingerBytes = 4 * 1024 * 1024;
constexpr size_t kMaxQueuedPasswordRequests = 64;
// Of those, at most this many logins of one account (RestApi::login_account):
// correct logins are counted by no limiter, and one account's, sent on many
// connections, kept the queue above full for everyone else.
constexpr int kMaxQueuedLoginsPerAccount = 4;

// The logins of each account waiting for a hash, across every loop.
class QueuedLogins {
 public:
  bool enter(const std::string& account) {
    std::lock_guard lock(mu_);
    int& n = counts_[account];
    if (n >= kMaxQueuedLoginsPerAccount) return false;
    ++n;
    return true;
  }
  void leave(const std::string& account) {
    std::lock_guard lock(mu_);
    if (auto it = counts_.find(account); it != counts_.end() && --it->second <= 0) counts_.erase(it);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, int> counts_;
};

QueuedLogins& queued_logins() {
  static QueuedLogins logins;
  return logins;
}

// One queued login's count, given back when its task is done or dropped,
// however it ends (an exception in the handler included).
struct QueuedLogin {
  std::string account;
  explicit QueuedLogin(std::string a) : account(std::move(a)) {}
  QueuedLogin(const QueuedLogin&) = delete;
  QueuedLogin& operator=(const QueuedLogin&) = delete;
  ~QueuedLogin() {
    if (!account.empty()) queued_logins().leave(account);
  }
};

std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

bool is_ws_path(std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  return path == "/ws" || path == "/api/v1/ws/chat" || path == "/" || path == "/ws/" || path == "/api/v1/ws/chat/";
}

// What any server may be asked; others get 501. Of these, the ones a path
// does not serve get 405 (RestApi).
bool known_method(http::verb v) {
  switch (v) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::post:
    case http::verb::put:
    case http::verb::delete_:
    case http::verb::options:
    case http::verb::patch:
    case http::verb::trace:
    case http::verb::connect:
      return true;
    default:
      return false;
  }
}

// RFC 9112 3.2: an HTTP/1.1 request must carry exactly one Host, and no
// request may carry two (a proxy and Parley could each read another one).
bool host_ok(const http::request_header<>& head) {
  auto [first, last] = head.equal_range(http::field::host);
  const auto count = std::distance(first, last);
  return head.version() >= 11 ? count == 1 : count <= 1;
}

// On every answer: no MIME sniffing, no referrer, no framing, and (the API
// serves no pages) no content of any kind may load in a browser from it.
// An answer that sets its own (the web app's pages) keeps them.
void add_security_headers(http::response<http::string_body>& res) {
  auto set_default = [&res](std::string_view name, std::string_view value) {
    if (res.find(name) == res.end()) res.set(name, value);
  };
  set_default("X-Content-Type-Options", "nosniff");
  set_default("Referrer-Policy", "no-referrer");
  set_default("X-Frame-Options", "DENY");
  set_default("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
}

// RFC 9112 3.2.2: a server must accept a target in absolute form
// (`GET http://host/health`, what a client sends when it thinks it talks to
// a proxy) and use its path. Returns the origin form of such a target, or
// nothing for a target already in origin form (or in another form, which
// on_header refuses). The authority is not checked against Host: Parley
// serves one site whatever its name.
std::optional<std::string> origin_form(std::string_view target) {
  size_t colon = target.find("://");
  if (colon == std::string_view::npos || target.empty() || target.front() == '/') return std::nullopt;
  std::string_view scheme = target.substr(0, colon);
  if (!beast::iequals(scheme, "http") && !beast::iequals(scheme, "https")) return std::nullopt;
  std::string_view rest = target.substr(colon + 3);
  size_t path = rest.find_first_of("/?");
  if (path == std::string_view::npos) return std::string("/");
  if (rest[path] == '?') return "/" + std::string(rest.substr(path));
  return std::string(rest.substr(path));
}

bool origin_allowed(const Config& config, std::string_view origin) {
  if (config.allowed_origins.empty() || origin.empty()) return true;
  return std::any_of(config.allowed_origins.begin(), config.allowed_origins.end(),
                     [&](const std::string& o) { return o == "*" || o == origin; });
}

// Whether a browser may open a connection (a WebSocket, an Engine.IO
// session) from this request's Origin: an allowed one, or the server's own
// (its authority is the request's Host: the web app Parley serves, and
// mobile WebSocket clients, which send the URL's own origin). A same-origin
// page needs no allowing, and the token, never ambient, is checked after.
// The scheme is not compared: behind a proxy that ends TLS, the server
// cannot tell which one the page used. A default port (:80, :443) written
// on either side is dropped first: browsers leave it out of Origin, and
// some clients and proxies put it in Host.
bool origin_admitted(const Config& config, const http::request<http::string_body>& req) {
  std::string_view origin = req[http::field::origin];
  if (origin_allowed(config, origin)) return true;
  const size_t scheme = origin.find("://");
  std::string_view host = req[http::field::host];
  if (scheme == std::string_view::npos || host.empty()) return false;
  auto without_default_port = [](std::string_view a) {
    for (std::string_view port : {":80", ":443"})
      if (a.size() > port.size() && a.substr(a.size() - port.size()) == port) return a.substr(0, a.size() - port.size());
    return a;
  };
  std::string_view authority = without_default_port(origin.substr(scheme + 3));
  host = without_default_port(host);
  return authority.size() == host.size() && strncasecmp(authority.data(), host.data(), host.size()) == 0;
}

// The token a request carries as `?token=` or `Authorization: Bearer`; ""
// when it carries none, nullopt when it carries both and they differ (which
// one is meant is a guess, so neither is taken).
std::optional<std::string> request_token(const http::request<http::string_body>& req) {
  std::string token;
  std::string_view target = req.target();
  if (size_t q = target.find('?'); q != std::string_view::npos) {
    auto query = parse_query(std::string(target.substr(q + 1)));
    if (auto it = query.find("token"); it != query.end()) token = it->second;
  }
  std::string_view auth = req[http::field::authorization];
  if (auto bearer = bearer_token(auth)) {
    std::string header_token(*bearer);
    if (!token.empty() && token != header_token) return std::nullopt;
    token = std::move(header_token);
  }
  return token;
}

bool is_eio_path(const Config& config, std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  std::string_view base = config.socketio.path;
  if (!base.empty() && base.back() == '/') base.remove_suffix(1);
  return path.substr(0, base.size()) == base && (path.size() == base.size() || path[base.size()] == '/');
}

template <class Stream>
class HttpSession final : public std::enable_shared_from_this<HttpSession<Stream>>, public IdleHttp {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  HttpSession(LoopContext& loop, Stream stream, std::string remote)
      : loop_(loop), stream_(std::move(stream)), remote_(std::move(remote)) {}
  ~HttpSession() { unlist_idle(); }

  void close_idle() override {
    listed_idle_ = false;  // the loop has dropped it from its set
    // A connection that has had no answer yet is new, not kept alive: its
    // first request (after a TLS handshake, a round trip away) gets its 503.
    if (replies_ == 0) return;
    if (buffer_.size() > 0 || (parser_ && parser_->got_some())) return;
    // Bytes waiting unread are a request begun (and closing over them would
    // send a reset).
    char byte;
    if (::recv(tcp().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0) return;
    closed_idle_ = true;
    tcp().close();  // the pending read ends with operation_aborted
  }

  void run() {
    if constexpr (kTls) {
      tcp().expires_after(header_timeout());
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](boost::system::error_code ec) {
                                if (!ec) return self->read();
                                spdlog::debug("event=tls_handshake_failed remote={} error=\"{}\"", self->remote_, ec.message());
                                self->tcp().close();
                              });
    } else {
      read();
    }
  }

 private:
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }
  std::chrono::seconds header_timeout() const { return std::chrono::seconds(loop_.config.limits.http_header_timeout_seconds); }

  // The headers first, within the header timeout (slowloris), then the body
  // within the body timeout.
  void read() {
    // An answer written with keep-alive just before the drain began: the
    // connection is not kept for another request.
    if (loop_.draining && replies_ > 0 && buffer_.size() == 0) return shutdown();
    head_ = false;
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    // Engine.IO polling bodies may be larger than a REST body (maxPayload).
    parser_->body_limit(std::max<uint64_t>(loop_.config.limits.max_frame_bytes, loop_.config.socketio.max_payload));
    tcp().expires_after(header_timeout());
    if (!listed_idle_) loop_.idle_http.insert(this);
    listed_idle_ = true;
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](boost::system::error_code ec, size_t) { self->on_header(ec); });
  }

  void unlist_idle() {
    if (listed_idle_) loop_.idle_http.erase(this);
    listed_idle_ = false;
  }

  void on_header(boost::system::error_code ec) {
    unlist_idle();
    if (closed_idle_) return;  // closed by the drain (close_idle)
    if (ec) return on_read(ec);
    const auto& head = parser_->get();
    head_ = head.method() == http::verb::head;
    if (head.target().size() > kMaxTargetBytes) {
      linger_ = true;
      return reply(error_response(414, "uri_too_long", "the request target is longer than 8 KiB"), false);
    }
    if (!known_method(head.method())) {
      linger_ = true;
      return reply(error_response(501, "not_implemented",
                                  "the method " + std::string(head.method_string().substr(0, 32)) + " is not implemented"),
                   false);
    }
    if (!host_ok(head)) {
      linger_ = true;
      return reply(error_response(400, "bad_request", "an HTTP/1.1 request needs exactly one Host header"), false);
    }
    // Two credentials: which one a proxy checked and which one Parley would
    // read need not be the same (as with two Hosts).
    if (auto [first, last] = head.equal_range(http::field::authorization); std::distance(first, last) > 1) {
      linger_ = true;
      return reply(error_response(400, "bad_request", "a request carries at most one Authorization header"), false);
    }
    // A Transfer-Encoding that is not one final `chunked` (gzip, identity,
    // chunked twice…) leaves the body's length unknown: Beast would read no
    // body and take it for the next request, which a proxy in front may
    // have read otherwise (request smuggling). RFC 9112 6.3: 400, close.
    if (auto [first, last] = head.equal_range(http::field::transfer_encoding);
        first != last && (std::next(first) != last || !beast::iequals(trim_ows(first->value()), "chunked"))) {
      linger_ = true;
      return reply(error_response(400, "bad_request", "Transfer-Encoding must be exactly \"chunked\""), false);
    }
    if (auto path = origin_form(head.target())) {
      parser_->get().target(*path);
    } else if (head.target().empty() || (head.target().front() != '/' && head.target() != "*")) {
      // Neither origin, absolute nor asterisk form (RFC 9112 3.2): `GET health`.
      linger_ = true;
      return reply(error_response(400, "bad_request", "the request target must start with /"), false);
    }
    if (!is_eio_path(loop_.config, head.target())) {
      // A REST body is at most max_frame_bytes, below the parser's limit
      // (Engine.IO's maxPayload): a larger one announced is refused before
      // it is read (a client waiting on 100-continue would wait for nothing),
      // and a chunked one is cut off at the limit.
      const uint64_t limit = loop_.config.limits.max_frame_bytes;
      if (auto length = parser_->content_length(); length && *length > limit) {
        linger_ = true;
        return reply(with_cors(error_response(413, "payload_too_large", "request body is too large")), false);
      }
      parser_->body_limit(limit);
    }
    if (parser_->is_done()) return on_read({});
    tcp().expires_after(std::chrono::seconds(loop_.config.limits.http_body_timeout_seconds));
    // A client that asked to be told before it sends the body (curl before
    // 7.88 for any body over 1 KiB) would otherwise wait a second or more
    // for nothing, on every such request. HTTP/1.0 has no 100 (RFC 9110
    // 10.1.1). The body timeout covers this write.
    if (head.version() >= 11 && beast::iequals(head[http::field::expect], "100-continue")) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      return asio::async_write(stream_, asio::buffer(kContinue),
                               [self = this->shared_from_this()](boost::system::error_code ec, size_t) {
                                 if (ec) return self->shutdown();
                                 self->read_body();
                               });
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](boost::system::error_code ec, size_t) { self->on_read(ec); });
  }

  // Headers over the limit: 414 when the request line alone is too long
  // (Beast keeps the target once it has parsed the request line: none yet
  // means the line itself went past the limit), else 431.
  bool request_line_too_long() const {
    std::string_view target = parser_->get().target();
    return target.empty() || target.size() > kMaxTargetBytes;
  }

  void on_read(boost::system::error_code ec) {
    if (ec == beast::error::timeout) {
      // Slow headers or body, or an idle keep-alive connection: closed without an answer, as nginx does.
      spdlog::debug("event=http_timeout remote={} phase={}", remote_, parser_->is_header_done() ? "body" : "header");
      return shutdown();
    }
    if (ec == http::error::end_of_stream || ec == asio::error::connection_reset || ec == asio::ssl::error::stream_truncated) {
      return shutdown();
    }
    if (ec == http::error::body_limit) {
      linger_ = true;
      return reply(with_cors(error_response(413, "payload_too_large", "request body is too large")), false);
    }
    if (ec == http::error::buffer_overflow) {
      // Past kReadBufferLimit without a line end: headers (within the
      // header limit they would have ended) or a chunk line or trailers.
      linger_ = true;
      if (!parser_->is_header_done())
        return reply(error_response(431, "headers_too_large", "the request headers are larger than 16 KiB"), false);
      return reply(error_response(400, "bad_request", "a chunk-size line or the trailers are too long"), false);
    }
    if (ec == http::error::header_limit) {
      linger_ = true;
      if (request_line_too_long())
        return reply(error_response(414, "uri_too_long", "the request target is longer than 8 KiB"), false);
      return reply(error_response(431, "headers_too_large", "the request headers are larger than 16 KiB"), false);
    }
    if (ec) {
      linger_ = true;
      return reply(error_response(400, "bad_request", "malformed HTTP request"), false);
    }
    http::request<http::string_body> req = parser_->release();
    if (loop_.draining && !served_while_draining(req)) return reply(shutting_down(), false);
    if (websocket::is_upgrade(req)) return upgrade(std::move(req));
    if (req.method() == http::verb::options) return reply(preflight(req), req.keep_alive());
    if (is_eio_path(loop_.config, req.target())) return engineio(std::move(req));
    if (req.body().size() > loop_.config.limits.max_frame_bytes) {
      return reply(error_response(413, "payload_too_large", "request body is too large"), false);
    }
    HttpRequest r = to_plain(req);
    bool keep_alive = req.keep_alive();
    std::string origin(req[http::field::origin]);
    const bool hashes = RestApi::hashes_passwords(r);
    ThreadPool& pool = hashes ? loop_.password_workers : loop_.workers;
    // Bounded: past this many waiting hashes, refuse at once instead of queueing for seconds.
    if (hashes && pool.queued() >= kMaxQueuedPasswordRequests)
      return reply(to_beast(HttpResponse{503, "application/json",
                                         encode_error_body({ErrorKind::kUnavailable, "server_busy",
                                                            "too many logins and registrations at once; retry shortly"}),
                                         {}},
                            origin),
                   keep_alive);
    std::string account = hashes ? RestApi::login_account(r) : std::string();
    if (!account.empty() && !queued_logins().enter(account))
      return reply(to_beast(HttpResponse{429, "application/json",
                                         encode_error_body({ErrorKind::kRateLimited, "rate_limited",
                                                            "too many logins of this account at once; retry shortly"}),
                                         {{"Retry-After", "1"}}},
                            origin),
                   keep_alive);
    auto self = this->shared_from_this();
    ++loop_.rest_in_flight;
    rest_counted_ = true;
    auto counted = account.empty() ? nullptr : std::make_shared<QueuedLogin>(std::move(account));
    pool.submit([self, r = std::move(r), keep_alive, origin = std::move(origin), counted = std::move(counted)]() mutable {
      HttpResponse out = self->loop_.rest.handle(r);
      counted.reset();
      asio::post(self->stream_.get_executor(), [self, out = std::move(out), keep_alive, origin] {
        self->reply(self->to_beast(out, origin), keep_alive);
      });
    });
  }

  HttpRequest to_plain(const http::request<http::string_body>& req) {
    HttpRequest r;
    r.method = std::string(req.method_string());
    std::string_view target = req.target();
    size_t q = target.find('?');
    r.path = decode_path(std::string(target.substr(0, q)));
    if (q != std::string_view::npos) r.query = parse_query(std::string(target.substr(q + 1)));
    r.authorization = std::string(req[http::field::authorization]);
    r.accept = std::string(req[http::field::accept]);
    r.body = req.body();
    r.remote_address = remote_;
    return r;
  }

  http::response<http::string_body> to_beast(const HttpResponse& out, const std::string& origin) {
    http::response<http::string_body> res{static_cast<http::status>(out.status), 11};
    res.set(http::field::server, "parley");
    res.set(http::field::content_type, out.content_type);
    if (!origin.empty()) {
      if (origin_allowed(loop_.config, origin)) res.set(http::field::access_control_allow_origin, origin);
      res.set(http::field::vary, "Origin");
    }
    for (const auto& [name, value] : out.headers) res.set(name, value);
    res.body() = out.body;
    res.prepare_payload();
    return res;
  }

  // Socket.IO apps may send headers of their own (`extraHeaders`): as the
  // reference server's cors package, the headers a preflight asks for are
  // allowed on Engine.IO paths, when they are plain header names.
  static std::string allowed_request_headers(const http::request<http::string_body>& req, bool eio) {
    std::string asked(req[http::field::access_control_request_headers]);
    const bool plain = !asked.empty() && asked.size() <= 1024 &&
                       std::all_of(asked.begin(), asked.end(), [](unsigned char c) {
                         return std::isalnum(c) || c == '-' || c == '_' || c == ',' || c == ' ';
                       });
    return eio && plain ? asked : "Authorization, Content-Type";
  }

  // OPTIONS: the methods of the path (Allow) and, for an allowed Origin, a
  // CORS preflight answer; an Origin not allowed gets no CORS headers, so
  // the browser refuses the request.
  http::response<http::string_body> preflight(const http::request<http::string_body>& req) {
    std::string_view target = req.target();
    std::string path = decode_path(std::string(target.substr(0, target.find('?'))));
    const bool eio = is_eio_path(loop_.config, target);
    std::string allow = eio ? "GET, POST, OPTIONS" : path == "*" ? "GET, HEAD, POST, DELETE, OPTIONS" : RestApi::allowed_methods(path);
    if (allow.empty()) return error_response(404, "not_found", "no such endpoint");
    HttpResponse empty;
    empty.status = 204;
    empty.content_type = "text/plain";
    std::string origin(req[http::field::origin]);
    auto res = to_beast(empty, origin);
    res.set(http::field::allow, allow);
    if (!origin.empty() && origin_allowed(loop_.config, origin)) {
      res.set(http::field::access_control_allow_methods, allow);
      res.set(http::field::access_control_allow_headers, allowed_request_headers(req, eio));
      res.set(http::field::access_control_max_age, "600");
      if (eio) res.set(http::field::access_control_allow_credentials, "true");
    }
    return res;
  }

  // A request refused once its headers are read but before a handler took
  // it (a body over the limit): the CORS headers its handler would have set,
  // so that a browser app sees the 413 instead of a failed CORS check.
  http::response<http::string_body> with_cors(http::response<http::string_body> res) {
    // Not is_header_done(): Beast refuses a Content-Length over the limit as
    // the header ends, with every field parsed but the header not marked done.
    if (!parser_) return res;
    const auto& head = parser_->get();
    std::string origin(head[http::field::origin]);
    if (origin.empty()) return res;
    res.set(http::field::vary, "Origin");
    if (!origin_allowed(loop_.config, origin)) return res;
    res.set(http::field::access_control_allow_origin, origin);
    if (is_eio_path(loop_.config, head.target())) res.set(http::field::access_control_allow_credentials, "true");
    return res;
  }

  static http::response<http::string_body> error_response(int status, std::string_view code, std::string_view msg) {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::server, "parley");
    res.set(http::field::content_type, "application/json");
    res.body() = encode_error_body(Error{ErrorKind::kBadInput, std::string(code), std::string(msg)});
    res.prepare_payload();
    Metrics::get().count_error(code);
    return res;
  }

  // A token the upgrade refuses: 401, unless it could not be checked (503
  // storage_unavailable: the client retries, where a 401 makes it sign out).
  static http::response<http::string_body> upgrade_refusal(const Error& e) {
    return error_response(is_outage(e) ? http_status(e.kind) : 401, e.code, e.message);
  }

  // While the server drains, /health (it says "draining", so a load balancer
  // stops sending clients here) and the polls of existing Engine.IO sessions
  // (they carry the close packet) are still served; nothing new starts.
  bool served_while_draining(const http::request<http::string_body>& req) const {
    std::string_view target = req.target();
    std::string_view path = target.substr(0, target.find('?'));
    if (path == "/health") return !websocket::is_upgrade(req);
    return is_eio_path(loop_.config, target) && !websocket::is_upgrade(req) && !parse_eio_query(target).sid.empty();
  }

  static http::response<http::string_body> shutting_down() {
    auto res = error_response(503, "shutting_down", "the server is shutting down; connect again (another node may answer)");
    res.set(http::field::retry_after, "1");
    return res;
  }

  void reply(http::response<http::string_body> res, bool keep_alive) {
    // The last request a connection may make is answered with Connection: close.
    if (++replies_ >= static_cast<uint64_t>(loop_.config.limits.http_keepalive_requests)) keep_alive = false;
    add_security_headers(res);
    res.keep_alive(keep_alive && !loop_.draining);
    if (rest_counted_) {
      rest_counted_ = false;
      --loop_.rest_in_flight;  // its answer is computed; the write below is the loop's own work
    }
    if (head_) {
      // HEAD: GET's headers, Content-Length included, and no body.
      size_t length = res.body().size();
      res.body().clear();
      res.content_length(length);
    }
    auto sp = std::make_shared<http::response<http::string_body>>(std::move(res));
    tcp().expires_after(kWriteTimeout);
    http::async_write(stream_, *sp, [self = this->shared_from_this(), sp](boost::system::error_code ec, size_t) {
      if (!ec && self->linger_) return self->linger_close();
      if (ec || !sp->keep_alive()) return self->shutdown();
      self->read();
    });
  }

  // Engine.IO long-polling (engineio.h); the answer may come from another loop.
  void engineio(http::request<http::string_body> req) {
    bool keep_alive = req.keep_alive();
    std::string origin(req[http::field::origin]);
    auto respond = [self = this->shared_from_this(), keep_alive, origin](int status, std::string type, std::string body) {
      asio::post(self->stream_.get_executor(), [self, keep_alive, origin, status, type = std::move(type),
                                                body = std::move(body)]() mutable {
        self->end_poll_watch();
        HttpResponse out;
        out.status = status;
        out.content_type = std::move(type);
        out.body = std::move(body);
        auto res = self->to_beast(out, origin);
        if (!origin.empty() && origin_allowed(self->loop_.config, origin))
          res.set(http::field::access_control_allow_credentials, "true");
        self->reply(std::move(res), keep_alive);
      });
    };
    if (!origin_admitted(loop_.config, req))
      return respond(403, "application/json", sio::eio_error_body(sio::EioError::kForbidden));
    if (req.body().size() > loop_.config.socketio.max_payload)
      return respond(413, "application/json", sio::eio_error_body(sio::EioError::kBadRequest));
    EioQuery query = parse_eio_query(req.target());
    const bool poll = req.method() == http::verb::get && !query.sid.empty();
    std::string sid = query.sid;
    // Only a handshake's token is used: not parsed again for every poll.
    HandshakeToken token = query.sid.empty() ? request_token(req) : std::string();
    eio_http_request(loop_, remote_, req.method_string(), query, std::move(token), std::move(req.body()),
                     std::move(respond));
    if (poll) watch_poll(std::move(sid));
  }

  // A long poll waits here for its answer, and nothing reads the connection
  // meanwhile. A client (or a proxy) that drops it would leave the session
  // answering its next packets into a dead connection, lost while the
  // session goes on. So the connection is watched: closed before the answer
  // was written, it closes the session (as the reference server does), and
  // the client's next request finds the sid gone, reconnects and catches up.
  // Bytes read with the request (a pipelined one, a stray line end) are
  // the next request's, in the buffer: the socket is watched all the same.
  void watch_poll(std::string sid) {
    poll_sid_ = std::move(sid);
    arm_poll_watch();
  }

  void arm_poll_watch() {
    const uint64_t watch = ++poll_watch_;
    watching_poll_ = true;
    tcp().socket().async_wait(tcp::socket::wait_read, [self = this->shared_from_this(), watch](boost::system::error_code ec) {
      if (ec == asio::error::operation_aborted || !self->watching_poll_ || watch != self->poll_watch_) return;
      self->watching_poll_ = false;
      const PollPeer peer = ec ? PollPeer::kGone : self->poll_peer();
      if (peer == PollPeer::kGone) return eio_poll_abandoned(self->poll_sid_);
      if (peer == PollPeer::kQuiet) self->arm_poll_watch();  // bytes kept for the next request: watch on
    });
  }

  // The answer is here. The close may have come just before it, its wake-up
  // still queued behind this: looked at once more, so that the answer does
  // not go into a connection the client has left.
  void end_poll_watch() {
    if (!watching_poll_) return;
    watching_poll_ = false;
    boost::system::error_code ec;
    tcp().socket().cancel(ec);
    if (poll_peer() == PollPeer::kGone) eio_poll_abandoned(poll_sid_);
  }

  enum class PollPeer { kQuiet, kGone, kBusy };
  // Whether the client of a waiting poll closed or reset the connection, with
  // no wait. Bytes that came first do not hide a close behind them: a client
  // may send a stray CRLF, or pipeline its next request, and then go.
  // - Plain TCP: they are read into the buffer, where the next request is
  //   parsed from once the poll is answered, then the close is looked for
  //   behind them; kBusy once the buffer is full (the watch ends, as it
  //   must: nothing can be read past it).
  // - TLS: they cannot be told apart without decrypting them, and with TLS
  //   1.3 a clean close (close_notify) is an encrypted record like any
  //   other. Browsers do not pipeline, so they count as a close: a client
  //   that did pipeline reconnects and catches up, where one that left
  //   would lose what its answer carried.
  PollPeer poll_peer() {
    const int fd = tcp().socket().native_handle();
    if constexpr (kTls) {
      char byte;
      ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return PollPeer::kQuiet;
      return PollPeer::kGone;
    } else {
      for (;;) {
        const size_t room = std::min<size_t>(4096, buffer_.max_size() - buffer_.size());
        if (room == 0) return PollPeer::kBusy;
        auto space = buffer_.prepare(room);
        ssize_t n = ::recv(fd, space.data(), space.size(), MSG_DONTWAIT);
        if (n > 0) {
          buffer_.commit(static_cast<size_t>(n));
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return PollPeer::kQuiet;
        return PollPeer::kGone;
      }
    }
  }

  void upgrade(http::request<http::string_body> req) {
    if (is_eio_path(loop_.config, req.target())) return engineio_upgrade(std::move(req));
    if (!is_ws_path(req.target())) return reply(error_response(404, "not_found", "no WebSocket endpoint here"), false);
    if (!origin_admitted(loop_.config, req))
      return reply(error_response(403, "origin_not_allowed", "this Origin may not connect"), false);
    auto found = request_token(req);
    if (!found)
      return reply(error_response(400, "conflicting_tokens",
                                  "the ?token= and Authorization: Bearer tokens differ; send one"),
                   false);
    std::string token = std::move(*found);
    // The change sync of a connection with no `auth` frame to ask for it.
    std::optional<int64_t> changes_after;
    if (size_t q = req.target().find('?'); q != std::string_view::npos) {
      auto query = parse_query(std::string(req.target().substr(q + 1)));
      if (auto it = query.find("changes_after"); it != query.end()) {
        auto after = parse_changes_after_param(it->second);
        if (!after) return reply(error_response(400, after.error().code, after.error().message), false);
        if (token.empty())
          return reply(error_response(400, "invalid_field",
                                      "changes_after in the URL goes with a token in the URL or a header; with "
                                      "an auth frame, send changes_after in it"),
                       false);
        changes_after = *after;
      }
    }
    if (token.empty()) return hand_over(req, std::nullopt);
    // An account in Identity's cache (warmed at start, then every account
    // read): answered here, with no store read and no hop to a worker and back.
    if (auto cached = loop_.chat.identity().authenticate_cached(token)) {
      if (!*cached) return reply(upgrade_refusal(cached->error()), false);
      return hand_over(req, std::move(**cached), changes_after);
    }
    // Reading the store may provision a user (a write): off the loop.
    auto self = this->shared_from_this();
    auto sreq = std::make_shared<http::request<http::string_body>>(std::move(req));
    loop_.auth_queue->submit([self, sreq, token, changes_after] {
      auto user = self->loop_.chat.authenticate(token);
      asio::post(self->stream_.get_executor(), [self, sreq, user = std::move(user), changes_after]() mutable {
        if (!user) return self->reply(upgrade_refusal(user.error()), false);
        self->hand_over(*sreq, std::move(*user), changes_after);
      });
    });
  }

  void engineio_upgrade(http::request<http::string_body> req) {
    if (!origin_admitted(loop_.config, req)) {
      auto res = error_response(403, "origin_not_allowed", "this Origin may not connect");
      res.body() = sio::eio_error_body(sio::EioError::kForbidden);
      res.prepare_payload();
      return reply(std::move(res), false);
    }
    EioQuery query = parse_eio_query(req.target());
    if (auto err = eio_check_upgrade(query)) {
      auto res = error_response(sio::eio_error_status(*err), "engineio_error", "");
      res.body() = sio::eio_error_body(*err);
      res.prepare_payload();
      return reply(std::move(res), false);
    }
    auto data = buffer_.cdata();
    std::string leftover(static_cast<const char*>(data.data()), data.size());
    HandshakeToken token = query.sid.empty() ? request_token(req) : std::string();
    eio_websocket(loop_, release(), std::move(req), std::move(leftover), query, std::move(token));
  }

  // The connection leaves HTTP for a WebSocket session.
  WsSocket release() {
    tcp().expires_never();
    WsSocket out;
    out.remote = remote_;
    if constexpr (kTls) out.tls = std::make_unique<TlsStream>(std::move(stream_));
    else out.plain.emplace(stream_.release_socket());
    return out;
  }

  // The socket and any bytes already read past the request go to the WebSocket session.
  void hand_over(const http::request<http::string_body>& req, std::optional<Authenticated> user,
                 std::optional<int64_t> changes_after = std::nullopt) {
    if (loop_.draining) return reply(shutting_down(), false);  // its token check ended after the drain began
    auto data = buffer_.cdata();
    std::string leftover(static_cast<const char*>(data.data()), data.size());
    start_ws_session(loop_, release(), req, std::move(leftover),
                     json_connection_factory(loop_, std::move(user), changes_after));
  }

  // Over TLS too, without a close_notify: every answer is length-delimited,
  // so a client cannot mistake a cut connection for a whole answer.
  void shutdown() {
    boost::system::error_code ec;
    tcp().socket().shutdown(tcp::socket::shutdown_send, ec);
    tcp().close();
  }

  // After refusing a request whose body was not read (413, 400) the client may
  // still be sending it; closing at once would make the kernel answer with a
  // reset that can destroy the reply before the client reads it. So, like
  // nginx's lingering close: stop sending, read and drop what still comes for
  // a bounded time and amount, then close.
  void linger_close() {
    boost::system::error_code ec;
    tcp().socket().shutdown(tcp::socket::shutdown_send, ec);
    linger_left_ = kLingerBytes;
    tcp().expires_after(kLingerTime);
    drain();
  }

  void drain() {
    buffer_.consume(buffer_.size());
    // The raw bytes (ciphertext over TLS): they are dropped anyway.
    tcp().async_read_some(buffer_.prepare(16 * 1024), [self = this->shared_from_this()](boost::system::error_code ec, size_t n) {
      if (ec || n >= self->linger_left_) return self->tcp().close();
      self->linger_left_ -= n;
      self->drain();
    });
  }

  LoopContext& loop_;
  Stream stream_;
  beast::flat_buffer buffer_{kReadBufferLimit};
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string remote_;
  bool rest_counted_ = false;  // this connection's REST request is counted in loop_.rest_in_flight
  uint64_t replies_ = 0;    // answers written or being written on this connection
  uint64_t poll_watch_ = 0;     // the number of the latest long poll's watch (watch_poll)
  bool watching_poll_ = false;  // a long poll waits for its answer on this connection
  std::string poll_sid_;        // its session
  bool head_ = false;       // the request being answered is a HEAD
  bool linger_ = false;     // the reply refuses a request whose body was not read
  bool listed_idle_ = false;  // in loop_.idle_http: waiting for a request's headers
  bool closed_idle_ = false;  // closed by the drain while idle
  size_t linger_left_ = 0;  // bytes still drained before the close
};

}  // namespace

void start_http_session(LoopContext& loop, tcp::socket socket, std::string remote) {
  std::make_shared<HttpSession<beast::tcp_stream>>(loop, beast::tcp_stream(std::move(socket)), std::move(remote))->run();
}

// A TLS stream holds about 70 KiB of record buffers from the moment it is
// made, so it is made once the client's first bytes (its ClientHello) are in:
// until then a connection costs what a plain one does, and one that sends
// nothing is closed after the header timeout, as on plain HTTP.
void start_https_session(LoopContext& loop, tcp::socket socket, std::string remote,
                         std::shared_ptr<asio::ssl::context> context) {
  auto waiting = std::make_shared<tcp::socket>(std::move(socket));
  auto timer = std::make_shared<asio::steady_timer>(loop.io, std::chrono::seconds(loop.config.limits.http_header_timeout_seconds));
  timer->async_wait([waiting](boost::system::error_code ec) {
    if (ec) return;  // the client spoke first
    spdlog::debug("event=tls_hello_timeout");
    waiting->close(ec);
  });
  waiting->async_wait(tcp::socket::wait_read, [&loop, waiting, timer, remote = std::move(remote),
                                               context = std::move(context)](boost::system::error_code ec) mutable {
    timer->cancel();
    if (ec || !waiting->is_open()) return;
    std::make_shared<HttpSession<TlsStream>>(loop, TlsStream(std::move(*waiting), *context), std::move(remote))->run();
  });
}

}  // namespace parley::net
