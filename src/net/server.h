// Server: the network edge. It owns one Asio event loop per core, each with
// its own Hub of sessions, accepts TCP connections on the configured address
// and hands each to one loop for its whole life: HTTP requests go to the
// RestApi on the worker pool, WebSocket upgrades become Connections.
// Construct, start(), then run() on the main thread until a signal or stop().
//
// SIGTERM or SIGINT drains (see drain()); a second one during the drain ends
// it at once. The drain runs on a thread of its own; run() returns when the
// loops have stopped, and drained_cleanly() then says whether it finished in
// time. The caller still closes the store (committing its queue) and the bus.
#pragma once

#include <chrono>
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
  // Stops the loops now: connections are dropped. Any thread.
  void stop();
  // Graceful shutdown, within config.shutdown_timeout_seconds: /health says
  // "draining" (503) while the listener stays open for it; frames and new
  // requests are no longer taken (nothing unacknowledged is lost: clients
  // resend); work in flight finishes (the worker pools, REST answers and
  // `idle_check` all quiet); then every WebSocket is closed with 1001 and
  // every Engine.IO session with a close packet, and when they are gone (or
  // the time is up) the loops stop. Any thread; the first call counts.
  void drain();
  // After run(): false when the drain was cut short by the timeout or a
  // second signal (work may have been in flight, clients were dropped).
  bool drained_cleanly() const;
  // What outside the server a drain waits for (the store's write queue):
  // true when nothing is pending. Set before run(); called on the drain thread.
  void set_idle_check(std::function<bool()> idle);
  // Runs once as a drain begins, on the first loop (which run() drives).
  // Set before run().
  void set_drain_hook(std::function<void()> hook);
  // A drain arms a watchdog that ends the process (exit code 1) when the
  // shutdown timeout is up; the caller disarms it once it has closed
  // everything and is about to return.
  static void disarm_exit_watchdog();
  // After run(): when that watchdog fires (time_point::max() when no drain
  // armed it), for what the caller still does before closing the store.
  std::chrono::steady_clock::time_point exit_deadline() const;

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
