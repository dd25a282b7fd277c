// WsReader: the client-to-server half of RFC 6455 framing for one
// connection. It splits the bytes read into frames, unmasks them in place,
// enforces the size limit and reassembles fragmented messages, then hands
// whole messages and control frames to its Handler. Pure: no I/O, one
// connection, one thread. Between reads it keeps only an incomplete frame
// and a fragmented message, so an idle connection holds nothing here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "net/ws_frame.h"

namespace parley::ws {

class WsReader {
 public:
  class Handler {
   public:
    // A whole text or binary message. False: stop reading.
    virtual bool on_message(Opcode opcode, std::string_view message) = 0;
    // A ping, pong or close frame. False: stop reading.
    virtual bool on_control(Opcode opcode, std::string_view payload) = 0;
    // The client broke the protocol or the size limit; the connection must
    // close with `code` (kCloseProtocolError, kCloseTooBig). Reading stops.
    virtual void on_violation(uint16_t code, std::string_view reason) = 0;

   protected:
    ~Handler() = default;
  };

  explicit WsReader(uint64_t max_message_bytes) : max_(max_message_bytes) {}

  // Feeds bytes just read (unmasked in place). False once reading stopped.
  bool consume(uint8_t* data, size_t size, Handler& handler);

 private:
  // Handles the whole frames at the start of data; `consumed`: the bytes they took.
  bool parse(uint8_t* data, size_t size, Handler& handler, size_t& consumed);
  bool on_frame(const FrameHeader& header, std::string_view payload, Handler& handler);
  bool too_big(Handler& handler);
  std::string take_message();

  uint64_t max_;
  std::string partial_;  // an incomplete frame from the last read
  std::string message_;  // a fragmented message being assembled
  uint8_t message_opcode_ = 0;
};

}  // namespace parley::ws
