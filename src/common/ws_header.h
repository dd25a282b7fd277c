// The header of a server-to-client WebSocket frame (RFC 6455 section 5.2):
// unmasked, FIN set. Here rather than in net/ because a shared Frame
// (common/frame.h) carries its text header from the moment it is encoded.
// Pure functions, any thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace parley::ws {

enum Opcode : uint8_t { kContinuation = 0x0, kText = 0x1, kBinary = 0x2, kClose = 0x8, kPing = 0x9, kPong = 0xA };

constexpr size_t kMaxHeaderLen = 10;

// The size of an unmasked server frame header for a payload of `len` bytes.
constexpr size_t header_size(size_t len) { return len < 126 ? 2 : len <= 0xFFFF ? 4 : 10; }

// Writes an unmasked server frame header (FIN set) for a payload of `len`
// bytes into out; returns its size, header_size(len).
size_t encode_header(Opcode opcode, size_t len, uint8_t out[kMaxHeaderLen]);

}  // namespace parley::ws
