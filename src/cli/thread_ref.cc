#include "cli/thread_ref.h"

#include <cctype>
#include <vector>

#include "cli/errors.h"

namespace parley::cli {

namespace {

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// 8-4-4-4-12 hex digits.
bool is_full_uuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

// What the first characters of a UUID can be: hex digits, with dashes only
// where a UUID has them.
bool is_uuid_prefix(const std::string& s) {
  if (s.size() >= 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

}  // namespace

awaitable<std::string> resolve_thread(HttpClient& http, const std::string& given) {
  std::string id = lowercase(given);
  if (is_full_uuid(id)) co_return id;
  if (!is_uuid_prefix(id) || id.size() < kMinThreadPrefix) {
    throw usage_error("invalid_thread_id", "'" + given +
                                               "' is not a thread id: give the id `parley-cli threads` prints "
                                               "(a UUID, or its first " +
                                               std::to_string(kMinThreadPrefix) + " characters or more)");
  }
  json::value listing = co_await http.get("/api/chat/threads");
  std::vector<std::string> matches;
  const json::array* threads = listing.is_object() ? get_array(listing.as_object(), "threads") : nullptr;
  for (size_t i = 0; threads && i < threads->size(); ++i) {
    const json::object* t = (*threads)[i].if_object();
    std::string candidate = t ? get_string(*t, "id") : "";
    if (candidate.starts_with(id)) matches.push_back(candidate);
  }
  if (matches.empty()) throw server_error("no_such_thread", "none of your threads has an id starting with " + given);
  if (matches.size() > 1) {
    std::string list;
    for (const std::string& m : matches) list += (list.empty() ? "" : ", ") + m;
    throw server_error("ambiguous_thread", "several of your threads start with " + given + ": " + list);
  }
  co_return matches.front();
}

}  // namespace parley::cli
