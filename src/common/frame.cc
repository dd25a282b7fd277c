#include "common/frame.h"

#include "common/ws_header.h"

namespace parley {

Frame::Frame(std::string payload) : bytes_(std::move(payload)) {
  uint8_t header[ws::kMaxHeaderLen];
  header_ = ws::encode_header(ws::kText, bytes_.size(), header);
  // One move of the payload, once per encoded frame: every recipient then
  // writes it without a second iovec.
  bytes_.insert(0, reinterpret_cast<const char*>(header), header_);
}

}  // namespace parley
