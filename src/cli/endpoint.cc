#include "cli/endpoint.h"

#include <algorithm>
#include <cctype>

#include "cli/errors.h"

namespace parley::cli {

namespace {

std::string lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

CliError bad_url(std::string_view url, std::string_view why) {
  return usage_error("invalid_server", "cannot use server URL \"" + std::string(url) + "\": " + std::string(why));
}

// Strips and checks the scheme; returns what follows "://".
std::string_view strip_scheme(std::string_view url) {
  auto sep = url.find("://");
  if (sep == std::string_view::npos) return url;
  std::string scheme = lowercase(url.substr(0, sep));
  if (scheme == "https" || scheme == "wss") throw bad_url(url, "TLS is not supported, use http://");
  if (scheme != "http" && scheme != "ws") throw bad_url(url, "the scheme must be http://");
  return url.substr(sep + 3);
}

bool all_digits(std::string_view s) {
  return !s.empty() && s.size() <= 5 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace

Endpoint parse_server_url(std::string_view url) {
  std::string_view rest = strip_scheme(url);
  auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);

  Endpoint ep;
  ep.base_path = std::string(path);
  std::string_view port_part;
  if (authority.starts_with('[')) {  // IPv6 literal: [::1]:3000
    auto close = authority.find(']');
    if (close == std::string_view::npos) throw bad_url(url, "unclosed [");
    ep.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') throw bad_url(url, "junk after ]");
    if (!after.empty()) port_part = after.substr(1);
  } else {
    auto colon = authority.rfind(':');
    ep.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_part = authority.substr(colon + 1);
  }
  if (ep.host.empty()) throw bad_url(url, "no host");
  ep.port = port_part.empty() ? "80" : std::string(port_part);
  if (!all_digits(ep.port)) throw bad_url(url, "the port must be a number");
  // Asio would take 70111 modulo 65536: another port, and the token sent there.
  if (const int port = std::stoi(ep.port); port < 1 || port > 65535) throw bad_url(url, "the port must be 1 to 65535");
  bool v6 = ep.host.find(':') != std::string::npos;
  ep.host_header = (v6 ? "[" + ep.host + "]" : ep.host) + ":" + ep.port;
  return ep;
}

std::string url_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace parley::cli
