// CliError: why a command failed, as printed ("parley-cli: <code>: <message>")
// and the exit code scripts rely on.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace parley::cli {

inline constexpr int kExitServerError = 1;  // the server (or the saved state) said no
inline constexpr int kExitUnreachable = 2;  // no connection, or it broke
inline constexpr int kExitTimeout = 3;      // listen --timeout passed
inline constexpr int kExitUsage = 64;       // bad command line (EX_USAGE)

class CliError : public std::runtime_error {
 public:
  CliError(std::string code, const std::string& message, int exit_code)
      : std::runtime_error(message), code_(std::move(code)), exit_code_(exit_code) {}
  const std::string& code() const { return code_; }
  int exit_code() const { return exit_code_; }

 private:
  std::string code_;
  int exit_code_;
};

// The server answered with an error (HTTP error body or an `error` frame).
inline CliError server_error(std::string code, const std::string& message) {
  return {std::move(code), message, kExitServerError};
}
// The server could not be reached, or the connection broke ("connection_failed"),
// or the server closed it ("connection_closed").
inline CliError unreachable(const std::string& message, std::string code = "connection_failed") {
  return {std::move(code), message, kExitUnreachable};
}
inline CliError usage_error(std::string code, const std::string& message) {
  return {std::move(code), message, kExitUsage};
}

}  // namespace parley::cli
