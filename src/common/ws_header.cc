#include "common/ws_header.h"

namespace parley::ws {

size_t encode_header(Opcode opcode, size_t len, uint8_t out[kMaxHeaderLen]) {
  out[0] = static_cast<uint8_t>(0x80 | opcode);
  if (len < 126) {
    out[1] = static_cast<uint8_t>(len);
    return 2;
  }
  if (len <= 0xFFFF) {
    out[1] = 126;
    out[2] = static_cast<uint8_t>(len >> 8);
    out[3] = static_cast<uint8_t>(len);
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<uint8_t>(static_cast<uint64_t>(len) >> (56 - 8 * i));
  return 10;
}

}  // namespace parley::ws
