#include "sio.h"

#include <charconv>

namespace bench {

std::string sio_target(std::string_view path) {
  std::string t(path);
  t += t.find('?') == std::string::npos ? '?' : '&';
  t += "EIO=4&transport=websocket";
  return t;
}

bool parse_sio(std::string_view f, SioPacket& p) {
  p = SioPacket{};
  if (f.empty() || f[0] < '0' || f[0] > '6') return false;
  p.eio = f[0];
  f.remove_prefix(1);
  if (p.eio != '4') {
    p.data = f;
    return true;
  }
  if (f.empty() || f[0] < '0' || f[0] > '6') return false;
  p.sio = f[0];
  f.remove_prefix(1);
  // Binary packets carry an attachment count and '-' first; we never ask for
  // them, the caller refuses them.
  if (p.sio == '5' || p.sio == '6') {
    p.data = f;
    return true;
  }
  if (!f.empty() && f[0] == '/') {
    const size_t comma = f.find(',');
    if (comma == std::string_view::npos) {
      p.nsp = f;  // "40/admin" (CONNECT to a namespace without payload)
      return true;
    }
    p.nsp = f.substr(0, comma);
    f.remove_prefix(comma + 1);
  }
  if (!f.empty() && f[0] >= '0' && f[0] <= '9') {
    size_t n = 0;
    while (n < f.size() && f[n] >= '0' && f[n] <= '9') ++n;
    if (n > 15) return false;  // far beyond any id we send; not a counter
    std::from_chars(f.data(), f.data() + n, p.ack_id);
    f.remove_prefix(n);
  }
  if ((p.sio == '2' || p.sio == '3') && (f.empty() || f[0] != '[')) return false;
  if (p.sio == '3' && p.ack_id < 0) return false;
  p.data = f;
  return true;
}

bool sio_event_name(std::string_view data, std::string_view& name) {
  // The name is a JSON string we compare with plain ASCII names: no escapes.
  if (data.size() < 4 || data[0] != '[' || data[1] != '"') return false;
  const size_t end = data.find('"', 2);
  if (end == std::string_view::npos) return false;
  name = data.substr(2, end - 2);
  return true;
}

namespace {

void append_id(std::string& out, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<size_t>(r.ptr - buf));
}

}  // namespace

void append_sio_event_head(std::string& out, std::string_view name, int64_t ack_id) {
  out += "42";
  append_id(out, ack_id);
  out += "[\"";
  out += name;
  out += "\",";
}

void append_sio_empty_ack(std::string& out, int64_t ack_id) {
  out += "43";
  append_id(out, ack_id);
  out += "[]";
}

}  // namespace bench
