// The client half of RFC 6455, just enough for a load generator: the upgrade
// request and its answer, masked client frames, unmasked server frames.
// No extensions (permessage-deflate is never offered).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bench {

// xorshift64*: masking keys and handshake nonces. Not for secrets.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed ? seed : 0x9E3779B97F4A7C15ull) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
};

struct Upgrade {
  std::string request;          // the HTTP/1.1 GET with Upgrade headers
  std::string expected_accept;  // Sec-WebSocket-Accept the server must answer
};

Upgrade make_upgrade(std::string_view host_header, std::string_view target, Rng& rng);

// Looks for a complete HTTP response at the start of `buf`. Returns the header
// length (> 0) when it is a valid 101 with the right accept key, 0 when more
// bytes are needed, -1 when the server refused (status line in *error).
long parse_upgrade_response(std::string_view buf, const std::string& expected_accept, std::string* error);

enum Opcode : uint8_t { kContinuation = 0, kText = 1, kBinary = 2, kClose = 8, kPing = 9, kPong = 10 };

// Appends one masked client frame (FIN set).
void append_client_frame(std::string& out, Opcode op, std::string_view payload, uint32_t mask);

struct ServerFrame {
  uint8_t opcode = 0;
  bool fin = false;
  std::string_view payload;
};

// Parses one server frame at the start of `buf`: bytes consumed (> 0), 0 when
// incomplete, -1 on a protocol error (reserved bits, oversized length).
long parse_server_frame(std::string_view buf, ServerFrame& frame, size_t max_payload);

}  // namespace bench
