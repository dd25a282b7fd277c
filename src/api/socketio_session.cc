#include "api/socketio_session.h"

#include <chrono>
#include <cstdlib>
#include <thread>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "common/log_throttle.h"
#include "common/metrics.h"
#include "common/utf8.h"
#include "protocol/socketio_encoder.h"

namespace parley {

namespace json = boost::json;

// The server's `ping` event (the Socket.IO system's liveness check, beside
// Engine.IO's own pings).
constexpr int64_t kPingEventIntervalMs = 25000;

SocketIoSession::SocketIoSession(ConnectionContext ctx, std::weak_ptr<Transport> engine,
                                 std::optional<std::string> handshake_token)
    : ctx_(ctx),
      engine_(std::move(engine)),
      handshake_token_(std::move(handshake_token)),
      connect_deadline_ms_(now_micros() / 1000 + int64_t{ctx.chat.config().limits.auth_timeout_seconds} * 1000) {}

// ---------------------------------------------------------------- inbound


void SocketIoSession::on_text(std::string_view text) {
  if (closed_) return;
  auto packet = sio::decode_packet(text);
  if (!packet) {
    // As the reference server: a packet it cannot parse ends the connection.
    Metrics::get().count_error("invalid_packet");
    // Any client can send these as fast as it connects: one line a second.
    static LogThrottle throttle;
    if (auto held_back = throttle.admit())
      spdlog::info("event=sio_bad_packet reason=\"{}\" suppressed={}", packet.error().message, *held_back);
    return close(CloseReason::kPolicy, "invalid Socket.IO packet");
  }
  if (packet->attachments > 0) {
    // A new binary packet's header before the last one's attachments came:
    // the reference parser drops what it was reconstructing and starts over.
    attachments_owed_ = packet->attachments;
  }
  switch (packet->type) {
    case sio::SioType::kConnect: return on_connect(*packet);
    case sio::SioType::kDisconnect:
      if (packet->nsp == "/") return close(CloseReason::kNormal, "client disconnect");
      return;
    case sio::SioType::kEvent:
    case sio::SioType::kBinaryEvent: return on_event(std::move(*packet));
    case sio::SioType::kAck:
    case sio::SioType::kBinaryAck: return on_ack(*packet);
    case sio::SioType::kConnectError: return close(CloseReason::kPolicy, "CONNECT_ERROR is the server's packet");
  }
}

// An event over the frame limit is refused like any bad frame (in its ack,
// when it asked for one) and the session goes on: the client was told
// packets up to maxPayload would do, and the packets after it in the same
// POST or burst are handled. Anything else that large closes it.
bool SocketIoSession::on_text_too_large(std::string_view head) {
  if (closed_ || !conn_) return false;
  auto packet = sio::decode_header(head);
  if (!packet || packet->type != sio::SioType::kEvent || packet->nsp != "/") return false;
  conn_->on_bad_frame(bad_input("payload_too_large", "an event is at most " +
                                                         std::to_string(ctx_.chat.config().limits.max_frame_bytes) +
                                                         " bytes (--max-frame-bytes)"),
                      packet->id ? json::value(*packet->id) : json::value(nullptr));
  return true;
}

void SocketIoSession::on_text_while_draining(std::string_view head) {
  if (closed_ || !conn_) return;
  auto packet = sio::decode_header(head);
  if (!packet || packet->type != sio::SioType::kEvent || packet->nsp != "/" || !packet->id) return;
  conn_->on_bad_frame(Error{ErrorKind::kUnavailable, "shutting_down",
                            "the server is shutting down: send it again once reconnected (with the same client_msg_id)"},
                      json::value(*packet->id));
}

void SocketIoSession::on_binary(std::string_view) {
  if (closed_) return;
  // Attachments of a BINARY_EVENT, which was refused already: dropped.
  if (attachments_owed_ > 0) {
    --attachments_owed_;
    return;
  }
  Metrics::get().count_error("invalid_packet");
  return close(CloseReason::kPolicy, "binary data without a binary packet");
}

void SocketIoSession::on_connect(const sio::SioPacket& p) {
  if (p.nsp != "/") return send(sio::encode_connect_error(p.nsp, "Invalid namespace"));
  if (conn_ || connecting_) {
    // socket.io-client's connect() while its CONNECT is on its way, or once
    // connected, sends another: as the reference server, the session stays
    // (its auth is not read again). The first one's answer comes in time;
    // once given, it is given again.
    if (admitted_) send(sio::encode_connect(conn_->session_id()));
    return;
  }
  if (p.data_error) {
    // Unreadable auth data holds no token the server could accept.
    Metrics::get().count_error(p.data_error->code);
    return send(sio::encode_connect_error("/", "Authentication error: " + p.data_error->message, p.data_error->code));
  }
  // The auth payload's token first: `io(url, {auth: {token}})`, the
  // contract's way, and the one an app can renew for each reconnect (a
  // `query` is sent as it was first given). Then the handshake's.
  std::string token;
  const json::value* given = p.data.is_object() ? p.data.get_object().if_contains("token") : nullptr;
  if (given && !given->is_null() && !given->is_string()) {
    // As the native `auth` frame answers it: a token of the wrong type is a
    // client's bug to fix, not a sign-in to redo.
    Metrics::get().count_error("invalid_field");
    return send(sio::encode_connect_error("/", "Authentication error: token must be a string", "invalid_field"));
  }
  if (given && given->is_string() && !given->get_string().empty()) {
    token = given->get_string();
  } else if (!handshake_token_) {
    Metrics::get().count_error("conflicting_tokens");
    return send(sio::encode_connect_error(
        "/", "Authentication error: the ?token= and Authorization: Bearer tokens differ; send one",
        "conflicting_tokens"));
  } else {
    token = *handshake_token_;
  }
  if (token.empty()) {
    // The code of a missing token over REST and the native WebSocket: clients
    // tell "sign in" from "try again" by the codes of the one table.
    Metrics::get().count_error("unauthorized");
    return send(
        sio::encode_connect_error("/", "Authentication error: token missing (send auth: {token})", "unauthorized"));
  }
  // `catch_up: false`: a client that keeps each thread's position itself and
  // subscribes on connect asks for no replay of the server's guess, which
  // could send newer messages before the older ones it asks for.
  catch_up_ = true;
  if (const json::value* c = p.data.is_object() ? p.data.get_object().if_contains("catch_up") : nullptr) {
    if (!c->is_bool()) {
      Metrics::get().count_error("invalid_field");
      return send(sio::encode_connect_error("/", "catch_up must be true or false", "invalid_field"));
    }
    catch_up_ = c->get_bool();
  }
  // Threads to replay from the client's own positions, begun before any
  // live message reaches the session (as the native `auth` frame's).
  auto subscribes =
      parse_subscribe_list(p.data.is_object() ? p.data.get_object().if_contains("subscribe") : nullptr,
                           /*keep_request_ids=*/false);
  if (!subscribes) {
    Metrics::get().count_error(subscribes.error().code);
    return send(sio::encode_connect_error("/", subscribes.error().message, subscribes.error().code));
  }
  // The client's change mark: edits and deletions it missed come after the connect.
  std::optional<int64_t> changes_after;
  if (p.data.is_object()) {
    auto after = parse_changes_after(p.data.get_object());
    if (!after) {
      Metrics::get().count_error(after.error().code);
      return send(sio::encode_connect_error("/", after.error().message, after.error().code));
    }
    changes_after = *after;
  }
  connecting_ = true;
  // Verifying may provision a user (a write): off the loop.
  auto self = shared_from_this();
  ctx_.workers.submit([self, token = std::move(token), subscribes = std::move(*subscribes), changes_after]() mutable {
    auto user = self->ctx_.chat.authenticate(token);
    self->post([self, user = std::move(user), subscribes = std::move(subscribes), changes_after]() mutable {
      self->connecting_ = false;
      if (self->closed_) return;
      if (!user) {
        Metrics::get().count_error(user.error().code);
        return self->send(
            sio::encode_connect_error("/", "Authentication error: " + user.error().message, user.error().code));
      }
      self->connected(std::move(*user), std::move(subscribes), changes_after);
    });
  });
}

// CONNECT is answered once the per-user limit has: a refused session gets
// CONNECT_ERROR (`connect_error` on the client, as for a bad token), never a
// `connect` it would lose a moment later.
void SocketIoSession::connected(Authenticated user, std::vector<ClientFrame> subscribes,
                                std::optional<int64_t> changes_after) {
  conn_ = std::make_shared<Connection>(ctx_, weak_from_this(), socketio_encoder());
  std::string user_id = user.user.id;
  std::weak_ptr<SocketIoSession> weak = weak_from_this();
  conn_->on_admission([weak, user_id](Connection::AdmissionStep step) {
    auto self = weak.lock();
    if (!self) return;
    switch (step) {
      case Connection::AdmissionStep::kAdmitted:
        self->admitted_ = true;
        return self->send(sio::encode_connect(self->conn_->session_id()));
      case Connection::AdmissionStep::kEstablished: return self->established(user_id);
      case Connection::AdmissionStep::kRefused: return self->refused();
    }
  });
  conn_->on_open(std::move(user), std::move(subscribes), changes_after);
}

// Past the per-user limit. The session stays, as after any CONNECT_ERROR,
// until the connect deadline, and may CONNECT again. (The connection calling
// this holds itself alive until it returns.)
void SocketIoSession::refused() {
  Metrics::get().count_error("too_many_connections");
  auto conn = std::move(conn_);
  spdlog::info("event=sio_connect_refused session_id={} reason=too_many_connections", conn->session_id());
  send(sio::encode_connect_error("/", "too many connections for this user", "too_many_connections"));
  conn->on_close();
}

// The connection is authenticated and within the per-user limit.
void SocketIoSession::established(const std::string& user_id) {
  established_ = true;
  spdlog::debug("event=sio_connected session_id={} user_id={}", conn_->session_id(), user_id);
  int64_t now = now_micros();
  send(sio::encode_event("connection_success", json::serialize(json::object{{"userId", user_id}})));
  uint64_t test_ack = socketio_encoder().next_ack_id();
  remember_ack(test_ack);
  send(sio::encode_event("test_message",
                         json::serialize(json::object{{"message", "connected to Parley"},
                                                      {"timestamp", iso8601_millis(now)}}),
                         test_ack));
  send_ping_event(now / 1000);
  if (!catch_up_) return;
  conn_->hold_live();
  catch_up();
}

// A test hook's milliseconds from the environment (0 without it).
static int env_ms(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : 0;
}

// The Socket.IO system's clients expect what they missed to arrive when they
// connect: every thread with unread messages from others is replayed from
// past what this user acknowledged (delivered) or read, oldest first, and
// so is the end of a membership that ended while they were away
// (ChatService::catch_up_positions).
void SocketIoSession::catch_up() {
  auto self = shared_from_this();
  std::string user_id = conn_->user_id();
  // Tests only: the catch-up waits this long before (READ_PAUSE) and after
  // reading the positions, so that sends made at connect are stored before
  // the read, or answered while live delivery is held.
  static const int pause_ms = env_ms("PARLEY_TEST_SIO_CATCH_UP_PAUSE_MS");
  static const int read_pause_ms = env_ms("PARLEY_TEST_SIO_CATCH_UP_READ_PAUSE_MS");
  ctx_.workers.submit([self, user_id] {
    if (read_pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(read_pause_ms));
    // Live delivery is held until catch_up() runs: it must run even when the
    // store cannot answer now (then there is nothing to replay).
    auto positions = self->ctx_.chat.catch_up_positions(user_id);
    if (pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
    std::vector<std::pair<std::string, int64_t>> behind;
    if (positions) behind = std::move(*positions);
    self->post([self, behind = std::move(behind)] {
      if (self->closed_ || !self->conn_) return;
      self->conn_->catch_up(behind);
    });
  });
}

void SocketIoSession::send_ping_event(int64_t now_ms) {
  next_ping_ms_ = now_ms + kPingEventIntervalMs;
  uint64_t id = socketio_encoder().next_ack_id();
  remember_ack(id);
  send(sio::encode_event("ping", json::serialize(json::object{{"timestamp", iso8601_millis(now_ms * 1000)}}), id));
}

void SocketIoSession::remember_ack(uint64_t id) {
  for (uint64_t& pending : pending_acks_) {
    if (pending == 0) {
      pending = id;
      return;
    }
  }
  pending_acks_[next_ack_slot_] = id;
  next_ack_slot_ = (next_ack_slot_ + 1) % pending_acks_.size();
}

void SocketIoSession::on_event(sio::SioPacket p) {
  if (p.nsp != "/") return;  // no other namespace is ever connected
  if (!conn_) return close(CloseReason::kPolicy, "event before CONNECT");
  json::value request = p.id ? json::value(*p.id) : json::value(nullptr);
  if (p.type == sio::SioType::kBinaryEvent)
    return conn_->on_bad_frame(bad_input("binary_not_supported", "binary events are not supported; send JSON"),
                               request);
  if (p.data_error) return conn_->on_bad_frame(*p.data_error, request);
  const json::array& args = p.data.get_array();
  if (!args[0].is_string())
    return conn_->on_bad_frame(bad_input("unknown_type", "event names are strings"), request);
  std::string_view name = args[0].get_string();
  auto type = client_type(name);
  if (!type)
    return conn_->on_bad_frame(bad_input("unknown_type", "unknown event: " + std::string(utf8_prefix(name, 64))),
                               request);
  static const json::object kNoFields;
  const json::object* fields = &kNoFields;
  if (args.size() > 1 && !args[1].is_null()) {
    if (!args[1].is_object())
      return conn_->on_bad_frame(bad_input("invalid_json", "the event's argument must be an object"), request);
    fields = &args[1].get_object();
  }
  ParsedFrame parsed = parse_client_fields(*type, *fields);
  if (parsed.error) return conn_->on_bad_frame(*parsed.error, request);
  parsed.frame.request_id = std::move(request);
  conn_->on_frame(std::move(parsed.frame));
}

// The client answered one of our events. For new_message, its ack is the
// delivery receipt (message_received).
void SocketIoSession::on_ack(const sio::SioPacket& p) {
  if (!conn_ || !p.id || p.nsp != "/") return;
  for (uint64_t& pending : pending_acks_) {
    if (pending == *p.id) {
      pending = 0;
      return;
    }
  }
  auto message = socketio_encoder().message_for_ack(*p.id);
  if (!message) return;
  // An ack counts only for a message this session was sent: not one from
  // before a restart (thread numbers are the process's), nor a forged one
  // (which would tell of threads by its error).
  if (!conn_->was_sent(message->thread_id, message->seq)) return;
  if (!send_receipt(*message)) return defer_receipt(std::move(*message));
  std::erase_if(deferred_receipts_, [&](const SocketIoEncoder::Acked& d) {
    return d.thread_id == message->thread_id && d.seq <= message->seq;
  });
}

// Dispatches the receipt unless the rate limit refuses it (false).
bool SocketIoSession::send_receipt(const SocketIoEncoder::Acked& message) {
  ClientFrame f;
  f.type = ClientType::kMessageReceived;
  f.message_id = message.message_id;
  if (f.message_id.empty()) {  // the ack id named the message by its place
    f.thread_id = message.thread_id;
    f.up_to_seq = message.seq;
  }
  return conn_->on_requested_receipt(std::move(f));
}

// Past the rate limit (a catch-up longer than the burst, each message
// acked), the newest refused receipt of each thread waits for a tick; the
// earlier ones of the thread are covered by it. One that went through covers
// what waited in its thread.
void SocketIoSession::defer_receipt(SocketIoEncoder::Acked message) {
  for (auto& d : deferred_receipts_) {
    if (d.thread_id != message.thread_id) continue;
    if (message.seq > d.seq) d = std::move(message);
    return;
  }
  if (deferred_receipts_.size() < kMaxDeferredReceipts) deferred_receipts_.push_back(std::move(message));
}

void SocketIoSession::send_deferred_receipts() {
  size_t sent = 0;
  while (sent < deferred_receipts_.size() && !conn_->closed() && send_receipt(deferred_receipts_[sent])) ++sent;
  deferred_receipts_.erase(deferred_receipts_.begin(), deferred_receipts_.begin() + static_cast<ptrdiff_t>(sent));
}

void SocketIoSession::on_tick(int64_t now_ms) {
  if (closed_) return;
  if (!conn_) return check_connect_deadline(now_ms);
  conn_->on_tick(now_ms);
  if (!deferred_receipts_.empty()) send_deferred_receipts();
  // Not before the CONNECT is answered (with Redis, admission takes a round trip).
  if (established_ && !conn_->closed() && now_ms >= next_ping_ms_) send_ping_event(now_ms);
}

// The reference server's connectTimeout, with the native `auth` frame's
// deadline: a session with no CONNECT accepted by then (none came, or each
// got CONNECT_ERROR) is closed. Answering pings would otherwise keep it open
// for good. One being checked (connecting_) gets its answer first.
void SocketIoSession::check_connect_deadline(int64_t now_ms) {
  if (connecting_ || now_ms <= connect_deadline_ms_) return;
  static LogThrottle throttle;  // as sio_bad_packet
  if (auto held_back = throttle.admit())
    spdlog::info("event=sio_connect_timeout remote={} suppressed={}", remote_address(), *held_back);
  close(CloseReason::kAuthTimeout, "no Socket.IO CONNECT in time");
}

void SocketIoSession::on_close() {
  if (closed_) return;
  closed_ = true;
  if (conn_) conn_->on_close();
}

// ---------------------------------------------------------------- outbound

void SocketIoSession::send(std::string packet) {
  if (closed_) return;
  send_text(std::make_shared<const Frame>(std::move(packet)));
}

void SocketIoSession::send_text(FramePtr frame) {
  if (auto e = engine_.lock()) e->send_text(std::move(frame));
}

// Refusals the client must not answer by reconnecting at once get a
// DISCONNECT first ("io server disconnect" on the client). An expired token
// does not: socket.io-client then reconnects by itself, and an `auth`
// given as a function hands it a fresh token (a stale one gets
// CONNECT_ERROR token_expired, after which the client stops).
void SocketIoSession::close(CloseReason reason, std::string text) {
  auto e = engine_.lock();
  if (!e) return;
  if (reason == CloseReason::kUnauthorized || reason == CloseReason::kForbidden)
    e->send_text(std::make_shared<const Frame>(sio::encode_disconnect()));
  e->close(reason, std::move(text));
}

void SocketIoSession::post(std::function<void()> fn) {
  if (auto e = engine_.lock()) e->post(std::move(fn));
}

void SocketIoSession::schedule(std::chrono::milliseconds delay, std::function<void()> fn) {
  if (auto e = engine_.lock()) e->schedule(delay, std::move(fn));
}

const std::string& SocketIoSession::remote_address() const {
  static const std::string kGone = "unknown";
  auto e = engine_.lock();
  return e ? e->remote_address() : kGone;
}

size_t SocketIoSession::queued_bytes() const {
  auto e = engine_.lock();
  return e ? e->queued_bytes() : 0;
}

}  // namespace parley
