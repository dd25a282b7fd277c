// Fuzz target: UTF-8 validation (src/common/utf8). Checks utf8_length against
// a second strict validator, Boost.JSON's string parser, on every input that
// JSON can carry unescaped, and the code point count against the lead bytes.
#include <boost/json/parse.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/utf8.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<size_t> length = parley::utf8_length(text);
  (void)parley::has_visible_text(text);

  if (length) {
    // Valid UTF-8: one code point per byte that is not a continuation byte.
    size_t leads = 0;
    for (unsigned char c : text) leads += (c & 0xC0) != 0x80;
    if (*length != leads) std::abort();
  }

  bool json_safe = true;
  for (unsigned char c : text) json_safe = json_safe && c >= 0x20 && c != '"' && c != '\\';
  if (json_safe) {
    boost::system::error_code ec;
    (void)boost::json::parse("\"" + std::string(text) + "\"", ec);
    // Both reject overlongs, surrogates and code points over U+10FFFF.
    if (bool(ec) == length.has_value()) std::abort();
  }
  return 0;
}
