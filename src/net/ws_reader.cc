#include "net/ws_reader.h"

namespace parley::ws {

namespace {
// A buffer this small is kept for the next frame that spans reads.
constexpr size_t kKeptBufferBytes = 16 * 1024;
}  // namespace

bool WsReader::consume(uint8_t* data, size_t size, Handler& h) {
  size_t used = 0;
  if (partial_.empty()) {
    if (!parse(data, size, h, used)) return false;
    if (used < size) partial_.assign(reinterpret_cast<const char*>(data) + used, size - used);
    return true;
  }
  // Parsed where it lies: a frame that arrives in many small reads is copied
  // once, not once per read (which made a trickled 64 KiB frame cost
  // gigabytes of copying).
  partial_.append(reinterpret_cast<const char*>(data), size);
  if (!parse(reinterpret_cast<uint8_t*>(partial_.data()), partial_.size(), h, used)) {
    partial_.clear();
    return false;
  }
  partial_.erase(0, used);
  // A connection keeps no read buffer while idle: once a large frame is
  // handled (an Engine.IO WebSocket reads up to maxPayload, 1 MB), its
  // memory goes with it, not with the connection.
  if (partial_.empty() && partial_.capacity() > kKeptBufferBytes) std::string().swap(partial_);
  return true;
}

bool WsReader::parse(uint8_t* data, size_t size, Handler& h, size_t& pos) {
  pos = 0;
  while (pos < size) {
    FrameHeader fh;
    auto st = parse_header(data + pos, size - pos, max_, fh);
    if (st == ParseStatus::kNeedMore) break;
    if (st == ParseStatus::kProtocolError) return h.on_violation(kCloseProtocolError, "protocol error"), false;
    if (st == ParseStatus::kTooBig) return too_big(h);
    if (size - pos - fh.header_len < fh.payload_len) {
      // Keep the partial frame; refuse early a continuation that can never
      // fit. Only a continuation adds to the message: a control frame in the
      // middle of a fragmented message is not part of it, and a first frame
      // was checked by parse_header.
      if (fh.opcode == kContinuation && message_opcode_ != 0 && fh.payload_len + message_.size() > max_)
        return too_big(h);
      break;
    }
    uint8_t* payload = data + pos + fh.header_len;
    unmask(payload, fh.payload_len, fh.mask, 0);
    pos += fh.header_len + fh.payload_len;
    if (!on_frame(fh, std::string_view(reinterpret_cast<char*>(payload), fh.payload_len), h)) return false;
  }
  return true;
}

bool WsReader::too_big(Handler& h) {
  h.on_violation(kCloseTooBig, "message too big");
  return false;
}

bool WsReader::on_frame(const FrameHeader& fh, std::string_view payload, Handler& h) {
  switch (fh.opcode) {
    case kPing:
    case kPong:
    case kClose:
      return h.on_control(fh.opcode, payload);
    case kContinuation: {
      if (message_opcode_ == 0) return h.on_violation(kCloseProtocolError, "unexpected continuation"), false;
      message_.append(payload);
      if (message_.size() > max_) return too_big(h);
      if (!fh.fin) return true;
      auto opcode = static_cast<Opcode>(message_opcode_);
      message_opcode_ = 0;
      std::string message = take_message();
      return h.on_message(opcode, message);
    }
    case kText:
    case kBinary:
      if (message_opcode_ != 0) return h.on_violation(kCloseProtocolError, "expected continuation"), false;
      if (!fh.fin) {
        message_opcode_ = fh.opcode;
        message_.assign(payload);
        return true;
      }
      return h.on_message(fh.opcode, payload);
  }
  return true;
}

std::string WsReader::take_message() {
  std::string m = std::move(message_);
  message_.clear();
  message_.shrink_to_fit();
  return m;
}

}  // namespace parley::ws
