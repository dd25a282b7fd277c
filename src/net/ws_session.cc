// One WebSocket connection: the Transport under a protocol session (the
// listener its factory made), with framing done by hand (see ws_frame.h for
// why): WsReader turns the bytes read into messages, WsOutQueue holds what
// waits to be written. Reads wait for readability and then read into the
// loop's shared buffer, so an idle connection holds no read buffer. Writes
// gather every queued frame into one sendmsg. The outbound queue is bounded
// in bytes: a client that stops reading is cut off instead of growing memory
// or slowing anyone else.
//
// Over TLS the framing is the same; only the byte transport differs: reads
// are asynchronous through the TLS stream into the session's own buffer
// (decryption completes later, so the loop's shared buffer cannot be used),
// and the gathered frames are copied into one buffer that OpenSSL encrypts
// into as few records as fit, since a TLS stream takes one buffer per write.
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cctype>
#include <cerrno>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "common/utf8.h"
#include "net/sessions.h"
#include "net/ws_frame.h"
#include "net/ws_out_queue.h"
#include "net/ws_reader.h"

namespace parley::net {

namespace {

constexpr size_t kMaxIov = 1024;  // IOV_MAX on Linux
constexpr size_t kMaxBytesPerWrite = 1024 * 1024;
constexpr int64_t kCloseLingerMs = 2000;  // after our close frame, wait this long for the client's
// What a listener is shown of a message that came during the drain (enough for a Socket.IO packet's header).
constexpr size_t kDrainingHead = 256;

int64_t now_ms() { return now_micros() / 1000; }

// The allocator for each connection's pending read wait. Asio's default
// recycles handler memory through a per-thread cache, which hands the wait
// the block of whatever larger operation finished last on the loop: an
// upgrade's HTTP read leaves a 640-byte block where the wait needs 160. A
// wait lasts as long as the connection is idle, so it gets its own size
// (144 bytes, a 160-byte block).
// (Asio treats std::allocator as "recycle", hence a type of our own.)
template <class T>
struct ExactSizeAllocator {
  using value_type = T;
  ExactSizeAllocator() = default;
  template <class U>
  ExactSizeAllocator(const ExactSizeAllocator<U>&) {}  // NOLINT: rebinding is implicit
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T))); }
  void deallocate(T* p, size_t) { ::operator delete(p); }
  friend bool operator==(const ExactSizeAllocator&, const ExactSizeAllocator&) { return true; }
};

// Our close codes: 4000-4999 are the application's (RFC 6455 7.4.2).
uint16_t close_code(CloseReason reason) {
  switch (reason) {
    case CloseReason::kNormal: return ws::kCloseNormal;
    case CloseReason::kPolicy: return ws::kClosePolicy;
    case CloseReason::kUnauthorized: return 4401;
    case CloseReason::kTokenExpired: return 4401;
    case CloseReason::kAuthTimeout: return 4408;
    case CloseReason::kTooManyConnections: return 4429;
    case CloseReason::kForbidden: return 4403;
    case CloseReason::kGoingAway: return ws::kCloseGoingAway;
    case CloseReason::kUnavailable: return ws::kCloseTryAgainLater;
  }
  return ws::kClosePolicy;
}

