// One WebSocket connection to the server's /ws, authenticated with ?token=.
// Frames are JSON objects; anything else the server sends is skipped with a
// note on stderr. Failures become CliErrors: a refused upgrade is the
// server's error (exit 1), network trouble or a closed connection is
// unreachable (exit 2).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "cli/asio.h"
#include "cli/endpoint.h"
#include "cli/json_util.h"

namespace parley::cli {

class WsClient {
 public:
  explicit WsClient(asio::any_io_executor executor);

  // Resolve, connect and upgrade, all within `timeout`. `query` (without
  // its `?`) goes on the upgrade's URL; it must outlive the call (a view:
  // a default std::string would be a temporary in the caller's co_await,
  // which GCC 12 may destroy twice).
  awaitable<void> connect(const Endpoint& endpoint, const std::string& token, std::chrono::seconds timeout,
                          std::string_view query = {});
  // For long-lived connections: ping when quiet for idle/2, give up after
  // idle without any answer, so a half-open connection is noticed.
  void keep_alive(std::chrono::seconds idle);
  // For short exchanges: every later read and write must finish by then.
  void deadline(std::chrono::steady_clock::time_point when);

  awaitable<json::object> read();
  awaitable<void> write(const json::object& frame);
  // A normal close handshake; failures are ignored (we are leaving anyway).
  awaitable<void> close();
  // Aborts whatever is pending (shutdown from a signal handler).
  void cancel();

 private:
  awaitable<void> handshake(const Endpoint& endpoint, const std::string& token, std::string_view query);

  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buffer_;
  std::string where_;  // for messages: the server's URL
};

}  // namespace parley::cli
