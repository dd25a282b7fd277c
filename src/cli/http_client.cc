#include "cli/http_client.h"

#include "cli/errors.h"

namespace parley::cli {

namespace {

constexpr std::uint64_t kMaxResponseBytes = 64 * 1024 * 1024;  // long histories and thread lists

// Clears a pointer when the call that set it ends, however it ends.
struct ActiveGuard {
  beast::tcp_stream*& slot;
  ~ActiveGuard() { slot = nullptr; }
};

}  // namespace

HttpClient::HttpClient(asio::any_io_executor executor, Endpoint endpoint, std::string token)
    : executor_(std::move(executor)), endpoint_(std::move(endpoint)), token_(std::move(token)) {}

awaitable<json::value> HttpClient::get(std::string path) {
  co_return co_await call(http::verb::get, std::move(path), std::nullopt);
}

awaitable<json::value> HttpClient::post(std::string path, json::object body) {
  co_return co_await call(http::verb::post, std::move(path), std::move(body));
}

void HttpClient::cancel() {
  if (active_) active_->cancel();
}

awaitable<json::value> HttpClient::call(http::verb verb, std::string path, std::optional<json::object> body) {
  Response response = co_await exchange(make_request(verb, path, body));
  co_return unwrap_envelope(response.result_int(), response.body());
}

http::request<http::string_body> HttpClient::make_request(http::verb verb, const std::string& path,
                                                          const std::optional<json::object>& body) const {
  http::request<http::string_body> req{verb, endpoint_.target(path), 11};
  req.set(http::field::host, endpoint_.host_header);
  req.set(http::field::user_agent, "parley-cli/" PARLEY_VERSION);
  req.set(http::field::accept, "application/json");
  if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
  if (body) {
    req.set(http::field::content_type, "application/json");
    req.body() = json::serialize(*body);
  }
  req.prepare_payload();
  return req;
}

awaitable<HttpClient::Response> HttpClient::exchange(http::request<http::string_body> request) {
  beast::tcp_stream stream(executor_);
  active_ = &stream;
  ActiveGuard guard{active_};
  try {
    tcp::resolver resolver(executor_);
    auto addresses = co_await resolver.async_resolve(endpoint_.host, endpoint_.port, asio::use_awaitable);
    stream.expires_after(timeout_);
    co_await stream.async_connect(addresses, asio::use_awaitable);
    co_await http::async_write(stream, request, asio::use_awaitable);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxResponseBytes);
    co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    co_return parser.release();
  } catch (const boost::system::system_error& e) {
    throw unreachable("cannot reach " + endpoint_.describe() + ": " + e.code().message());
  }
}

json::value unwrap_envelope(unsigned status, const std::string& body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  const json::object* o = ec ? nullptr : v.if_object();
  if (!o) throw server_error("bad_response", "HTTP " + std::to_string(status) + " without a JSON body");
  if (get_string(*o, "status") == "error" || status >= 400) {
    std::string code = get_string(*o, "code");
    std::string message = get_string(*o, "message");
    if (message.empty()) message = "HTTP " + std::to_string(status) + " with no message";  // not a Parley answer, say
    throw server_error(code.empty() ? "http_" + std::to_string(status) : code, message);
  }
  const json::value* data = o->if_contains("data");
  return data ? *data : json::value(nullptr);
}

}  // namespace parley::cli
