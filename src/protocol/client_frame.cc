#include "protocol/client_frame.h"

#include <boost/json.hpp>

#include <array>
#include <utility>

#include "common/ids.h"
#include "common/utf8.h"

namespace parley {

namespace json = boost::json;

namespace {

struct TypeName {
  std::string_view name;
  ClientType type;
};
constexpr std::array<TypeName, 13> kTypes{{
    {"auth", ClientType::kAuth},
    {"ping", ClientType::kPing},
    {"send_message", ClientType::kSendMessage},
    {"subscribe_thread", ClientType::kSubscribeThread},
    {"unsubscribe_thread", ClientType::kUnsubscribeThread},
    {"join_chat", ClientType::kJoinChat},
    {"mark_as_read", ClientType::kMarkAsRead},
    {"message_received", ClientType::kMessageReceived},
    {"typing", ClientType::kTyping},
    {"call_offer", ClientType::kCallOffer},
    {"call_answer", ClientType::kCallAnswer},
    {"ice_candidate", ClientType::kIceCandidate},
    {"call_end", ClientType::kCallEnd},
}};

Error missing(std::string_view field) {
  return bad_input("missing_field", "missing field: " + std::string(field));
}
Error invalid(std::string_view field, std::string_view why) {
  return bad_input("invalid_field", "field " + std::string(field) + " " + std::string(why));
}

// Field readers: absent is fine unless required; present with the wrong type
// is an error. Each returns nullopt on success.
class Fields {
 public:
  explicit Fields(const json::object& o) : o_(o) {}

  std::optional<Error> string(std::string_view key, std::string& out, bool required, size_t max_len = 256) {
    const json::value* v = o_.if_contains(key);
    if (!v || v->is_null()) return required ? std::optional(missing(key)) : std::nullopt;
    if (!v->is_string()) return invalid(key, "must be a string");
    if (v->get_string().size() > max_len) return invalid(key, "is too long");
    out.assign(v->get_string().data(), v->get_string().size());
    return std::nullopt;
  }

  std::optional<Error> uuid(std::string_view key, std::string& out, bool required) {
    const json::value* v = o_.if_contains(key);
    if (!v || v->is_null()) return required ? std::optional(missing(key)) : std::nullopt;
    if (!v->is_string()) return invalid(key, "must be a string");
    if (!is_uuid(v->get_string())) return invalid(key, "must be a UUID");
    out = normalize_uuid(v->get_string());
    return std::nullopt;
  }

  std::optional<Error> seq(std::string_view key, std::optional<int64_t>& out) {
    const json::value* v = o_.if_contains(key);
    if (!v || v->is_null()) return std::nullopt;
    if (v->is_int64() && v->get_int64() >= 0) { out = v->get_int64(); return std::nullopt; }
    if (v->is_uint64() && v->get_uint64() <= INT64_MAX) { out = static_cast<int64_t>(v->get_uint64()); return std::nullopt; }
    return invalid(key, "must be a non-negative integer");
  }

  std::optional<Error> boolean(std::string_view key, bool& out, bool required) {
    const json::value* v = o_.if_contains(key);
    if (!v || v->is_null()) return required ? std::optional(missing(key)) : std::nullopt;
    if (!v->is_bool()) return invalid(key, "must be true or false");
    out = v->get_bool();
    return std::nullopt;
  }

