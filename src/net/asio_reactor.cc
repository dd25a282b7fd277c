#include "net/asio_reactor.h"

#include <atomic>
#include <thread>

#include <boost/asio/posix/stream_descriptor.hpp>

#include "common/thread_pool.h"
#include "net/beast.h"

namespace parley {

using namespace parley::net;

namespace {

class AsioSocketWatch final : public SocketWatch {
 public:
  AsioSocketWatch(asio::io_context& io, int fd, std::function<void()> on_readable, std::function<void()> on_writable)
      : state_(std::make_shared<State>(io, fd)) {
    state_->on_readable = std::move(on_readable);
    state_->on_writable = std::move(on_writable);
  }

  ~AsioSocketWatch() override {
    state_->alive = false;
    boost::system::error_code ec;
    state_->descriptor.cancel(ec);
    state_->descriptor.release();  // the fd belongs to the caller
  }

  void want_read(bool on) override {
    state_->reading = on;
    if (on) arm(state_, true);
  }
  void want_write(bool on) override {
    state_->writing = on;
    if (on) arm(state_, false);
  }

 private:
  struct State {
    State(asio::io_context& io, int fd) : descriptor(io, fd) {}
    asio::posix::stream_descriptor descriptor;
    std::function<void()> on_readable, on_writable;
    bool alive = true;
    bool reading = false, writing = false;
    bool read_armed = false, write_armed = false;
  };

  // One wait per direction at a time; re-armed after each callback while
  // still wanted. Handlers hold the state, so a watch destroyed inside a
  // callback (hiredis frees its context there) is seen as gone, not freed.
  static void arm(const std::shared_ptr<State>& st, bool read) {
    bool& armed = read ? st->read_armed : st->write_armed;
    if (armed) return;
    armed = true;
    auto type = read ? asio::posix::stream_descriptor::wait_read : asio::posix::stream_descriptor::wait_write;
    st->descriptor.async_wait(type, [st, read](boost::system::error_code ec) {
      (read ? st->read_armed : st->write_armed) = false;
      if (ec || !st->alive || !(read ? st->reading : st->writing)) return;
      (read ? st->on_readable : st->on_writable)();
      if (st->alive && (read ? st->reading : st->writing)) arm(st, read);
    });
  }

  std::shared_ptr<State> state_;
};

class AsioReactor final : public Reactor {
 public:
  explicit AsioReactor(asio::io_context& io) : io_(io) {}
  void post(std::function<void()> fn) override { asio::post(io_, std::move(fn)); }
  void schedule(std::chrono::milliseconds delay, std::function<void()> fn) override {
    auto timer = std::make_shared<asio::steady_timer>(io_, delay);
    timer->async_wait([timer, fn = std::move(fn)](boost::system::error_code ec) {
      if (!ec) fn();
    });
  }
  std::unique_ptr<SocketWatch> watch(int fd, std::function<void()> on_readable,
                                     std::function<void()> on_writable) override {
    return std::make_unique<AsioSocketWatch>(io_, fd, std::move(on_readable), std::move(on_writable));
  }
  bool on_loop() const override { return std::this_thread::get_id() == loop_thread.load(); }

  std::atomic<std::thread::id> loop_thread;

 private:
  asio::io_context& io_;
};

}  // namespace

struct ReactorThread::Impl {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard = asio::make_work_guard(io);
  AsioReactor reactor{io};
  std::thread thread;
};

ReactorThread::ReactorThread() : impl_(std::make_unique<Impl>()) {
  impl_->thread = named_thread("reactor", [im = impl_.get()] {
    im->reactor.loop_thread = std::this_thread::get_id();
    im->io.run();
  });
}

ReactorThread::~ReactorThread() {
  impl_->guard.reset();
  impl_->io.stop();
  impl_->thread.join();
}

Reactor& ReactorThread::reactor() { return impl_->reactor; }

}  // namespace parley
