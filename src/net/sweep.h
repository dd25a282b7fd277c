// SweepList: the WebSocket sessions of one event loop, visited once a second
// for idle pings and timeouts, token expiry and the auth deadline. One list
// per loop, touched only by that loop's thread: an intrusive list, so a
// session costs two pointers here and needs no timer of its own.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace parley::net {

class Sweepable {
 public:
  virtual void on_sweep(int64_t now_ms) = 0;

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
  }
  void remove(Sweepable* s) {
    if (s->prev_) s->prev_->next_ = s->next_;
    else if (head_ == s) head_ = s->next_;
    if (s->next_) s->next_->prev_ = s->prev_;
    s->prev_ = s->next_ = nullptr;
  }
  // A session may remove itself during its on_sweep.
  void sweep(int64_t now_ms) {
    for (Sweepable* s = head_; s;) {
      Sweepable* next = s->next_;
      s->on_sweep(now_ms);
      s = next;
    }
  }

 private:
  Sweepable* head_ = nullptr;
};

// Something with output to flush once the loop has run what is queued.
class Flushable {
 public:
  virtual void flush() = 0;

 protected:
  ~Flushable() = default;
};

}  // namespace parley::net
