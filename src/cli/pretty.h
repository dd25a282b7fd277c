// --pretty: human-readable one-liners for messages, events, threads, users.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "cli/json_util.h"

namespace parley::cli {

// user id -> username, learned from thread participants and message senders,
// so events that only carry ids (typing, presence, receipts) read as names.
class Names {
 public:
  void learn_thread(const json::object& thread);
  void learn_message(const json::object& message);
  void learn_user(const json::object& user);
  std::string of(std::string_view user_id) const;

 private:
  std::map<std::string, std::string, std::less<>> names_;
};

// "[12:00:01] #1a2b3c4d alice: Hello"; with `with_status`, the status its
// sender sees is appended: "[12:00:01] #1a2b3c4d #3 alice: Hello  (read)".
// An edited message ends "(edited)"; a deleted one reads "alice: (deleted)".
std::string pretty_message(const json::object& message, bool with_status = false);
// A short line for any server frame; empty for frames not worth showing.
std::string pretty_event(const json::object& frame, const Names& names);
// "1a2b3c4d  direct  bob              2 unread  #17  bob: see you"
std::string pretty_thread(const json::object& thread, std::string_view self_id);
// "alice (Alice Teacher) role=teacher id=..."
std::string pretty_user(const json::object& user);

}  // namespace parley::cli
