// ReactorThread: a Reactor (common/reactor.h) on an Asio io_context run by one
// thread of its own, for the networked bus's connections: their reads and
// parsing do not wait behind client sessions on a network loop, and there is
// one such thread per process, never one per message.
// Construct and destroy from one thread (the main thread); the destructor
// stops the loop and joins it, so everything using it must be gone first.
#pragma once

#include <memory>

#include "common/reactor.h"

namespace parley {

class ReactorThread {
 public:
  ReactorThread();
  ~ReactorThread();
  ReactorThread(const ReactorThread&) = delete;
  ReactorThread& operator=(const ReactorThread&) = delete;

  Reactor& reactor();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace parley
