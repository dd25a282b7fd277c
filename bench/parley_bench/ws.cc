#include "ws.h"

#include <openssl/sha.h>
#include <strings.h>

#include <cstring>

#include "jwt.h"

namespace bench {

Upgrade make_upgrade(std::string_view host_header, std::string_view target, Rng& rng) {
  unsigned char nonce[16];
  uint64_t a = rng.next(), b = rng.next();
  std::memcpy(nonce, &a, 8);
  std::memcpy(nonce + 8, &b, 8);
  std::string key = base64_std(nonce, sizeof nonce);

  Upgrade u;
  u.request.reserve(target.size() + 200);
  u.request += "GET ";
  u.request += target;
  u.request += " HTTP/1.1\r\nHost: ";
  u.request += host_header;
  u.request +=
      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Key: ";
  u.request += key;
  u.request += "\r\n\r\n";

  std::string concat = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(concat.data()), concat.size(), digest);
  u.expected_accept = base64_std(digest, sizeof digest);
  return u;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

long parse_upgrade_response(std::string_view buf, const std::string& expected_accept, std::string* error) {
  size_t end = buf.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (buf.size() > 16384) {
      *error = "oversized HTTP response";
      return -1;
    }
    return 0;
  }
  std::string_view head = buf.substr(0, end);
  size_t eol = head.find("\r\n");
  std::string_view status = head.substr(0, eol);
  if (status.size() < 12 || status.substr(0, 5) != "HTTP/" || status.substr(9, 3) != "101") {
    *error = std::string(status);
    return -1;
  }
  bool accept_ok = false;
  size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t next = head.find("\r\n", pos);
    if (next == std::string_view::npos) next = head.size();
    std::string_view line = head.substr(pos, next - pos);
    size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      std::string_view name = line.substr(0, colon);
      if (name.size() == 20 && strncasecmp(name.data(), "Sec-WebSocket-Accept", 20) == 0)
        accept_ok = trim(line.substr(colon + 1)) == expected_accept;
    }
    pos = next + 2;
  }
  if (!accept_ok) {
    *error = "bad Sec-WebSocket-Accept";
    return -1;
  }
  return static_cast<long>(end + 4);
}

void append_client_frame(std::string& out, Opcode op, std::string_view payload, uint32_t mask) {
  const size_t n = payload.size();
  unsigned char head[14];
  size_t h = 0;
  head[h++] = static_cast<unsigned char>(0x80 | op);
  if (n < 126) {
    head[h++] = static_cast<unsigned char>(0x80 | n);
  } else if (n <= 0xFFFF) {
    head[h++] = 0x80 | 126;
    head[h++] = static_cast<unsigned char>(n >> 8);
    head[h++] = static_cast<unsigned char>(n);
  } else {
    head[h++] = 0x80 | 127;
    for (int i = 7; i >= 0; --i) head[h++] = static_cast<unsigned char>(static_cast<uint64_t>(n) >> (8 * i));
  }
  unsigned char key[4];
  std::memcpy(key, &mask, 4);
  std::memcpy(head + h, key, 4);
  h += 4;
  const size_t start = out.size();
  out.append(reinterpret_cast<const char*>(head), h);
  out.append(payload.data(), n);
  char* p = out.data() + start + h;
  // Eight bytes at a time, then the tail.
  uint64_t key8;
  unsigned char k8[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
  std::memcpy(&key8, k8, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    w ^= key8;
    std::memcpy(p + i, &w, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<char>(p[i] ^ key[i & 3]);
}

long parse_server_frame(std::string_view buf, ServerFrame& f, size_t max_payload) {
  if (buf.size() < 2) return 0;
  auto b0 = static_cast<unsigned char>(buf[0]);
  auto b1 = static_cast<unsigned char>(buf[1]);
  if (b0 & 0x70) return -1;  // no extension negotiated: RSV bits must be 0
  f.fin = (b0 & 0x80) != 0;
  f.opcode = b0 & 0x0F;
  const bool masked = (b1 & 0x80) != 0;
  uint64_t len = b1 & 0x7F;
  size_t h = 2;
  if (len == 126) {
    if (buf.size() < 4) return 0;
    len = (uint64_t{static_cast<unsigned char>(buf[2])} << 8) | static_cast<unsigned char>(buf[3]);
    h = 4;
  } else if (len == 127) {
    if (buf.size() < 10) return 0;
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | static_cast<unsigned char>(buf[2 + static_cast<size_t>(i)]);
    h = 10;
  }
  if (len > max_payload) return -1;
  if (masked) {
    // Servers must not mask (RFC 6455 5.1); a client must fail such a connection.
    return -1;
  }
  if (buf.size() < h + len) return 0;
  f.payload = buf.substr(h, len);
  return static_cast<long>(h + len);
}

}  // namespace bench
