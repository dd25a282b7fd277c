// Engine.IO v4 sessions (see engineio.h): the transport switch between
// long-polling and a WebSocket, pings, and the registry of sids.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "api/socketio_session.h"
#include "auth/address_block.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "net/engineio.h"
#include "net/ws_out_queue.h"

namespace parley::net {

namespace {

int64_t now_ms() { return now_micros() / 1000; }
// For Registry::bury's ends: never moved back by a clock step.
int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Shutdown: how long a polling session waits for its next poll to carry the close packet.
constexpr int64_t kShutdownPollWaitMs = 2000;
// How much of a packet over the frame limit its listener sees: enough for a
// Socket.IO header (type, namespace, ack id of up to 15 digits).
constexpr size_t kTooLargeHead = 256;

// An Engine.IO WebSocket reads messages up to maxPayload whole, as a
// polling POST may carry them: a packet over the frame limit is then
// refused by its listener, not the connection closed under the packets
// after it (EioSession::on_packet).
uint64_t ws_message_limit(const LoopContext& loop) {
  return std::max<uint64_t>(loop.config.limits.max_frame_bytes, loop.config.socketio.max_payload);
}

class EioSession;

// Which loop owns each session. Any thread; a lookup is one short lock.
class Registry {
 public:
  struct Entry {
    LoopContext* loop = nullptr;
    std::shared_ptr<EioSession> session;
  };
  void add(const std::string& sid, Entry e) {
    std::lock_guard lock(mu_);
    map_[sid] = std::move(e);
  }
  void remove(const std::string& sid) {
    std::lock_guard lock(mu_);
    map_.erase(sid);
  }
  std::optional<Entry> find(const std::string& sid) {
    std::lock_guard lock(mu_);
    auto it = map_.find(sid);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }
  // The sids of polling sessions closed lately. A client may have a POST in
  // flight when its poll brings the close packet, and socket.io-client
  // follows its own DISCONNECT with an Engine.IO close in a second POST:
  // answering those 400 (unknown sid) shows an error in the browser's
  // console and, when it reaches the client before the close, turns a close
  // into "transport error". Kept until `until_ms`: the sessions closed at
  // shutdown until the process exits, those closed on the client's
  // DISCONNECT for kBuriedMs. Others answer unknown sid, as the reference
  // server does.
  void bury(const std::string& sid, int64_t until_ms, int64_t now) {
    std::lock_guard lock(mu_);
    while (!burials_.empty() && burials_.front().first <= now) {
      auto it = buried_.find(burials_.front().second);
      if (it != buried_.end() && it->second <= now) buried_.erase(it);
      burials_.pop_front();
    }
    buried_[sid] = until_ms;
    if (until_ms != INT64_MAX) burials_.emplace_back(until_ms, sid);
  }
  bool buried(const std::string& sid, int64_t now) {
    std::lock_guard lock(mu_);
    auto it = buried_.find(sid);
    return it != buried_.end() && it->second > now;
  }
  // Polling sessions not yet connected (no Socket.IO CONNECT accepted), per
  // address block. Each one costs memory until its connect deadline with no
  // socket held open, so without a bound one client could open them without
  // end. False (and nothing held) when `block` already has `cap`.
  bool hold_pending(const std::string& block, int cap) {
    std::lock_guard lock(mu_);
    int& n = pending_[block];
    if (n >= cap) {
      if (n == 0) pending_.erase(block);
      return false;
    }
    ++n;
    return true;
  }
  void release_pending(const std::string& block) {
    std::lock_guard lock(mu_);
    auto it = pending_.find(block);
    if (it != pending_.end() && --it->second <= 0) pending_.erase(it);
  }
  // Takes out the entries of `loop`'s sessions; the caller drops them
  // outside the lock (a session's destructor may take it).
  std::vector<Entry> take_loop(const LoopContext* loop) {
    std::vector<Entry> out;
    std::lock_guard lock(mu_);
    for (auto it = map_.begin(); it != map_.end();) {
      if (it->second.loop == loop) {
        out.push_back(std::move(it->second));
        it = map_.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, Entry> map_;
  std::unordered_map<std::string, int64_t> buried_;        // sid -> until (ms)
  std::deque<std::pair<int64_t, std::string>> burials_;    // those with an end, in the order they end
  std::unordered_map<std::string, int> pending_;
};

// How long the sid of a polling session its client disconnected is answered as closed (Registry::bury).
constexpr int64_t kBuriedMs = 10000;

// A request for a session closed lately (Registry::bury): a POST is
// answered "ok" and its packets dropped (the session is gone, nothing in them
// was acknowledged), a poll gets the close packet again.
void answer_buried(bool post, const EioRespond& respond) {
  if (post) return respond(200, "text/html", "ok");
  respond(200, "text/plain; charset=UTF-8", std::string(1, sio::kClose));
}

Registry& registry() {
  static Registry r;
  return r;
}

// One Engine.IO session. Loop thread only (its owner loop), but for the
// registry entry. Owned by the registry while open (a session that began on
// polling), by its WebSocket's listener, and by in-flight work. A session that
// began on a WebSocket is that WebSocket's listener itself and has no registry
// entry: no polling request or probe can join it (the reference server refuses
// those too), and an idle connection costs two objects less.
class EioSession final : public Transport,
                         public TransportListener,
                         public Sweepable,
                         public Flushable,
                         public std::enable_shared_from_this<EioSession> {
 public:
  EioSession(LoopContext& loop, std::string remote)
      : loop_(loop),
        sid_(loop.poll_forwarder ? node_sid(loop.poll_forwarder->node_id(), new_uuid()) : new_uuid()),
        remote_(std::move(remote)) {}
  ~EioSession() override {
    if (listed_) loop_.sessions.remove(this);
    settle();
  }

  // The session counts as pending under `block` (Registry::hold_pending)
  // until it is connected or closed.
  void count_pending(std::string block) { pending_block_ = std::move(block); }

  const std::string& sid() const { return sid_; }

  // Registers the session and the Socket.IO session above it.
  void start(bool websocket, HandshakeToken token) {
    mode_ = websocket ? Mode::kWebSocket : Mode::kPolling;
    next_ping_ms_ = now_ms() + loop_.config.socketio.ping_interval_ms;
    up_ = std::make_shared<SocketIoSession>(ConnectionContext{loop_.chat, loop_.workers, loop_.hub}, weak_from_this(),
                                            std::move(token));
    registered_ = !websocket;
    if (registered_) registry().add(sid_, {&loop_, shared_from_this()});
    loop_.sessions.add(this);
    listed_ = true;
    spdlog::debug("event=eio_open sid={} transport={} remote={}", sid_, websocket ? "websocket" : "polling", remote_);
  }

  std::string open_packet(bool can_upgrade) const {
    const auto& c = loop_.config.socketio;
    return sio::encode_open(sid_, can_upgrade, c.ping_interval_ms, c.ping_timeout_ms, c.max_payload);
  }

  // ---------------------------------------------------------------- polling

  void on_poll(EioRespond respond) {
    if (mode_ == Mode::kClosed) return respond_error(respond, sio::EioError::kUnknownSid);
    if (mode_ == Mode::kWebSocket) return respond_error(respond, sio::EioError::kBadRequest);
    if (poll_) {
      // As the reference server: overlapping polls end the session.
      respond(400, "text/plain", "");
      return close_now("overlapping polls");
    }
    poll_ = std::move(respond);
    // Closing (close_after_queue): what is still queued first, the close packet in a poll of its own.
    if (closing_) return queue_.empty() ? close_now(close_why_) : answer_poll();
    // During an upgrade the poll is answered at once (a noop if nothing is
    // queued), so the client can pause polling and finish the upgrade.
    if (!queue_.empty() || mode_ == Mode::kUpgrading) answer_poll();
  }

  // See eio_poll_abandoned. After an upgrade the poll was only the noop
  // that let the client switch: the WebSocket carries the session.
  void on_poll_abandoned() {
    if (mode_ == Mode::kClosed || mode_ == Mode::kWebSocket) return;
    close_now("the long poll's connection closed");
  }

  void on_post(std::string_view body, const EioRespond& respond) {
    if (mode_ == Mode::kClosed) return respond_error(respond, sio::EioError::kUnknownSid);
    if (mode_ == Mode::kWebSocket) return respond_error(respond, sio::EioError::kBadRequest);
    auto packets = sio::split_payload(body);
    if (!packets) {
      respond_error(respond, sio::EioError::kBadRequest);
      return close_now("malformed polling payload");
    }
    respond(200, "text/html", "ok");
    for (std::string_view p : *packets) {
      if (mode_ == Mode::kClosed) break;
      on_packet(p);
    }
  }

  // ---------------------------------------------------------------- websocket

  // A WebSocket for this session: the only transport (direct), or a probe
  // that becomes it after the upgrade.
  void attach_websocket(std::weak_ptr<Transport> ws, const void* id) {
    if (mode_ == Mode::kWebSocket && !ws_id_) {
      ws_ = std::move(ws);
      ws_id_ = id;
      return;
    }
    if (probe_id_ || mode_ != Mode::kPolling || closing_) {
      if (auto t = ws.lock()) t->close(CloseReason::kPolicy, "upgrade not possible");
      return;
    }
    probe_ = std::move(ws);
    probe_id_ = id;
    // As the reference server: a probe that does not finish the upgrade in
    // time is dropped, and the session stays on polling.
    probe_deadline_ms_ = now_ms() + loop_.config.socketio.ping_timeout_ms;
  }

  void on_ws_text(const void* id, std::string_view text) {
    if (mode_ == Mode::kClosed) return;
    if (id == ws_id_) return on_packet(text);
    if (id != probe_id_) return;
    auto probe = probe_.lock();
    if (!probe) return;
    if (text == "2probe") {
      probe->send_text(std::make_shared<const Frame>("3probe"));
      mode_ = Mode::kUpgrading;
      if (poll_) answer_poll();
    } else if (text == "5" && (mode_ == Mode::kUpgrading || mode_ == Mode::kPolling)) {
      // Without a probe first too, as the reference server takes it.
      // Upgraded: what is queued and every packet from now on go over the WebSocket.
      mode_ = Mode::kWebSocket;
      ws_ = std::move(probe_);
      ws_id_ = probe_id_;
      probe_id_ = nullptr;
      if (poll_) {
        auto poll = std::move(poll_);
        poll_ = nullptr;
        poll(200, "text/plain; charset=UTF-8", "6");
      }
      auto queue = std::move(queue_);
      queue_.clear();
      queued_bytes_ = 0;
      for (auto& f : queue) probe->send_text(std::move(f));
      spdlog::debug("event=eio_upgraded sid={}", sid_);
      if (closing_) close_now(close_why_);  // the WebSocket's close follows what was queued
    } else {
      drop_probe("unexpected packet during the upgrade");
    }
  }

  // A binary message over the session's WebSocket: an attachment of a
  // Socket.IO binary packet, or a stray one (which ends the session). One on
  // the probe is ignored, as the reference server does.
  void on_ws_binary(const void* id, std::string_view data) {
    if (mode_ == Mode::kClosed || id != ws_id_) return;
    if (up_) up_->on_binary(data);
  }

  // A message its WebSocket got while the server drains, of which `head` is
  // the start: refused, whatever this loop has heard of the drain yet (a
  // WebSocket on another loop may drain first). Other packets are short: the
  // head is all of them.
  void on_ws_text_while_draining(const void* id, std::string_view head) {
    if (mode_ == Mode::kClosed) return;
    if (id == ws_id_ && !head.empty() && head[0] == sio::kMessage) {
      if (up_) up_->on_text_while_draining(head.substr(1));
      return;
    }
    on_ws_text(id, head);
  }

  // The probe has had 3probe and the client is to send 5 on it: at a
  // shutdown, what is queued goes there then (close_after_queue), and the
  // session closes it, by its deadline at the latest.
  bool upgrading_on(const void* id) const { return id == probe_id_ && mode_ == Mode::kUpgrading; }

  void drop_probe(std::string_view why) {
    auto probe = probe_.lock();
    probe_id_ = nullptr;
    probe_.reset();
    if (mode_ == Mode::kUpgrading) mode_ = Mode::kPolling;
    if (probe) probe->close(CloseReason::kPolicy, std::string(why));
  }

  void on_ws_closed(const void* id) {
    if (id == probe_id_) {
      probe_id_ = nullptr;
      probe_.reset();
      if (mode_ == Mode::kUpgrading) mode_ = Mode::kPolling;
      return;
    }
    if (id == ws_id_) close_now("transport close");
  }

  // ---------------------------------------------------------------- TransportListener
  // Only for a session that began on its WebSocket (see attach_websocket).

  void on_text(std::string_view text) override { on_ws_text(ws_id_, text); }
  void on_text_while_draining(std::string_view head) override { on_ws_text_while_draining(ws_id_, head); }
  void on_binary(std::string_view data) override { on_ws_binary(ws_id_, data); }
  void on_tick(int64_t) override {}
  void on_close() override { on_ws_closed(ws_id_); }

  // ---------------------------------------------------------------- Transport

  void send_text(FramePtr frame) override {
    // Closing: what was queued before the close goes out, nothing after it
    // (a disabled account must not get the thread's next messages by polling).
    if (mode_ == Mode::kClosed || closing_) return;
    if (mode_ == Mode::kWebSocket) {
      if (auto ws = ws_.lock()) ws->send_text(std::move(frame));
      return;
    }
    queued_bytes_ += frame->size() + ws::kQueuedFrameCost;  // a flood of tiny packets is bounded too
    if (queued_bytes_ > loop_.config.limits.max_outbound_bytes) {
      Metrics::get().slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("event=slow_consumer_disconnect sid={} queued_bytes={}", sid_, queued_bytes_);
      return close_now("slow consumer");
    }
    queue_.push_back(std::move(frame));
    if (poll_ && !flush_pending_) {
      flush_pending_ = true;
      loop_.schedule_flush(shared_from_this());
    }
  }

  // A server-side close (a refused connection, an expired token…): the
  // client gets what was queued before it (the `error` event, DISCONNECT),
  // polling or not. A client that stops polling is given the ping timeout,
  // as it would be on an open session.
  void close(CloseReason reason, std::string text) override {
    // kNormal: the client's own DISCONNECT, which socket.io-client follows
    // with an Engine.IO close in another POST (Registry::bury).
    if (reason == CloseReason::kNormal) client_disconnected_ = true;
    // Closed for want of a CONNECT: its place in the per-address bound goes
    // now, not after the ping timeout a poll has to collect the close (a
    // burst of handshakes from one school's address kept its next users out
    // for 30 s, not the 10 s documented). Only then: such closes come at
    // most one per place per 10 s, so at most (ping timeout / 10 s) times
    // the bound linger (twice, by default). A close the client can ask for
    // at once (a DISCONNECT, a bad packet) keeps its place until the session
    // is gone, or a client could open sessions as fast as it can send.
    if (reason == CloseReason::kAuthTimeout) settle();
    close_after_queue(text, loop_.config.socketio.ping_timeout_ms);
  }

  void post(std::function<void()> fn) override { asio::post(loop_.io, std::move(fn)); }

  // Upgraded, through the WebSocket's transport (its timers run on this
  // loop too): one on another loop reads that WebSocket's queue again before
  // fn runs, and a paced replay waits on exactly that (queued_bytes()).
  void schedule(std::chrono::milliseconds delay, std::function<void()> fn) override {
    if (mode_ == Mode::kWebSocket)
      if (auto ws = ws_.lock()) return ws->schedule(delay, std::move(fn));
    auto timer = std::make_shared<asio::steady_timer>(loop_.io, delay);
    timer->async_wait([timer, fn = std::move(fn)](boost::system::error_code ec) {
      if (!ec) fn();
    });
  }

  const std::string& remote_address() const override { return remote_; }

  size_t queued_bytes() const override {
    // Closing takes nothing more (send_text): as full, so that a paced replay
    // waits instead of reading the whole backlog only to have it dropped.
    if (closing_) return loop_.config.limits.max_outbound_bytes + 1;
    if (mode_ == Mode::kWebSocket)
      if (auto ws = ws_.lock()) return ws->queued_bytes();
    return queued_bytes_;
  }

  // Flushable: a burst of packets queued while a poll waits goes out as one answer.
  void flush() override {
    flush_pending_ = false;
    if (poll_ && !queue_.empty()) answer_poll();
  }

  // Sweepable: pings, the pong deadline, and the ticks of the session above.
  void on_sweep(int64_t now) override {
    if (mode_ == Mode::kClosed) return;
    if (closing_) {
      // No pings, no ticks above: the session is only waiting to hand over its close.
      if (now > close_deadline_ms_) close_now("no poll came for the close packet");
      return;
    }
    if (pong_deadline_ms_ && now > pong_deadline_ms_) {
      spdlog::info("event=eio_ping_timeout sid={}", sid_);
      return close_now("ping timeout");
    }
    if (probe_id_ && now > probe_deadline_ms_) {
      spdlog::info("event=eio_upgrade_timeout sid={}", sid_);
      drop_probe("upgrade timeout");
    }
    // Up to one sweep early: late, the ping would reach the client after
    // pingInterval + pingTimeout with a short timeout, and it would give up.
    if (!pong_deadline_ms_ && now + kSweepIntervalMs > next_ping_ms_) {
      pong_deadline_ms_ = now + loop_.config.socketio.ping_timeout_ms;
      send_text(std::make_shared<const Frame>(std::string(1, sio::kPing)));
    }
    if (up_) up_->on_tick(now);
    if (up_ && up_->connected()) settle();
  }

  void settle() {
    if (pending_block_.empty()) return;
    registry().release_pending(pending_block_);
    pending_block_.clear();
  }

  // Shutdown: an Engine.IO close, not a Socket.IO DISCONNECT. The reference
  // server does the same on close(): socket.io-client then reports
  // "transport close" and reconnects by itself (to another node behind the
  // load balancer), where a DISCONNECT ("io server disconnect") would leave
  // it disconnected until the app calls connect(). A polling client gets
  // what is queued, then the close packet (close_after_queue), within
  // kShutdownPollWaitMs.
  void on_shutdown() override {
    if (mode_ == Mode::kClosed) return;
    if (mode_ == Mode::kWebSocket) {
      send_text(std::make_shared<const Frame>(std::string(1, sio::kClose)));
      if (auto ws = ws_.lock()) ws->close(CloseReason::kGoingAway, "server shutting down");
      return;
    }
    close_after_queue("server shutting down", kShutdownPollWaitMs);
  }

 private:
  enum class Mode { kPolling, kUpgrading, kWebSocket, kClosed };

  void on_packet(std::string_view p) {
    if (p.empty()) {
      // An empty WebSocket text frame (split_payload refuses one in a polling
      // body): no packet type, which the reference server calls a parse error.
      Metrics::get().count_error("invalid_packet");
      return close_now("empty Engine.IO packet");
    }
    // Closing: as on the reference server, what comes in is dropped, but for the client's own close.
    if (closing_ && p[0] != sio::kClose) return;
    switch (p[0]) {
      case sio::kClose: return close_now("client close");
      case sio::kPing:
        // In v4 only the server pings (a probe's "2probe" is answered in
        // on_ws_text). Answering these would let a client that never
        // connects fill its session's queue a "3" at a time: the reference
        // server closes the session ("invalid heartbeat direction").
        Metrics::get().count_error("invalid_packet");
        return close_now("invalid heartbeat direction");
      case sio::kPong:
        pong_deadline_ms_ = 0;
        next_ping_ms_ = now_ms() + loop_.config.socketio.ping_interval_ms;
        return;
      case sio::kMessage:
        // Not taken: the client sends it again after reconnecting. An event
        // with an ack is answered shutting_down, since socket.io-client
        // neither resends it nor calls its callback on the disconnect.
        if (loop_.draining) {
          if (up_) up_->on_text_while_draining(p.substr(1, kTooLargeHead));
          return;
        }
        if (p.size() - 1 > loop_.config.limits.max_frame_bytes) {
          if (up_ && up_->on_text_too_large(p.substr(1, kTooLargeHead))) return;  // counted as it answers
          Metrics::get().count_error("frame_too_large");
          return close_now("message too big");
        }
        if (up_) up_->on_text(p.substr(1));
        return;
      case sio::kUpgrade:
      case sio::kNoop: return;
      case 'b':
        // An attachment as base64 text, on either transport: engine.io-parser
        // takes it so, and clients with forceBase64 (React Native) send it
        // over the WebSocket too.
        if (up_) up_->on_binary(p.substr(1));
        return;
      default:
        Metrics::get().count_error("invalid_packet");
        return close_now("invalid Engine.IO packet");
    }
  }

  void answer_poll() {
    std::string body;
    if (queue_.empty()) {
      body = "6";
    } else {
      size_t total = queue_.size();
      for (const auto& f : queue_) total += f->size();
      body.reserve(total);
      for (size_t i = 0; i < queue_.size(); ++i) {
        if (i) body += sio::kRecordSeparator;
        body += queue_[i]->payload();
      }
    }
    queue_.clear();
    queued_bytes_ = 0;
    auto poll = std::move(poll_);
    poll_ = nullptr;
    poll(200, "text/plain; charset=UTF-8", std::move(body));
  }

  static void respond_error(const EioRespond& respond, sio::EioError e) {
    respond(sio::eio_error_status(e), "application/json", sio::eio_error_body(e));
  }

  // Ends the session once the client has what is queued. Over a WebSocket
  // the close follows the queued frames by itself. Over polling the close
  // packet needs a poll of its own, as the reference server sends it:
  // socket.io-client handles a close packet at once but the Socket.IO
  // packets before it in the same payload a tick later, when the transport
  // is closed and they are dropped (the `error` event and DISCONNECT of a
  // server-side close were lost, and the client reconnected). So the queue
  // goes out in one poll (a waiting one, or the next), the close packet in
  // the one after it; a client that does not poll within wait_ms is closed
  // anyway.
  void close_after_queue(std::string_view why, int64_t wait_ms) {
    if (mode_ == Mode::kClosed) return;
    int64_t deadline = now_ms() + wait_ms;
    if (closing_) {
      close_deadline_ms_ = std::min(close_deadline_ms_, deadline);  // a shutdown does not wait longer
      return;
    }
    if (mode_ == Mode::kWebSocket) return close_now(why);
    // Mid-upgrade (3probe sent) the client has paused polling and waits to
    // send 5 on the probe: the queue goes there then, and the session closes
    // (on_ws_text). A probe not that far is dropped: the client still polls.
    if (probe_id_ && mode_ != Mode::kUpgrading) drop_probe("the session is closing");
    if (poll_ && queue_.empty()) return close_now(why);
    closing_ = true;
    close_why_ = why;
    close_deadline_ms_ = deadline;
    if (poll_) answer_poll();
  }

  // Ends the session now: a waiting poll gets what is queued and the close
  // packet, a WebSocket is closed. The layers above hear of it from the loop
  // a moment later, never from inside this call (the Hub may be iterating).
  void close_now(std::string_view why) {
    if (mode_ == Mode::kClosed) return;
    auto self = shared_from_this();  // the registry may hold the last reference
    spdlog::debug("event=eio_close sid={} reason=\"{}\"", sid_, why);
    Mode was = mode_;
    mode_ = Mode::kClosed;
    if (registered_) {
      registry().remove(sid_);
      const int64_t now = steady_ms();
      if (loop_.draining) registry().bury(sid_, INT64_MAX, now);
      else if (client_disconnected_) registry().bury(sid_, now + kBuriedMs, now);
    }
    settle();
    if (poll_) {
      queue_.push_back(std::make_shared<const Frame>(std::string(1, sio::kClose)));
      answer_poll();
    }
    queue_.clear();
    if (was == Mode::kWebSocket)
      if (auto ws = ws_.lock()) ws->close(CloseReason::kNormal, std::string(why));
    if (auto probe = probe_.lock()) probe->close(CloseReason::kNormal, std::string(why));
    asio::post(loop_.io, [self] { self->finished(); });
  }

  void finished() {
    if (listed_) {
      loop_.sessions.remove(this);
      listed_ = false;
    }
    if (up_) {
      up_->on_close();
      up_.reset();
    }
  }

  LoopContext& loop_;
  std::string sid_;
  std::string remote_;
  Mode mode_ = Mode::kPolling;
  std::shared_ptr<SocketIoSession> up_;
  std::vector<FramePtr> queue_;  // polling: packets for the next poll
  size_t queued_bytes_ = 0;
  EioRespond poll_;              // the waiting GET, if any
  bool flush_pending_ = false;
  std::weak_ptr<Transport> ws_, probe_;
  const void* ws_id_ = nullptr;
  const void* probe_id_ = nullptr;
  int64_t next_ping_ms_ = 0;
  int64_t pong_deadline_ms_ = 0;  // 0 = no ping outstanding
  int64_t probe_deadline_ms_ = 0;  // while a probe is attached
  bool listed_ = false;
  bool registered_ = false;  // in the registry: began on polling
  std::string pending_block_;  // held in Registry::hold_pending until connected or closed ("" = not)
  bool closing_ = false;           // close_after_queue: the queue, then the close packet, go to the next polls
  std::string close_why_;
  int64_t close_deadline_ms_ = 0;  // ... or the session closes at this time anyway
  bool client_disconnected_ = false;  // closing on the client's DISCONNECT
};

// The WebSocket's listener: forwards to the session on the same loop.
class EioWsListener final : public TransportListener {
 public:
  explicit EioWsListener(std::shared_ptr<EioSession> session) : session_(std::move(session)) {}
  void on_text(std::string_view text) override { session_->on_ws_text(this, text); }
  void on_text_while_draining(std::string_view head) override { session_->on_ws_text_while_draining(this, head); }
  void on_binary(std::string_view data) override { session_->on_ws_binary(this, data); }
  bool closes_at_shutdown() override { return session_->upgrading_on(this); }
  void on_tick(int64_t) override {}
  void on_close() override { session_->on_ws_closed(this); }

 private:
  std::shared_ptr<EioSession> session_;
};

// A TLS stream cannot move to another loop the way a plain socket's fd can
// (OpenSSL's state and Asio's stream stay with the loop that made them), so
// a WSS upgrade of a session that lives on another loop keeps its WebSocket
// here, and the two talk by posting to each other's loop: the WebSocket's
// listener forwards to the session's loop, the session writes through a
// Transport that forwards to the WebSocket's loop.
//
// queued_bytes() is what the session paces a catch-up replay by
// (Connection::replay_send), so it must follow the WebSocket's queue: it is
// the bytes posted and not yet handed over, plus the WebSocket's queue as
// last read on its loop, read again at every hand-over and before every
// scheduled wake-up (a paused replay sees the queue drain).
class CrossLoopTransport final : public Transport {
 public:
  CrossLoopTransport(LoopContext& session_loop, LoopContext& ws_loop, std::weak_ptr<Transport> ws, std::string remote)
      : session_loop_(session_loop), ws_loop_(ws_loop), ws_(std::move(ws)), remote_(std::move(remote)) {}

  void send_text(FramePtr frame) override {
    const size_t size = frame->size();
    queued_->posted += size;
    asio::post(ws_loop_.io, [ws = ws_, queued = queued_, frame = std::move(frame), size]() mutable {
      if (auto t = ws.lock()) {
        t->send_text(std::move(frame));
        queued->at_ws = t->queued_bytes();
      }
      queued->posted -= size;
    });
  }
  void close(CloseReason reason, std::string text) override {
    asio::post(ws_loop_.io, [ws = ws_, reason, text = std::move(text)]() mutable {
      if (auto t = ws.lock()) t->close(reason, std::move(text));
    });
  }
  void post(std::function<void()> fn) override { asio::post(session_loop_.io, std::move(fn)); }
  void schedule(std::chrono::milliseconds delay, std::function<void()> fn) override {
    auto timer = std::make_shared<asio::steady_timer>(session_loop_.io, delay);
    timer->async_wait([timer, fn = std::move(fn), ws = ws_, queued = queued_, ws_loop = &ws_loop_,
                       session_loop = &session_loop_](boost::system::error_code ec) mutable {
      if (ec) return;
      asio::post(ws_loop->io, [fn = std::move(fn), ws = std::move(ws), queued, session_loop]() mutable {
        auto t = ws.lock();
        queued->at_ws = t ? t->queued_bytes() : 0;
        asio::post(session_loop->io, std::move(fn));
      });
    });
  }
  const std::string& remote_address() const override { return remote_; }
  size_t queued_bytes() const override { return queued_->posted + queued_->at_ws; }

 private:
  // Written on both loops, read on the session's.
  struct Queued {
    std::atomic<size_t> posted{0};  // posted to the WebSocket's loop, not yet handed to it
    std::atomic<size_t> at_ws{0};   // the WebSocket's queue, as last read there
  };
  LoopContext& session_loop_;
  LoopContext& ws_loop_;
  std::weak_ptr<Transport> ws_;
  const std::string remote_;
  std::shared_ptr<Queued> queued_ = std::make_shared<Queued>();
};

// On the WebSocket's loop; owns the session-side Transport (the session holds it weakly).
class CrossLoopListener final : public TransportListener {
 public:
  CrossLoopListener(LoopContext& session_loop, std::shared_ptr<EioSession> session)
      : session_loop_(session_loop), session_(std::move(session)) {}

  void attach(std::shared_ptr<CrossLoopTransport> transport) {
    transport_ = transport;
    asio::post(session_loop_.io, [session = session_, transport = std::weak_ptr<Transport>(transport), id = id()] {
      session->attach_websocket(transport, id);
    });
  }
  void on_text(std::string_view text) override {
    note_probe(text);
    asio::post(session_loop_.io, [session = session_, id = id(), text = std::string(text)] { session->on_ws_text(id, text); });
  }
  void on_text_while_draining(std::string_view head) override {
    note_probe(head);
    asio::post(session_loop_.io, [session = session_, id = id(), head = std::string(head)] {
      session->on_ws_text_while_draining(id, head);
    });
  }
  // The session's upgrading_on() lives on the other loop: this side follows
  // the client, whose 2probe the session answers and whose next packet (5,
  // or anything, which drops the probe) ends the upgrade.
  bool closes_at_shutdown() override { return probing_; }
  void on_binary(std::string_view data) override {
    asio::post(session_loop_.io, [session = session_, id = id(), data = std::string(data)] { session->on_ws_binary(id, data); });
  }
  void on_tick(int64_t) override {}
  void on_close() override {
    asio::post(session_loop_.io, [session = session_, id = id()] { session->on_ws_closed(id); });
  }

 private:
  const void* id() const { return this; }
  void note_probe(std::string_view text) { probing_ = text == "2probe"; }
  LoopContext& session_loop_;
  std::shared_ptr<EioSession> session_;
  std::shared_ptr<CrossLoopTransport> transport_;
  bool probing_ = false;  // between the client's 2probe and its next packet
};

void cross_loop_websocket(LoopContext& loop, WsSocket socket, const http::request<http::string_body>& req,
                          std::string leftover, const Registry::Entry& entry) {
  LoopContext* owner = entry.loop;
  std::string remote = socket.remote;
  start_ws_session(loop, std::move(socket), req, std::move(leftover),
                   [&loop, owner, session = entry.session, remote](std::weak_ptr<Transport> ws) {
                     auto listener = std::make_shared<CrossLoopListener>(*owner, session);
                     listener->attach(std::make_shared<CrossLoopTransport>(*owner, loop, std::move(ws), remote));
                     return listener;
                   },
                   ws_message_limit(loop));
}

// A polling request for another node's session, sent there. Its answer is
// the owner's; when no node serves it the session is as good as unknown, and
// the 400 makes the client reconnect (to any node).
void forward_poll(LoopContext& loop, const std::string& owner, PollRequest request, EioRespond respond) {
  const auto& c = loop.config.socketio;
  // The owner holds a poll until it has packets, at the latest until its
  // next ping (pingInterval); a POST is answered at once. The margin covers
  // a loaded owner and Redis; a dead owner is noticed sooner (PollForwarder).
  auto deadline = std::chrono::milliseconds((request.post ? 0 : c.ping_interval_ms) + c.ping_timeout_ms);
  spdlog::debug("event=eio_forward sid={} node={} method={}", request.sid, owner, request.post ? "POST" : "GET");
  Metrics::get().socketio_forwarded.fetch_add(1, std::memory_order_relaxed);
  loop.poll_forwarder->forward(owner, std::move(request), deadline,
                               [respond = std::move(respond)](std::optional<PollAnswer> answer) {
                                 if (answer) return respond(answer->status, std::move(answer->content_type),
                                                            std::move(answer->body));
                                 Metrics::get().count_error("engineio_forward_failed");
                                 respond(sio::eio_error_status(sio::EioError::kUnknownSid), "application/json",
                                         sio::eio_error_body(sio::EioError::kUnknownSid));
                               });
}

}  // namespace

void eio_serve_forwarded(PollRequest request, PollForwarder::AnswerFn answer) {
  auto entry = registry().find(request.sid);
  EioRespond respond = [answer = std::move(answer)](int status, std::string type, std::string body) {
    answer(PollAnswer{status, std::move(type), std::move(body)});
  };
  if (!entry) {
    if (registry().buried(request.sid, steady_ms())) return answer_buried(request.post, respond);
    return respond(sio::eio_error_status(sio::EioError::kUnknownSid), "application/json",
                   sio::eio_error_body(sio::EioError::kUnknownSid));
  }
  LoopContext* loop = entry->loop;
  asio::post(loop->io, [loop, session = entry->session, request = std::move(request), respond = std::move(respond)] {
    // The requesting node checked the size against its own limit; this one's rules here.
    if (request.body.size() > loop->config.socketio.max_payload)
      return respond(413, "application/json", sio::eio_error_body(sio::EioError::kBadRequest));
    if (request.post) session->on_post(request.body, respond);
    else session->on_poll(respond);
  });
}

void eio_http_request(LoopContext& loop, const std::string& remote, std::string_view method, const EioQuery& q,
                      HandshakeToken token, std::string body, EioRespond respond) {
  auto fail = [&respond](sio::EioError e) {
    Metrics::get().count_error("engineio_error");
    respond(sio::eio_error_status(e), "application/json", sio::eio_error_body(e));
  };
  if (q.transport != "polling" && q.transport != "websocket") return fail(sio::EioError::kUnknownTransport);
  if (q.sid.empty()) {
    if (method != "GET") return fail(sio::EioError::kBadHandshakeMethod);
    if (q.eio != "4") return fail(sio::EioError::kUnsupportedProtocolVersion);
    if (q.transport != "polling") return fail(sio::EioError::kBadRequest);  // a WebSocket needs the upgrade
    std::string block = address_block(remote);
    if (!registry().hold_pending(block, loop.config.socketio.max_pending_per_address)) {
      Metrics::get().count_error("engineio_too_many_pending");
      spdlog::debug("event=eio_handshake_refused remote={} reason=too_many_pending", remote);
      return respond(429, "application/json", sio::eio_error_body(sio::EioError::kBadRequest));
    }
    auto session = std::make_shared<EioSession>(loop, remote);
    session->count_pending(std::move(block));
    session->start(false, std::move(token));
    return respond(200, "text/plain; charset=UTF-8", session->open_packet(true));
  }
  auto entry = registry().find(q.sid);
  bool get = method == "GET";
  if (!entry) {
    if ((get || method == "POST") && q.transport == "polling" && registry().buried(q.sid, steady_ms()))
      return answer_buried(!get, respond);
    std::string owner = loop.poll_forwarder ? sid_owner(q.sid) : std::string();
    if (owner.empty() || owner == loop.poll_forwarder->node_id() || q.transport != "polling" ||
        (!get && method != "POST"))
      return fail(sio::EioError::kUnknownSid);
    return forward_poll(loop, owner, PollRequest{!get, q.sid, std::move(body)}, std::move(respond));
  }
  if (q.transport != "polling") return fail(sio::EioError::kBadRequest);
  if (!get && method != "POST") return fail(sio::EioError::kBadRequest);
  asio::post(entry->loop->io, [session = entry->session, get, body = std::move(body), respond = std::move(respond)] {
    if (get) session->on_poll(respond);
    else session->on_post(body, respond);
  });
}

void eio_poll_abandoned(const std::string& sid) {
  auto entry = registry().find(sid);
  if (!entry) return;
  asio::post(entry->loop->io, [session = entry->session] { session->on_poll_abandoned(); });
}

std::optional<sio::EioError> eio_check_upgrade(const EioQuery& q) {
  if (q.transport != "websocket") return q.transport == "polling" ? sio::EioError::kBadRequest
                                                                  : sio::EioError::kUnknownTransport;
  if (q.sid.empty()) return q.eio == "4" ? std::nullopt : std::optional(sio::EioError::kUnsupportedProtocolVersion);
  if (!registry().find(q.sid)) return sio::EioError::kUnknownSid;
  return std::nullopt;
}

void eio_websocket(LoopContext& loop, WsSocket socket, http::request<http::string_body> req, std::string leftover,
                   const EioQuery& q, HandshakeToken token) {
  if (q.sid.empty()) {
    auto session = std::make_shared<EioSession>(loop, socket.remote);
    start_ws_session(loop, std::move(socket), req, std::move(leftover),
                     [session, token = std::move(token)](std::weak_ptr<Transport> ws) mutable
                     -> std::shared_ptr<TransportListener> {
                       session->start(true, std::move(token));
                       session->attach_websocket(ws, static_cast<TransportListener*>(session.get()));
                       session->send_text(std::make_shared<const Frame>(session->open_packet(false)));
                       return session;
                     },
                     ws_message_limit(loop));
    return;
  }
  auto entry = registry().find(q.sid);
  if (!entry) return;  // closed meanwhile: dropping the socket closes it
  auto attach = [session = entry->session](std::weak_ptr<Transport> ws) -> std::shared_ptr<TransportListener> {
    auto listener = std::make_shared<EioWsListener>(session);
    session->attach_websocket(ws, listener.get());
    return listener;
  };
  if (entry->loop == &loop)
    return start_ws_session(loop, std::move(socket), req, std::move(leftover), attach, ws_message_limit(loop));
  if (socket.tls) return cross_loop_websocket(loop, std::move(socket), req, std::move(leftover), *entry);
  // The session lives on another loop: so does its WebSocket. The socket is
  // re-registered with that loop's io_context.
  boost::system::error_code ec;
  auto protocol = socket.plain->local_endpoint(ec).protocol();
  if (ec) return;
  int fd = socket.plain->release(ec);
  if (ec) return;
  LoopContext* owner = entry->loop;
  auto shared_req = std::make_shared<const http::request<http::string_body>>(std::move(req));
  asio::post(owner->io, [owner, fd, protocol, req = std::move(shared_req), leftover = std::move(leftover), attach]() mutable {
    tcp::socket moved(owner->io);
    boost::system::error_code ec;
    moved.assign(protocol, fd, ec);
    if (ec) {
      ::close(fd);
      return;
    }
    WsSocket ws;
    ws.plain.emplace(std::move(moved));
    start_ws_session(*owner, std::move(ws), *req, std::move(leftover), attach, ws_message_limit(*owner));
  });
}

// A shutdown cut short (a second signal, the timeout) stops the loops with
// polling sessions still open; the process-wide registry would keep them past
// their loop, and destroy them at exit against freed loop state.
void eio_forget_sessions(LoopContext& loop) {
  auto entries = registry().take_loop(&loop);
  if (!entries.empty()) spdlog::debug("event=eio_sessions_dropped count={}", entries.size());
}

}  // namespace parley::net
