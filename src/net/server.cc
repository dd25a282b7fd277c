#include "net/server.h"

#include <spdlog/spdlog.h>

#include <thread>

#include "common/clock.h"
#include "common/metrics.h"
#include "common/serial_queue.h"
#include "net/beast.h"
#include "net/engineio.h"
#include "net/sessions.h"
#include "net/tls_context.h"

namespace parley {

using namespace parley::net;

struct Server::Impl {
  struct Loop {
    asio::io_context io{1};  // one thread per loop: no locks inside it
    Hub hub;
    std::unique_ptr<LoopContext> ctx;
    std::unique_ptr<asio::steady_timer> sweep;
  };

  // Once a second per loop: idle pings and timeouts, auth deadlines, token expiry.
  static void sweep_loop(Loop& loop) {
    loop.sweep->expires_after(std::chrono::seconds(1));
    loop.sweep->async_wait([&loop](boost::system::error_code ec) {
      if (ec) return;
      loop.ctx->sessions.sweep(now_micros() / 1000);
      sweep_loop(loop);
    });
  }

  Impl(const Config& c, ChatService& ch, ThreadPool& w, std::string bus_name, std::function<bool()> bus_ok)
      : config(c),
        chat(ch),
        workers(w),
        rest(ch, HealthInfo{[] { return static_cast<size_t>(std::max<int64_t>(Metrics::get().connections.load(), 0)); },
                            [&ch] { return ch.presence().users_online(); }, std::move(bus_name),
                            std::move(bus_ok)}) {
    int n = c.threads > 0 ? c.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int i = 0; i < n; ++i) {
      auto loop = std::make_unique<Loop>();
      loop->ctx = std::make_unique<LoopContext>(LoopContext{loop->io, config, chat, rest, workers, *password_workers, loop->hub, {}, {}, {}, false, {}, {}, {}});
      loop->ctx->read_buffer.resize(64 * 1024);
      loop->ctx->auth_queue = SerialQueue::create(workers);
      asio::io_context* io = &loop->io;
      fanout.add_loop(&loop->hub, [io](std::function<void()> fn) { asio::post(*io, std::move(fn)); });
      loops.push_back(std::move(loop));
    }
    // Presence grace timers run on the first loop; announcements need the
    // store, so they go to the workers, through one SerialQueue: a burst of
    // connects costs one worker wake-up, and one user's changes stay in order.
    asio::io_context* timers = &loops[0]->io;
    auto announcements = SerialQueue::create(workers);
    chat.presence().set_hooks(
        [timers](std::chrono::milliseconds delay, std::function<void()> fn) {
          auto t = std::make_shared<asio::steady_timer>(*timers, delay);
          t->async_wait([t, fn = std::move(fn)](boost::system::error_code ec) {
            if (!ec) fn();
          });
        },
        [&ch, announcements](const std::string& user_id, bool online) {
          announcements->submit([&ch, user_id, online] { ch.announce_presence(user_id, online); });
        });
  }

  void accept() {
    Loop& target = *loops[next_loop++ % loops.size()];
    acceptor->async_accept(target.io, [this, &target](boost::system::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) {
        socket.set_option(tcp::no_delay(true), ec);
        // The socket belongs to the target loop; start it there.
        if (tls) {
          asio::post(target.io, [&target, s = std::move(socket), ctx = tls->current()]() mutable {
            start_https_session(*target.ctx, std::move(s), std::move(ctx));
          });
        } else {
          asio::post(target.io, [&target, s = std::move(socket)]() mutable { start_http_session(*target.ctx, std::move(s)); });
        }
      } else {
        spdlog::warn("event=accept_failed error=\"{}\"", ec.message());
      }
      accept();
    });
  }

  // SIGHUP: read the certificate and key again. A pair that does not load
  // is logged and the current one stays.
  void reload_tls_on_hangup() {
    hangup->async_wait([this](boost::system::error_code ec, int) {
      if (ec) return;
      if (auto st = tls->reload(); !st) {
        spdlog::error("event=tls_reload_failed error=\"{}\"", st.error().message);
      } else {
        spdlog::info("event=tls_reloaded cert={}", config.tls.cert_file);
      }
      reload_tls_on_hangup();
    });
  }

  const Config& config;
  ChatService& chat;
  ThreadPool& workers;
  RestApi rest;
  Fanout fanout;
  std::vector<std::unique_ptr<Loop>> loops;
  // Argon2 takes a core for tens of ms: half the cores at most, so hashing
  // never takes the whole machine from the loops and the other workers.
  std::unique_ptr<ThreadPool> password_workers =
      std::make_unique<ThreadPool>(static_cast<int>(std::max(1u, std::thread::hardware_concurrency() / 2)));
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<asio::signal_set> signals;
  std::unique_ptr<TlsContexts> tls;          // set when serving HTTPS/WSS
  std::unique_ptr<asio::signal_set> hangup;  // SIGHUP, with TLS only
  size_t next_loop = 0;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
};

