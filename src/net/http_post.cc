#include "net/http_post.h"

#include "net/beast.h"

#include <cctype>
#include <functional>
#include <optional>

namespace parley {

using namespace net;

Result<std::shared_ptr<const HttpPoster>> HttpPoster::create(const std::string& url, std::chrono::milliseconds timeout) {
  const std::string scheme = "http://";
  std::string head = url.substr(0, 8);  // the scheme is case-insensitive (RFC 3986)
  for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (head.rfind("https://", 0) == 0)
    return bad_input("invalid_webhook_url", "https webhook URLs are not supported; use http:// (docs/webhooks.md)");
  if (head.rfind(scheme, 0) != 0) return bad_input("invalid_webhook_url", "webhook URL must start with http://");
  // Sent as the request line's target as it is: what HTTP forbids there
  // (spaces, control characters, non-ASCII bytes: percent-encode them) and
  // a fragment, never sent, are refused at start rather than answered 400
  // on every notification.
  const size_t host_end = url.find_first_of("/?", scheme.size());
  for (size_t i = 0; i < url.size(); ++i) {
    const auto c = static_cast<unsigned char>(url[i]);
    if (c >= 0x80 && i < host_end)
      return bad_input("invalid_webhook_url", "webhook host has a non-ASCII byte (write the name in punycode, xn--...)");
    if (c <= 0x20 || c >= 0x7F)
      return bad_input("invalid_webhook_url", "webhook URL has a space, a control character or a non-ASCII byte (percent-encode it)");
  }
  if (url.find('#') != std::string::npos) return bad_input("invalid_webhook_url", "webhook URL has a #fragment");
  std::string rest = url.substr(scheme.size());
  // The authority ends at the path or, with none, at the query ("http://h?x=1" asks for "/?x=1").
  auto slash = rest.find_first_of("/?");
  std::string authority = rest.substr(0, slash);
  std::string target = slash == std::string::npos ? "/" : rest[slash] == '?' ? "/" + rest.substr(slash) : rest.substr(slash);
  if (authority.empty() || authority.find('@') != std::string::npos)
    return bad_input("invalid_webhook_url", "webhook URL needs a host (and no user info)");
  std::string host = authority, port = "80";
  if (authority.front() == '[') {  // [::1]:8080
    auto close = authority.find(']');
    if (close == std::string::npos) return bad_input("invalid_webhook_url", "unclosed [ in the webhook host");
    host = authority.substr(1, close - 1);
    if (host.find(':') == std::string::npos)
      return bad_input("invalid_webhook_url", "brackets in the webhook host hold an IPv6 address: http://[::1]:8088/");
    // A zone (RFC 6874: [fe80::1%25eth0]) is written %25 then its name in a
    // URL; the resolver wants it as fe80::1%eth0. A bare % (fe80::1%eth0),
    // which RFC 6874 asks to accept too, is taken as it is.
    if (auto zone = host.find('%'); zone != std::string::npos) {
      const bool encoded = host.compare(zone, 3, "%25") == 0;
      if (encoded) host.erase(zone + 1, 2);
      if (zone + 1 == host.size() || host.find('%', zone + 1) != std::string::npos)
        return bad_input("invalid_webhook_url", "an IPv6 zone in the webhook host is written %25 then its name: [fe80::1%25eth0]");
    }
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return bad_input("invalid_webhook_url", "bad webhook port");
      port = authority.substr(close + 2);
    }
  } else {
    if (auto colon = authority.find(':'); colon != std::string::npos) {
      if (authority.find(':', colon + 1) != std::string::npos)
        return bad_input("invalid_webhook_url", "bad webhook port, or an IPv6 host without brackets (http://[::1]:8088/)");
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    // Not decoded: a name has no reason to be percent-encoded, and a zone goes in brackets.
    if (host.find('%') != std::string::npos)
      return bad_input("invalid_webhook_url", "a % in the webhook host (an IPv6 zone goes in brackets: [fe80::1%25eth0])");
  }
  if (host.empty() || port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) < 1 || std::stoi(port) > 65535)
    return bad_input("invalid_webhook_url", "bad webhook host or port (1 to 65535)");
  auto p = std::shared_ptr<HttpPoster>(new HttpPoster());
  p->host_ = host;
  p->port_ = port;
  p->target_ = target;
  p->timeout_ = timeout;
  return std::shared_ptr<const HttpPoster>(std::move(p));
}

namespace {
// How often a POST under way looks at its abandon flag.
constexpr auto kAbandonPoll = std::chrono::milliseconds(20);
// 1xx answers read before the final one; past this, the last counts (a failure).
constexpr int kMaxInterimAnswers = 8;
}  // namespace

Result<int> HttpPoster::post(const std::string& body, const std::vector<std::pair<std::string, std::string>>& headers,
                             const std::atomic<bool>& abandon) const {
  // Asynchronous operations on a private context: the stream's deadline
  // bounds resolve, connect, write and read together.
  asio::io_context io;
  tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  http::request<http::string_body> req{http::verb::post, target_, 11};
  // An IPv6 literal: bracketed, as in the URL, without its zone (which
  // means nothing to the receiver).
  const bool v6 = host_.find(':') != std::string::npos;
  req.set(http::field::host, (v6 ? "[" + host_.substr(0, host_.find('%')) + "]" : host_) + ":" + port_);
  req.set(http::field::user_agent, "Parley-Webhook/" PARLEY_VERSION);
  req.set(http::field::content_type, "application/json");
  for (const auto& [name, value] : headers) req.set(name, value);
  req.body() = body;
  req.prepare_payload();
  beast::flat_buffer buffer;
  // Only the status is used, so only the head is read: a 2xx whose body is
  // long or never ends (kept alive, no length) is still an answer, and must
  // not be retried as a failure and pushed twice.
  // Interim answers (102 Processing, 103 Early Hints, an unasked 100
  // Continue) may come before the final one, each a head of its own (RFC
  // 9110 §15.2): read on, a fresh parser each time. Bounded in number, and
  // all of it by the deadline.
  std::optional<http::response_parser<http::empty_body>> res;
  int interim = 0;
  std::function<void()> read_head;
  beast::error_code failure;
  read_head = [&] {
    res.emplace();
    http::async_read_header(stream, buffer, *res, [&](beast::error_code ec, size_t) {
      if (ec) return void(failure = ec);
      const unsigned status = res->get().result_int();
      if (status >= 100 && status < 200 && status != 101 && ++interim <= kMaxInterimAnswers) read_head();
    });
  };
  stream.expires_after(timeout_);
  resolver.async_resolve(host_, port_, [&](beast::error_code ec, tcp::resolver::results_type results) {
    if (ec) return void(failure = ec);
    stream.async_connect(results, [&](beast::error_code ec, const tcp::endpoint&) {
      if (ec) return void(failure = ec);
      http::async_write(stream, req, [&](beast::error_code ec, size_t) {
        if (ec) return void(failure = ec);
        read_head();
      });
    });
  });
  while (!io.stopped()) {
    io.run_for(kAbandonPoll);
    if (!io.stopped() && abandon.load(std::memory_order_relaxed)) {
      // The handlers still pending are destroyed unrun with the context.
      io.stop();
      return Error{ErrorKind::kUnavailable, "webhook_abandoned", "POST abandoned at shutdown"};
    }
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  if (failure) return Error{ErrorKind::kUnavailable, "webhook_unreachable", failure.message()};
  if (!res) return Error{ErrorKind::kUnavailable, "webhook_unreachable", "no answer"};
  return static_cast<int>(res->get().result_int());
}

}  // namespace parley
