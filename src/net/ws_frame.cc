#include "net/ws_frame.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstring>

#include "common/utf8.h"

namespace parley::ws {

std::string encode_frame(Opcode opcode, std::string_view payload) {
  uint8_t h[10];
  size_t n = encode_header(opcode, payload.size(), h);
  std::string out(reinterpret_cast<const char*>(h), n);
  out.append(payload);
  return out;
}

std::string close_payload(uint16_t code, std::string_view reason) {
  std::string payload;
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xFF));
  payload.append(utf8_prefix(reason, 123));  // control frames carry at most 125 bytes
  return payload;
}

std::string encode_close(uint16_t code, std::string_view reason) { return encode_frame(kClose, close_payload(code, reason)); }

std::string accept_key(std::string_view client_key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string text(client_key);
  text.append(kGuid);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  unsigned char b64[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  int n = EVP_EncodeBlock(b64, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<char*>(b64), static_cast<size_t>(n));
}

ParseStatus parse_header(const uint8_t* d, size_t size, uint64_t max_payload, FrameHeader& h) {
  if (size < 2) return ParseStatus::kNeedMore;
  h.fin = (d[0] & 0x80) != 0;
  if ((d[0] & 0x70) != 0) return ParseStatus::kProtocolError;  // RSV bits: no extension was negotiated
  uint8_t op = d[0] & 0x0F;
  if (op != kContinuation && op != kText && op != kBinary && op != kClose && op != kPing && op != kPong)
    return ParseStatus::kProtocolError;
  h.opcode = static_cast<Opcode>(op);
  if ((d[1] & 0x80) == 0) return ParseStatus::kProtocolError;  // clients must mask
  uint64_t len = d[1] & 0x7F;
  size_t pos = 2;
  if (len == 126) {
    if (size < 4) return ParseStatus::kNeedMore;
    len = (uint64_t{d[2]} << 8) | d[3];
    pos = 4;
  } else if (len == 127) {
    if (size < 10) return ParseStatus::kNeedMore;
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | d[2 + i];
    if (len >> 63) return ParseStatus::kProtocolError;
    pos = 10;
  }
  bool control = op >= kClose;
  if (control && (len > 125 || !h.fin)) return ParseStatus::kProtocolError;
  if (size < pos + 4) return ParseStatus::kNeedMore;
  std::memcpy(h.mask, d + pos, 4);
  h.payload_len = len;
  h.header_len = pos + 4;
  if (!control && len > max_payload) return ParseStatus::kTooBig;
  return ParseStatus::kFrame;
}

uint16_t close_reply_code(std::string_view payload) {
  if (payload.empty()) return kCloseNormal;
  if (payload.size() == 1) return kCloseProtocolError;
  auto code = static_cast<uint16_t>((uint8_t(payload[0]) << 8) | uint8_t(payload[1]));
  bool sendable = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
  if (!sendable || !utf8_length(payload.substr(2))) return kCloseProtocolError;
  return code;
}

void unmask(uint8_t* data, size_t size, const uint8_t mask[4], size_t offset) {
  for (size_t i = 0; i < size; ++i) data[i] ^= mask[(offset + i) & 3];
}

}  // namespace parley::ws
