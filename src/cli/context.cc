#include "cli/context.h"

#include <cstdlib>
#include <initializer_list>

#include "cli/errors.h"

namespace parley::cli {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string first_set(std::initializer_list<std::string> candidates) {
  for (const std::string& c : candidates) {
    if (!c.empty()) return c;
  }
  return "";
}

}  // namespace

const std::string& Context::require_token() const {
  if (token.empty()) {
    throw server_error("not_logged_in", "no token: run `parley-cli login` first, or pass --token / PARLEY_TOKEN");
  }
  return token;
}

HttpClient Context::http() const { return HttpClient(executor, endpoint, token); }

Context make_context(const GlobalOptions& options, asio::any_io_executor executor) {
  Context c;
  c.executor = std::move(executor);
  c.pretty = options.pretty;
  c.config_path = options.config_path.empty() ? default_config_path() : options.config_path;
  c.config = load_config(c.config_path);
  c.server_url = first_set({options.server, env("PARLEY_SERVER"), c.config.server, kDefaultServer});
  c.endpoint = parse_server_url(c.server_url);
  c.token = first_set({options.token, env("PARLEY_TOKEN"), c.config.token});
  c.token_source = !options.token.empty()          ? "--token"
                   : !env("PARLEY_TOKEN").empty()  ? "PARLEY_TOKEN"
                   : !c.config.token.empty()       ? "saved"
                                                   : "";
  return c;
}

}  // namespace parley::cli
