// Server: the network edge. It owns one Asio event loop per core, each with
// its own Hub of sessions, accepts TCP connections on the configured address
// and hands each to one loop for its whole life: HTTP requests go to the
// RestApi on the worker pool, WebSocket upgrades become Connections.
// Construct, start(), then run() on the main thread until a signal or stop().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "api/rest_api.h"
#include "bus/poll_forwarder.h"
#include "chat/chat_service.h"
#include "chat/hub.h"
#include "common/config.h"
#include "common/thread_pool.h"

namespace parley {

class Server {
 public:
  // bus_ok: whether the bus is connected, for /health (none: always).
  Server(const Config& config, ChatService& chat, ThreadPool& workers, std::string bus_name,
         std::function<bool()> bus_ok = {});
  ~Server();

  // Binds and listens; returns the bound port (useful with port 0).
  Result<uint16_t> start();
  // Runs the loops until SIGINT/SIGTERM or stop(); returns when they are done.
  void run();
  void stop();

  // Several nodes: polling requests for other nodes' Socket.IO sessions go
  // through `forwarder`, and it brings theirs to this server's sessions.
  // Call before start(); close the forwarder before the Server is destroyed
  // (its serve hook posts to the loops).
  void set_poll_forwarder(PollForwarder* forwarder);

  // The bus receiver: fans events out to every loop's Hub.
  const Fanout& fanout() const;
  RestApi& rest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace parley
