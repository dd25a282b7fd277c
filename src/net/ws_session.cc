// One WebSocket connection on Beast: the Transport under a protocol
// Connection. Reads frames and hands them up; writes queued frames one at a
// time, in order. The outbound queue is bounded in bytes: a client that stops
// reading is cut off instead of growing memory or slowing anyone else.
#include <spdlog/spdlog.h>

#include <deque>

#include "common/metrics.h"
#include "net/sessions.h"

namespace parley::net {

namespace {

class WsSession final : public Transport, public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(LoopContext& loop, beast::tcp_stream stream) : loop_(loop), ws_(std::move(stream)) {
    boost::system::error_code ec;
    auto ep = beast::get_lowest_layer(ws_).socket().remote_endpoint(ec);
    remote_ = ec ? "unknown" : ep.address().to_string();
  }

  void start(http::request<http::string_body> req, std::optional<User> user, std::string token) {
    beast::get_lowest_layer(ws_).expires_never();  // the websocket stream keeps its own timeouts
    websocket::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::seconds(10);
    t.idle_timeout = std::chrono::seconds(loop_.config.limits.idle_timeout_seconds);
    t.keep_alive_pings = true;  // ping at half the idle time; close if nothing comes back
    ws_.set_option(t);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "parley"); }));
    ws_.read_message_max(loop_.config.limits.max_frame_bytes);
    ws_.auto_fragment(false);
    ws_.async_accept(req, [self = shared_from_this(), user = std::move(user),
                           token = std::move(token)](boost::system::error_code ec) mutable {
      if (ec) return;
      self->conn_ = std::make_shared<Connection>(
          ConnectionContext{self->loop_.chat, self->loop_.workers, self->loop_.hub},
          self->weak_from_this());
      self->conn_->on_open(std::move(user), std::move(token));
      self->read();
    });
  }

  // ---- Transport
  void send_text(FramePtr frame) override {
    if (closing_ || !conn_) return;
    queued_bytes_ += frame->size();
    if (queued_bytes_ > loop_.config.limits.max_outbound_bytes) return drop_slow_consumer();
    queue_.push_back(std::move(frame));
    if (!writing_) write_next();
  }

  void close(uint16_t code, std::string reason) override {
    if (closing_) return;
    closing_ = true;
    close_reason_ = websocket::close_reason(static_cast<websocket::close_code>(code), reason);
    if (!writing_) send_close();
  }

  void post(std::function<void()> fn) override { asio::post(ws_.get_executor(), std::move(fn)); }

  void schedule(std::chrono::milliseconds delay, std::function<void()> fn) override {
    auto timer = std::make_shared<asio::steady_timer>(ws_.get_executor(), delay);
    timer->async_wait([timer, fn = std::move(fn)](boost::system::error_code ec) {
      if (!ec) fn();
    });
  }

  const std::string& remote_address() const override { return remote_; }
  size_t queued_bytes() const override { return queued_bytes_; }

 private:
  void read() {
    ws_.async_read(buffer_, [self = shared_from_this()](boost::system::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(boost::system::error_code ec) {
    if (ec) {
      if (ec == websocket::error::message_too_big) Metrics::get().count_error("frame_too_large");
      return closed(ec);
    }
    if (closing_ || !conn_) {
      // Closing: discard what still arrives until the close handshake ends.
    } else if (ws_.got_binary()) {
      conn_->on_binary();
    } else {
      auto data = buffer_.cdata();
      conn_->on_text(std::string_view(static_cast<const char*>(data.data()), data.size()));
    }
    buffer_.consume(buffer_.size());
    read();
  }

  void write_next() {
    writing_ = true;
    ws_.text(true);
    ws_.async_write(asio::buffer(*queue_.front()),
                    [self = shared_from_this()](boost::system::error_code ec, size_t) { self->on_write(ec); });
  }

  void on_write(boost::system::error_code ec) {
    writing_ = false;
    if (ec) return;  // the read side sees the failure and cleans up
    queued_bytes_ -= queue_.front()->size();
    queue_.pop_front();
    if (!queue_.empty() && !aborted_) return write_next();
    if (closing_) send_close();
  }

  void send_close() {
    if (aborted_ || close_sent_) return;
    close_sent_ = true;
    queue_.clear();
    ws_.async_close(close_reason_, [self = shared_from_this()](boost::system::error_code ec) { self->closed(ec); });
  }

  // The client is not reading: a close frame could not get through either.
  void drop_slow_consumer() {
    Metrics::get().slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("event=slow_consumer_disconnect session_id={} user_id={} queued_bytes={}", conn_->session_id(),
                 conn_->user_id(), queued_bytes_);
    closing_ = aborted_ = true;
    queue_.clear();
    boost::system::error_code ec;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(ws_).socket().close(ec);
  }

  void closed(boost::system::error_code ec) {
    if (ec != websocket::error::closed && ec != asio::error::eof && ec != asio::error::operation_aborted)
      spdlog::debug("event=ws_read_end error=\"{}\"", ec.message());
    if (conn_) {
      conn_->on_close();
      conn_.reset();
    }
  }

  LoopContext& loop_;
  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buffer_;
  std::shared_ptr<Connection> conn_;
  std::deque<FramePtr> queue_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool closing_ = false;
  bool close_sent_ = false;
  bool aborted_ = false;
  websocket::close_reason close_reason_;
  std::string remote_;
};

}  // namespace

void start_ws_session(LoopContext& loop, beast::tcp_stream stream, http::request<http::string_body> request,
                      std::optional<User> user, std::string token) {
  std::make_shared<WsSession>(loop, std::move(stream))->start(std::move(request), std::move(user), std::move(token));
}

}  // namespace parley::net
