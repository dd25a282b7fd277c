// WsOutQueue: the frames waiting to be written to one WebSocket, gathered
// into iovecs for one sendmsg (one per text frame, whose header the shared
// Frame carries; header and payload for the others), with the
// position reached in a partly written frame. Payloads are shared frames:
// one encoded message is queued on every recipient without a copy. Bounded
// by the session (bytes()). Drained queues go back to a per-thread pool, so
// an idle connection holds no vector and a fan-out burst grows none.
// One connection, its loop's thread.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <vector>

#include "bus/bus.h"
#include "net/ws_frame.h"

namespace parley::ws {

// What one frame waiting in a connection's outbound queue costs beside its
// payload: the queue's entry, and the Frame's own block when it was made for
// this connection alone (a pong). Outbound queues (this one, Engine.IO's
// polling queue) count it against --max-outbound-bytes, so a flood of tiny
// replies (pongs to empty pings, Engine.IO's "3") is bounded like a flood of
// large ones.
inline constexpr size_t kQueuedFrameCost = 64;

class WsOutQueue {
 public:
  // An opcode for bytes written as they are, without a frame header (the HTTP answer).
  static constexpr uint8_t kRaw = 0xFF;

  // Queues a frame; `payload` may be null for an empty control frame.
  void push(uint8_t opcode, FramePtr payload);
  bool empty() const { return head_ == queue_.size(); }
  // What the frames not yet written cost: their payload bytes, plus
  // kQueuedFrameCost each.
  size_t bytes() const { return bytes_; }

  // Fills `iov` (at most its size, at most two per frame) from the queue,
  // control frames' headers into `headers` (kMaxHeaderLen per frame),
  // stopping past max_bytes.
  // Returns the iovec count; `bytes` gets the total.
  int gather(std::vector<struct iovec>& iov, std::vector<uint8_t>& headers, size_t max_bytes, size_t& bytes) const;
  // The kernel took n bytes: whole frames leave the queue, a partly written
  // head frame is remembered by byte offset.
  void advance(size_t n);
  // Everything was written: the vector goes back to the thread's pool.
  void release();
  // Entries the vector holds, written ones not yet dropped included (tests).
  size_t entries() const { return queue_.size(); }

 private:
  struct Out {
    FramePtr payload;  // null for an empty control frame
    uint8_t opcode;
  };
  std::vector<Out> queue_;
  size_t head_ = 0;
  size_t head_sent_ = 0;  // bytes of queue_[head_] (header included) already written
  size_t bytes_ = 0;
};

}  // namespace parley::ws
