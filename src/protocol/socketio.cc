#include "protocol/socketio.h"

#include <boost/json.hpp>

#include "common/utf8.h"
#include "protocol/client_frame.h"

namespace parley::sio {

namespace json = boost::json;

std::optional<std::vector<std::string_view>> split_payload(std::string_view body) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t end = body.find(kRecordSeparator, start);
    std::string_view packet = body.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (packet.empty()) return std::nullopt;
    out.push_back(packet);
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

std::string encode_open(std::string_view sid, bool can_upgrade, int ping_interval_ms, int ping_timeout_ms,
                        size_t max_payload) {
  json::object o{{"sid", sid},
                 {"upgrades", can_upgrade ? json::array{"websocket"} : json::array{}},
                 {"pingInterval", ping_interval_ms},
                 {"pingTimeout", ping_timeout_ms},
                 {"maxPayload", max_payload}};
  return "0" + json::serialize(o);
}

std::string eio_error_body(EioError error) {
  static constexpr std::string_view kMessages[] = {"Transport unknown",   "Session ID unknown", "Bad handshake method",
                                                   "Bad request",         "Forbidden",
                                                   "Unsupported protocol version"};
  int code = static_cast<int>(error);
  return json::serialize(json::object{{"code", code}, {"message", kMessages[code]}});
}

int eio_error_status(EioError error) { return error == EioError::kForbidden ? 403 : 400; }

namespace {

Error invalid_packet(std::string why) { return bad_input("invalid_packet", "invalid Socket.IO packet: " + why); }

bool valid_data(SioType type, const json::value& data, bool present) {
  switch (type) {
    case SioType::kConnect: return !present || data.is_object();
    case SioType::kDisconnect: return !present;
    case SioType::kConnectError: return present && (data.is_object() || data.is_string());
    case SioType::kEvent:
    case SioType::kBinaryEvent:
      return present && data.is_array() && !data.get_array().empty() &&
             (data.get_array()[0].is_string() || data.get_array()[0].is_number());
    case SioType::kAck:
    case SioType::kBinaryAck: return present && data.is_array();
  }
  return false;
}

// Parses a packet's data. Only JSON that no JSON.parse reads is an error;
// what ours refuses and JavaScript's reads goes in data_error.
Result<json::value> parse_data(std::string_view rest, std::optional<Error>& data_error) {
  if (!utf8_length(rest)) {
    data_error = bad_input("invalid_utf8", "text is not valid UTF-8");
    return json::value();
  }
  boost::system::error_code ec;
  json::parse_options opts;
  opts.max_depth = 32;
  json::value data = json::parse(rest, ec, {}, opts);
  if (!ec && has_infinite_number(data)) {
    // JSON.parse reads 1e400 (as Infinity): refused, the session goes on.
    data_error = bad_input("invalid_json", "the event's data has a number beyond a double's range");
    return json::value();
  }
  if (!ec) return data;
  Error e = json_parse_error(ec, rest, "the event's data");
  if (e.code != "invalid_utf8" && ec != json::error::too_deep) return invalid_packet("data is not valid JSON");
  data_error = std::move(e);
  return json::value();
}

// The packet types whose data may be refused without ending the session:
// those that carry data (a DISCONNECT has none; the client's CONNECT_ERROR
// ends the session anyway).
bool may_refuse_data(SioType type) { return type != SioType::kDisconnect && type != SioType::kConnectError; }

// Reads the header into `p`; `at`: where the data begins.
Status read_header(std::string_view text, SioPacket& p, size_t& at) {
  if (text.empty() || text[0] < '0' || text[0] > '6') return invalid_packet("unknown packet type");
  p.type = static_cast<SioType>(text[0] - '0');
  size_t i = 1;
  if (p.type == SioType::kBinaryEvent || p.type == SioType::kBinaryAck) {
    // The attachment count, then '-'. Attachments are refused upstream, and
    // dropped as they come: the count says how many to expect.
    size_t dash = text.find('-', i);
    if (dash == std::string_view::npos || dash == i || dash - i > 6) return invalid_packet("bad attachment count");
    for (size_t k = i; k < dash; ++k) {
      if (text[k] < '0' || text[k] > '9') return invalid_packet("bad attachment count");
      p.attachments = p.attachments * 10 + static_cast<uint32_t>(text[k] - '0');
    }
    i = dash + 1;
  }
  if (i < text.size() && text[i] == '/') {
    size_t end = text.find(',', i);
    if (end == std::string_view::npos) end = text.size();
    p.nsp.assign(text.substr(i, end - i));
    i = end < text.size() ? end + 1 : end;
  }
  size_t digits = 0;
  while (i + digits < text.size() && text[i + digits] >= '0' && text[i + digits] <= '9') ++digits;
  if (digits > 15) return invalid_packet("ack id too large");
  if (digits) {
    p.id = std::stoull(std::string(text.substr(i, digits)));
    i += digits;
  }
  at = i;
  return Ok{};
}

}  // namespace

Result<SioPacket> decode_header(std::string_view head) {
  SioPacket p;
  size_t at = 0;
  if (auto st = read_header(head, p, at); !st) return st.error();
  if (p.id && (p.type == SioType::kConnect || p.type == SioType::kDisconnect || p.type == SioType::kConnectError))
    return invalid_packet("ack id on a packet that takes none");
  return p;
}

Result<SioPacket> decode_packet(std::string_view text) {
  SioPacket p;
  size_t i = 0;
  if (auto st = read_header(text, p, i); !st) return st.error();
  std::string_view rest = text.substr(i);
  bool present = !rest.empty();
  if (present) {
    auto data = parse_data(rest, p.data_error);
    if (!data) return data.error();
    p.data = std::move(*data);
    if (p.data_error && !may_refuse_data(p.type)) return invalid_packet(p.data_error->message);
  }
  if (!p.data_error && !valid_data(p.type, p.data, present))
    return invalid_packet("data of the wrong shape for the packet type");
  if (p.id && (p.type == SioType::kConnect || p.type == SioType::kDisconnect || p.type == SioType::kConnectError))
    return invalid_packet("ack id on a packet that takes none");
  return p;
}

std::string encode_event(std::string_view name, std::string_view payload_json, std::optional<uint64_t> ack_id) {
  std::string out;
  out.reserve(payload_json.size() + name.size() + 32);
  out += "42";
  if (ack_id) out += std::to_string(*ack_id);
  out += "[\"";
  out += name;
  out += "\",";
  out += payload_json;
  out += ']';
  return out;
}

std::string encode_ack(uint64_t ack_id, std::string_view payload_json) {
  std::string out = "43" + std::to_string(ack_id);
  out += '[';
  out += payload_json;
  out += ']';
  return out;
}

std::string encode_connect(std::string_view sid) { return "40" + json::serialize(json::object{{"sid", sid}}); }

std::string encode_connect_error(std::string_view nsp, std::string_view message, std::string_view code) {
  std::string out = "44";
  if (nsp != "/") {
    out += nsp;
    out += ',';
  }
  json::object error{{"message", message}};
  if (!code.empty()) error["data"] = json::object{{"code", code}};
  return out + json::serialize(error);
}

std::string encode_disconnect() { return "41"; }

}  // namespace parley::sio
