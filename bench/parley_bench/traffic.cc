// What the scenarios send and how every reply is checked.
//
// A message's content is "<sender user>:<counter>:<send ns>:xxx…" and its
// request_id "<counter>:<send ns>" (CLOCK_MONOTONIC, same machine), so a
// reply carries everything needed to match and time it: no per-message state
// beyond one bit per counter (acked, at the sender; received, at each
// recipient per sender). Over Socket.IO the ack id is the counter and the
// time comes back in the acknowledged message's content (sio_traffic.cc).
#include <sys/timerfd.h>

#include <algorithm>
#include <charconv>

#include "scan.h"
#include "worker.h"

namespace bench {

namespace {

void append_int(std::string& s, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, static_cast<size_t>(r.ptr - buf));
}

// Sets bit i (growing the set); false when it was set already.
bool set_bit(std::vector<uint64_t>& bits, int64_t i) {
  size_t w = static_cast<size_t>(i) >> 6;
  if (w >= bits.size()) bits.resize(std::max(w + 1, bits.size() * 2), 0);
  uint64_t m = uint64_t{1} << (i & 63);
  if (bits[w] & m) return false;
  bits[w] |= m;
  return true;
}

constexpr int64_t kMaxCounter = int64_t{1} << 32;  // far beyond any run; guards the bit sets

}  // namespace

void Worker::setup_sending(int64_t now) {
  (void)now;
  sending_ = true;
  send_start_ = shared_.send_start_ns.load(std::memory_order_acquire);
  window_start_ = shared_.window_start_ns.load(std::memory_order_acquire);
  window_end_ = shared_.window_end_ns.load(std::memory_order_acquire);
  const double cap = opt_.conn_rate_cap;
  const double window = opt_.scenario == Scenario::kDm ? 1 : opt_.window;
  burst_ = cap > 0 ? std::max(1.0, std::min(window, cap / 10)) : 0;
  for (auto& s : senders_) {
    s.tokens = burst_;
    s.refilled_at = send_start_;
  }
  if (opt_.scenario == Scenario::kLatency) {
    if (!senders_.empty()) {
      const double local_rate =
          opt_.rate * static_cast<double>(senders_.size()) / static_cast<double>(plan_.sender_user.size());
      sched_interval_ns_ = 1e9 / local_rate;
      // Workers interleave their schedules instead of sending together.
      sched_next_ = send_start_ + static_cast<int64_t>(sched_interval_ns_ * index_ / count_);
    }
    return;
  }
  for (uint32_t i = 0; i < senders_.size(); ++i) {
    senders_[i].blocked = true;
    blocked_.push_back(i);
  }
}

void Worker::pump(int64_t now) {
  if (opt_.scenario == Scenario::kLatency) {
    if (senders_.empty()) return;
    // Open loop: every message due by now goes out, stamped with its scheduled
    // time, whatever the replies do. Bounded per turn so replies keep being read.
    int budget = 100000;
    const int64_t offset = static_cast<int64_t>(sched_interval_ns_ * index_ / count_);
    while (sched_next_ <= now && sched_next_ < window_end_ && budget-- > 0) {
      SenderState& s = senders_[static_cast<size_t>(sched_index_ % static_cast<int64_t>(senders_.size()))];
      if (conns_[s.conn].state == kOpen) {
        if (now - sched_next_ > 1'000'000) ++totals_.late_sends;
        send_message(s, sched_next_);
      }
      ++sched_index_;
      sched_next_ = send_start_ + offset + static_cast<int64_t>(sched_interval_ns_ * static_cast<double>(sched_index_));
    }
    arm_timer();
    return;
  }
  if (blocked_.empty() || now < send_start_) return;
  std::vector<uint32_t> todo;
  todo.swap(blocked_);
  for (uint32_t i : todo) {
    senders_[i].blocked = false;
    try_send(i, now);
  }
}

void Worker::arm_timer() {
  itimerspec its{};
  if (sched_next_ < window_end_) {
    its.it_value.tv_sec = sched_next_ / 1'000'000'000;
    its.it_value.tv_nsec = sched_next_ % 1'000'000'000;
  }  // else all zero: disarmed
  timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr);
}

void Worker::try_send(uint32_t i, int64_t now) {
  SenderState& s = senders_[i];
  if (conns_[s.conn].state != kOpen) return;
  const int64_t window = opt_.scenario == Scenario::kDm ? 1 : opt_.window;
  const double cap = opt_.conn_rate_cap;
  auto block = [&] {
    if (!s.blocked) {
      s.blocked = true;
      blocked_.push_back(i);
    }
  };
  // Bounded by the window.
  while (s.outstanding < window) {
    if (now >= window_end_) return;
    if (now < send_start_ || now < s.paused_until) return block();
    if (cap > 0) {
      s.tokens = std::min(burst_, s.tokens + static_cast<double>(now - s.refilled_at) * cap / 1e9);
      s.refilled_at = now;
      if (s.tokens < 1) {
        ++totals_.cap_waits;
        return block();
      }
      s.tokens -= 1;
    }
    send_message(s, now);
  }
}

