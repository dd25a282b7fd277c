#include "chat/typing_board.h"

#include <algorithm>

namespace parley {

std::string TypingBoard::key(const std::string& user_id, const std::string& thread_id) {
  std::string k;
  k.reserve(user_id.size() + 1 + thread_id.size());
  k.append(user_id).push_back('\n');
  k.append(thread_id);
  return k;
}

void TypingBoard::start(const std::string& user_id, const std::string& thread_id, const std::string& session_id) {
  std::lock_guard lock(mu_);
  auto& sessions = typing_[key(user_id, thread_id)];
  if (std::find(sessions.begin(), sessions.end(), session_id) == sessions.end()) sessions.push_back(session_id);
}

bool TypingBoard::stop(const std::string& user_id, const std::string& thread_id, const std::string& session_id) {
  std::lock_guard lock(mu_);
  auto it = typing_.find(key(user_id, thread_id));
  if (it == typing_.end()) return true;
  auto& sessions = it->second;
  sessions.erase(std::remove(sessions.begin(), sessions.end(), session_id), sessions.end());
  if (!sessions.empty()) return false;
  typing_.erase(it);
  return true;
}

}  // namespace parley
