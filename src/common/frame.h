// Frame: one encoded server frame — the payload of a WebSocket text message
// or an Engine.IO packet — immutable once made, and shared by every
// connection it is queued on. Any thread may read it; the shared_ptr that
// holds it (FramePtr) is what connections count.
//
// It keeps its WebSocket text-frame header just in front of the payload, in
// the same block, so a WebSocket writes a queued frame as one piece: one
// iovec per frame in a fan-out's gathered sendmsg instead of a header and a
// payload, which takes 3-7% off the kernel's time per delivery
// (docs/benchmarks.md). Costs 2 to 10 bytes per encoded frame, not per
// recipient. Transports that are not WebSockets (Engine.IO polling) use
// payload() alone.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace parley {

class Frame {
 public:
  // Takes the payload's bytes (and, when it has room, its buffer).
  Frame(std::string payload);  // NOLINT: implicit, a frame is made from its text
  Frame(const char* payload) : Frame(std::string(payload)) {}  // NOLINT
  explicit Frame(std::string_view payload) : Frame(std::string(payload)) {}

  std::string_view payload() const { return std::string_view(bytes_).substr(header_); }
  const char* data() const { return bytes_.data() + header_; }
  size_t size() const { return bytes_.size() - header_; }
  bool empty() const { return size() == 0; }
  // The whole WebSocket text frame: header (FIN, opcode text, unmasked) and payload.
  std::string_view text_frame() const { return bytes_; }

  friend bool operator==(const Frame& f, std::string_view s) { return f.payload() == s; }

 private:
  std::string bytes_;
  size_t header_;
};

using FramePtr = std::shared_ptr<const Frame>;

}  // namespace parley
