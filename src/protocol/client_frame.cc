#include "protocol/client_frame.h"

#include <boost/json.hpp>

#include <array>
#include <charconv>
#include <cmath>
#include <utility>
#include <vector>

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

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(c | 0x20);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// Where text has a \uD800-\uDFFF escape that is not half of a pair (a high
// one right before a low one). Boost.JSON 1.81 reports a lone high surrogate
// as a plain syntax error, so we look for one ourselves (only on the error
// path). An escaped backslash is skipped whole: "C:\\udcfiles" has none.
std::vector<size_t> lone_surrogate_escapes(std::string_view text) {
  std::vector<size_t> lone;
  size_t high_at = std::string_view::npos;  // a high surrogate escape waiting for its low half
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] != '\\') continue;
    unsigned code = 0;
    bool escape = text[i + 1] == 'u' && i + 6 <= text.size();
    for (size_t k = i + 2; escape && k < i + 6; ++k) {
      const int d = hex_digit(text[k]);
      if (d < 0) {
        escape = false;
        break;
      }
      code = code * 16 + static_cast<unsigned>(d);
    }
    if (!escape) {
      ++i;  // an escaped character, a backslash among them
      continue;
    }
    const bool high = code >= 0xD800 && code <= 0xDBFF, low = code >= 0xDC00 && code <= 0xDFFF;
    if (high_at != std::string_view::npos) {
      const bool pair = low && i == high_at + 6;
      if (!pair) lone.push_back(high_at);
      high_at = std::string_view::npos;
      if (pair) {
        i += 5;
        continue;
      }
    }
    if (high) high_at = i;
    else if (low) lone.push_back(i);
    i += 5;
  }
  if (high_at != std::string_view::npos) lone.push_back(high_at);
  return lone;
}

// The request_id of a frame refused as a whole (a lone surrogate escape, a
// number beyond a double's range, nesting deeper than 32), so that its error still echoes it. Read
// from a copy whose lone surrogate escapes are made U+FFFD; only on the error path.
json::value salvage_request_id(std::string_view text) {
  if (text.find("\"request_id\"") == std::string_view::npos) return nullptr;
  std::string copy(text);
  for (size_t at : lone_surrogate_escapes(text)) copy.replace(at + 2, 4, "fffd");
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
      !utf8_length(text) || (ec == json::error::syntax && !lone_surrogate_escapes(text).empty()))
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

Result<std::vector<ClientFrame>> parse_subscribe_list(const json::value* list, bool keep_request_ids) {
  std::vector<ClientFrame> out;
  if (!list || list->is_null()) return out;
  if (!list->is_array()) return invalid_field("subscribe", "must be an array of {thread_id, since_seq} objects");
  const json::array& a = list->get_array();
  if (a.size() > kMaxSubscribesAtAuth)
    return invalid_field("subscribe", "must have at most " + std::to_string(kMaxSubscribesAtAuth) + " entries");
  out.reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string at = "subscribe[" + std::to_string(i) + "]";
    if (!a[i].is_object()) return invalid_field(at, "must be an object {thread_id, since_seq}");
    const json::object& entry = a[i].get_object();
    ParsedFrame parsed = parse_client_fields(ClientType::kSubscribeThread, entry);
    if (parsed.error) return Error{parsed.error->kind, parsed.error->code, at + ": " + parsed.error->message};
    // Two replays of one thread from different seqs would interleave.
    for (const ClientFrame& earlier : out)
      if (earlier.thread_id == parsed.frame.thread_id) return invalid_field(at + ".thread_id", "is listed twice");
    if (const json::value* rid = entry.if_contains("request_id"); keep_request_ids && rid && !rid->is_null()) {
      if (!rid->is_string() && !rid->is_number()) return invalid_field(at + ".request_id", "must be a string or a number");
      parsed.frame.request_id = *rid;
    }
    out.push_back(std::move(parsed.frame));
  }
  return out;
}

Result<std::optional<int64_t>> parse_changes_after(const json::object& o) {
  const json::value* v = o.if_contains("changes_after");
  if (!v) return std::optional<int64_t>();
  if (v->is_null()) return std::optional<int64_t>(kNoChangeMark);
  if (v->is_int64() && v->get_int64() >= 0 && v->get_int64() <= kMaxSeq) return std::optional<int64_t>(v->get_int64());
  if (v->is_uint64() && v->get_uint64() <= static_cast<uint64_t>(kMaxSeq))
    return std::optional<int64_t>(static_cast<int64_t>(v->get_uint64()));
  // As since_seq: 5.0 is the integer 5 (clients that keep numbers as doubles).
  if (v->is_double() && v->get_double() >= 0 && v->get_double() <= static_cast<double>(kMaxSeq) &&
      std::trunc(v->get_double()) == v->get_double())
    return std::optional<int64_t>(static_cast<int64_t>(v->get_double()));
  return invalid_field("changes_after", "must be null or the change_mark of a changes_synced (an integer from 0 to " +
                                            std::to_string(kMaxSeq) + ")");
}

Result<int64_t> parse_changes_after_param(std::string_view text) {
  if (text == "null") return kNoChangeMark;
  int64_t n = -1;
  const char* end = text.data() + text.size();
  auto [at, ec] = std::from_chars(text.data(), end, n);
  if (text.empty() || ec != std::errc() || at != end || n < 0 || n > kMaxSeq)
    return invalid_field("changes_after", "must be null or the change_mark of a changes_synced (an integer from 0 to " +
                                              std::to_string(kMaxSeq) + ")");
  return n;
}

ParsedFrame parse_client_fields(ClientType type, const json::object& o) {
  ParsedFrame out;
  ClientFrame& f = out.frame;
  f.type = type;
  JsonFields in(o);
  switch (f.type) {
    case ClientType::kAuth: {
      f.token = in.string("token", Need::kRequired, 8192);
      auto subscribes = parse_subscribe_list(o.if_contains("subscribe"), /*keep_request_ids=*/true);
      if (subscribes) f.subscribes = std::move(*subscribes);
      else in.fail(subscribes.error());
      if (auto after = parse_changes_after(o)) f.changes_after = *after;
      else in.fail(after.error());
      break;
    }
    case ClientType::kPing:
      break;
    case ClientType::kSendMessage: {
      f.thread_id = in.uuid("thread_id", Need::kOptional);
      f.username = in.string("username", Need::kOptional, 64);
      if (f.thread_id.empty() && f.username.empty())
        in.fail(bad_input("missing_field", "missing field: thread_id (or username, for a direct message)"));
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
