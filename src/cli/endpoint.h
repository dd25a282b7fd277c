// Where the server is, parsed once from --server (http://host[:port][/base]).
#pragma once

#include <string>
#include <string_view>

namespace parley::cli {

struct Endpoint {
  std::string host;         // for the resolver ("::1" without brackets)
  std::string port;         // "80" unless given
  std::string host_header;  // "host:port" as sent in Host
  std::string base_path;    // "" or "/prefix" (no trailing slash), for a server behind a proxy path

  std::string target(std::string_view path) const { return base_path + std::string(path); }
  std::string describe() const { return "http://" + host_header + base_path; }
};

// Accepts http:// and ws:// URLs (a bare "host:port" means http). TLS is not
// supported; throws a usage CliError for it and for malformed URLs.
Endpoint parse_server_url(std::string_view url);

// Percent-encodes everything but RFC 3986 unreserved characters.
std::string url_encode(std::string_view s);

}  // namespace parley::cli
