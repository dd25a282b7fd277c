// JsonFields: reads the fields of one JSON object (a WebSocket frame or a
// REST body) with the same rules everywhere: absent or null is fine unless
// required, present with the wrong JSON type is an error. The first error is
// kept and later reads return empty values, so a parser reads every field
// and checks error() once. Errors: missing_field, invalid_field. Not
// thread-safe; the object must outlive the reader.
#pragma once

#include <boost/json/object.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace parley {

enum class Need { kOptional, kRequired };

class JsonFields {
 public:
  explicit JsonFields(const boost::json::object& object) : o_(object) {}

  // Present and not null.
  bool has(std::string_view key) const;
  std::string string(std::string_view key, Need need, size_t max_bytes = SIZE_MAX);
  // A UUID, normalised to lowercase.
  std::string uuid(std::string_view key, Need need);
  // A non-negative integer that fits int64.
  std::optional<int64_t> seq(std::string_view key);
  std::optional<bool> boolean(std::string_view key, Need need);
  std::vector<std::string> strings(std::string_view key);

  const std::optional<Error>& error() const { return error_; }
  // Records an error of the caller's own (kept only when none came before).
  void fail(Error error);

 private:
  const boost::json::value* present(std::string_view key, Need need);
  const boost::json::object& o_;
  std::optional<Error> error_;
};

Error missing_field(std::string_view field);
Error invalid_field(std::string_view field, std::string_view why);

}  // namespace parley
