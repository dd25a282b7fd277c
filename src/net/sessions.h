// Internal to net/: the per-loop context shared by HTTP and WebSocket
// sessions, and the entry points that start them.
#pragma once

#include <optional>
#include <string>

#include "api/connection.h"
#include "api/rest_api.h"
#include "common/config.h"
#include "net/beast.h"

namespace parley::net {

// One per event loop; lives as long as the Server.
struct LoopContext {
  asio::io_context& io;
  const Config& config;
  ChatService& chat;
  RestApi& rest;
  ThreadPool& workers;
  Hub& hub;
};

// Serves HTTP on an accepted socket; upgrades to WebSocket when asked.
void start_http_session(LoopContext& loop, tcp::socket socket);

// Completes the WebSocket handshake for `request` and runs the protocol.
// `user` is set when the upgrade carried a valid token.
void start_ws_session(LoopContext& loop, beast::tcp_stream stream, http::request<http::string_body> request,
                      std::optional<User> user, std::string token);

}  // namespace parley::net
