// Secrets out of what is printed: a URL's password (postgres://user:pw@host,
// redis://:pw@host). Pure functions; any thread.
#pragma once

#include <string>

namespace parley {

// scheme://user:secret@host/db -> scheme://user:***@host/db; anything else unchanged.
inline std::string redact_url_password(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  auto at = url.rfind('@');
  if (at == std::string::npos || at < scheme + 3) return url;
  auto colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

}  // namespace parley
