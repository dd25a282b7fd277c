// Connection: the WebSocket protocol of CONTRACT.md section 4 for one client,
// independent of the transport. It authenticates, rate-limits, parses frames,
// calls the chat service and sends replies; as a ClientSession it receives
// fan-out from its loop's Hub and keeps per-thread delivery cursors so each
// message reaches it once and replays stay in order.
//
// Threading: created, fed and closed on its transport's loop thread. Blocking
// chat calls run on the worker pool and come back to the loop via the
// transport's post(). Lifetime: shared_ptr, kept alive by the transport and by
// in-flight work; it holds its transport weakly.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "api/transport.h"
#include "chat/chat_service.h"
#include "chat/delivery_cursor.h"
#include "chat/hub.h"
#include "chat/session.h"
#include "common/thread_pool.h"
#include "protocol/client_frame.h"

namespace parley {

struct ConnectionContext {
  ChatService& chat;
  ThreadPool& workers;
  Hub& hub;
};

class Connection final : public ClientSession, public std::enable_shared_from_this<Connection> {
 public:
  Connection(ConnectionContext ctx, std::weak_ptr<Transport> transport);
  ~Connection() override;

  // The transport is open. `user` is set when the upgrade carried a valid token.
  void on_open(std::optional<User> user, std::string token);
  void on_text(std::string_view text);
  void on_binary();
  void on_close();
  // About once a second, from the loop: the auth deadline and token expiry.
  void on_tick(int64_t now_ms);

  // ClientSession
  const std::string& session_id() const override { return session_id_; }
  const std::string& user_id() const override { return user_.id; }
  void deliver(const BusEvent& event) override;
  void excluded(const BusEvent& event) override;
  void resync() override;

 private:
  void authenticated(User user, const std::string& token, const boost::json::value& request_id);
  void handle(ClientFrame frame);
  void on_auth_frame(ClientFrame frame);
  void on_send(ClientFrame frame);
  void on_subscribe(ClientFrame frame);
  void reply_thread_state(std::string_view type, ClientFrame frame);
  struct Replay;
  void replay_read(std::shared_ptr<Replay> replay);
  void replay_send(std::shared_ptr<Replay> replay);
  void replay_end(std::shared_ptr<Replay> replay, int64_t replayed_up_to);
  // Reads the thread's messages after `from` from the store to fill a gap the
  // bus left (DeliveryCursor began it).
  void fill_gap(const std::string& thread_id, int64_t from);
  void deliver_live(const BusEvent& event, const FramePtr& frame);
  void on_mark_read(ClientFrame frame);
  void on_join_chat(ClientFrame frame);
  void on_relay(ClientFrame frame, std::string_view type);
  void on_typing(ClientFrame frame);
  void stop_typing(const std::string& thread_id);
  void on_delivered(ClientFrame frame);
  bool take_token();

  void send(std::string frame);
  void send(FramePtr frame);
  void send_error(const Error& error, const boost::json::value& request_id);
  void close(uint16_t code, std::string reason);
  // Runs fn(self) on a worker, then its result on the loop.
  void off_loop(std::function<std::function<void()>()> work);

  ConnectionContext ctx_;
  std::weak_ptr<Transport> transport_;
  std::string session_id_;
  User user_;
  bool authed_ = false;
  bool registered_ = false;
  bool closed_ = false;
  int64_t token_exp_ = 0;     // seconds since epoch; 0 = none
  int64_t auth_deadline_ms_ = 0;
  DeliveryCursor cursor_;
  // Threads this connection is typing in, with the generation of the timer
  // that will stop it (a newer `typing` bumps it).
  std::unordered_map<std::string, uint64_t> typing_;
  uint64_t typing_generation_ = 0;
  // Token bucket for client frames.
  double tokens_;
  int64_t refilled_at_us_;
  int strikes_ = 0;
};

}  // namespace parley
