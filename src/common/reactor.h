// Reactor: the event loop a networked bus runs its connections on, seen
// without Asio (only src/net includes Asio; net/asio_reactor.h implements
// this on an io_context). Everything the bus does on a connection happens on
// the loop's one thread, so a hiredis context needs no lock.
//
// post() may be called from any thread; schedule() and watch() only on the
// loop thread. The reactor outlives everything that uses it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

namespace parley {

// Readiness of one socket the caller owns (it is never closed here).
// Destroying the watch stops it; no callback runs after that, even one that
// was already due. Loop thread only.
class SocketWatch {
 public:
  virtual ~SocketWatch() = default;
  // While on, the reactor calls the matching callback each time the socket
  // is readable (writable). A callback may turn either off or destroy the watch.
  virtual void want_read(bool on) = 0;
  virtual void want_write(bool on) = 0;
};

class Reactor {
 public:
  virtual ~Reactor() = default;
  virtual void post(std::function<void()> fn) = 0;
  virtual void schedule(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
  virtual std::unique_ptr<SocketWatch> watch(int fd, std::function<void()> on_readable,
                                             std::function<void()> on_writable) = 0;
  // True on the loop's own thread.
  virtual bool on_loop() const = 0;
};

}  // namespace parley
