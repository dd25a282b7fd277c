// Identifiers: random UUIDv4 text and validation of client-supplied ids.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace parley {

// A new random (version 4) UUID, lowercase, 36 characters. Thread-safe.
std::string new_uuid();
// A new time-ordered (version 7, RFC 9562) UUID for `unix_ms`: ids made later
// sort later, so b-tree indexes on them grow at one end instead of at random.
std::string new_uuid_v7(int64_t unix_ms);
// True when s is a UUID in 8-4-4-4-12 hex form (any case).
bool is_uuid(std::string_view s);
// Lowercases a UUID so lookups compare equal. Precondition: is_uuid(s).
std::string normalize_uuid(std::string_view s);
// n random bytes as lowercase hex (2n characters). Thread-safe.
std::string random_hex(size_t n);

}  // namespace parley
