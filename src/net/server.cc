#include "net/server.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <limits>
#include <thread>

#include "chat/presence_batch.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "common/serial_queue.h"
#include "common/thread_pool.h"
#include "net/beast.h"
#include "net/engineio.h"
#include "net/sessions.h"
#include "net/tls_context.h"

namespace parley {

using namespace parley::net;

// Threads whose last message reached a loop longer ago than this may be
// forgotten (once the log is full): their connections' first fills fall
// back on creation times.
constexpr Micros kArrivalsKeptUs = 10 * 60 * 1'000'000LL;

struct Server::Impl {
  // An io_context whose first step of destruction can be taken early:
  // shutdown() destroys the handlers still queued when the loop stopped.
  struct LoopIo : asio::io_context {
    using asio::io_context::io_context;
    void destroy_queued_handlers() { shutdown(); }
  };
  struct Loop {
    LoopIo io{1};  // one thread per loop: no locks inside it
    Hub hub;
    std::unique_ptr<LoopContext> ctx;
    std::unique_ptr<asio::steady_timer> sweep;
    // Queued handlers may own the last reference to a session, whose
    // destructor unlists it from ctx->sessions: they go while ctx and hub
    // still exist, not in ~io_context after them (a use after free that
    // AddressSanitizer saw at every shutdown with a WebSocket still open).
    ~Loop() { io.destroy_queued_handlers(); }
  };

