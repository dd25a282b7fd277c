#include "common/ids.h"

#include <sodium.h>

#include <cctype>
#include <cstring>

namespace parley {

static const char kHex[] = "0123456789abcdef";

static std::string format_uuid(const unsigned char b[16]) {
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 15]);
  }
  return out;
}

// UUIDs take their random bytes from a per-thread pool refilled from the
// kernel 4 KiB at a time: randombytes_buf makes one getrandom system call per
// call, which was one per stored message on the store's writer and one per
// connection. The bytes are the kernel's CSPRNG output all the same; secrets
// (random_hex) still come straight from it.
static void pooled_random(unsigned char* out, size_t n) {
  thread_local unsigned char pool[4096];
  thread_local size_t left = 0;
  if (left < n) {
    randombytes_buf(pool, sizeof pool);
    left = sizeof pool;
  }
  std::memcpy(out, pool + sizeof pool - left, n);
  left -= n;
}

std::string new_uuid() {
  unsigned char b[16];
  pooled_random(b, sizeof b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return format_uuid(b);
}

std::string new_uuid_v7(int64_t unix_ms) {
  unsigned char b[16];
  pooled_random(b, sizeof b);
  for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(static_cast<uint64_t>(unix_ms) >> (40 - 8 * i));
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  return format_uuid(b);
}

bool is_uuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < 36; ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(s[i]))) {
      return false;
    }
  }
  return true;
}

std::string normalize_uuid(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string random_hex(size_t n) {
  std::string bytes(n, '\0');
  randombytes_buf(bytes.data(), n);
  std::string out;
  out.reserve(2 * n);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

}  // namespace parley
