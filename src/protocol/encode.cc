#include "protocol/encode.h"

#include <boost/json.hpp>
#include <cstdint>
#include <cstring>

#include "common/clock.h"

namespace parley {

namespace json = boost::json;

std::string_view thread_type_name(ThreadType type) { return type == ThreadType::kDirect ? "direct" : "group"; }

json::object user_json(const User& u) {
  json::object o;
  o["id"] = u.id;
  o["username"] = u.username;
  o["full_name"] = u.full_name;
  o["phone_number"] = u.phone_number ? json::value(*u.phone_number) : json::value(nullptr);
  o["role"] = u.role;
  o["created_at"] = iso8601_millis(u.created_at);
  o["last_seen"] = u.last_seen ? json::value(iso8601_millis(u.last_seen)) : json::value(nullptr);
  return o;
}

json::object message_json(const Message& m) {
  json::object o;
  o.reserve(13);
  o["id"] = m.id;
  o["thread_id"] = m.thread_id;
  o["seq"] = m.seq;
  o["sender_id"] = m.sender_id;
  o["content"] = m.content;
  o["message_type"] = m.message_type;
  o["client_msg_id"] = m.client_msg_id.empty() ? json::value(nullptr) : json::value(m.client_msg_id);
  o["status"] = m.status;
  o["created_at"] = iso8601_millis(m.created_at);
  o["edited_at"] = m.edited_at ? json::value(iso8601_millis(*m.edited_at)) : json::value(nullptr);
  if (m.deleted) o["deleted"] = true;  // only on tombstones (CONTRACT section 8)
  if (m.change_no > 0) o["change_no"] = m.change_no;  // only on edited and deleted messages
  o["sender"] = json::object{{"id", m.sender.id},
                             {"username", m.sender.username},
                             {"full_name", m.sender.full_name},
                             {"role", m.sender.role}};
  return o;
}

namespace {

// True when one of the eight bytes in `v` must be escaped: below 0x20, a
// quote or a backslash. The bit tricks only answer "any?" exactly, which is
// all the scan needs: most text has nothing to escape, and eight bytes per
// step make the scan a small part of serialising a message (it was 17% of
// the store's completion thread in `dm`, one byte per step).
bool any_to_escape(uint64_t v) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  auto any_zero = [](uint64_t x) { return (x - kOnes) & ~x & kHigh; };
  const uint64_t below_space = (v - kOnes * 0x20) & ~v & kHigh;
  return (below_space | any_zero(v ^ (kOnes * '"')) | any_zero(v ^ (kOnes * '\\'))) != 0;
}

// A JSON string literal, escaped as Boost.JSON's serializer escapes it (the
// two spellings are compared by a unit test): quote, backslash and the
// control characters; everything else, UTF-8 included, as it is.
void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  size_t plain = 0;  // start of the run not yet copied
  size_t i = 0;
  while (i < s.size()) {
    if (s.size() - i >= 8) {
      uint64_t v;
      std::memcpy(&v, s.data() + i, 8);
      if (!any_to_escape(v)) {
        i += 8;
        continue;
      }
    }
    for (const size_t block_end = std::min(s.size(), i + 8); i < block_end; ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      if (c >= 0x20 && c != '"' && c != '\\') continue;
      out.append(s, plain, i - plain);
      plain = i + 1;
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xf];
      }
    }
  }
  out.append(s, plain, s.size() - plain);
  out += '"';
}

void append_field(std::string& out, std::string_view key, std::string_view value) {
  out += key;  // `,"name":` - our own constant names
  append_json_string(out, value);
}

}  // namespace

