// Password hashing with Argon2id (libsodium crypto_pwhash_str), thread-safe.
// Hashing is deliberately slow (tens of ms): never call it on an event loop.
#pragma once

#include <string>

namespace parley {

// Initialises libsodium; call once at start (idempotent). False on failure.
bool init_crypto();
std::string hash_password(const std::string& password);
bool verify_password(const std::string& password, const std::string& hash);

}  // namespace parley
