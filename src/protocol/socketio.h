// Socket.IO v5 over Engine.IO v4: the packet codecs, pure functions (any
// thread, no I/O). Engine.IO frames the transport (open, ping, message…;
// a polling body joins packets with the record separator 0x1E); a Socket.IO
// packet travels inside an Engine.IO `message` packet ("4" + packet).
// Written here rather than taken from a library: there is no maintained C++
// server implementation, and the part we need is small and fully specified
// (github.com/socketio/socket.io-protocol, engine.io-protocol).
#pragma once

#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace parley::sio {

// ---- Engine.IO v4

enum EioType : char {
  kOpen = '0',
  kClose = '1',
  kPing = '2',
  kPong = '3',
  kMessage = '4',
  kUpgrade = '5',
  kNoop = '6',
};

constexpr char kRecordSeparator = '\x1e';

// The packets of a polling body, in order (views into `body`). An empty body
// or an empty packet is an error.
std::optional<std::vector<std::string_view>> split_payload(std::string_view body);

// The open packet: 0{"sid","upgrades","pingInterval","pingTimeout","maxPayload"}.
std::string encode_open(std::string_view sid, bool can_upgrade, int ping_interval_ms, int ping_timeout_ms,
                        size_t max_payload);

// An Engine.IO error answer of the reference server: {"code":N,"message":…}.
enum class EioError { kUnknownTransport = 0, kUnknownSid = 1, kBadHandshakeMethod = 2, kBadRequest = 3,
                      kForbidden = 4, kUnsupportedProtocolVersion = 5 };
std::string eio_error_body(EioError error);
int eio_error_status(EioError error);  // 400, or 403 for kForbidden

// ---- Socket.IO v5

enum class SioType { kConnect = 0, kDisconnect = 1, kEvent = 2, kAck = 3, kConnectError = 4, kBinaryEvent = 5,
                     kBinaryAck = 6 };

struct SioPacket {
  SioType type = SioType::kEvent;
  std::string nsp = "/";
  std::optional<uint64_t> id;  // ack id
  uint32_t attachments = 0;    // BINARY_EVENT / BINARY_ACK: the binary packets that follow
  boost::json::value data;     // null when absent
  // The framing is sound but the data is refused (then `data` is null):
  // bytes that are not UTF-8, or JSON that JavaScript's JSON.parse reads and
  // ours does not (a surrogate escape that does not pair up, nesting deeper
  // than 32). The reference server would take such a packet, so it is no
  // reason to end the session: the packet is refused like a bad native frame
  // with the same payload (invalid_utf8 / invalid_json).
  std::optional<Error> data_error;
};

// Decodes a Socket.IO packet (the text after Engine.IO's "4"). Checks what
// the reference parser checks: the type, the namespace, an ack id of at
// most 15 digits, JSON data of the right shape for the type (an EVENT is a
// non-empty array starting with a string name). Errors: invalid_packet.
// Data refused for the reasons of SioPacket::data_error is not an error.
Result<SioPacket> decode_packet(std::string_view text);
// The header alone (type, namespace, ack id) of a packet whose start is
// `head`; `data` stays null. For a packet too large to be read whole.
Result<SioPacket> decode_header(std::string_view head);

// Engine.IO message packets ("4" + Socket.IO packet), ready for the wire.
// `payload_json` is JSON text; names are ours (no escaping needed).
std::string encode_event(std::string_view name, std::string_view payload_json, std::optional<uint64_t> ack_id = {});
std::string encode_ack(uint64_t ack_id, std::string_view payload_json);
std::string encode_connect(std::string_view sid);
// A refused CONNECT. With a `code` (ours: `too_many_connections`,
// `token_expired`…) the client's connect_error has it as err.data.code.
std::string encode_connect_error(std::string_view nsp, std::string_view message, std::string_view code = {});
std::string encode_disconnect();

}  // namespace parley::sio
