// Plain value types shared by the chat service, the store and the protocol
// codec. No behaviour lives here; each layer decides what the values mean.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace parley {

// Microseconds since the Unix epoch, UTC. Every timestamp Parley stores.
using Micros = int64_t;

struct User {
  std::string id;  // UUID text, lowercase
  std::string username;
  std::string full_name;
  std::optional<std::string> phone_number;
  std::string role;
  std::string password_hash;  // Argon2id string; empty for provider-provisioned users
  Micros created_at = 0;
  Micros last_seen = 0;  // 0 = never
  bool disabled = false;           // `parley user disable`: no login, every token refused
  int64_t tokens_valid_after = 0;  // seconds; tokens with an earlier iat are refused (revoke-tokens)
};

// What other users may see of a user.
struct UserRef {
  std::string id;
  std::string username;
  std::string full_name;
  std::string role;
};

enum class ThreadType { kDirect, kGroup };

struct Participant {
  std::string user_id;
  std::string username;
  std::string full_name;
  std::string role;
  bool is_admin = false;
  int64_t last_read_seq = 0;
  Micros joined_at = 0;
  int64_t last_delivered_seq = 0;  // highest seq this participant's client acknowledged
  Micros last_seen = 0;            // the user's, 0 = never
  bool online = false;             // filled by the chat service, not stored
};

// The read and delivered marks a member had when they left the thread (or
// were removed): what they had read stays read for its sender.
struct FormerMarks {
  std::string user_id;
  int64_t last_read_seq = 0;
  int64_t last_delivered_seq = 0;
  // When that membership began: the marks count only for messages since
  // (joining set them to the thread's end without anything read). One entry
  // per membership. 0: not known (kept before SQLite schema 12 / PostgreSQL
  // 9), every message.
  Micros joined_at = 0;
};

struct Thread {
  std::string id;
  ThreadType type = ThreadType::kGroup;
  std::string title;
  std::string created_by;
  Micros created_at = 0;
  Micros last_activity = 0;
  int64_t last_seq = 0;
  std::vector<Participant> participants;
  std::vector<FormerMarks> former_marks;  // of members who left; never sent to clients
};

// A seq bound above every message: "the whole thread" where a call takes
// an upper bound (history before, read marks).
inline constexpr int64_t kAllSeqs = INT64_MAX;

struct Message {
  std::string id;
  std::string thread_id;
  int64_t seq = 0;
  std::string sender_id;
  std::string content;
  std::string message_type;  // text | image | file | system
  std::string client_msg_id;  // empty = none
  Micros created_at = 0;
  std::optional<Micros> edited_at;
  bool deleted = false;  // a tombstone: content is empty, seq kept
  int64_t change_no = 0;  // the store's number of its last edit or deletion (0: none)
  UserRef sender;
  std::string status = "sent";  // sent | delivered | read, as seen by the sender
};

// A thread as one user sees it in a listing.
struct ThreadSummary {
  Thread thread;
  int64_t unread_count = 0;
  std::optional<Message> last_message;
};

}  // namespace parley
