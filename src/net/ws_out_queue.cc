#include "net/ws_out_queue.h"

namespace parley::ws {

namespace {

// Drained queues are kept per loop thread (each loop is one thread) and
// reused by the next session with output. Bounded in count and in capacity kept.
constexpr size_t kPoolMax = 512;
constexpr size_t kPooledCapacityMax = 256;

template <class Out>
std::vector<std::vector<Out>>& pool() {
  thread_local std::vector<std::vector<Out>> p;
  return p;
}

}  // namespace

void WsOutQueue::push(uint8_t opcode, FramePtr payload) {
  if (queue_.capacity() == 0) {
    auto& p = pool<Out>();
    if (!p.empty()) {
      queue_ = std::move(p.back());
      p.pop_back();
    }
  }
  bytes_ += (payload ? payload->size() : 0) + kQueuedFrameCost;
  queue_.push_back(Out{std::move(payload), opcode});
}

int WsOutQueue::gather(std::vector<struct iovec>& iov, std::vector<uint8_t>& headers, size_t max_bytes,
                       size_t& bytes) const {
  int n = 0;
  const int max_iov = static_cast<int>(iov.size());
  size_t skip = head_sent_, used = 0;
  auto add = [&](const void* p, size_t len) {
    if (len <= skip) {
      skip -= len;
      return;
    }
    iov[n].iov_base = const_cast<char*>(static_cast<const char*>(p) + skip);
    iov[n].iov_len = len - skip;
    bytes += len - skip;
    skip = 0;
    ++n;
  };
  for (size_t i = head_; i < queue_.size() && n + 2 <= max_iov && bytes < max_bytes &&
                         used + kMaxHeaderLen <= headers.size();
       ++i) {
    const Out& o = queue_[i];
    size_t len = o.payload ? o.payload->size() : 0;
    if (o.opcode == kText && o.payload) {
      // The frame carries its text header: one iovec.
      std::string_view whole = o.payload->text_frame();
      add(whole.data(), whole.size());
      continue;
    }
    if (o.opcode != kRaw) {
      size_t h = encode_header(static_cast<Opcode>(o.opcode), len, headers.data() + used);
      add(headers.data() + used, h);
      used += h;
    }
    if (len) add(o.payload->data(), len);
  }
  return n;
}

void WsOutQueue::advance(size_t n) {
  while (n > 0 && head_ < queue_.size()) {
    const Out& o = queue_[head_];
    size_t len = o.payload ? o.payload->size() : 0;
    size_t total = len + (o.opcode == kRaw ? 0 : header_size(len));
    size_t rest = total - head_sent_;
    if (n < rest) {
      head_sent_ += n;
      return;
    }
    n -= rest;
    bytes_ -= len + kQueuedFrameCost;
    queue_[head_].payload.reset();
    ++head_;
    head_sent_ = 0;
  }
  // A queue that never drains (a client kept just behind) would otherwise
  // keep every written entry: drop them once they are half of it, so the
  // vector follows what is waiting (amortized: each entry moves at most once
  // per halving).
  if (head_ >= 64 && head_ * 2 >= queue_.size()) {
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
}

void WsOutQueue::release() {
  auto& p = pool<Out>();
  if (queue_.capacity() != 0 && queue_.capacity() <= kPooledCapacityMax && p.size() < kPoolMax) {
    queue_.clear();
    p.push_back(std::move(queue_));
  }
  queue_ = {};
  head_ = 0;
  head_sent_ = 0;
}

}  // namespace parley::ws
