#include "cli/ws_client.h"

#include "cli/errors.h"
#include "cli/output.h"

namespace parley::cli {

namespace {

constexpr std::size_t kMaxFrameBytes = 64 * 1024 * 1024;  // replays carry whole messages

// A declined upgrade carries the server's JSON error (e.g. 401 invalid_token).
CliError upgrade_refused(const websocket::response_type& res) {
  boost::system::error_code ec;
  json::value v = json::parse(res.body(), ec);
  const json::object* o = ec ? nullptr : v.if_object();
  std::string code = o ? get_string(*o, "code") : "";
  std::string message = o ? get_string(*o, "message") : "";
  if (code.empty()) code = "http_" + std::to_string(res.result_int());
  if (message.empty())
    message = "the server refused the WebSocket upgrade (HTTP " + std::to_string(res.result_int()) + ")";
  return server_error(code, message);
}

}  // namespace

WsClient::WsClient(asio::any_io_executor executor) : ws_(std::move(executor)) {
  ws_.read_message_max(kMaxFrameBytes);
  ws_.text(true);
}

awaitable<void> WsClient::connect(const Endpoint& endpoint, const std::string& token, std::chrono::seconds timeout,
                                  std::string_view query) {
  where_ = endpoint.describe();
  try {
    tcp::resolver resolver(ws_.get_executor());
    auto addresses = co_await resolver.async_resolve(endpoint.host, endpoint.port, asio::use_awaitable);
    beast::get_lowest_layer(ws_).expires_after(timeout);
    co_await beast::get_lowest_layer(ws_).async_connect(addresses, asio::use_awaitable);
  } catch (const boost::system::system_error& e) {
    throw unreachable("cannot reach " + where_ + ": " + e.code().message());
  }
  co_await handshake(endpoint, token, query);
  // From here on the WebSocket layer keeps time (see keep_alive / deadline).
  beast::get_lowest_layer(ws_).expires_never();
}

awaitable<void> WsClient::handshake(const Endpoint& endpoint, const std::string& token, std::string_view query) {
  // The token in a header, not the query: a URL ends up in proxies' access logs.
  ws_.set_option(websocket::stream_base::decorator([token](websocket::request_type& req) {
    req.set(http::field::user_agent, "parley-cli/" PARLEY_VERSION);
    req.set(http::field::authorization, "Bearer " + token);
  }));
  websocket::response_type res;
  std::string target = endpoint.target("/ws");
  if (!query.empty()) {
    target += '?';
    target += query;
  }
  try {
    co_await ws_.async_handshake(res, endpoint.host_header, target, asio::use_awaitable);
  } catch (const boost::system::system_error& e) {
    if (e.code() == websocket::error::upgrade_declined) throw upgrade_refused(res);
    throw unreachable("WebSocket upgrade at " + where_ + " failed: " + e.code().message());
  }
}

void WsClient::keep_alive(std::chrono::seconds idle) {
  websocket::stream_base::timeout t{};
  t.handshake_timeout = std::chrono::seconds(10);  // also bounds the closing handshake
  t.idle_timeout = idle;
  t.keep_alive_pings = true;
  ws_.set_option(t);
}

void WsClient::deadline(std::chrono::steady_clock::time_point when) { beast::get_lowest_layer(ws_).expires_at(when); }

awaitable<json::object> WsClient::read() {
  for (;;) {
    buffer_.clear();
    try {
      co_await ws_.async_read(buffer_, asio::use_awaitable);
    } catch (const boost::system::system_error& e) {
      if (e.code() != websocket::error::closed)
        throw unreachable("connection to " + where_ + " lost: " + e.code().message());
      const websocket::close_reason& why = ws_.reason();
      // Refusals of what was sent: sent again, it would be refused again.
      if (why.code == websocket::close_code::too_big)
        throw server_error("payload_too_large",
                           "the server refused a frame as too large (code 1009, its --max-frame-bytes); nothing of it "
                           "was stored");
      if (why.code == websocket::close_code::bad_payload)
        throw server_error("invalid_utf8", "the server refused text that is not valid UTF-8 (code 1007); nothing of "
                                           "it was stored");
      throw unreachable("the server closed the connection (code " + std::to_string(why.code) +
                            (why.reason.empty() ? "" : ", " + std::string(why.reason.data(), why.reason.size())) + ")",
                        "connection_closed");
    }
    boost::system::error_code ec;
    json::value v = json::parse(beast::buffers_to_string(buffer_.data()), ec);
    if (!ec && v.is_object()) co_return std::move(v.as_object());
    note("skipping a frame that is not a JSON object");
  }
}

awaitable<void> WsClient::write(const json::object& frame) {
  std::string text = json::serialize(frame);
  try {
    co_await ws_.async_write(asio::buffer(text), asio::use_awaitable);
  } catch (const boost::system::system_error& e) {
    throw unreachable("connection to " + where_ + " lost: " + e.code().message());
  }
}

awaitable<void> WsClient::close() {
  boost::system::error_code ignored;
  co_await ws_.async_close(websocket::close_code::normal, asio::redirect_error(asio::use_awaitable, ignored));
}

void WsClient::cancel() { beast::get_lowest_layer(ws_).cancel(); }

}  // namespace parley::cli