// Written directly rather than through message_json(): every send is
// serialised once on the store's completion thread, and building the object
// first (a dozen allocations) was a third of that thread's time in `dm`.
std::string message_json_text(const Message& m) {
  std::string out;
  out.reserve(240 + m.content.size() + m.sender.full_name.size());
  append_field(out, "{\"id\":", m.id);
  append_field(out, ",\"thread_id\":", m.thread_id);
  out += ",\"seq\":";
  out += std::to_string(m.seq);
  append_field(out, ",\"sender_id\":", m.sender_id);
  append_field(out, ",\"content\":", m.content);
  append_field(out, ",\"message_type\":", m.message_type);
  if (m.client_msg_id.empty())
    out += ",\"client_msg_id\":null";
  else
    append_field(out, ",\"client_msg_id\":", m.client_msg_id);
  append_field(out, ",\"status\":", m.status);
  append_field(out, ",\"created_at\":", iso8601_millis(m.created_at));
  if (m.edited_at)
    append_field(out, ",\"edited_at\":", iso8601_millis(*m.edited_at));
  else
    out += ",\"edited_at\":null";
  if (m.deleted) out += ",\"deleted\":true";
  if (m.change_no > 0) {
    out += ",\"change_no\":";
    out += std::to_string(m.change_no);
  }
  append_field(out, ",\"sender\":{\"id\":", m.sender.id);
  append_field(out, ",\"username\":", m.sender.username);
  append_field(out, ",\"full_name\":", m.sender.full_name);
  append_field(out, ",\"role\":", m.sender.role);
  out += "}}";
  return out;
}

json::object deletion_json(const Message& m) {
  json::object o{{"thread_id", m.thread_id}, {"message_id", m.id}, {"seq", m.seq}};
  if (m.change_no > 0) o["change_no"] = m.change_no;
  return o;
}

json::object thread_json(const Thread& t) {
  json::object o;
  o["id"] = t.id;
  o["type"] = thread_type_name(t.type);
  o["title"] = t.title.empty() ? json::value(nullptr) : json::value(t.title);
  o["created_by"] = t.created_by;
  o["created_at"] = iso8601_millis(t.created_at);
  o["last_activity"] = iso8601_millis(t.last_activity);
  o["last_seq"] = t.last_seq;
  json::array ps;
  for (const auto& p : t.participants) {
    ps.push_back(json::object{{"user_id", p.user_id},
                              {"username", p.username},
                              {"full_name", p.full_name},
                              {"role", p.role},
                              {"is_admin", p.is_admin},
                              {"last_read_seq", p.last_read_seq},
                              {"last_delivered_seq", p.last_delivered_seq},
                              {"joined_at", iso8601_millis(p.joined_at)},
                              {"online", p.online},
                              {"last_seen", p.last_seen ? json::value(iso8601_millis(p.last_seen)) : json::value(nullptr)}});
  }
  o["participants"] = std::move(ps);
  return o;
}

json::object summary_json(const ThreadSummary& s) {
  json::object o = thread_json(s.thread);
  o["unread_count"] = s.unread_count;
  o["last_message"] = s.last_message ? json::value(message_json(*s.last_message)) : json::value(nullptr);
  return o;
}

std::string encode_frame(std::string_view type, json::object fields, const json::value& request_id) {
  json::object o;
  o.reserve(fields.size() + 2);
  o["type"] = type;
  if (!request_id.is_null()) o["request_id"] = request_id;
  for (auto& kv : fields) o.emplace(kv.key(), std::move(kv.value()));
  return json::serialize(o);
}

std::string encode_data_frame(std::string_view type, std::string_view data_json, const json::value& request_id) {
  std::string out;
  out.reserve(data_json.size() + type.size() + 48);
  out += "{\"type\":\"";
  out += type;  // our own constant names: no escaping needed
  out += '"';
  if (!request_id.is_null()) {
    out += ",\"request_id\":";
    out += json::serialize(request_id);
  }
  out += ",\"data\":";
  out += data_json;
  out += '}';
  return out;
}

std::string encode_error(const Error& e, const json::value& request_id) {
  return encode_frame("error", json::object{{"code", e.code}, {"message", e.message}}, request_id);
}

std::string encode_event(const BusEvent& e) {
  if (e.payload_is_data) return encode_data_frame(e.type, e.payload);
  // The payload's fields follow the type: `{"type":T` then the object's text
  // after its opening brace (the payload is our own serialised object).
  std::string out;
  out.reserve(e.payload.size() + e.type.size() + 12);
  out += "{\"type\":\"";
  out += e.type;
  out += '"';
  if (e.payload.size() > 2) out += ',';
  out.append(e.payload.size() > 1 ? std::string_view(e.payload).substr(1) : std::string_view("}"));
  return out;
}

std::string encode_error_body(const Error& e) {
  return json::serialize(json::object{{"status", "error"}, {"code", e.code}, {"message", e.message}});
}

}  // namespace parley