 private:
  const json::object& o_;
};

// True when text has a \uD800-\uDFFF escape. Boost.JSON 1.81 reports a lone
// high surrogate as a plain syntax error, so we look for one ourselves (only
// on the error path).
bool has_surrogate_escape(std::string_view text) {
  for (size_t i = text.find("\\u"); i != std::string_view::npos && i + 3 < text.size(); i = text.find("\\u", i + 2)) {
    char a = text[i + 2], b = text[i + 3];
    if ((a == 'd' || a == 'D') && ((b >= '8' && b <= '9') || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F')))
      return true;
  }
  return false;
}

// Maps Boost.JSON parse errors to our codes: a surrogate escape that does not
// pair up, or raw invalid bytes, are an encoding problem; the rest is malformed JSON.
Error parse_error(const boost::system::error_code& ec, std::string_view text) {
  if (ec == json::error::illegal_leading_surrogate || ec == json::error::illegal_trailing_surrogate ||
      !utf8_length(text) || (ec == json::error::syntax && has_surrogate_escape(text)))
    return bad_input("invalid_utf8", "text is not valid UTF-8");
  return bad_input("invalid_json", "frame is not valid JSON: " + ec.message());
}

}  // namespace

Result<json::object> parse_json_object(std::string_view text) {
  boost::system::error_code ec;
  json::parse_options opts;
  opts.max_depth = 32;
  json::value v = json::parse(text, ec, {}, opts);
  if (ec) return parse_error(ec, text);
  if (!v.is_object()) return bad_input("invalid_json", "expected a JSON object");
  return std::move(v.as_object());
}

std::optional<ClientType> client_type(std::string_view name) {
  for (const auto& tn : kTypes)
    if (tn.name == name) return tn.type;
  return std::nullopt;
}

ParsedFrame parse_client_frame(std::string_view text) {
  ParsedFrame out;
  auto parsed = parse_json_object(text);
  if (!parsed) {
    out.error = parsed.error();
    return out;
  }
  const json::object& o = *parsed;
  json::value request_id;
  if (const json::value* rid = o.if_contains("request_id")) {
    if (rid->is_string() || rid->is_number()) request_id = *rid;
  }
  const json::value* t = o.if_contains("type");
  std::optional<ClientType> type;
  if (!t) out.error = missing("type");
  else if (!t->is_string()) out.error = invalid("type", "must be a string");
  else if (!(type = client_type(t->get_string())))
    out.error = bad_input("unknown_type", "unknown frame type: " + std::string(std::string_view(t->get_string()).substr(0, 64)));
  if (!out.error) out = parse_client_fields(*type, o);
  out.frame.request_id = std::move(request_id);
  return out;
}

ParsedFrame parse_client_fields(ClientType type, const json::object& o) {
  ParsedFrame out;
  ClientFrame& f = out.frame;
  f.type = type;
  Fields in(o);
  std::optional<Error> err;
  switch (f.type) {
    case ClientType::kAuth:
      err = in.string("token", f.token, true, 8192);
      break;
    case ClientType::kPing:
      break;
    case ClientType::kSendMessage: {
      err = in.uuid("thread_id", f.thread_id, false);
      if (!err) err = in.string("username", f.username, false, 64);
      if (!err && f.thread_id.empty() && f.username.empty()) err = missing("thread_id");
      if (!err) {
        // `content` wins; `text` is the Socket.IO-era alias.
        bool has_content = o.if_contains("content") && !o.at("content").is_null();
        err = in.string(has_content ? "content" : "text", f.content, true, SIZE_MAX);
        if (err && err->code == "missing_field") err = missing("content");
      }
      if (!err) err = in.string("message_type", f.message_type, false, 32);
      if (!err) err = in.string("client_msg_id", f.client_msg_id, false, 128);
      break;
    }
    case ClientType::kSubscribeThread:
      err = in.uuid("thread_id", f.thread_id, true);
      if (!err) err = in.seq("since_seq", f.since_seq);
      break;
    case ClientType::kUnsubscribeThread:
      err = in.uuid("thread_id", f.thread_id, true);
      break;
    case ClientType::kJoinChat:
      err = in.string("username", f.username, true, 64);
      break;
    case ClientType::kMarkAsRead:
      err = in.uuid(o.if_contains("thread_id") ? "thread_id" : "chatId", f.thread_id, true);
      if (err && err->code == "missing_field") err = missing("thread_id");
      if (!err) err = in.seq("up_to_seq", f.up_to_seq);
      break;
    case ClientType::kMessageReceived:
      err = in.uuid("message_id", f.message_id, true);
      break;
    case ClientType::kTyping:
      err = in.uuid("thread_id", f.thread_id, true);
      if (!err) err = in.boolean("is_typing", f.is_typing, false);
      if (!o.if_contains("is_typing")) f.is_typing = true;
      break;
    case ClientType::kCallOffer:
    case ClientType::kCallAnswer:
    case ClientType::kIceCandidate:
    case ClientType::kCallEnd:
      err = in.uuid("thread_id", f.thread_id, true);
      if (const json::value* p = o.if_contains("payload")) f.payload = *p;
      break;
  }
  out.error = std::move(err);
  return out;
}

}  // namespace parley
