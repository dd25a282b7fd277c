// What every command starts from: the global options resolved against the
// environment and the saved login.
#pragma once

#include <string>

#include "cli/asio.h"
#include "cli/config.h"
#include "cli/endpoint.h"
#include "cli/http_client.h"

namespace parley::cli {

inline constexpr const char* kDefaultServer = "http://127.0.0.1:3000";

// As given on the command line; empty means "not given".
struct GlobalOptions {
  std::string server;
  std::string token;
  std::string config_path;
  bool pretty = false;
};

struct Context {
  asio::any_io_executor executor;
  std::string server_url;
  Endpoint endpoint;
  std::string token;
  // Where the token came from: "--token", "PARLEY_TOKEN", "saved" or "" (none).
  std::string token_source;
  std::string config_path;
  CliConfig config;
  bool pretty = false;

  // The token, or CliError not_logged_in.
  const std::string& require_token() const;
  // A REST client for this server, authenticated when a token is known.
  HttpClient http() const;
};

// Server: --server, else PARLEY_SERVER, else the saved login's, else the
// default. Token: --token, else PARLEY_TOKEN, else the saved login's.
Context make_context(const GlobalOptions& options, asio::any_io_executor executor);

}  // namespace parley::cli
