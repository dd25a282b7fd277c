// address_block: the key one client's per-address limits (failed logins,
// registrations) count under. Any thread; pure function.
//
// An IPv4 address is its own block. An IPv6 address counts by its /64: one
// subscriber or host usually holds a whole /64, so counting each of its
// 2^64 addresses apart would let one client pass every per-address limit.
#pragma once

#include <string>

namespace parley {

// "203.0.113.7" → "203.0.113.7"; "::ffff:203.0.113.7" → "203.0.113.7";
// "2001:db8:1:2:a:b:c:d" → "2001:db8:1:2::/64". Anything that is not an IP
// address (a test's label, "") comes back as it is.
std::string address_block(const std::string& address);

}  // namespace parley
