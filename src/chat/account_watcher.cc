#include "chat/account_watcher.h"

#include <spdlog/spdlog.h>

#include "common/thread_pool.h"

namespace parley {

AccountWatcher::AccountWatcher(Store& store, std::chrono::milliseconds interval, OnChange on_change)
    : store_(store), interval_(interval), on_change_(std::move(on_change)) {}

AccountWatcher::~AccountWatcher() { stop(); }

void AccountWatcher::start() {
  // No connection exists before the server starts: only later changes matter.
  if (auto all = store_.account_changes(0); all) {
    for (const auto& a : *all) seen_version_ = std::max(seen_version_, a.version);
  }
  thread_ = named_thread("account-watch", [this] { run(); });
}

void AccountWatcher::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void AccountWatcher::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, interval_, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    poll();
    lock.lock();
  }
}

void AccountWatcher::poll() {
  auto changes = store_.account_changes(seen_version_);
  if (!changes) {
    // Tried again next round; authentication still reads the store itself.
    spdlog::warn("event=account_poll_failed code={}", changes.error().code);
    return;
  }
  for (const auto& a : *changes) {
    seen_version_ = std::max(seen_version_, a.version);
    spdlog::info("event=account_changed user_id={} disabled={} tokens_valid_after={}", a.user_id, a.disabled,
                 a.tokens_valid_after);
    on_change_(a);
  }
}

}  // namespace parley
