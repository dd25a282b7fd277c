// UTF-8 validation (strict: no overlongs, no surrogates, max U+10FFFF).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace parley {

// Number of code points in s, or nullopt when s is not valid UTF-8.
std::optional<size_t> utf8_length(std::string_view s);
// True when s has a character that draws something: not Unicode white
// space, not a control character (C0, DEL, C1), not a character that draws
// nothing (U+200B-U+200F, U+2060-U+206F, U+FEFF, variation selectors,
// Hangul fillers, the blank Braille pattern and the like).
bool has_visible_text(std::string_view s);
// True when s has a control character: C0 (below 0x20, NUL included), DEL
// or C1 (U+0080-U+009F, in UTF-8). Names and titles people see may not
// carry them.
bool has_control_chars(std::string_view s);
// The longest prefix of s of at most max_bytes that does not end inside a
// character: a client's text quoted in a reply is cut there, since a frame
// with half a character is invalid UTF-8 and makes WebSocket clients drop
// the connection.
std::string_view utf8_prefix(std::string_view s, size_t max_bytes);

}  // namespace parley
