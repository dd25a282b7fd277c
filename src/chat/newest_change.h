// NewestChange: the highest change number (Message::change_no) this node has
// passed on for each message, so that an edit or deletion that arrives after
// a newer change of the same message is dropped. Two nodes' events reach
// Redis in the order they are published, not in the store's commit order: an
// edit published late by one node could otherwise follow another node's
// deletion and show the message as it no longer is, and the resync after an
// outage would not correct it (it reads from the watermark on).
// Thread-safe: events come from the bus thread and from publishing threads.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace parley {

class NewestChange {
 public:
  // True when change `n` of `message_id` is newer than any passed on so far
  // (and records it); false when it is older or the same: drop it.
  bool admit(const std::string& message_id, int64_t n);

 private:
  // Bounds the memory: past it the record starts again empty. An older event
  // can then get through only if it arrives right after that reset.
  static constexpr size_t kMaxMessages = 65536;

  std::mutex mu_;
  std::unordered_map<std::string, int64_t> newest_;
};

}  // namespace parley
