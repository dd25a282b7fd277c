#include "auth/password.h"

#include <sodium.h>

#include <stdexcept>

namespace parley {

bool init_crypto() { return sodium_init() >= 0; }  // 1 means "already initialised"

std::string hash_password(const std::string& password) {
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str(out, password.data(), password.size(), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                        crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
    // Only fails when the memory limit cannot be allocated; an empty hash
    // would silently create an account nobody can log in to, so throw.
    throw std::runtime_error("password hashing failed: out of memory");
  }
  return out;
}

bool verify_password(const std::string& password, const std::string& hash) {
  // libsodium reads a NUL-terminated string of at most STRBYTES: anything
  // else is not one of our hashes.
  if (hash.empty() || hash.size() >= crypto_pwhash_STRBYTES || hash.find('\0') != std::string::npos) return false;
  return crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
}

}  // namespace parley