  // Once a second per loop: idle pings and timeouts, auth deadlines, token expiry.
  static void sweep_loop(Loop& loop) {
    loop.sweep->expires_after(std::chrono::milliseconds(kSweepIntervalMs));
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
                            [&ch] { return ch.presence().users_online(); }, std::move(bus_name), std::move(bus_ok),
                            [this] { return refusing.load(std::memory_order_relaxed); }}) {
    int n = c.threads > 0 ? c.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int i = 0; i < n; ++i) {
      auto loop = std::make_unique<Loop>();
      loop->ctx = std::make_unique<LoopContext>(LoopContext{loop->io, config, chat, rest, workers, *password_workers, loop->hub, {}, {}, {}, false, {}, {}, {}});
      loop->ctx->read_buffer.resize(64 * 1024);
      loop->ctx->auth_queue = SerialQueue::create(workers);
      // Several nodes: connections' first fills ask what reached the loop
      // before they opened (chat/arrival_log.h).
      if (!c.redis_url.empty()) loop->hub.log_arrivals(kArrivalsKeptUs);
      asio::io_context* io = &loop->io;
      fanout.add_loop(&loop->hub, [io](std::function<void()> fn) { asio::post(*io, std::move(fn)); });
      loops.push_back(std::move(loop));
    }
    // Presence grace timers run on the first loop; announcements need the
    // store, so they go to the workers, through one SerialQueue that keeps
    // them in order. Changes gather for kPresenceGather first
    // (chat/presence_batch.h): without the wait a storm of connects was
    // announced two or three users at a time, each batch a worker wake-up,
    // a read transaction and a post to every loop.
    asio::io_context* timers = &loops[0]->io;
    Presence::Scheduler on_first_loop = [timers](std::chrono::milliseconds delay, std::function<void()> fn) {
      auto t = std::make_shared<asio::steady_timer>(*timers, delay);
      t->async_wait([t, fn = std::move(fn)](boost::system::error_code ec) {
        if (!ec) fn();
      });
    };
    auto announcements = SerialQueue::create(workers);
    auto batch = presence_batch = PresenceBatch::create(kPresenceGather, on_first_loop,
                                       [&ch, announcements](std::vector<PresenceChange> burst) {
                                         announcements->submit([&ch, burst = std::move(burst)] {
                                           ch.announce_presence(burst);
                                         });
                                       });
    chat.presence().set_hooks(on_first_loop,
                              [batch](PresenceChange change) { batch->add(std::move(change)); });
  }

  // ---------------------------------------------------------------- drain

  using DrainClock = std::chrono::steady_clock;

  // Runs fn on every loop and waits until each has run it, or the deadline
  // (a stopped loop never runs it). False at the deadline; fn may still run
  // later, so it must own what it touches.
  bool on_every_loop(const std::function<void(Loop&)>& fn, DrainClock::time_point deadline) {
    struct Pending {
      std::mutex mu;
      std::condition_variable cv;
      size_t left;
    };
    auto pending = std::make_shared<Pending>();
    pending->left = loops.size();
    for (auto& l : loops) {
      Loop* loop = l.get();
      asio::post(loop->io, [pending, loop, fn] {
        fn(*loop);
        std::lock_guard lock(pending->mu);
        if (--pending->left == 0) pending->cv.notify_all();
      });
    }
    std::unique_lock lock(pending->mu);
    return pending->cv.wait_until(lock, deadline, [&] { return pending->left == 0; });
  }

  // Whether no work is in flight: the pools, `idle_check` (the store's
  // queue) and every loop's REST requests, read twice around a pass over the
  // loops so that completions they had queued are counted too.
  bool quiet(DrainClock::time_point deadline) {
    // A presence batch (another node's users reaped here) is handed to the
    // workers by a timer on the first loop, which the end of the drain stops.
    auto pools_idle = [this] {
      return presence_batch->idle() && workers.idle() && password_workers->idle() && (!idle_check || idle_check());
    };
    if (!pools_idle()) return false;
    auto rest_in_flight = std::make_shared<std::atomic<int>>(0);
    if (!on_every_loop([rest_in_flight](Loop& l) { *rest_in_flight += l.ctx->rest_in_flight; }, deadline)) return false;
    return rest_in_flight->load() == 0 && pools_idle();
  }

  size_t open_sessions(DrainClock::time_point deadline) {
    auto open = std::make_shared<std::atomic<size_t>>(0);
    if (!on_every_loop([open](Loop& l) { *open += l.ctx->sessions.size(); }, deadline)) return SIZE_MAX;
    return open->load();
  }

  // The drain thread (see Server::drain). Every wait ends at `deadline`: the
  // shutdown timeout less a reserve for closing the store and the bus.
  void drain_run(DrainClock::time_point deadline) {
    auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(10)); };
    bool in_time = on_every_loop([](Loop& l) { l.ctx->begin_draining(); }, deadline);
    refusing.store(true, std::memory_order_relaxed);
    while (in_time && !quiet(deadline)) {
      if (DrainClock::now() >= deadline || forced.load()) in_time = false;
      else pause();
    }
    size_t open = 0;
    if (in_time) {
      in_time = on_every_loop([](Loop& l) { l.ctx->sessions.shutdown(); }, deadline);
      spdlog::info("event=shutdown_closing_sessions");
    } else if (!forced.load()) {
      // Work is stuck (the timeout came first): clients still get their close
      // (the second pass lets the loops flush it) before the loops stop.
      auto soon = DrainClock::now() + std::chrono::milliseconds(200);
      on_every_loop([](Loop& l) { l.ctx->sessions.shutdown(); }, soon);
      on_every_loop([](Loop&) {}, soon + std::chrono::milliseconds(200));
    }
    // Sessions leave their loop's list once the client has answered the close
    // (or after their linger bound); what their closing queued runs meanwhile.
    // A client that has not answered by shortly before the deadline will not:
    // its session is cut then (a sweep as if its linger were over), so a
    // client gone silent does not alone turn a drain into a forced exit when
    // --shutdown-timeout leaves less than the 2 s linger.
    const auto cut_at = deadline - std::chrono::milliseconds(300);
    bool cut = false;
    while (in_time && ((open = open_sessions(deadline)) > 0 || !quiet(deadline))) {
      if (DrainClock::now() >= deadline || forced.load()) {
        in_time = false;
      } else if (!cut && open > 0 && open != SIZE_MAX && DrainClock::now() >= cut_at) {
        cut = true;
        spdlog::info("event=shutdown_cut_unanswered sessions={}", open);
        // Twice: a WebSocket still open at the first (an Engine.IO probe left
        // to its session) only begins its close there, and is cut by the second.
        on_every_loop(
            [](Loop& l) {
              l.ctx->sessions.sweep(std::numeric_limits<int64_t>::max() / 4);
              l.ctx->sessions.sweep(std::numeric_limits<int64_t>::max() / 4);
            },
            deadline);
      } else {
        pause();
      }
    }
    if (!in_time || forced.load()) {
      spdlog::warn("event=shutdown_forced open_sessions={} workers_idle={} store_idle={}",
                   open == SIZE_MAX ? std::string("unknown") : std::to_string(open), workers.idle(),
                   !idle_check || idle_check());
      clean = false;
    } else {
      spdlog::info("event=shutdown_drained");
    }
    stop_loops();
  }

  void stop_loops() {
    asio::post(loops[0]->io, [this] {
      boost::system::error_code ec;
      if (acceptor) acceptor->close(ec);
      if (signals) signals->cancel(ec);
      if (hangup) hangup->cancel(ec);
    });
    std::lock_guard lock(guards_mu);
    for (auto& g : guards) g.reset();
    for (auto& l : loops) {
      asio::post(l->io, [loop = l.get()] {
        if (loop->sweep) loop->sweep->cancel();
      });
      l->io.stop();
    }
  }

  void begin_drain() {
    if (draining.exchange(true)) return;
    int timeout = std::max(1, config.shutdown_timeout_seconds);
    auto now = DrainClock::now();
    // A fifth of the time, at most 2 s, is kept for the store's last commit and the bus.
    auto reserve = std::min<DrainClock::duration>(std::chrono::seconds(2), std::chrono::milliseconds(timeout * 200));
    auto deadline = now + std::chrono::seconds(timeout) - reserve;
    exit_at = now + std::chrono::seconds(timeout);
    arm_exit_watchdog(exit_at);
    spdlog::info("event=shutdown_draining timeout_seconds={}", timeout);
    if (on_drain) on_drain();
    drain_thread = std::thread([this, deadline] { drain_run(deadline); });
  }

  // The bound is a promise to the process supervisor: if closing the store
  // or the bus hangs (a database that stopped answering), the process still
  // exits, non-zero, when the shutdown timeout is up.
  static void arm_exit_watchdog(DrainClock::time_point at) {
    std::thread([at] {
      std::this_thread::sleep_until(at);
      if (exit_disarmed().load()) return;
      spdlog::error("event=shutdown_timeout action=exit code=1");
      spdlog::default_logger()->flush();
      std::_Exit(1);
    }).detach();
  }

  static std::atomic<bool>& exit_disarmed() {
    static std::atomic<bool> disarmed{false};
    return disarmed;
  }

  void wait_signals() {
    signals->async_wait([this](boost::system::error_code e, int sig) {
      if (e) return;
      if (!draining.load()) {
        spdlog::info("event=shutdown signal={}", sig);
        begin_drain();
        wait_signals();  // a second signal cuts the drain short
      } else {
        spdlog::warn("event=shutdown_forced signal={} reason=second_signal", sig);
        forced = true;
      }
    });
  }

  void accept() {
    Loop& target = *loops[next_loop++ % loops.size()];
    // accept() fills accept_peer, so no getpeername per connection.
    acceptor->async_accept(target.io, accept_peer, [this, &target](boost::system::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) {
        set_no_delay(socket);
        std::string remote = accept_peer.address().to_string();
        // The socket belongs to the target loop; start it there.
        if (tls) {
          asio::post(target.io, [&target, s = std::move(socket), r = std::move(remote), ctx = tls->current()]() mutable {
            start_https_session(*target.ctx, std::move(s), std::move(r), std::move(ctx));
          });
        } else {
          asio::post(target.io, [&target, s = std::move(socket), r = std::move(remote)]() mutable {
            start_http_session(*target.ctx, std::move(s), std::move(r));
          });
        }
      } else {
        // Out of file descriptors (or memory) the listen queue stays
        // readable and accept fails again at once: pause instead of spinning
        // a core, and let the sweeps close idle connections meanwhile.
        spdlog::warn("event=accept_failed error=\"{}\" retry_ms={}", ec.message(), kAcceptRetryMs);
        accept_pause->expires_after(std::chrono::milliseconds(kAcceptRetryMs));
        accept_pause->async_wait([this](boost::system::error_code wait_ec) {
          if (!wait_ec && acceptor->is_open()) accept();
        });
        return;
      }
      accept();
    });
  }

  // Linux copies the listener's TCP_NODELAY into each accepted socket, which
  // saves a setsockopt per connection (a system call is over a microsecond
  // on this project's machine). Checked on the first socket; a kernel that
  // does not copy it gets the option set on every socket.
  void set_no_delay(tcp::socket& socket) {
    boost::system::error_code ec;
    if (nodelay_inherited == -1) {
      tcp::no_delay on;
      socket.get_option(on, ec);
      nodelay_inherited = !ec && on.value() ? 1 : 0;
      spdlog::debug("event=nodelay_inherited value={}", nodelay_inherited);
    }
    if (nodelay_inherited == 0) socket.set_option(tcp::no_delay(true), ec);
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
  tcp::endpoint accept_peer;  // the peer of the accept in progress (one at a time)
  int nodelay_inherited = -1;  // accepted sockets come with TCP_NODELAY: 1, or not: 0; -1 before the first
  std::unique_ptr<asio::steady_timer> accept_pause;  // after a failed accept
  static constexpr int kAcceptRetryMs = 100;
  // How long presence changes gather before one batch announces them all:
  // unnoticeable to people, and a storm of connects shares its store reads.
  static constexpr std::chrono::milliseconds kPresenceGather{5};
  std::unique_ptr<asio::signal_set> signals;
  std::unique_ptr<TlsContexts> tls;          // set when serving HTTPS/WSS
  std::unique_ptr<asio::signal_set> hangup;  // SIGHUP, with TLS only
  size_t next_loop = 0;
  std::mutex guards_mu;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::function<bool()> idle_check;
  std::function<void()> on_drain;
  std::shared_ptr<PresenceBatch> presence_batch;
  std::atomic<bool> draining{false};
  // Every loop refuses new work (set once the drain told them all): what
  // /health reports as "draining", so a client that saw it is refused too.
  std::atomic<bool> refusing{false};
  std::atomic<bool> forced{false};  // a second signal: end the drain now
  bool clean = true;                // written by the drain thread, read after it is joined
  // When the exit watchdog fires: set before the drain thread starts, read after run().
  DrainClock::time_point exit_at = DrainClock::time_point::max();
  std::thread drain_thread;
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
  if (!ec) acc->set_option(tcp::no_delay(true), ec);  // inherited by every accepted socket
  if (!ec) acc->bind(ep, ec);
  if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Error{ErrorKind::kUnavailable, "listen_failed", "cannot listen on " + im.config.bind + ":" +
                                                                   std::to_string(im.config.port) + ": " + ec.message()};
  uint16_t port = acc->local_endpoint().port();
  im.acceptor = std::move(acc);
  im.accept_pause = std::make_unique<asio::steady_timer>(im.acceptor->get_executor());
  im.signals = std::make_unique<asio::signal_set>(im.loops[0]->io, SIGINT, SIGTERM);
  im.wait_signals();
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
  {
    std::lock_guard lock(im.guards_mu);
    for (auto& l : im.loops) im.guards.push_back(asio::make_work_guard(l->io));
  }
  std::vector<std::thread> threads;
  for (size_t i = 1; i < im.loops.size(); ++i)
    threads.push_back(named_thread("event-loop-" + std::to_string(i), [&im, i] { im.loops[i]->io.run(); }));
  im.loops[0]->io.run();
  for (auto& t : threads) t.join();
  if (im.drain_thread.joinable()) im.drain_thread.join();
  for (auto& l : im.loops) eio_forget_sessions(*l->ctx);
  // Loops are stopped: finish the hashing already queued while the store is open.
  im.password_workers.reset();
}

void Server::stop() { impl_->stop_loops(); }

void Server::drain() {
  auto& im = *impl_;
  asio::post(im.loops[0]->io, [&im] { im.begin_drain(); });
}

bool Server::drained_cleanly() const { return impl_->clean; }

void Server::set_idle_check(std::function<bool()> idle) { impl_->idle_check = std::move(idle); }

void Server::set_drain_hook(std::function<void()> hook) { impl_->on_drain = std::move(hook); }

std::chrono::steady_clock::time_point Server::exit_deadline() const { return impl_->exit_at; }

void Server::disarm_exit_watchdog() { Impl::exit_disarmed() = true; }

}  // namespace parley
