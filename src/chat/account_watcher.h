// AccountWatcher: how a running server learns that `parley user disable` or
// `parley user revoke-tokens` (another process) changed an account. It polls
// the store for account changes (Store::account_changes, one indexed read)
// every poll interval on its own thread and hands each change to `on_change`,
// which closes the user's affected connections. Every node sharing a
// database polls it itself, so no bus is needed and a node that was down
// catches up on start. on_change also makes Identity forget the account, so
// the next WebSocket upgrade reads the store instead of the cache; REST
// requests read the store every time.
//
// Threading: start() and stop() from one thread (the server's main);
// on_change runs on the watcher's thread and must not block for long.
// The store must outlive the watcher.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "store/store.h"

namespace parley {

class AccountWatcher {
 public:
  using OnChange = std::function<void(const AccountState&)>;
  AccountWatcher(Store& store, std::chrono::milliseconds interval, OnChange on_change);
  ~AccountWatcher();  // stops

  // Reads the current version (changes made before start are in force
  // through the store already), then polls.
  void start();
  void stop();

 private:
  void run();
  void poll();

  Store& store_;
  const std::chrono::milliseconds interval_;
  const OnChange on_change_;
  int64_t seen_version_ = 0;  // watcher thread only (after start)
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace parley