void Worker::append_content_fields(std::string& f, const SenderState& s, int64_t counter, int64_t send_ns) {
  const size_t content_start = f.size();
  append_int(f, s.user);
  f += ':';
  append_int(f, counter);
  f += ':';
  append_int(f, send_ns);
  f += ':';
  const size_t len = f.size() - content_start;
  if (len < static_cast<size_t>(opt_.message_bytes)) f.append(static_cast<size_t>(opt_.message_bytes) - len, 'x');
  f += R"(","client_msg_id":"b)";
  append_int(f, static_cast<int64_t>(shared_.run_nonce & 0xFFFFFFFFFFFF));
  f += '-';
  append_int(f, s.user);
  f += '-';
  append_int(f, counter);
  f += '"';
}

void Worker::send_message(SenderState& s, int64_t send_ns) {
  Conn& c = conns_[s.conn];
  const int64_t counter = s.next_counter++;
  std::string& f = frame_buf_;
  f.clear();
  if (opt_.protocol == Protocol::kSocketIo) {
    append_sio_send(f, c, s, counter, send_ns);
  } else {
    f += R"({"type":"send_message","thread_id":")";
    f += plan_.thread_ids[static_cast<size_t>(c.group)];
    f += R"(","content":")";
    append_content_fields(f, s, counter, send_ns);
    f += R"(,"request_id":")";
    append_int(f, counter);
    f += ':';
    append_int(f, send_ns);
    f += R"("})";
  }
  send_frame(c, kText, f);
  ++s.outstanding;
  ++outstanding_;
  ++totals_.sent;
  if (in_window(send_ns)) ++totals_.sent_in_window;
}

void Worker::on_text(Conn& c, std::string_view text, int64_t now) {
  if (opt_.protocol == Protocol::kSocketIo) return on_sio_text(c, text, now);
  std::string_view type;
  if (!json_str(text, "\"type\":", type)) {
    ++totals_.bad_frames;
    return;
  }
  if (type == "new_message") return on_delivery(c, text, now);
  if (type == "message_sent") return on_ack(c, text, now);
  if (type == "connection_established") {
    if (c.state != kAwaitEstablished) {
      ++totals_.other_frames;
      return;
    }
    return on_established(c, now);
  }
  if (type == "error") return on_error(c, text, now);
  count_other(type);  // presence, pong, ...: not part of any scenario's check
}

void Worker::count_other(std::string_view type) {
  ++totals_.other_frames;
  // A handful of distinct types per run: a linear search beats a map here.
  for (auto& [k, v] : totals_.other_types)
    if (k == type) {
      ++v;
      return;
    }
  if (totals_.other_types.size() < 32) totals_.other_types.emplace_back(std::string(type.substr(0, 40)), 1);
}

void Worker::on_established(Conn& c, int64_t now) {
  c.state = kOpen;
  ++totals_.established;
  --in_flight_;
  totals_.connect.record(now - c.t_start);
  totals_.last_established_ns = std::max(totals_.last_established_ns, now);
}

void Worker::on_delivery(Conn& c, std::string_view text, int64_t now) {
  std::string_view content;
  int64_t v[3];
  const bool parsed = json_str(text, "\"content\":", content) && colon_ints(content, v, 3) == 3;
  // Sent before this run started (send times are CLOCK_MONOTONIC, one
  // machine): history the server replays, e.g. Socket.IO's catch-up on
  // connect after an earlier run on the same store. Neither a delivery of
  // this run nor a failure.
  if (parsed && v[2] < shared_.run_start_ns) {
    ++totals_.replayed;
    return;
  }
  ++totals_.deliveries;
  if (in_window(now)) ++totals_.deliveries_in_window;
  if (!parsed) {
    ++totals_.bad_frames;
    return;
  }
  const int64_t sender_user = v[0], counter = v[1], send_ns = v[2];
  if (sender_user < 0 || sender_user >= plan_.users || counter < 0 || counter >= kMaxCounter) {
    ++totals_.misrouted;
    return;
  }
  const int32_t s = plan_.sender_of_user[static_cast<size_t>(sender_user)];
  const int64_t g = plan_.group_of(sender_user);
  std::string_view tid;
  if (s < 0 || g != c.group || sender_user == c.user || !json_str(text, "\"thread_id\":", tid) ||
      tid != plan_.thread_ids[static_cast<size_t>(g)]) {
    ++totals_.misrouted;  // not a message this connection should get
    if (sender_user == c.user) ++totals_.own_echoes;
    return;
  }
  int64_t seq = 0;
  if (json_int(text, "\"seq\":", seq)) {
    if (seq <= c.last_seq) ++totals_.seq_violations;
    else c.last_seq = seq;
  }
  RecvTrack& t = c.recv[static_cast<size_t>(plan_.sender_slot[static_cast<size_t>(s)])];
  if (!set_bit(t.bits, counter)) {
    ++totals_.duplicates;
    return;
  }
  ++totals_.unique_deliveries;
  if (counter < t.last) ++totals_.out_of_order;
  else t.last = counter;
  if (in_window(send_ns)) totals_.delivery.record(now - send_ns);
  if (opt_.scenario != Scenario::kDm) interval_.record(now - send_ns);  // progress lines only
}

