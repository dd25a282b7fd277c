// Secrets out of what is printed: a URL's password (postgres://user:pw@host,
// redis://:pw@host, redis://pw@host, and libpq's postgres://user@host/db?password=pw). Pure
// functions; any thread.
#pragma once

#include <string>

namespace parley {

// scheme://user:secret@host/db -> scheme://user:***@host/db, and the value of
// a `password` or `sslpassword` query parameter -> ***; anything else
// unchanged. What /health, the log and `config check` show of a database URL.
inline std::string redact_url_password(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  std::string out = url;
  // The query first: a password there may hold an '@' that the user part's
  // search below would otherwise take for the end of the user info.
  if (auto query = out.find('?', scheme + 3); query != std::string::npos) {
    for (size_t pos = query + 1; pos < out.size();) {
      size_t end = out.find('&', pos);
      if (end == std::string::npos) end = out.size();
      size_t eq = out.find('=', pos);
      if (eq != std::string::npos && eq < end) {
        std::string key = out.substr(pos, eq - pos);
        for (char& ch : key) ch = static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
        if (key == "password" || key == "sslpassword") {
          out.replace(eq + 1, end - eq - 1, "***");
          end = eq + 4;
        }
      }
      pos = end + 1;
    }
  }
  auto at = out.rfind('@');
  if (at == std::string::npos || at < scheme + 3) return out;
  auto colon = out.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) {
    // redis://SECRET@host: a Redis URL's user info without ':' is all
    // password (redis-cli and RedisEndpoint read it so); postgres://USER@host
    // names a user.
    if (out.compare(0, scheme, "redis") == 0) return out.substr(0, scheme + 3) + "***" + out.substr(at);
    return out;
  }
  return out.substr(0, colon + 1) + "***" + out.substr(at);
}

}  // namespace parley
