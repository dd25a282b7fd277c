// One WebSocket connection: the Transport under a protocol Connection, with
// framing done here (see ws_frame.h for why). Reads wait for readability and
// then read into the loop's shared buffer, so an idle connection holds no
// read buffer; only a partial frame is kept per connection. Writes gather
// every queued frame into one sendmsg. The outbound queue is bounded in bytes:
// a client that stops reading is cut off instead of growing memory or slowing
// anyone else.
#include <spdlog/spdlog.h>

#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "common/utf8.h"
#include "net/sessions.h"
#include "net/ws_frame.h"

namespace parley::net {

namespace {

constexpr size_t kMaxIov = 1024;  // IOV_MAX on Linux
constexpr size_t kMaxBytesPerWrite = 1024 * 1024;
constexpr int64_t kCloseLingerMs = 2000;  // after our close frame, wait this long for the client's

int64_t now_ms() { return now_micros() / 1000; }

// Our close codes: 4000-4999 are the application's (RFC 6455 7.4.2).
uint16_t close_code(CloseReason reason) {
  switch (reason) {
    case CloseReason::kNormal: return ws::kCloseNormal;
    case CloseReason::kPolicy: return ws::kClosePolicy;
    case CloseReason::kUnauthorized: return 4401;
    case CloseReason::kAuthTimeout: return 4408;
    case CloseReason::kTooManyConnections: return 4429;
  }
  return ws::kClosePolicy;
}

class WsSession final : public Transport,
                        public Sweepable,
                        public Flushable,
                        public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(LoopContext& loop, tcp::socket socket) : loop_(loop), socket_(std::move(socket)) {
    boost::system::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    remote_ = ec ? "unknown" : ep.address().to_string();
    socket_.non_blocking(true, ec);
    last_rx_ms_ = now_ms();
  }

  ~WsSession() override {
    if (listed_) loop_.sessions.remove(this);
  }

  void start(const http::request<http::string_body>& req, std::string leftover, const WsListenerFactory& make) {
    std::string_view key = req[http::field::sec_websocket_key];
    if (key.empty() || req[http::field::sec_websocket_version] != "13") {
      const std::string body =
          R"({"status":"error","code":"bad_request","message":"WebSocket upgrade needs Sec-WebSocket-Key and version 13"})";
      enqueue_raw(std::make_shared<const Frame>(
          "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\n\r\n" + body));
      closing_ = true;
      close_after_write_ = true;
      return;
    }
    enqueue_raw(std::make_shared<const Frame>("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                              "Connection: Upgrade\r\nServer: parley\r\nSec-WebSocket-Accept: " +
                                              ws::accept_key(key) + "\r\n\r\n"));
    loop_.sessions.add(this);
    listed_ = true;
    conn_ = make(weak_from_this());
    if (!leftover.empty()) consume(reinterpret_cast<uint8_t*>(leftover.data()), leftover.size());
    if (!aborted_) wait_readable();
  }

  // ---- Transport
  void send_text(FramePtr frame) override {
    if (closing_) return;
    if (queued_bytes_ + frame->size() > loop_.config.limits.max_outbound_bytes) return drop_slow_consumer();
    enqueue(ws::kText, std::move(frame));
  }

  void close(CloseReason reason, std::string text) override { fail(close_code(reason), text); }

  void post(std::function<void()> fn) override { asio::post(socket_.get_executor(), std::move(fn)); }

  void schedule(std::chrono::milliseconds delay, std::function<void()> fn) override {
    auto timer = std::make_shared<asio::steady_timer>(socket_.get_executor(), delay);
    timer->async_wait([timer, fn = std::move(fn)](boost::system::error_code ec) {
      if (!ec) fn();
    });
  }

  const std::string& remote_address() const override { return remote_; }
  size_t queued_bytes() const override { return queued_bytes_; }

  // ---- Sweepable: once a second from the loop.
  void on_sweep(int64_t now) override {
    if (closing_) {
      if (now - closing_ms_ > kCloseLingerMs) abort();
      return;
    }
    int64_t idle_ms = int64_t{loop_.config.limits.idle_timeout_seconds} * 1000;
    int64_t quiet = now - last_rx_ms_;
    if (quiet > idle_ms) return fail(ws::kClosePolicy, "idle timeout");
    if (quiet > idle_ms / 2 && !ping_sent_) {
      ping_sent_ = true;
      enqueue(ws::kPing, nullptr);
    }
    if (conn_) conn_->on_tick(now);
  }