Server::Server(const Config& config, ChatService& chat, ThreadPool& workers, std::string bus_name,
               std::function<bool()> bus_ok)
    : impl_(std::make_unique<Impl>(config, chat, workers, std::move(bus_name), std::move(bus_ok))) {}

Server::~Server() = default;

void Server::set_poll_forwarder(PollForwarder* forwarder) {
  for (auto& l : impl_->loops) l->ctx->poll_forwarder = forwarder;
  forwarder->serve_with([](PollRequest request, PollForwarder::AnswerFn answer) {
    eio_serve_forwarded(std::move(request), std::move(answer));
  });
}

const Fanout& Server::fanout() const { return impl_->fanout; }
RestApi& Server::rest() { return impl_->rest; }

Result<uint16_t> Server::start() {
  auto& im = *impl_;
  if (!im.config.tls.cert_file.empty()) {
    auto tls = TlsContexts::load(im.config.tls);
    if (!tls) return tls.error();
    im.tls = std::move(*tls);
  }
  boost::system::error_code ec;
  auto address = asio::ip::make_address(im.config.bind, ec);
  if (ec) return bad_input("invalid_bind", "bad bind address: " + im.config.bind);
  tcp::endpoint ep(address, im.config.port);
  auto acc = std::make_unique<tcp::acceptor>(im.loops[0]->io);
  acc->open(ep.protocol(), ec);
  if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc->bind(ep, ec);
  if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Error{ErrorKind::kUnavailable, "listen_failed", "cannot listen on " + im.config.bind + ":" +
                                                                   std::to_string(im.config.port) + ": " + ec.message()};
  uint16_t port = acc->local_endpoint().port();
  im.acceptor = std::move(acc);
  im.signals = std::make_unique<asio::signal_set>(im.loops[0]->io, SIGINT, SIGTERM);
  im.signals->async_wait([this](boost::system::error_code e, int sig) {
    if (!e) {
      spdlog::info("event=shutdown signal={}", sig);
      stop();
    }
  });
  if (im.tls) {
    im.hangup = std::make_unique<asio::signal_set>(im.loops[0]->io, SIGHUP);
    im.reload_tls_on_hangup();
  }
  im.accept();
  for (auto& l : im.loops) {
    l->sweep = std::make_unique<asio::steady_timer>(l->io);
    Impl::sweep_loop(*l);
  }
  spdlog::info("event=listening address={} port={} loops={} tls={}", im.config.bind, port, im.loops.size(),
               im.tls ? "on" : "off");
  return port;
}

void Server::run() {
  auto& im = *impl_;
  for (auto& l : im.loops) im.guards.push_back(asio::make_work_guard(l->io));
  std::vector<std::thread> threads;
  for (size_t i = 1; i < im.loops.size(); ++i) threads.emplace_back([&im, i] { im.loops[i]->io.run(); });
  im.loops[0]->io.run();
  for (auto& t : threads) t.join();
  // Loops are stopped: finish the hashing already queued while the store is open.
  im.password_workers.reset();
}

void Server::stop() {
  auto& im = *impl_;
  asio::post(im.loops[0]->io, [&im] {
    boost::system::error_code ec;
    if (im.acceptor) im.acceptor->close(ec);
    if (im.signals) im.signals->cancel(ec);
    if (im.hangup) im.hangup->cancel(ec);
  });
  for (auto& g : im.guards) g.reset();
  for (auto& l : im.loops) {
    asio::post(l->io, [&l] {
      if (l->sweep) l->sweep->cancel();
    });
    l->io.stop();
  }
}

}  // namespace parley
