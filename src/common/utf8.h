// UTF-8 validation (strict: no overlongs, no surrogates, max U+10FFFF).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace parley {

// Number of code points in s, or nullopt when s is not valid UTF-8.
std::optional<size_t> utf8_length(std::string_view s);
// True when s has a character other than Unicode white space.
bool has_visible_text(std::string_view s);

}  // namespace parley
