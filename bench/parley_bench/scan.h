// Reading a few fields out of server frames without a JSON parser. The load
// generator only needs top-level `type`, `request_id`, `code` and the
// message's `content`, `thread_id` and `seq`, whose values it wrote itself
// (no escapes). Keys are given with their quotes and colon: "\"seq\":".
#pragma once

#include <cstdint>
#include <cstring>
#include <charconv>
#include <string_view>

namespace bench {

// Offset of the value after `key` (whitespace skipped), or npos.
inline size_t value_at(std::string_view text, std::string_view key) {
  const void* p = memmem(text.data(), text.size(), key.data(), key.size());
  if (!p) return std::string_view::npos;
  size_t i = static_cast<size_t>(static_cast<const char*>(p) - text.data()) + key.size();
  while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) ++i;
  return i;
}

// A string value up to its closing quote (escapes are not decoded).
inline bool json_str(std::string_view text, std::string_view key, std::string_view& out) {
  size_t i = value_at(text, key);
  if (i == std::string_view::npos || i >= text.size() || text[i] != '"') return false;
  const void* q = std::memchr(text.data() + i + 1, '"', text.size() - i - 1);
  if (!q) return false;
  out = text.substr(i + 1, static_cast<size_t>(static_cast<const char*>(q) - (text.data() + i + 1)));
  return true;
}

inline bool json_int(std::string_view text, std::string_view key, int64_t& out) {
  size_t i = value_at(text, key);
  if (i == std::string_view::npos) return false;
  auto r = std::from_chars(text.data() + i, text.data() + text.size(), out);
  return r.ec == std::errc();
}

// Parses "a:b[:c...]" integers separated by ':' from the start of s; returns
// how many were read (at most n).
inline int colon_ints(std::string_view s, int64_t* out, int n) {
  const char* p = s.data();
  const char* end = s.data() + s.size();
  int got = 0;
  while (got < n && p < end) {
    auto r = std::from_chars(p, end, out[got]);
    if (r.ec != std::errc()) break;
    ++got;
    p = r.ptr;
    if (p < end && *p == ':') ++p;
    else break;
  }
  return got;
}

}  // namespace bench
