// Transport: what a protocol Connection needs from the network below it — a
// WebSocket session today, an Engine.IO (Socket.IO) session later. Owned by
// the network layer; a Connection holds only a weak reference.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "bus/bus.h"

namespace parley {

class Transport {
 public:
  virtual ~Transport() = default;
  // Loop thread only. Queues one text frame; frames go out in order.
  virtual void send_text(FramePtr frame) = 0;
  // Loop thread only. Sends a close frame with code and reason, then closes.
  virtual void close(uint16_t code, std::string reason) = 0;
  // Any thread. Runs fn on this transport's loop thread, unless it is gone.
  virtual void post(std::function<void()> fn) = 0;
  // Loop thread only. Runs fn on the loop after `delay` (once).
  virtual void schedule(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
  virtual const std::string& remote_address() const = 0;
  // Loop thread only. Bytes queued and not yet written to the socket.
  virtual size_t queued_bytes() const = 0;
};

}  // namespace parley
