#include "protocol/client_frame.h"

#include <boost/json.hpp>

#include <array>
#include <cmath>
#include <utility>

#include "common/utf8.h"
#include "protocol/json_fields.h"

namespace parley {

namespace json = boost::json;

namespace {

struct TypeName {
  std::string_view name;
  ClientType type;
};
constexpr std::array<TypeName, 15> kTypes{{
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
    {"delete_message", ClientType::kDeleteMessage},
    {"edit_message", ClientType::kEditMessage},
}};

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

// The request_id of a frame refused as a whole (a lone surrogate escape, a
// number beyond a double's range, nesting deeper than 32), so that its error still echoes it. Read
// from a copy whose surrogate escapes are made U+FFFD; only on the error path.
json::value salvage_request_id(std::string_view text) {
  if (text.find("\"request_id\"") == std::string_view::npos) return nullptr;
  std::string copy(text);
  // A high surrogate escape (\uD800-\uDBFF) right before a low one is a
  // pair, kept; any other surrogate escape is made U+FFFD.
  auto surrogate = [&copy](size_t i, bool high) {
    if (i + 5 >= copy.size() || copy[i] != '\\' || copy[i + 1] != 'u' || (copy[i + 2] | 0x20) != 'd') return false;
    char b = static_cast<char>(copy[i + 3] | 0x20);
    return high ? (b >= '8' && b <= '9') || (b >= 'a' && b <= 'b') : (b >= 'c' && b <= 'f');
  };
  for (size_t i = copy.find("\\u"); i != std::string::npos; i = copy.find("\\u", i + 2)) {
    if (surrogate(i, true) && surrogate(i + 6, false)) {
      i += 6;
      continue;
    }
    if (surrogate(i, true) || surrogate(i, false)) copy.replace(i + 2, 4, "fffd");
  }
  boost::system::error_code ec;
  json::parse_options opts;
  opts.max_depth = 1024;  // a frame refused for its nesting too
  json::value v = json::parse(copy, ec, {}, opts);
  const json::value* rid = !ec && v.is_object() ? v.get_object().if_contains("request_id") : nullptr;
  if (!rid || !(rid->is_string() || rid->is_number()) || has_infinite_number(*rid)) return nullptr;
  return *rid;
}

}  // namespace

// A surrogate escape that does not pair up, or raw invalid bytes, are an
// encoding problem; the rest is malformed JSON.
Error json_parse_error(const boost::system::error_code& ec, std::string_view text, std::string_view what) {
  if (ec == json::error::illegal_leading_surrogate || ec == json::error::illegal_trailing_surrogate ||
      !utf8_length(text) || (ec == json::error::syntax && has_surrogate_escape(text)))
    return bad_input("invalid_utf8", "text is not valid UTF-8");
  return bad_input("invalid_json", std::string(what) + " is not valid JSON: " + ec.message());
}

Result<json::object> parse_json_object(std::string_view text, std::string_view what) {
  boost::system::error_code ec;
  json::parse_options opts;
  opts.max_depth = 32;
  json::value v = json::parse(text, ec, {}, opts);
  if (ec) return json_parse_error(ec, text, what);
  if (!v.is_object()) return bad_input("invalid_json", "expected a JSON object");
  if (has_infinite_number(v)) return bad_input("invalid_json", std::string(what) + " has a number beyond a double's range");
  return std::move(v.as_object());
}

// Recursion is bounded by the parsers' max_depth (32).
bool has_infinite_number(const json::value& v) {
  switch (v.kind()) {
    case json::kind::double_: return !std::isfinite(v.get_double());
    case json::kind::array:
      for (const auto& e : v.get_array())
        if (has_infinite_number(e)) return true;
      return false;
    case json::kind::object:
      for (const auto& kv : v.get_object())
        if (has_infinite_number(kv.value())) return true;
      return false;
    default: return false;
  }
}

std::vector<std::string_view> client_frame_types() {
  std::vector<std::string_view> names;
  for (const auto& tn : kTypes) names.push_back(tn.name);
  return names;
}

std::optional<ClientType> client_type(std::string_view name) {
  for (const auto& tn : kTypes)
    if (tn.name == name) return tn.type;
  return std::nullopt;
}

ParsedFrame parse_client_frame(std::string_view text) {
  ParsedFrame out;
  auto parsed = parse_json_object(text, "frame");
  if (!parsed) {
    out.error = parsed.error();
    out.frame.request_id = salvage_request_id(text);
    return out;
  }
  const json::object& o = *parsed;
  json::value request_id;
  if (const json::value* rid = o.if_contains("request_id"); rid && !rid->is_null()) {
    // Any other type would be dropped from the reply, leaving the client
    // unable to match it: refuse the frame instead (its type stays unset, so
    // a bad request_id alone never closes the connection).
    if (!rid->is_string() && !rid->is_number()) {
      out.error = invalid_field("request_id", "must be a string or a number");
      return out;
    }
    request_id = *rid;
  }
  const json::value* t = o.if_contains("type");
  std::optional<ClientType> type;
  if (!t || t->is_null()) out.error = missing_field("type");
  else if (!t->is_string()) out.error = invalid_field("type", "must be a string");
  else if (!(type = client_type(t->get_string())))
    out.error = bad_input("unknown_type", "unknown frame type: " + std::string(utf8_prefix(t->get_string(), 64)));
  if (!out.error) out = parse_client_fields(*type, o);
  out.frame.request_id = std::move(request_id);
  return out;
}

ParsedFrame parse_client_fields(ClientType type, const json::object& o) {
  ParsedFrame out;
  ClientFrame& f = out.frame;
  f.type = type;
  JsonFields in(o);
  switch (f.type) {
    case ClientType::kAuth:
      f.token = in.string("token", Need::kRequired, 8192);
      break;
    case ClientType::kPing:
      break;
    case ClientType::kSendMessage: {
      f.thread_id = in.uuid("thread_id", Need::kOptional);
      f.username = in.string("username", Need::kOptional, 64);
      if (f.thread_id.empty() && f.username.empty()) in.fail(missing_field("thread_id"));
      // `content` wins; `text` is the Socket.IO-era alias.
      const char* content_key = in.has("content") ? "content" : "text";
      if (!in.has(content_key)) in.fail(missing_field("content"));
      f.content = in.string(content_key, Need::kOptional);
      if (in.has("message_type")) f.message_type = in.string("message_type", Need::kOptional, 32);
      f.client_msg_id = in.string("client_msg_id", Need::kOptional, 4 * 128);  // characters: ChatService::send
      break;
    }
    case ClientType::kSubscribeThread:
      f.thread_id = in.uuid("thread_id", Need::kRequired);
      f.since_seq = in.seq("since_seq");
      break;
    case ClientType::kUnsubscribeThread:
      f.thread_id = in.uuid("thread_id", Need::kRequired);
      break;
    case ClientType::kJoinChat:
      f.username = in.string("username", Need::kRequired, 64);
      break;
    case ClientType::kMarkAsRead: {
      // `chatId` is the Socket.IO-era name; a missing one is reported as thread_id.
      const char* key = in.has("thread_id") ? "thread_id" : "chatId";  // null is absent
      if (!in.has(key)) in.fail(missing_field("thread_id"));
      f.thread_id = in.uuid(key, Need::kOptional);
      f.up_to_seq = in.seq("up_to_seq");
      break;
    }
    case ClientType::kMessageReceived:
      f.message_id = in.uuid("message_id", Need::kRequired);
      break;
    case ClientType::kTyping:
      f.thread_id = in.uuid("thread_id", Need::kRequired);
      // Absent means typing; null means not.
      f.is_typing = in.boolean("is_typing", Need::kOptional).value_or(!o.if_contains("is_typing"));
      break;
    case ClientType::kCallOffer:
    case ClientType::kCallAnswer:
    case ClientType::kIceCandidate:
    case ClientType::kCallEnd:
      f.thread_id = in.uuid("thread_id", Need::kRequired);
      // An offer, an answer or a candidate is its payload (SDP, ICE); a
      // hang-up may carry none. Null is absent, as for every required field.
      if (const json::value* p = o.if_contains("payload"); p && !p->is_null()) {
        f.payload = *p;
      } else if (f.type != ClientType::kCallEnd) {
        in.fail(missing_field("payload"));
      } else if (p) {
        f.payload = *p;
      }
      break;
    case ClientType::kDeleteMessage:
      f.message_id = in.uuid("message_id", Need::kRequired);
      break;
    case ClientType::kEditMessage:
      f.message_id = in.uuid("message_id", Need::kRequired);
      f.content = in.string("content", Need::kRequired);
      break;
  }
  out.error = in.error();
  return out;
}

}  // namespace parley
