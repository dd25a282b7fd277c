// Fuzz target: the client frame parser and validator (src/protocol/client_frame):
// JSON envelope, type lookup and every type's field checks. An accepted frame
// must have kept the limits the validator promises.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/utf8.h"
#include "protocol/client_frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  parley::ParsedFrame parsed = parley::parse_client_frame(text);
  if (parsed.error) {
    if (parsed.error->code.empty()) std::abort();
    return 0;
  }
  const parley::ClientFrame& f = parsed.frame;
  // Accepted text is valid UTF-8, and so is every string taken from it.
  if (!parley::utf8_length(text)) std::abort();
  for (std::string_view s : {std::string_view(f.token), std::string_view(f.thread_id), std::string_view(f.username),
                             std::string_view(f.content), std::string_view(f.client_msg_id)}) {
    if (!parley::utf8_length(s)) std::abort();
  }
  if (f.token.size() > 8192 || f.username.size() > 64 * 4 || f.client_msg_id.size() > 128 * 4) std::abort();
  // A thread id, when given, is a lowercase UUID (36 characters).
  if (!f.thread_id.empty() && f.thread_id.size() != 36) std::abort();
  if (f.type == parley::ClientType::kSendMessage && f.thread_id.empty() && f.username.empty()) std::abort();
  return 0;
}
