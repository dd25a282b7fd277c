// The client half of Engine.IO v4 and Socket.IO v5 over the WebSocket
// transport, just enough for a load generator: one packet per WebSocket text
// frame, the main namespace, text (never binary) events and acks. Written by
// hand for the same reason as ws.h: a client library would cost more than the
// servers it loads. Pure functions; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace bench {

// The Engine.IO WebSocket target: `path` (e.g. "/socket.io/") plus the query.
std::string sio_target(std::string_view path);

// One Engine.IO packet; for a `message` (eio == '4'), the Socket.IO packet in it.
struct SioPacket {
  char eio = 0;            // '0' open, '1' close, '2' ping, '3' pong, '4' message, '5' upgrade, '6' noop
  char sio = 0;            // eio == '4': '0' CONNECT .. '6' BINARY_ACK
  int64_t ack_id = -1;     // EVENT/ACK: the id, or -1 when absent
  std::string_view nsp;    // namespace when not "/" (e.g. "/admin"), else empty
  std::string_view data;   // the rest: JSON (CONNECT object, EVENT/ACK array) or the ping/pong payload
};

// Parses one WebSocket text frame; false when it is not a well-formed packet.
bool parse_sio(std::string_view frame, SioPacket& out);

// The event name of an EVENT's data (`["name",...]`); false when there is none.
bool sio_event_name(std::string_view data, std::string_view& name);

// Appends the start of an EVENT with an ack id: `42<ack_id>["<name>",`; the
// caller appends the argument and a closing `]`.
void append_sio_event_head(std::string& out, std::string_view name, int64_t ack_id);

// Appends an ACK with no arguments: `43<ack_id>[]`.
void append_sio_empty_ack(std::string& out, int64_t ack_id);

}  // namespace bench
