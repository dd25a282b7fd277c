// The token of an `Authorization: Bearer <token>` value (RFC 6750 2.1:
// "Bearer", case-insensitive, then one or more spaces). Pure; any thread.
#pragma once

#include <optional>
#include <string_view>
#include <strings.h>

namespace parley {

// The token after the scheme and its spaces; nullopt when `value` is not a
// Bearer credential or carries no token.
inline std::optional<std::string_view> bearer_token(std::string_view value) {
  constexpr std::string_view kScheme = "Bearer";
  if (value.size() <= kScheme.size() || strncasecmp(value.data(), kScheme.data(), kScheme.size()) != 0 ||
      value[kScheme.size()] != ' ')
    return std::nullopt;
  value.remove_prefix(kScheme.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (value.empty()) return std::nullopt;
  return value;
}

}  // namespace parley