void Worker::on_ack(Conn& c, std::string_view text, int64_t now) {
  std::string_view rid;
  int64_t v[2];
  if (c.sender < 0 || !json_str(text, "\"request_id\":", rid) || colon_ints(rid, v, 2) != 2) {
    ++totals_.bad_frames;
    return;
  }
  SenderState& s = senders_[static_cast<size_t>(c.sender)];
  const int64_t counter = v[0], send_ns = v[1];
  if (counter < 0 || counter >= s.next_counter) {
    ++totals_.bad_frames;
    return;
  }
  acknowledged(c, s, counter, send_ns, now);
}

void Worker::acknowledged(Conn& c, SenderState& s, int64_t counter, int64_t send_ns, int64_t now) {
  if (!set_bit(s.acked, counter)) {
    ++totals_.duplicate_acks;
    return;
  }
  ++s.acked_count;
  --s.outstanding;
  --outstanding_;
  ++totals_.acked;
  if (in_window(now)) ++totals_.acked_in_window;
  expected_deliveries_ += plan_.group_size - 1;
  if (in_window(send_ns)) totals_.ack.record(now - send_ns);
  if (opt_.scenario == Scenario::kDm) interval_.record(now - send_ns);  // progress lines only
  if (opt_.scenario != Scenario::kLatency && sending_) try_send(static_cast<uint32_t>(c.sender), now);
}

void Worker::on_error(Conn& c, std::string_view text, int64_t now) {
  std::string_view code = "?";
  json_str(text, "\"code\":", code);
  ++totals_.errors[std::string(code)];
  if (c.sender < 0) return;
  SenderState& s = senders_[static_cast<size_t>(c.sender)];
  std::string_view rid;
  int64_t v[2];
  const bool ours = json_str(text, "\"request_id\":", rid) && colon_ints(rid, v, 2) == 2 && v[0] >= 0 &&
                    v[0] < s.next_counter;
  const bool limited = code == "rate_limited";
  // A refused send_message is never stored, so nobody expects it. Older Parley
  // builds sent rate_limited without the request_id: it still stands for one
  // of our frames.
  if (ours || limited) return refused(c, s, limited, now);
  if (opt_.scenario != Scenario::kLatency && sending_) try_send(static_cast<uint32_t>(c.sender), now);
}

void Worker::refused(Conn& c, SenderState& s, bool limited, int64_t now) {
  if (s.outstanding > 0) {
    --s.outstanding;
    --outstanding_;
    if (limited) {
      ++s.rate_limited;
      ++totals_.rate_limited;
      s.paused_until = now + static_cast<int64_t>(opt_.backoff_ms * 1e6);  // back off
    } else {
      ++s.rejected;
      ++totals_.rejected;
    }
  }
  if (opt_.scenario != Scenario::kLatency && sending_) try_send(static_cast<uint32_t>(c.sender), now);
}

Correctness check_deliveries(const Plan& plan, int threads, const std::vector<std::unique_ptr<Worker>>& workers) {
  Correctness r;
  auto conn_of = [&](int64_t u) -> const Conn& {
    return workers[static_cast<size_t>(u % threads)]->conns()[static_cast<size_t>(u / threads)];
  };
  for (size_t gs = 0; gs < plan.sender_user.size(); ++gs) {
    const int64_t u = plan.sender_user[gs];
    const Conn& sc = conn_of(u);
    const SenderState& st = workers[static_cast<size_t>(u % threads)]->senders()[static_cast<size_t>(sc.sender)];
    r.unacked += st.next_counter - st.acked_count - st.rejected - st.rate_limited;
    r.expected += st.acked_count * (plan.group_size - 1);
    const int64_t g = plan.group_of(u);
    const size_t slot = static_cast<size_t>(plan.sender_slot[gs]);
    for (int64_t m = g * plan.group_size; m < (g + 1) * plan.group_size; ++m) {
      if (m == u) continue;
      const RecvTrack& t = conn_of(m).recv[slot];
      const size_t words = std::max(st.acked.size(), t.bits.size());
      for (size_t w = 0; w < words; ++w) {
        const uint64_t a = w < st.acked.size() ? st.acked[w] : 0;
        const uint64_t b = w < t.bits.size() ? t.bits[w] : 0;
        r.delivered += __builtin_popcountll(a & b);
        r.missing += __builtin_popcountll(a & ~b);
        r.unexpected += __builtin_popcountll(b & ~a);
      }
    }
  }
  return r;
}

}  // namespace bench
