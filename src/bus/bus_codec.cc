#include "bus/bus_codec.h"

#include <boost/json.hpp>

namespace parley {

namespace json = boost::json;

constexpr int kVersion = 1;

std::string encode_bus_event(const BusEvent& e, const std::string& node_id) {
  json::object h;
  h["v"] = kVersion;
  h["node"] = node_id;
  if (e.resync) {
    h["resync"] = true;
  } else if (e.members_changed) {
    h["members_changed"] = true;
    h["thread_id"] = e.thread_id;
  } else {
    h["type"] = e.type;
    h["thread_id"] = e.thread_id;
    if (e.seq > 0) h["seq"] = e.seq;
    if (e.redelivery) h["again"] = e.created_at;
    if (e.change_no > 0) h["change"] = e.change_no;
    if (e.read_seq > 0) {
      h["reader"] = e.reader_id;
      h["read_seq"] = e.read_seq;
    }
    json::array r;
    if (e.recipients) {
      r.reserve(e.recipients->size());
      for (const auto& id : *e.recipients) r.emplace_back(id);
    }
    h["recipients"] = std::move(r);
    if (e.shared_recipients) h["shared"] = true;
    if (!e.exclude_session.empty()) h["exclude"] = e.exclude_session;
    if (e.payload_is_data) h["data"] = true;
    if (!e.message_id.empty()) h["message_id"] = e.message_id;
  }
  std::string out = json::serialize(h);
  out.push_back('\n');
  out += e.payload;
  return out;
}

std::optional<DecodedBusEvent> decode_bus_event(std::string_view payload) {
  auto nl = payload.find('\n');
  if (nl == std::string_view::npos) return std::nullopt;
  json::error_code ec;
  json::value v = json::parse(payload.substr(0, nl), ec);
  if (ec || !v.is_object()) return std::nullopt;
  const json::object& h = v.get_object();
  auto str = [&](const char* key) -> std::string {
    const json::value* f = h.if_contains(key);
    return f && f->is_string() ? std::string(f->get_string()) : std::string();
  };
  const json::value* version = h.if_contains("v");
  if (!version || !version->is_int64() || version->get_int64() != kVersion) return std::nullopt;
  DecodedBusEvent out;
  out.node_id = str("node");
  out.event = std::make_shared<BusEvent>();
  BusEvent& e = *out.event;
  if (const json::value* r = h.if_contains("resync"); r && r->is_bool() && r->get_bool()) {
    e.resync = true;
    return out;
  }
  e.thread_id = str("thread_id");
  if (const json::value* m = h.if_contains("members_changed"); m && m->is_bool() && m->get_bool()) {
    if (e.thread_id.empty()) return std::nullopt;
    e.members_changed = true;
    return out;
  }
  e.type = str("type");
  if (const json::value* s = h.if_contains("seq"); s && s->is_int64()) e.seq = s->get_int64();
  if (const json::value* a = h.if_contains("again"); a && a->is_int64()) {
    e.redelivery = true;
    e.created_at = a->get_int64();
  }
  if (const json::value* c = h.if_contains("change"); c && c->is_int64()) e.change_no = c->get_int64();
  if (const json::value* r = h.if_contains("read_seq"); r && r->is_int64()) {
    e.reader_id = str("reader");
    if (!e.reader_id.empty()) e.read_seq = r->get_int64();
  }
  auto recipients = std::make_shared<std::vector<std::string>>();
  if (const json::value* r = h.if_contains("recipients"); r && r->is_array()) {
    recipients->reserve(r->get_array().size());
    for (const auto& id : r->get_array())
      if (id.is_string()) recipients->emplace_back(id.get_string());
  }
  e.recipients = std::move(recipients);
  if (const json::value* s = h.if_contains("shared"); s && s->is_bool()) e.shared_recipients = s->get_bool();
  e.exclude_session = str("exclude");
  if (const json::value* d = h.if_contains("data"); d && d->is_bool()) e.payload_is_data = d->get_bool();
  e.message_id = str("message_id");
  // The encoders splice the payload into frames as an object's text: check
  // its shape (another node wrote it; a full parse per event is not needed).
  std::string_view body = payload.substr(nl + 1);
  if (e.type.empty() || body.size() < 2 || body.front() != '{' || body.back() != '}') return std::nullopt;
  e.payload = std::string(body);
  return out;
}

}  // namespace parley
