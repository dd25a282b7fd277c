// SocketIoSession: Socket.IO v5 on the main namespace over one Engine.IO
// session (CONTRACT.md section 7). It reads Socket.IO packets, authenticates
// the CONNECT with its {token}, and turns each EVENT into the ClientFrame of
// the native frame of the same name, which a Connection (the same chat
// protocol as the WebSocket JSON one, writing through the Socket.IO encoder)
// handles: no chat rule lives here. What is Socket.IO's own is here: the
// connect events (connection_success, test_message), the server's `ping`
// event every 25 s, acks of new_message as delivery receipts, DISCONNECT.
//
// Threading: created, fed and closed on its Engine.IO session's loop; the
// token check runs on the worker pool. Lifetime: shared_ptr, owned by the
// Engine.IO session and by in-flight work; it holds the engine weakly. It is
// the Connection's Transport, forwarding to the engine, so that closing the
// connection says DISCONNECT first where the client must not reconnect.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api/connection.h"
#include "api/transport.h"
#include "protocol/socketio.h"
#include "protocol/socketio_encoder.h"

namespace parley {

class SocketIoSession final : public TransportListener,
                              public Transport,
                              public std::enable_shared_from_this<SocketIoSession> {
 public:
  // `handshake_token`: what the Engine.IO handshake request carried as
  // `?token=` or `Authorization: Bearer` ("" nothing, nullopt two that
  // differ), for a CONNECT whose auth payload has no token.
  SocketIoSession(ConnectionContext ctx, std::weak_ptr<Transport> engine,
                  std::optional<std::string> handshake_token);

  // TransportListener: `text` is a Socket.IO packet (Engine.IO's "4" removed).
  void on_text(std::string_view text) override;
  void on_binary(std::string_view data) override;
  bool on_text_too_large(std::string_view head) override;
  void on_text_while_draining(std::string_view head) override;
  void on_tick(int64_t now_ms) override;
  void on_close() override;
  // A CONNECT was accepted (authenticated, within the user's limit).
  bool connected() const { return established_; }

  // Transport, for the Connection.
  void send_text(FramePtr frame) override;
  void close(CloseReason reason, std::string text) override;
  void post(std::function<void()> fn) override;
  void schedule(std::chrono::milliseconds delay, std::function<void()> fn) override;
  const std::string& remote_address() const override;
  size_t queued_bytes() const override;

 private:
  void on_connect(const sio::SioPacket& packet);
  void connected(Authenticated user, std::vector<ClientFrame> subscribes, std::optional<int64_t> changes_after);
  void established(const std::string& user_id);
  void refused();
  void on_event(sio::SioPacket packet);
  void on_ack(const sio::SioPacket& packet);
  bool send_receipt(const SocketIoEncoder::Acked& message);
  void check_connect_deadline(int64_t now_ms);
  void send_ping_event(int64_t now_ms);
  void catch_up();
  void send(std::string packet);

  ConnectionContext ctx_;
  std::weak_ptr<Transport> engine_;
  std::shared_ptr<Connection> conn_;
  std::optional<std::string> handshake_token_;
  bool connecting_ = false;
  bool admitted_ = false;     // conn_'s CONNECT was answered
  bool established_ = false;  // a CONNECT was accepted once
  bool catch_up_ = true;      // replay what the user missed on connect (CONNECT's `catch_up`)
  bool closed_ = false;
  // Binary packets announced by BINARY_EVENT / BINARY_ACK headers and not
  // come yet: each is dropped as it comes; one nobody announced ends the
  // session, as the reference server's parser does.
  uint32_t attachments_owed_ = 0;
  int64_t next_ping_ms_ = 0;
  int64_t connect_deadline_ms_;  // no Connection by then: closed
  // Ack ids of our own events (ping, test_message) still unanswered (0 = a
  // free slot; ids start at 1). Their acks are only liveness, so the oldest is
  // overwritten when all are taken: a forgotten id's ack names no message and
  // is dropped all the same. Inline, not a hash set, whose buckets would stay
  // allocated on every idle connection.
  void remember_ack(uint64_t id);
  std::array<uint64_t, 4> pending_acks_{};
  uint8_t next_ack_slot_ = 0;
  // Receipts that found no token left: the newest per thread, retried on
  // each tick (a receipt covers its thread's earlier messages). Bounded by
  // kMaxDeferredReceipts threads; past it the rest replays on the next connect.
  void defer_receipt(SocketIoEncoder::Acked message);
  void send_deferred_receipts();
  static constexpr size_t kMaxDeferredReceipts = 256;
  std::vector<SocketIoEncoder::Acked> deferred_receipts_;
};

}  // namespace parley
