// Wall-clock time in microseconds and its ISO 8601 text form. Thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "model/model.h"

namespace parley {

Micros now_micros();

// "2026-11-21T12:00:00.123Z" (milliseconds), the form used in JSON payloads.
std::string iso8601_millis(Micros t);
// "2026-11-21T12:00:00.123456Z": exact, used where a value is handed back to
// the client as a cursor (offline-messages' last_check_time).
std::string iso8601_micros(Micros t);
// Accepts "YYYY-MM-DD", "YYYY-MM-DDTHH:MM:SS[.fraction][Z|+HH:MM|-HH:MM]"
// (also with a space instead of 'T'). Returns nullopt on anything else.
std::optional<Micros> parse_iso8601(std::string_view text);

}  // namespace parley
