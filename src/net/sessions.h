// Internal to net/: the per-loop context shared by HTTP and WebSocket
// sessions, and the entry points that start them.
#pragma once

#include <sys/uio.h>

#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "api/connection.h"
#include "api/rest_api.h"
#include "bus/poll_forwarder.h"
#include "common/config.h"
#include "common/serial_queue.h"
#include "net/beast_tls.h"
#include "net/sweep.h"

namespace parley::net {

// An HTTP connection kept alive and waiting for its next request. The
// drain closes these as it begins, as Go's Shutdown and nginx do: left open,
// a client would send its next request on one just as the process exits,
// and get a reset instead of an answer. Loop thread only.
class IdleHttp {
 public:
  // Closes the connection if it has been answered before and no request
  // has begun on it since (one that has gets its 503 shutting_down).
  virtual void close_idle() = 0;

 protected:
  ~IdleHttp() = default;
};

// One per event loop; lives as long as the Server.
struct LoopContext {
  asio::io_context& io;
  const Config& config;
  ChatService& chat;
  RestApi& rest;
  ThreadPool& workers;
  // Password hashing only (register, login): its own few threads, so a storm
  // of Argon2 work queues here and never in front of storage reads or /health.
  ThreadPool& password_workers;
  Hub& hub;
  SweepList sessions;               // this loop's WebSocket sessions
  std::vector<uint8_t> read_buffer;  // shared by this loop's sessions: reads never outlive one callback

  // Corking: sessions with new output are flushed once the handlers already
  // queued on the loop have run, so a burst of fan-out events reaches each
  // socket as one write instead of one per frame.
  std::vector<std::shared_ptr<Flushable>> to_flush;
  bool flush_posted = false;
  void schedule_flush(std::shared_ptr<Flushable> f) {
    to_flush.push_back(std::move(f));
    if (flush_posted) return;
    flush_posted = true;
    asio::post(io, [this] {
      flush_posted = false;
      auto batch = std::move(to_flush);
      to_flush.clear();
      for (auto& s : batch) s->flush();
    });
  }

  // Scratch for gathered writes, shared the same way: a write is one
  // synchronous sendmsg, so nothing refers to these after it returns.
  std::vector<struct iovec> write_iov;
  std::vector<uint8_t> write_headers;

  // Token checks of this loop's upgrades: on the workers (a check may read
  // or even create the user), one burst of upgrades per worker wake-up.
  std::shared_ptr<SerialQueue> auth_queue;

  // Several nodes: carries polling requests for other nodes' sids to them
  // (bus/poll_forwarder.h). Null for an embedded server.
  PollForwarder* poll_forwarder = nullptr;
  // Graceful shutdown (server.h): set on the loop once the drain begins.
  // From then on frames from clients are dropped unread (they were never
  // acknowledged; clients resend them on another node), new HTTP requests
  // other than /health and existing Engine.IO sessions get 503, and answers
  // close their connection.
  bool draining = false;
  // REST requests read and not yet answered on this loop's connections.
  int rest_in_flight = 0;
  // This loop's HTTP connections waiting for a next request.
  std::unordered_set<IdleHttp*> idle_http{};
  // The drain's start, on the loop: from here on no HTTP connection is kept alive.
  void begin_draining() {
    draining = true;
    auto idle = std::move(idle_http);
    idle_http.clear();
    for (IdleHttp* h : idle) h->close_idle();
  }
};

// TLS over a TCP stream (HTTPS, WSS). The HTTP session reads through it
// with Beast; a WebSocket session keeps it (see WsSocket).
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// What a WebSocket session runs on: a plain TCP socket (gathered sendmsg,
// reads into the loop's buffer), or a TLS stream (async reads and writes
// through OpenSSL). Exactly one is set.
struct WsSocket {
  std::optional<tcp::socket> plain;
  std::unique_ptr<TlsStream> tls;
  // The peer's address, as accept returned it.
  std::string remote;

  tcp::socket& lowest() { return tls ? beast::get_lowest_layer(*tls).socket() : *plain; }
};

// Serves HTTP on an accepted socket from `remote` (the peer's address, as
// accept returned it); upgrades to WebSocket when asked.
void start_http_session(LoopContext& loop, tcp::socket socket, std::string remote);
// The same over TLS: the client's first bytes (within the header timeout),
// then the handshake (within the header timeout again), with `context` (the
// current certificate when the connection came in).
void start_https_session(LoopContext& loop, tcp::socket socket, std::string remote,
                         std::shared_ptr<asio::ssl::context> context);

// Makes the protocol session above a WebSocket, given the transport it will
// write to. Called once, on the loop, after the handshake answer is queued.
using WsListenerFactory = std::function<std::shared_ptr<TransportListener>(std::weak_ptr<Transport>)>;

// Completes the WebSocket handshake for `request` and runs the session the
// factory makes. `leftover`: bytes the client sent after the upgrade request
// (already read). `max_message_bytes`: the largest message read whole (0:
// --max-frame-bytes); a larger one closes the connection with 1009.
void start_ws_session(LoopContext& loop, WsSocket socket, const http::request<http::string_body>& request,
                      std::string leftover, WsListenerFactory make_listener, uint64_t max_message_bytes = 0);

// The WebSocket JSON protocol's session (a Connection). `user` is set when
// the upgrade carried a valid token, `changes_after` when it asked for the
// change sync (`?changes_after=`, parse_changes_after_param).
WsListenerFactory json_connection_factory(LoopContext& loop, std::optional<Authenticated> user,
                                          std::optional<int64_t> changes_after = std::nullopt);

}  // namespace parley::net