 private:
  struct Out {
    FramePtr payload;  // null for an empty control frame
    uint8_t opcode;    // kRaw: payload is raw bytes (the HTTP response)
  };
  static constexpr uint8_t kRaw = 0xFF;

  // Drained queues are kept per loop thread (each loop is one thread) and
  // reused by the next session with output, so a fan-out burst does not grow
  // a fresh vector on every socket. Bounded in count and in capacity kept.
  static constexpr size_t kPoolMax = 512;
  static constexpr size_t kPooledCapacityMax = 256;
  static std::vector<std::vector<Out>>& queue_pool() {
    thread_local std::vector<std::vector<Out>> pool;
    return pool;
  }
  static std::vector<Out> take_pooled_queue() {
    auto& pool = queue_pool();
    if (pool.empty()) return {};
    std::vector<Out> q = std::move(pool.back());
    pool.pop_back();
    return q;
  }
  static void return_pooled_queue(std::vector<Out> q) {
    auto& pool = queue_pool();
    if (q.capacity() == 0 || q.capacity() > kPooledCapacityMax || pool.size() >= kPoolMax) return;
    q.clear();
    pool.push_back(std::move(q));
  }

  // ---------------------------------------------------------------- reading

  void wait_readable() {
    socket_.async_wait(tcp::socket::wait_read,
                       [self = shared_from_this()](boost::system::error_code ec) { self->on_readable(ec); });
  }

  void on_readable(boost::system::error_code ec) {
    if (ec) return finished();
    auto& buf = loop_.read_buffer;
    for (int round = 0; round < 8; ++round) {
      size_t n = socket_.read_some(asio::buffer(buf), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) break;
      if (ec) return finished();  // EOF or reset
      last_rx_ms_ = now_ms();
      ping_sent_ = false;
      consume(buf.data(), n);
      if (aborted_) return;
      if (n < buf.size()) break;
    }
    wait_readable();
  }

  // Parses and handles every complete frame in data (appended to any partial
  // frame kept from before). Once closing, input is read and dropped until
  // the client closes its side.
  void consume(uint8_t* data, size_t size) {
    if (closing_) return;
    if (!partial_.empty()) {
      partial_.append(reinterpret_cast<const char*>(data), size);
      std::string work = std::move(partial_);
      partial_.clear();
      parse(reinterpret_cast<uint8_t*>(work.data()), work.size());
      return;
    }
    parse(data, size);
  }

  bool parse(uint8_t* data, size_t size) {
    size_t pos = 0;
    const uint64_t max = loop_.config.limits.max_frame_bytes;
    while (pos < size) {
      ws::FrameHeader h;
      auto st = ws::parse_header(data + pos, size - pos, max, h);
      if (st == ws::ParseStatus::kNeedMore) break;
      if (st == ws::ParseStatus::kProtocolError) return fail(ws::kCloseProtocolError, "protocol error"), false;
      if (st == ws::ParseStatus::kTooBig) return too_big();
      if (size - pos - h.header_len < h.payload_len) {
        // Keep the partial frame; refuse early if it can never fit.
        if (h.payload_len + message_.size() > max) return too_big();
        break;
      }
      uint8_t* payload = data + pos + h.header_len;
      ws::unmask(payload, h.payload_len, h.mask, 0);
      pos += h.header_len + h.payload_len;
      if (!on_frame(h, std::string_view(reinterpret_cast<char*>(payload), h.payload_len))) return false;
    }
    if (pos < size) partial_.assign(reinterpret_cast<char*>(data + pos), size - pos);
    return true;
  }

  bool too_big() {
    Metrics::get().count_error("frame_too_large");
    fail(ws::kCloseTooBig, "message too big");
    return false;
  }

