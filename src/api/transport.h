// Transport: what a protocol session needs from the network below it — a
// WebSocket connection, or an Engine.IO session (polling or WebSocket) for
// Socket.IO. Owned by the network layer; the session above holds only a
// weak reference. TransportListener: what the transport reports back up.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "bus/bus.h"

namespace parley {

// Why the protocol closes a transport. net/ maps each to what its wire
// says: a WebSocket close code (4401, 1008…), an Engine.IO close.
enum class CloseReason {
  kNormal,
  kPolicy,              // abuse: sustained flooding
  kUnauthorized,        // bad token
  kTokenExpired,        // the token's exp passed without a renewal (WebSocket 4401 too)
  kAuthTimeout,         // no `auth` frame in time
  kTooManyConnections,  // the user's connection limit
  kForbidden,           // the account was disabled or its tokens revoked
  kGoingAway,           // the server is shutting down (WebSocket 1001)
  kUnavailable,         // the token could not be checked (storage down): reconnect later (WebSocket 1013)
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Loop thread only. Queues one text frame; frames go out in order.
  virtual void send_text(FramePtr frame) = 0;
  // Loop thread only. Closes after what is queued, saying why.
  virtual void close(CloseReason reason, std::string text) = 0;
  // Any thread. Runs fn on this transport's loop thread, unless it is gone.
  virtual void post(std::function<void()> fn) = 0;
  // Loop thread only. Runs fn on the loop after `delay` (once).
  virtual void schedule(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
  virtual const std::string& remote_address() const = 0;
  // Loop thread only. Bytes queued and not yet written to the socket.
  virtual size_t queued_bytes() const = 0;
};

// Loop thread only, each call; on_close comes once, last.
class TransportListener {
 public:
  virtual ~TransportListener() = default;
  virtual void on_text(std::string_view text) = 0;
  virtual void on_binary(std::string_view data) = 0;
  // A text message over the frame limit, of which `head` is the start: not
  // passed whole. True: the listener refused it and the transport goes on;
  // false (the default): the transport closes.
  virtual bool on_text_too_large(std::string_view head) {
    (void)head;
    return false;
  }
  // A text message that came while the server drains (not taken), of which
  // `head` is the start. A listener whose client would wait for its answer
  // forever (a Socket.IO ack callback) refuses it here.
  virtual void on_text_while_draining(std::string_view head) { (void)head; }
  // Server shutdown. True: the listener closes this transport itself (an
  // Engine.IO probe mid-upgrade, over which its session sends what is
  // queued once the client finishes the upgrade, within a deadline); false
  // (the default): the transport closes with 1001 at once.
  virtual bool closes_at_shutdown() { return false; }
  // About once a second: deadlines (auth, token expiry, pings).
  virtual void on_tick(int64_t now_ms) = 0;
  virtual void on_close() = 0;
};

}  // namespace parley
