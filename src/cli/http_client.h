// REST calls to the server, awaited on the client's one io_context: JSON in,
// the `data` of a success envelope out. An error envelope becomes a
// server_error (exit 1); no connection or a broken one becomes unreachable
// (exit 2).
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "cli/asio.h"
#include "cli/endpoint.h"
#include "cli/json_util.h"

namespace parley::cli {

class HttpClient {
 public:
  // An empty token sends no Authorization header (public endpoints).
  HttpClient(asio::any_io_executor executor, Endpoint endpoint, std::string token);

  awaitable<json::value> get(std::string path);
  awaitable<json::value> post(std::string path, json::object body);
  // Aborts the call in flight, if any (listen's shutdown on a signal).
  void cancel();
  // The token of later calls (listen renews its own).
  void set_token(std::string token) { token_ = std::move(token); }

 private:
  using Response = http::response<http::string_body>;
  awaitable<json::value> call(http::verb verb, std::string path, std::optional<json::object> body);
  awaitable<Response> exchange(http::request<http::string_body> request);
  http::request<http::string_body> make_request(http::verb verb, const std::string& path,
                                                const std::optional<json::object>& body) const;

  asio::any_io_executor executor_;
  Endpoint endpoint_;
  std::string token_;
  std::chrono::seconds timeout_{15};
  beast::tcp_stream* active_ = nullptr;  // the stream of the call in flight
};

// The envelope's `data` for a 2xx success; throws the server's error otherwise.
json::value unwrap_envelope(unsigned status, const std::string& body);

}  // namespace parley::cli
