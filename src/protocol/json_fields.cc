#include "protocol/json_fields.h"

#include <boost/json.hpp>

#include <cmath>

#include "common/ids.h"

namespace parley {

namespace json = boost::json;

Error missing_field(std::string_view field) { return bad_input("missing_field", "missing field: " + std::string(field)); }

Error invalid_field(std::string_view field, std::string_view why) {
  return bad_input("invalid_field", "field " + std::string(field) + " " + std::string(why));
}

std::string seq_range_text() { return "must be an integer from 0 to " + std::to_string(kMaxSeq); }

bool JsonFields::has(std::string_view key) const {
  const json::value* v = o_.if_contains(key);
  return v && !v->is_null();
}

void JsonFields::fail(Error e) {
  if (!error_) error_ = std::move(e);
}

// The value when it is present and no error came before; records missing_field when required.
const json::value* JsonFields::present(std::string_view key, Need need) {
  if (error_) return nullptr;
  const json::value* v = o_.if_contains(key);
  if (v && !v->is_null()) return v;
  if (need == Need::kRequired) fail(missing_field(key));
  return nullptr;
}

std::string JsonFields::string(std::string_view key, Need need, size_t max_bytes) {
  const json::value* v = present(key, need);
  if (!v) return "";
  if (!v->is_string()) {
    fail(invalid_field(key, "must be a string"));
    return "";
  }
  if (v->get_string().size() > max_bytes) {
    fail(invalid_field(key, "is too long"));
    return "";
  }
  return std::string(v->get_string());
}

std::string JsonFields::uuid(std::string_view key, Need need) {
  const json::value* v = present(key, need);
  if (!v) return "";
  if (!v->is_string()) {
    fail(invalid_field(key, "must be a string"));
    return "";
  }
  if (!is_uuid(v->get_string())) {
    fail(invalid_field(key, "must be a UUID"));
    return "";
  }
  return normalize_uuid(v->get_string());
}

std::optional<int64_t> JsonFields::seq(std::string_view key) {
  const json::value* v = present(key, Need::kOptional);
  if (!v) return std::nullopt;
  if (v->is_int64() && v->get_int64() >= 0 && v->get_int64() <= kMaxSeq) return v->get_int64();
  // JSON has one number type: a client that keeps numbers as doubles writes
  // 5 as 5.0 (Python's json does), which is still the integer 5.
  if (v->is_double() && v->get_double() >= 0 && v->get_double() <= static_cast<double>(kMaxSeq) &&
      std::trunc(v->get_double()) == v->get_double())
    return static_cast<int64_t>(v->get_double());
  fail(invalid_field(key, seq_range_text()));
  return std::nullopt;
}

std::optional<bool> JsonFields::boolean(std::string_view key, Need need) {
  const json::value* v = present(key, need);
  if (!v) return std::nullopt;
  if (!v->is_bool()) {
    fail(invalid_field(key, "must be true or false"));
    return std::nullopt;
  }
  return v->get_bool();
}

std::vector<std::string> JsonFields::strings(std::string_view key) {
  std::vector<std::string> out;
  const json::value* v = present(key, Need::kOptional);
  if (!v) return out;
  if (v->is_array()) {
    for (const auto& e : v->get_array()) {
      if (!e.is_string()) break;
      out.emplace_back(e.get_string());
    }
    if (out.size() == v->get_array().size()) return out;
  }
  fail(invalid_field(key, "must be an array of strings"));
  return {};
}

}  // namespace parley