class WsSession final : public Transport,
                        public Sweepable,
                        public Flushable,
                        public ws::WsReader::Handler,
                        public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(LoopContext& loop, WsSocket socket, uint64_t max_message_bytes)
      : loop_(loop),
        sock_(std::move(socket)),
        socket_(sock_.lowest()),
        reader_(max_message_bytes ? max_message_bytes : loop.config.limits.max_frame_bytes),
        remote_(std::move(sock_.remote)) {
    boost::system::error_code ec;
    // Reads and writes go straight to recv and sendmsg on the descriptor,
    // which the HTTP session's asynchronous reads already made non-blocking:
    // Asio's non_blocking(true) would repeat that ioctl on every connection.
    if (!socket_.native_non_blocking()) socket_.native_non_blocking(true, ec);
    last_rx_ms_ = now_ms();
  }

  ~WsSession() override {
    if (listed_) loop_.sessions.remove(this);
  }

  void start(const http::request<http::string_body>& req, std::string leftover, const WsListenerFactory& make) {
    std::string_view key = req[http::field::sec_websocket_key];
    // RFC 6455 4.2.1: one key, the base64 of 16 bytes, and one version.
    if (!valid_key(key) || req.count(http::field::sec_websocket_key) != 1 ||
        req.count(http::field::sec_websocket_version) != 1)
      key = {};
    if (key.empty() || req[http::field::sec_websocket_version] != "13") {
      // Another version: 426 with the one supported (RFC 6455, 4.4), and the
      // code the error table gives a 426.
      const bool version = !key.empty();
      const std::string body = std::string(R"({"status":"error","code":")") +
                               (version ? "upgrade_required" : "bad_request") +
                               R"(","message":"WebSocket upgrade needs one Sec-WebSocket-Key (16 bytes in base64) and version 13"})";
      enqueue(ws::WsOutQueue::kRaw, std::make_shared<const Frame>(
          std::string(version ? "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n" : "HTTP/1.1 400 Bad Request\r\n") +
          "Content-Type: application/json\r\nConnection: close\r\n"
          "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n"
          "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\n\r\n" + body));
      state_ = State::kClosing;
      closing_ms_ = now_ms();
      return;
    }
    enqueue(ws::WsOutQueue::kRaw,
            std::make_shared<const Frame>("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                          "Connection: Upgrade\r\nServer: parley\r\nSec-WebSocket-Accept: " +
                                          ws::accept_key(key) + "\r\n\r\n"));
    loop_.sessions.add(this);
    listed_ = true;
    listener_ = make(weak_from_this());
    if (!leftover.empty()) consume(reinterpret_cast<uint8_t*>(leftover.data()), leftover.size());
    if (state_ != State::kAborted) wait_readable();
  }

  // 22 base64 characters and "==": 16 bytes.
  static bool valid_key(std::string_view key) {
    if (key.size() != 24 || key.substr(22) != "==") return false;
    for (char c : key.substr(0, 22))
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/') return false;
    return true;
  }

  // ---- Transport
  void send_text(FramePtr frame) override {
    if (state_ != State::kOpen) return;
    if (!fits(frame->size())) return drop_slow_consumer();
    enqueue(ws::kText, std::move(frame));
  }

  void close(CloseReason reason, std::string text) override { begin_close(close_code(reason), text); }

  void post(std::function<void()> fn) override { asio::post(socket_.get_executor(), std::move(fn)); }

  void schedule(std::chrono::milliseconds delay, std::function<void()> fn) override {
    auto timer = std::make_shared<asio::steady_timer>(socket_.get_executor(), delay);
    timer->async_wait([timer, fn = std::move(fn)](boost::system::error_code ec) {
      if (!ec) fn();
    });
  }

  const std::string& remote_address() const override { return remote_; }
  size_t queued_bytes() const override { return out_.bytes() + (sock_.tls && writing_ ? tls_out_.size() : 0); }

  // ---- Sweepable: once a second from the loop.
  void on_sweep(int64_t now) override {
    if (state_ != State::kOpen) {
      if (now - closing_ms_ > kCloseLingerMs) abort();
      return;
    }
    int64_t idle_ms = int64_t{loop_.config.limits.idle_timeout_seconds} * 1000;
    int64_t quiet = now - last_rx_ms_;
    if (quiet > idle_ms) return begin_close(ws::kClosePolicy, "idle timeout");
    if (quiet > idle_ms / 2 && !ping_sent_) {
      ping_sent_ = true;
      enqueue(ws::kPing, nullptr);
    }
    if (listener_) listener_->on_tick(now);
  }

  // The session above may have closed already (an Engine.IO session sends its
  // close packet first); either way the client sees 1001, unless the
  // listener closes it itself.
  void on_shutdown() override {
    if (listener_ && listener_->closes_at_shutdown()) return;
    begin_close(ws::kCloseGoingAway, "server shutting down");
  }

 private:
  // The connection's life: open; closing (our close frame, or an error
  // answer, is queued: nothing more is sent and input is dropped); lingering
  // (it is written and our side shut down, waiting for the client's close);
  // aborted (the socket is closed).
  enum class State : uint8_t { kOpen, kClosing, kLingering, kAborted };

  // ---------------------------------------------------------------- reading

  void wait_readable() {
    if (sock_.tls) return read_tls();
    socket_.async_wait(tcp::socket::wait_read, OnReadable{shared_from_this()});
  }

  // The wait's handler, with the allocator above as its own (Asio's
  // bind_allocator would add 64 bytes to the operation: 208 against 144).
  struct OnReadable {
    std::shared_ptr<WsSession> self;
    using allocator_type = ExactSizeAllocator<void>;
    allocator_type get_allocator() const noexcept { return {}; }
    void operator()(boost::system::error_code ec) const { self->on_readable(ec); }
  };

  void on_readable(boost::system::error_code ec) {
    if (ec) return finished();
    auto& buf = loop_.read_buffer;
    for (int round = 0; round < 8; ++round) {
      ssize_t got = ::recv(socket_.native_handle(), buf.data(), buf.size(), 0);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (got <= 0) return finished();  // EOF or reset
      const size_t n = static_cast<size_t>(got);
      last_rx_ms_ = now_ms();
      ping_sent_ = false;
      consume(buf.data(), n);
      if (state_ == State::kAborted) return;
      if (n < buf.size()) break;
    }
    wait_readable();
  }

  void read_tls() {
    // Small: a record larger than this is read in several completions, and
    // every idle connection keeps the buffer (OpenSSL and Asio keep ~40 KiB more).
    if (tls_in_.empty()) tls_in_.resize(4 * 1024);
    sock_.tls->async_read_some(asio::buffer(tls_in_), [self = shared_from_this()](boost::system::error_code ec, size_t n) {
      if (ec) return self->finished();  // EOF, reset, a TLS error, or abort()
      self->last_rx_ms_ = now_ms();
      self->ping_sent_ = false;
      self->consume(self->tls_in_.data(), n);
      if (self->state_ != State::kAborted) self->read_tls();
    });
  }

  // Once closing, input is read and dropped until the client closes its side.
  void consume(uint8_t* data, size_t size) {
    if (state_ != State::kOpen) return;
    reader_.consume(data, size, *this);
  }

  // ---- WsReader::Handler
  bool on_message(ws::Opcode opcode, std::string_view message) override {
    if (!listener_) return false;
    // While the server drains (LoopContext::draining) nothing is taken; the
    // listener may refuse what its client would wait for an answer to.
    if (loop_.draining) {
      if (opcode != ws::kBinary) listener_->on_text_while_draining(utf8_prefix(message, kDrainingHead));
      return state_ == State::kOpen;
    }
    if (opcode == ws::kBinary) {
      listener_->on_binary(message);
    } else {
      // RFC 6455 8.1: text must be UTF-8, else the connection fails with 1007.
      if (!utf8_length(message)) return begin_close(ws::kCloseInvalidPayload, "invalid UTF-8"), false;
      listener_->on_text(message);
    }
    return state_ == State::kOpen;
  }

  bool on_control(ws::Opcode opcode, std::string_view payload) override {
    if (opcode == ws::kPing) {
      // Bounded like any other output: a client that sends pings and never
      // reads would otherwise pile up pongs without limit.
      if (!fits(payload.size())) return drop_slow_consumer(), false;
      enqueue(ws::kPong, std::make_shared<const Frame>(payload));
      return true;
    }
    if (opcode == ws::kPong) return true;
    // Echo the client's code (RFC 6455 5.5.1); a malformed close fails with 1002.
    uint16_t code = ws::close_reply_code(payload);
    begin_close(code, code == ws::kCloseProtocolError ? "invalid close frame" : "");
    return false;
  }

  void on_violation(uint16_t code, std::string_view reason) override {
    if (code == ws::kCloseTooBig) Metrics::get().count_error("frame_too_large");
    begin_close(code, reason);
  }

  // ---------------------------------------------------------------- writing

  // Whether one more frame of `payload` bytes keeps the queue within --max-outbound-bytes.
  bool fits(size_t payload) const {
    return queued_bytes() + payload + ws::kQueuedFrameCost <= loop_.config.limits.max_outbound_bytes;
  }

  void enqueue(uint8_t opcode, FramePtr payload) {
    out_.push(opcode, std::move(payload));
    if (writing_ || flush_pending_) return;  // the running write or the pending flush takes it
    flush_pending_ = true;
    loop_.schedule_flush(shared_from_this());
  }

  void flush() override {
    flush_pending_ = false;
    if (!writing_ && state_ != State::kAborted) write_next();
  }

  // Gathered writes of the queued frames, straight to sendmsg on the
  // non-blocking socket. Not asio::async_write: it passes at most 16 iovecs
  // per call (8 frames), and fan-out cost is dominated by the kernel's
  // per-call work, so each call should carry as many frames as are queued.
  // A partial write means the socket buffer is full: wait until writable.
  void write_next() {
    auto& iov = loop_.write_iov;
    auto& headers = loop_.write_headers;
    if (iov.size() < kMaxIov) iov.resize(kMaxIov);
    if (headers.size() < kMaxIov / 2 * ws::kMaxHeaderLen) headers.resize(kMaxIov / 2 * ws::kMaxHeaderLen);
    if (sock_.tls) return write_tls();
    for (;;) {
      if (out_.empty()) return drained();
      size_t want = 0;
      int iovcnt = out_.gather(iov, headers, kMaxBytesPerWrite, want);
      msghdr msg{};
      msg.msg_iov = iov.data();
      msg.msg_iovlen = static_cast<size_t>(iovcnt);
      ssize_t n = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return wait_writable();
        return abort();
      }
      Metrics::get().socket_writes.fetch_add(1, std::memory_order_relaxed);
      out_.advance(static_cast<size_t>(n));
      if (static_cast<size_t>(n) < want) return wait_writable();
    }
  }

  // One async write of everything gathered, copied out of the queue (the
  // queue moves on at once; the copy is what is in flight).
  void write_tls() {
    if (out_.empty()) return drained();
    size_t want = 0;
    // The copy counts as queued until written (queued_bytes): an eighth of
    // the bound at most, so that a client that reads keeps up within it.
    const size_t max_bytes = std::clamp<size_t>(loop_.config.limits.max_outbound_bytes / 8, 16 * 1024, kMaxBytesPerWrite);
    int iovcnt = out_.gather(loop_.write_iov, loop_.write_headers, max_bytes, want);
    tls_out_.clear();
    tls_out_.reserve(want);
    for (int i = 0; i < iovcnt; ++i)
      tls_out_.append(static_cast<const char*>(loop_.write_iov[i].iov_base), loop_.write_iov[i].iov_len);
    out_.advance(want);
    writing_ = true;
    Metrics::get().socket_writes.fetch_add(1, std::memory_order_relaxed);
    asio::async_write(*sock_.tls, asio::buffer(tls_out_), [self = shared_from_this()](boost::system::error_code ec, size_t) {
      self->writing_ = false;
      if (self->tls_out_.capacity() > 64 * 1024) self->tls_out_ = {};
      if (ec || self->state_ == State::kAborted) return self->abort();
      self->write_next();
    });
  }

  void wait_writable() {
    Metrics::get().socket_write_waits.fetch_add(1, std::memory_order_relaxed);
    writing_ = true;
    socket_.async_wait(tcp::socket::wait_write, [self = shared_from_this()](boost::system::error_code ec) {
      self->writing_ = false;
      if (ec || self->state_ == State::kAborted) return self->abort();
      self->write_next();
    });
  }

  void drained() {
    // Idle connections hold no queue: it goes back to the loop's pool.
    out_.release();
    if (state_ == State::kClosing) linger();
  }

  // ---------------------------------------------------------------- closing

  // Sends a close frame after what is queued, then lingers for the client's.
  void begin_close(uint16_t code, std::string_view reason) {
    if (state_ != State::kOpen) return;
    state_ = State::kClosing;
    closing_ms_ = now_ms();
    enqueue(ws::kClose, std::make_shared<const Frame>(ws::close_payload(code, reason)));
  }

  // Our close frame is out: stop sending (FIN) and wait, bounded, for the
  // client to finish, so unread bytes do not turn our close into a reset.
  void linger() {
    state_ = State::kLingering;
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
  }

  // The client is not reading: a close frame could not get through either.
  void drop_slow_consumer() {
    Metrics::get().slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("event=slow_consumer_disconnect remote={} queued_bytes={}", remote_, queued_bytes());
    abort();
  }

  // Closes the socket now. The protocol layer hears of it from the loop a
  // moment later, never from inside this call: the Hub may be iterating.
  void abort() {
    if (state_ == State::kAborted) return;
    state_ = State::kAborted;
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);  // a pending wait or write completes with operation_aborted
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->finished(); });
  }

  // The connection is over for the protocol layer.
  void finished() {
    if (listener_) {
      listener_->on_close();
      listener_.reset();
    }
    if (listed_) {
      loop_.sessions.remove(this);
      listed_ = false;
    }
    if (state_ != State::kAborted) {
      state_ = State::kAborted;
      boost::system::error_code ec;
      socket_.close(ec);
    }
  }

  LoopContext& loop_;
  WsSocket sock_;
  tcp::socket& socket_;  // sock_'s TCP socket, under TLS or not
  std::vector<uint8_t> tls_in_;  // TLS only: decrypted bytes of one read
  std::string tls_out_;          // TLS only: the frames being written
  std::shared_ptr<TransportListener> listener_;
  ws::WsReader reader_;
  ws::WsOutQueue out_;
  State state_ = State::kOpen;
  bool writing_ = false;        // waiting for the socket to be writable
  bool flush_pending_ = false;  // a flush is scheduled on the loop
  bool ping_sent_ = false;      // an idle ping is out, unanswered
  bool listed_ = false;         // in the loop's sweep list
  int64_t last_rx_ms_ = 0;
  int64_t closing_ms_ = 0;
  std::string remote_;
};

}  // namespace

void start_ws_session(LoopContext& loop, WsSocket socket, const http::request<http::string_body>& request,
                      std::string leftover, WsListenerFactory make_listener, uint64_t max_message_bytes) {
  std::make_shared<WsSession>(loop, std::move(socket), max_message_bytes)
      ->start(request, std::move(leftover), make_listener);
}

WsListenerFactory json_connection_factory(LoopContext& loop, std::optional<Authenticated> user,
                                          std::optional<int64_t> changes_after) {
  return [&loop, user = std::move(user), changes_after](std::weak_ptr<Transport> transport) mutable {
    auto conn = std::make_shared<Connection>(ConnectionContext{loop.chat, loop.workers, loop.hub}, std::move(transport),
                                             json_encoder());
    conn->on_open(std::move(user), {}, changes_after);
    return conn;
  };
}

}  // namespace parley::net