  bool on_frame(const ws::FrameHeader& h, std::string_view payload) {
    switch (h.opcode) {
      case ws::kPing:
        enqueue(ws::kPong, std::make_shared<const Frame>(payload));
        return true;
      case ws::kPong:
        return true;
      case ws::kClose: {
        uint16_t code = payload.size() >= 2 ? static_cast<uint16_t>((uint8_t(payload[0]) << 8) | uint8_t(payload[1]))
                                            : ws::kCloseNormal;
        // Echo the client's code (RFC 6455 5.5.1), unless it may not be sent.
        if (code < 1000 || code == 1004 || code == 1005 || code == 1006 || code == 1015 || code >= 5000)
          code = ws::kCloseNormal;
        fail(code, "");
        return false;
      }
      case ws::kContinuation:
        if (message_opcode_ == 0) return fail(ws::kCloseProtocolError, "unexpected continuation"), false;
        message_.append(payload);
        if (message_.size() > loop_.config.limits.max_frame_bytes) return too_big();
        if (!h.fin) return true;
        return deliver(message_opcode_, take_message());
      case ws::kText:
      case ws::kBinary:
        if (message_opcode_ != 0) return fail(ws::kCloseProtocolError, "expected continuation"), false;
        if (!h.fin) {
          message_opcode_ = h.opcode;
          message_.assign(payload);
          return true;
        }
        return deliver(h.opcode, payload);
    }
    return true;
  }

  std::string take_message() {
    std::string m = std::move(message_);
    message_.clear();
    message_.shrink_to_fit();
    return m;
  }

  bool deliver(uint8_t opcode, std::string_view message) {
    message_opcode_ = 0;
    if (!conn_) return false;
    if (opcode == ws::kBinary) {
      conn_->on_binary(message);
    } else {
      // RFC 6455 8.1: text must be UTF-8, else the connection fails with 1007.
      if (!utf8_length(message)) return fail(ws::kCloseInvalidPayload, "invalid UTF-8"), false;
      conn_->on_text(message);
    }
    return !closing_;
  }

  bool deliver(uint8_t opcode, std::string message) {
    return deliver(opcode, std::string_view(message));
  }

  // ---------------------------------------------------------------- writing

  void enqueue(uint8_t opcode, FramePtr payload) {
    if (queue_.capacity() == 0) queue_ = take_pooled_queue();
    queued_bytes_ += payload ? payload->size() : 0;
    queue_.push_back(Out{std::move(payload), opcode});
    if (writing_ || flush_pending_) return;  // the running write or the pending flush takes it
    flush_pending_ = true;
    loop_.schedule_flush(shared_from_this());
  }

  void flush() override {
    flush_pending_ = false;
    if (!writing_ && !aborted_) write_next();
  }

  void enqueue_raw(FramePtr bytes) { enqueue(kRaw, std::move(bytes)); }

  // Gathered writes of the queued frames, straight to sendmsg on the
  // non-blocking socket. Not asio::async_write: it passes at most 16 iovecs
  // per call (8 frames), and fan-out cost is dominated by the kernel's
  // per-call work, so each call should carry as many frames as are queued.
  // A partial write means the socket buffer is full: wait until writable.
  void write_next() {
    for (;;) {
      if (head_ == queue_.size()) return drained();
      size_t want = 0;
      int iovcnt = gather(want);
      msghdr msg{};
      msg.msg_iov = loop_.write_iov.data();
      msg.msg_iovlen = static_cast<size_t>(iovcnt);
      ssize_t n = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return wait_writable();
        return abort();
      }
      Metrics::get().socket_writes.fetch_add(1, std::memory_order_relaxed);
      advance(static_cast<size_t>(n));
      if (static_cast<size_t>(n) < want) return wait_writable();
    }
  }

  // Fills the loop's iovec scratch from the queue, starting `head_sent_`
  // bytes into the head frame; returns the iovec count and the byte total.
  int gather(size_t& bytes) {
    auto& iov = loop_.write_iov;
    auto& headers = loop_.write_headers;
    if (iov.size() < kMaxIov) iov.resize(kMaxIov);
    if (headers.size() < kMaxIov / 2 * ws::kMaxHeaderLen) headers.resize(kMaxIov / 2 * ws::kMaxHeaderLen);
    int n = 0;
    size_t skip = head_sent_, used = 0;
    auto add = [&](const void* p, size_t len) {
      if (len <= skip) {
        skip -= len;
        return;
      }
      iov[n].iov_base = const_cast<char*>(static_cast<const char*>(p) + skip);
      iov[n].iov_len = len - skip;
      bytes += len - skip;
      skip = 0;
      ++n;
    };
    for (size_t i = head_; i < queue_.size() && n + 2 <= static_cast<int>(kMaxIov) && bytes < kMaxBytesPerWrite; ++i) {
      const Out& o = queue_[i];
      size_t len = o.payload ? o.payload->size() : 0;
      if (o.opcode != kRaw) {
        size_t h = ws::encode_header(static_cast<ws::Opcode>(o.opcode), len, headers.data() + used);
        add(headers.data() + used, h);
        used += h;
      }
      if (len) add(o.payload->data(), len);
    }
    return n;
  }

