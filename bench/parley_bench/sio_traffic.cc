// The scenarios' traffic as Socket.IO packets (CONTRACT section 7): the
// Engine.IO open packet answered by CONNECT with the token, `send_message`
// events whose ack id is the sender's counter, `new_message` events checked
// exactly like native deliveries, the acknowledgement `{success, message}`
// read back into the same per-counter bits. Engine.IO pings are answered with
// pongs and server events that ask for an ack (the `ping` event) get one.
#include <cstring>

#include "jwt.h"
#include "scan.h"
#include "sio.h"
#include "worker.h"

namespace bench {

void Worker::append_sio_send(std::string& f, const Conn& c, const SenderState& s, int64_t counter, int64_t send_ns) {
  append_sio_event_head(f, "send_message", counter);
  f += R"({"thread_id":")";
  f += plan_.thread_ids[static_cast<size_t>(c.group)];
  f += R"(","content":")";
  append_content_fields(f, s, counter, send_ns);
  f += "}]";
}

void Worker::on_sio_text(Conn& c, std::string_view text, int64_t now) {
  SioPacket p;
  if (!parse_sio(text, p)) {
    ++totals_.bad_frames;
    return;
  }
  switch (p.eio) {
    case '0':  // open: {"sid", "upgrades", "pingInterval", ...}; now the Socket.IO CONNECT
      if (c.state != kAwaitEstablished || c.sio_step != 0) {
        ++totals_.other_frames;
        return;
      }
      {
        const int64_t wall_s = static_cast<int64_t>(::time(nullptr));
        std::string f = R"(40{"token":")";
        f += mint_hs256(opt_.jwt_secret, user_id(c.user + opt_.user_offset), wall_s, 3600);
        f += R"("})";
        send_frame(c, kText, f);
      }
      c.sio_step = 1;
      return;
    case '2': {  // Engine.IO ping: pong with the same payload
      std::string f = "3";
      f += p.data;
      send_frame(c, kText, f);
      return;
    }
    case '3':
    case '6':
      return;
    case '1':
      return fail(c, "server sent Engine.IO close", now);
    case '4':
      break;
    default:
      ++totals_.bad_frames;
      return;
  }
  if (!p.nsp.empty()) {
    ++totals_.other_frames;  // we only ever join "/"
    return;
  }
  switch (p.sio) {
    case '0':  // CONNECT accepted: {"sid"}; open once connection_success arrives
      if (c.state != kAwaitEstablished || c.sio_step != 1) {
        ++totals_.other_frames;
        return;
      }
      c.sio_step = 2;
      return;
    case '1':
      return fail(c, "server sent Socket.IO DISCONNECT", now);
    case '4':
      return fail(c, "CONNECT_ERROR " + std::string(p.data.substr(0, 200)), now);
    case '3':
      return on_sio_ack(c, p.ack_id, p.data, now);
    case '2':
      break;
    default:  // binary events and acks: never asked for
      ++totals_.bad_frames;
      return;
  }
  std::string_view name;
  if (!sio_event_name(p.data, name)) {
    ++totals_.bad_frames;
    return;
  }
  if (name == "new_message") {
    on_delivery(c, p.data, now);
    // The ack is the delivery receipt; native runs send none, so only on request.
    if (p.ack_id >= 0 && opt_.sio_ack_deliveries) {
      std::string f;
      append_sio_empty_ack(f, p.ack_id);
      send_frame(c, kText, f);
    }
    return;
  }
  if (p.ack_id >= 0) {  // the server's `ping` event, test_message, ...
    std::string f;
    append_sio_empty_ack(f, p.ack_id);
    send_frame(c, kText, f);
  }
  if (name == "connection_success" && c.state == kAwaitEstablished && c.sio_step == 2) return on_established(c, now);
  if (name == "error") {
    std::string_view code = "?";
    json_str(p.data, "\"code\":", code);
    ++totals_.errors[std::string(code)];
    return;
  }
  // message_sent (the sender's copy beside the ack), presence, test_message, ...
  count_other(name);
}

void Worker::on_sio_ack(Conn& c, int64_t ack_id, std::string_view data, int64_t now) {
  if (c.sender < 0 || ack_id >= senders_[static_cast<size_t>(c.sender)].next_counter) {
    ++totals_.bad_frames;  // we asked for no ack with this id
    return;
  }
  SenderState& s = senders_[static_cast<size_t>(c.sender)];
  const int64_t counter = ack_id;
  const void* ok = memmem(data.data(), data.size(), "\"success\":true", 14);
  if (!ok) {
    // {success:false, error}: the error is a string or {code, message}.
    const bool limited = memmem(data.data(), data.size(), "rate_limited", 12) != nullptr;
    std::string_view code = "?";
    if (!json_str(data, "\"code\":", code)) json_str(data, "\"error\":", code);
    ++totals_.errors[std::string(code)];
    return refused(c, s, limited, now);
  }
  std::string_view content;
  int64_t v[3];
  if (!json_str(data, "\"content\":", content) || colon_ints(content, v, 3) != 3 || v[0] != s.user ||
      v[1] != counter) {
    ++totals_.bad_frames;  // acknowledged, but not with our message
    return;
  }
  acknowledged(c, s, counter, v[2], now);
}

}  // namespace bench
