// TypingBoard: which sessions of this node say their user is typing, per user
// and thread. A stop the user did not ask for (a session's close, its typing
// timeout) is relayed only when no other session of the same user still
// types in that thread, so closing a phone does not stop "typing…" for the
// laptop the user is typing on. An explicit is_typing:false is relayed as it
// comes (the user stopped; another device's entry may be stale).
// Only this node's sessions are known: a session on another node is not.
// Thread-safe: any event loop may call it; one mutex, held for a few map
// operations, taken by typing frames, their timeouts and closes only.
#pragma once

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace parley {

class TypingBoard {
 public:
  // The session says its user types in the thread (again: nothing changes).
  void start(const std::string& user_id, const std::string& thread_id, const std::string& session_id);
  // The session stopped or went. Returns true when no other session of the
  // user types in the thread any more: an implicit stop is then relayed.
  bool stop(const std::string& user_id, const std::string& thread_id, const std::string& session_id);

 private:
  static std::string key(const std::string& user_id, const std::string& thread_id);

  std::mutex mu_;
  // user id + '\n' + thread id -> the sessions typing there (seldom more than one).
  std::unordered_map<std::string, std::vector<std::string>> typing_;
};

}  // namespace parley
