// message_key: the SQLite store's compact idempotency key for a send.
//
// A retried client_msg_id must find its original (same thread, same sender).
// A unique index on the three text columns costs a fat entry at a random
// place per message, the dearest part of an append; a 64-bit keyed hash in
// an integer-keyed table (message_keys) is a fifth of the size. The hash is
// SipHash-2-4 (libsodium's crypto_shorthash) under a fixed key, so it is
// stable across versions and machines; a key match is always confirmed
// against the message row, so a collision costs a slow lookup, never a wrong
// answer. Pure function; any thread.
#pragma once

#include <cstdint>
#include <string_view>

namespace parley {

int64_t message_key(std::string_view thread_id, std::string_view sender_id, std::string_view client_msg_id);

}  // namespace parley