  // Drops what the kernel took: whole frames leave the queue, a partly
  // written head frame is remembered by byte offset.
  void advance(size_t n) {
    while (n > 0 && head_ < queue_.size()) {
      const Out& o = queue_[head_];
      size_t len = o.payload ? o.payload->size() : 0;
      size_t total = len + (o.opcode == kRaw ? 0 : ws::header_size(len));
      size_t rest = total - head_sent_;
      if (n < rest) {
        head_sent_ += n;
        return;
      }
      n -= rest;
      queued_bytes_ -= len;
      queue_[head_].payload.reset();
      ++head_;
      head_sent_ = 0;
    }
  }

  void wait_writable() {
    Metrics::get().socket_write_waits.fetch_add(1, std::memory_order_relaxed);
    writing_ = true;
    socket_.async_wait(tcp::socket::wait_write, [self = shared_from_this()](boost::system::error_code ec) {
      self->writing_ = false;
      if (ec || self->aborted_) return self->abort();
      self->write_next();
    });
  }

  void drained() {
    // Idle connections hold no queue: it goes back to the loop's pool.
    return_pooled_queue(std::move(queue_));
    queue_ = {};
    head_ = 0;
    head_sent_ = 0;
    if (close_after_write_) linger();
  }

  // ---------------------------------------------------------------- closing

  // Sends a close frame after what is queued, then lingers for the client's.
  void fail(uint16_t code, std::string_view reason) {
    if (closing_) return;
    closing_ = true;
    closing_ms_ = now_ms();
    close_after_write_ = true;
    enqueue(ws::kClose, std::make_shared<const Frame>(ws::close_payload(code, reason)));
  }

  // Our close frame is out: stop sending (FIN) and wait, bounded, for the
  // client to finish, so unread bytes do not turn our close into a reset.
  void linger() {
    if (close_sent_) return;
    close_sent_ = true;
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
  }

  // The client is not reading: a close frame could not get through either.
  void drop_slow_consumer() {
    Metrics::get().slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("event=slow_consumer_disconnect remote={} queued_bytes={}", remote_, queued_bytes_);
    abort();
  }

  // Closes the socket now. The protocol layer hears of it from the loop a
  // moment later, never from inside this call: the Hub may be iterating.
  void abort() {
    if (aborted_) return;
    aborted_ = closing_ = true;
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);  // a pending wait or write completes with operation_aborted
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->finished(); });
  }

  // The connection is over for the protocol layer.
  void finished() {
    if (conn_) {
      conn_->on_close();
      conn_.reset();
    }
    if (listed_) {
      loop_.sessions.remove(this);
      listed_ = false;
    }
    if (!aborted_) {
      aborted_ = closing_ = true;
      boost::system::error_code ec;
      socket_.close(ec);
    }
  }

  LoopContext& loop_;
  tcp::socket socket_;
  std::shared_ptr<TransportListener> conn_;
  std::vector<Out> queue_;
  size_t head_ = 0;
  size_t head_sent_ = 0;  // bytes of queue_[head_] (header included) already written
  size_t queued_bytes_ = 0;
  std::string partial_;  // an incomplete frame from the last read
  std::string message_;  // a fragmented message being assembled
  uint8_t message_opcode_ = 0;
  bool writing_ = false;
  bool flush_pending_ = false;
  bool closing_ = false;
  bool close_after_write_ = false;
  bool close_sent_ = false;
  bool aborted_ = false;
  bool ping_sent_ = false;
  bool listed_ = false;
  int64_t last_rx_ms_ = 0;
  int64_t closing_ms_ = 0;
  std::string remote_;
};

}  // namespace

void start_ws_session(LoopContext& loop, tcp::socket socket, const http::request<http::string_body>& request,
                      std::string leftover, WsListenerFactory make_listener) {
  std::make_shared<WsSession>(loop, std::move(socket))->start(request, std::move(leftover), make_listener);
}

WsListenerFactory json_connection_factory(LoopContext& loop, std::optional<User> user, std::string token) {
  return [&loop, user = std::move(user), token = std::move(token)](std::weak_ptr<Transport> transport) mutable {
    auto conn = std::make_shared<Connection>(ConnectionContext{loop.chat, loop.workers, loop.hub}, std::move(transport),
                                             json_encoder());
    conn->on_open(std::move(user), std::move(token));
    return conn;
  };
}

}  // namespace parley::net
