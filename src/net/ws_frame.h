// WebSocket framing (RFC 6455 section 5) for the server side, by hand.
//
// Why not Beast's websocket::stream: it writes one message per async_write,
// so a connection with many queued frames costs one syscall per frame, and
// it keeps several kilobytes of state per connection. Fan-out is Parley's
// hot path; owning the framing lets a session send all its queued frames in
// one writev and keep idle connections small. Beast still parses the HTTP
// upgrade request. Pure functions and a small parser: no I/O, any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/ws_header.h"

namespace parley::ws {

// Close codes (RFC 6455 section 7.4.1).
constexpr uint16_t kCloseNormal = 1000;
constexpr uint16_t kCloseGoingAway = 1001;
constexpr uint16_t kCloseProtocolError = 1002;
constexpr uint16_t kCloseInvalidPayload = 1007;
constexpr uint16_t kClosePolicy = 1008;
constexpr uint16_t kCloseTooBig = 1009;
constexpr uint16_t kCloseTryAgainLater = 1013;

// A whole control or small frame, header and payload (server to client).
std::string encode_frame(Opcode opcode, std::string_view payload);
std::string encode_close(uint16_t code, std::string_view reason);
// The payload of a close frame: the code, big-endian, then the reason (cut to fit 125 bytes).
std::string close_payload(uint16_t code, std::string_view reason);

// The code to answer a client's close frame with (RFC 6455 5.5.1, 7.4):
// its own code when the payload is well formed, 1000 when it is empty, and
// 1002 when it is one byte, carries a code no endpoint may send (below 1000,
// 1004-1006, 1015, 1016-2999 unassigned, 5000 and up) or a reason that is not
// UTF-8.
uint16_t close_reply_code(std::string_view payload);

// The Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key.
std::string accept_key(std::string_view client_key);

// One parsed frame header from a client. Client frames must be masked.
struct FrameHeader {
  bool fin = false;
  Opcode opcode = kText;
  uint64_t payload_len = 0;
  uint8_t mask[4] = {0, 0, 0, 0};
  size_t header_len = 0;
};

enum class ParseStatus { kNeedMore, kFrame, kProtocolError, kTooBig };

// Parses the header at the start of data. kFrame: `header` is filled (the
// payload may not all be there yet). kTooBig: payload over max_payload.
ParseStatus parse_header(const uint8_t* data, size_t size, uint64_t max_payload, FrameHeader& header);

// XORs payload with the mask, in place; `offset` is the payload position of data[0].
void unmask(uint8_t* data, size_t size, const uint8_t mask[4], size_t offset);

}  // namespace parley::ws
