// Error: a failure that reaches a client, with a stable snake_case code.
// Every layer reports failures as Error; the HTTP layer maps kind to a status.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace parley {

enum class ErrorKind {
  kBadInput,      // 400
  kUnauthorized,  // 401
  kForbidden,     // 403
  kNotFound,      // 404
  kConflict,      // 409
  kTooLarge,      // 413
  kRateLimited,   // 429
  kInternal,      // 500
  kUnavailable,   // 503
};

struct Error {
  ErrorKind kind = ErrorKind::kInternal;
  std::string code;     // snake_case, stable, e.g. "invalid_json"
  std::string message;  // human text; never contains secrets
};

inline Error bad_input(std::string code, std::string msg) { return {ErrorKind::kBadInput, std::move(code), std::move(msg)}; }
inline Error forbidden(std::string msg = "not a participant of this thread") {
  return {ErrorKind::kForbidden, "forbidden", std::move(msg)};
}
// What a non-participant hears about any thread, existing or not, so thread
// ids cannot be probed.
inline Error thread_not_found_or_forbidden() { return forbidden("thread not found or you are not a participant"); }
inline Error not_found(std::string code, std::string msg) { return {ErrorKind::kNotFound, std::move(code), std::move(msg)}; }
// Storage failed (disk full, I/O error, database unreachable): the cause is in the log.
inline Error storage_unavailable() {
  return {ErrorKind::kUnavailable, "storage_unavailable", "storage is unavailable; nothing was stored"};
}
inline Error internal_error(std::string msg = "internal error") { return {ErrorKind::kInternal, "internal_error", std::move(msg)}; }

int http_status(ErrorKind kind);

// The server could not answer (storage down, an internal failure): not a
// refusal of what was asked. A token check that fails so must not be told
// to the client as a bad token (401, close 4401), which makes it sign out.
inline bool is_outage(const Error& e) { return e.kind == ErrorKind::kUnavailable || e.kind == ErrorKind::kInternal; }

// Result<T>: a value or an Error. Small on purpose; no exceptions on hot paths.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;

}  // namespace parley
