// Plain HTTP request and response values, so REST handlers need no network
// headers. The network layer converts to and from Beast's types.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace parley {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // percent-decoded, without the query
  std::map<std::string, std::string> query;  // percent-decoded
  std::string authorization;  // the Authorization header, as sent
  std::string accept;
  std::string body;
  std::string remote_address;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers{};  // extra ones (Location, Cache-Control, …)
};

// Splits "a=1&b=x%20y" into decoded pairs; '+' is a space. Bad escapes stay as is.
std::map<std::string, std::string> parse_query(const std::string& query);
std::string percent_decode(const std::string& text, bool plus_is_space);
// A request target's path, decoded but for an encoded slash: "%2F" is data
// inside a segment (RFC 3986), so it stays as it is and splits nothing
// ("/api%2Fusers%2Fme" is no route, as a proxy's rules would read it).
std::string decode_path(const std::string& path);

}  // namespace parley
