// Test helpers: a real redis-server per test (scripts/redis-test.sh), and
// bounded waits.
#pragma once

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "bus/bus.h"

namespace parley {

using namespace std::chrono_literals;

inline std::string script() { return std::string(PARLEY_SOURCE_DIR) + "/scripts/redis-test.sh"; }

class RedisServer {
 public:
  RedisServer() {
    dir_ = std::filesystem::temp_directory_path() / ("parley-redis-test-" + std::to_string(::getpid()) + "-" +
                                                     std::to_string(counter_++));
    start();
    std::ifstream in(dir_ / "redis.port");
    in >> port_;
  }
  ~RedisServer() {
    resume();
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void start() {
    std::string cmd = script() + " start " + dir_.string() + (port_ ? " " + std::to_string(port_) : "") + " >/dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("redis-server did not start");
  }
  void stop() { std::system((script() + " stop " + dir_.string()).c_str()); }
  // Pauses the server (SIGSTOP): its kernel still accepts connections and
  // takes bytes, but nothing is answered, as with a Redis that hangs.
  void pause() { signal_server(SIGSTOP); }
  void resume() { signal_server(SIGCONT); }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  // Runs redis-cli with `args` (shell words) against this server; its output.
  std::string cli(const std::string& args) const {
    std::string cmd = "redis-cli -h 127.0.0.1 -p " + std::to_string(port_) + " " + args;
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
      ::pclose(p);
    }
    return out;
  }

 private:
  void signal_server(int sig) const {
    std::ifstream in(dir_ / "redis.pid");
    pid_t pid = 0;
    if (in >> pid && pid > 0) ::kill(pid, sig);
  }
  static inline int counter_ = 0;
  std::filesystem::path dir_;
  int port_ = 0;
};

// Collects what a bus hands its receiver: events, and apart from them how
// many resyncs it asked for.
struct Inbox {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<BusEventPtr> events;
  int resyncs = 0;
  void operator()(const BusEventPtr& e) {
    std::lock_guard lock(mu);
    if (e->resync) {
      ++resyncs;
    } else {
      events.push_back(e);
    }
    cv.notify_all();
  }
  // Waits (bounded) until at least n resyncs came.
  bool wait_resyncs(int n, std::chrono::seconds limit = 10s) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, limit, [&] { return resyncs >= n; });
  }
  // Waits (bounded) until pred holds over the events.
  bool wait(const std::function<bool(const std::vector<BusEventPtr>&)>& pred, std::chrono::seconds limit = 10s) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, limit, [&] { return pred(events); });
  }
  size_t count_messages() {
    std::lock_guard lock(mu);
    size_t n = 0;
    for (auto& e : events) n += e->seq > 0;
    return n;
  }
};

inline bool eventually(const std::function<bool()>& cond, std::chrono::seconds limit = 10s) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return cond();
}

}  // namespace parley
