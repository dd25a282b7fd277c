#include "store/message_key.h"

#include <sodium.h>

#include <cstring>
#include <string>

namespace parley {

int64_t message_key(std::string_view thread_id, std::string_view sender_id, std::string_view client_msg_id) {
  // Changing this key (or the encoding below) would orphan every stored key:
  // retries of older messages would then be stored twice.
  static const unsigned char kKey[crypto_shorthash_KEYBYTES] = {'p', 'a', 'r', 'l', 'e', 'y', '-', 'm',
                                                                's', 'g', '-', 'k', 'e', 'y', '-', '1'};
  // Ids are UUID text (no NUL), so NUL separators keep the fields apart.
  std::string input;
  input.reserve(thread_id.size() + sender_id.size() + client_msg_id.size() + 2);
  input.append(thread_id).push_back('\0');
  input.append(sender_id).push_back('\0');
  input.append(client_msg_id);
  unsigned char out[crypto_shorthash_BYTES];
  crypto_shorthash(out, reinterpret_cast<const unsigned char*>(input.data()), input.size(), kKey);
  int64_t key;
  static_assert(sizeof(key) == sizeof(out));
  std::memcpy(&key, out, sizeof(key));
  return key;
}

}  // namespace parley
