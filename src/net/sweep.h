// SweepList: the WebSocket sessions of one event loop, visited once a second
// for idle pings and timeouts, token expiry and the auth deadline, and once
// more when the server shuts down. One list
// per loop, touched only by that loop's thread: an intrusive list, so a
// session costs two pointers here and needs no timer of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace parley::net {

// How often each loop sweeps its sessions (server.cc).
constexpr int64_t kSweepIntervalMs = 1000;

class Sweepable {
 public:
  virtual void on_sweep(int64_t now_ms) = 0;
  // The server is shutting down: end the session the way its protocol says
  // (WebSocket close 1001, Engine.IO close), after what is queued.
  virtual void on_shutdown() = 0;

 protected:
  ~Sweepable() = default;

 private:
  friend class SweepList;
  Sweepable* prev_ = nullptr;
  Sweepable* next_ = nullptr;
};

class SweepList {
 public:
  void add(Sweepable* s) {
    s->prev_ = nullptr;
    s->next_ = head_;
    if (head_) head_->prev_ = s;
    head_ = s;
    ++size_;
  }
  void remove(Sweepable* s) {
    if (s->prev_) s->prev_->next_ = s->next_;
    else if (head_ == s) head_ = s->next_;
    if (s->next_) s->next_->prev_ = s->prev_;
    s->prev_ = s->next_ = nullptr;
    --size_;
  }
  size_t size() const { return size_; }
  // A session may remove itself during its on_sweep.
  void sweep(int64_t now_ms) {
    for (Sweepable* s = head_; s;) {
      Sweepable* next = s->next_;
      s->on_sweep(now_ms);
      s = next;
    }
  }
  // A session may remove itself during its on_shutdown.
  void shutdown() {
    for (Sweepable* s = head_; s;) {
      Sweepable* next = s->next_;
      s->on_shutdown();
      s = next;
    }
  }

 private:
  Sweepable* head_ = nullptr;
  size_t size_ = 0;
};

// Something with output to flush once the loop has run what is queued.
class Flushable {
 public:
  virtual void flush() = 0;

 protected:
  ~Flushable() = default;
};

}  // namespace parley::net
