// wait_for_callback: runs start(callback) and blocks the calling thread until
// the callback has run once, then returns the value it was given. The
// callback may run on any thread, even inside start(). Only for threads that
// may block (workers, tools, tests), never an event loop.
//
// Why not a std::promise on the waiter's stack: the callback can still be
// inside set_value() when the waiter wakes and returns, destroying the promise
// under it. Here the promise is shared with the callback, so it lives until
// both are done.
#pragma once

#include <future>
#include <memory>
#include <utility>

namespace parley {

template <typename T, typename Start>
T wait_for_callback(Start&& start) {
  auto promise = std::make_shared<std::promise<T>>();
  auto future = promise->get_future();
  std::forward<Start>(start)([promise](T value) { promise->set_value(std::move(value)); });
  return future.get();
}

}  // namespace parley
