// The epoll loop: connecting, the WebSocket upgrade (the same for Socket.IO's
// WebSocket transport), reading and writing frames. Level-triggered, one read per ready socket per turn (fair between
// connections), writes gathered per turn and flushed once.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <openssl/err.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>

#include "jwt.h"
#include "sio.h"
#include "worker.h"

namespace bench {

namespace {

constexpr uint64_t kTimerTag = ~uint64_t{0};
constexpr size_t kMaxPayload = 16 * 1024 * 1024;
constexpr size_t kReadChunk = 256 * 1024;
constexpr int kMaxEvents = 512;

// "7b 22 74 79 ..." of the first n bytes, for reports of malformed streams.
std::string hex_prefix(std::string_view s, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < n; ++i) {
    auto b = static_cast<unsigned char>(s[i]);
    if (i) out += ' ';
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out.empty() ? "(nothing)" : out;
}

}  // namespace

void Totals::merge(const Totals& o) {
  established += o.established;
  connect_failures += o.connect_failures;
  closed_early += o.closed_early;
  first_connect_ns = std::min(first_connect_ns, o.first_connect_ns);
  last_established_ns = std::max(last_established_ns, o.last_established_ns);
  sent += o.sent;
  sent_in_window += o.sent_in_window;
  acked += o.acked;
  acked_in_window += o.acked_in_window;
  deliveries += o.deliveries;
  deliveries_in_window += o.deliveries_in_window;
  unique_deliveries += o.unique_deliveries;
  duplicates += o.duplicates;
  out_of_order += o.out_of_order;
  misrouted += o.misrouted;
  own_echoes += o.own_echoes;
  seq_violations += o.seq_violations;
  duplicate_acks += o.duplicate_acks;
  rejected += o.rejected;
  rate_limited += o.rate_limited;
  cap_waits += o.cap_waits;
  bad_frames += o.bad_frames;
  other_frames += o.other_frames;
  late_sends += o.late_sends;
  replayed += o.replayed;
  for (const auto& [k, v] : o.errors) errors[k] += v;
  for (const auto& [k, v] : o.other_types) {
    auto it = std::find_if(other_types.begin(), other_types.end(), [&](const auto& e) { return e.first == k; });
    if (it == other_types.end()) other_types.emplace_back(k, v);
    else it->second += v;
  }
  for (const auto& s : o.failure_samples)
    if (failure_samples.size() < 8) failure_samples.push_back(s);
  delivery.merge(o.delivery);
  ack.merge(o.ack);
  connect.merge(o.connect);
}

Worker::Worker(int index, int count, Shared& shared, Progress& progress)
    : index_(index),
      count_(count),
      shared_(shared),
      progress_(progress),
      opt_(*shared.opt),
      plan_(*shared.plan),
      rng_(shared.run_nonce * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(index) + 1),
      scratch_(kReadChunk) {
  const int64_t users = plan_.users;
  conns_.reserve(static_cast<size_t>(users / count_ + 1));
  for (int64_t u = index_; u < users; u += count_) {
    Conn c;
    c.user = u;
    c.group = plan_.group_of(u);
    if (c.group >= 0) c.recv.resize(static_cast<size_t>(plan_.senders_in_group[static_cast<size_t>(c.group)]));
    int32_t s = plan_.sender_of_user[static_cast<size_t>(u)];
    if (s >= 0) {
      SenderState st;
      st.user = u;
      st.conn = static_cast<uint32_t>(conns_.size());
      c.sender = static_cast<int32_t>(senders_.size());
      senders_.push_back(std::move(st));
    }
    conns_.push_back(std::move(c));
  }
  max_in_flight_ = std::max<int64_t>(1, (opt_.concurrency + count_ - 1) / count_);
  for (int port : opt_.ports)
    host_headers_.push_back((opt_.addrs.front().ss_family == AF_INET6 ? "[::1]" : opt_.host) + ":" + std::to_string(port));
  if (opt_.tls) {
    // TLS writes go through write(2), not send(MSG_NOSIGNAL): a peer that
    // closed must not kill the run.
    std::signal(SIGPIPE, SIG_IGN);
    tls_ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(tls_ctx_, SSL_VERIFY_NONE, nullptr);  // loopback only; what is measured is the cost
    SSL_CTX_set_options(tls_ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF);
    // c.out may grow between a partial SSL_write and its retry.
    SSL_CTX_set_mode(tls_ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  }
}

Worker::~Worker() {
  close_all();
  if (tls_ctx_) SSL_CTX_free(tls_ctx_);
}

ssize_t Worker::read_some(Conn& c, char* buf, size_t len) {
  if (!c.ssl) return ::recv(c.fd, buf, len, 0);
  int n = SSL_read(c.ssl, buf, static_cast<int>(std::min<size_t>(len, INT_MAX)));
  if (n > 0) return n;
  int err = SSL_get_error(c.ssl, n);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    errno = EAGAIN;
    return -1;
  }
  if (err == SSL_ERROR_ZERO_RETURN) return 0;
  if (err != SSL_ERROR_SYSCALL) errno = EPROTO;
  ERR_clear_error();
  return -1;
}

ssize_t Worker::write_some(Conn& c, const char* buf, size_t len) {
  if (!c.ssl) return ::send(c.fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  int n = SSL_write(c.ssl, buf, static_cast<int>(std::min<size_t>(len, INT_MAX)));
  if (n > 0) return n;
  int err = SSL_get_error(c.ssl, n);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    errno = EAGAIN;
    return -1;
  }
  if (err != SSL_ERROR_SYSCALL) errno = EPROTO;
  ERR_clear_error();
  return -1;
}

void Worker::run() {
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) {
    totals_.failure_samples.push_back(std::string("epoll_create1: ") + std::strerror(errno));
    return;
  }
  if (opt_.scenario == Scenario::kLatency) {
    timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTimerTag;
    epoll_ctl(ep_, EPOLL_CTL_ADD, timer_fd_, &ev);
  }
  epoll_event events[kMaxEvents];
  interval_start_ = mono_ns();
  for (;;) {
    int64_t now = mono_ns();
    const int phase = shared_.phase.load(std::memory_order_acquire);
    if (phase == kPhaseStop || now > shared_.hard_deadline_ns) break;
    if (phase >= kPhaseSend && !sending_) setup_sending(now);
    if (phase == kPhaseConnect || next_to_connect_ < conns_.size()) start_connections(now);
    if (sending_) pump(now);
    flush();
    publish(now);

    int timeout_ms = 5;
    if (!blocked_.empty()) timeout_ms = 1;
    int n = epoll_wait(ep_, events, kMaxEvents, timeout_ms);
    if (n < 0 && errno != EINTR) {
      totals_.failure_samples.push_back(std::string("epoll_wait: ") + std::strerror(errno));
      break;
    }
    now = mono_ns();
    for (int i = 0; i < n; ++i) {
      const epoll_event& ev = events[i];
      if (ev.data.u64 == kTimerTag) {
        uint64_t expirations;
        [[maybe_unused]] ssize_t r = ::read(timer_fd_, &expirations, sizeof expirations);
        if (sending_) pump(now);
        continue;
      }
      Conn& c = conns_[static_cast<size_t>(ev.data.u64)];
      if (c.state == kClosed || c.state == kNotStarted) continue;
      if (c.state == kConnecting) {
        finish_connect(c, now);
        continue;
      }
      if (c.state == kTlsHandshake) {
        continue_handshake(c, now);
        continue;
      }
      if (ev.events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c, now);
      if (c.state != kClosed && (ev.events & EPOLLOUT)) write_pending(c);
    }
    flush();
  }
  publish(mono_ns());
  close_all();
}

void Worker::start_connections(int64_t now) {
  // Bounded: at most max_in_flight_ attempts at once, each started once.
  while (next_to_connect_ < conns_.size() && in_flight_ < max_in_flight_) {
    Conn& c = conns_[next_to_connect_++];
    begin_connect(c, now);
  }
}

void Worker::begin_connect(Conn& c, int64_t now) {
  c.t_start = now;
  totals_.first_connect_ns = std::min(totals_.first_connect_ns, now);
  ++in_flight_;
  c.state = kConnecting;
  const sockaddr_storage& addr = opt_.addrs[static_cast<size_t>(c.user) % opt_.addrs.size()];
  c.fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c.fd < 0) return fail(c, std::string("socket: ") + std::strerror(errno), now);
  int one = 1;
  setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (addr.ss_family == AF_INET && opt_.source_ips > 1) {
    // With every socket on one source address, connect()'s search for a free
    // local port gets slower as tens of thousands are in use (the kernel checks
    // each candidate against the established table). Spreading the sockets over
    // several loopback sources keeps that search short; the port is still picked
    // at connect time (IP_BIND_ADDRESS_NO_PORT).
    setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl((127u << 24) | static_cast<uint32_t>(1 + c.user % opt_.source_ips));
    if (::bind(c.fd, reinterpret_cast<const sockaddr*>(&src), sizeof src) != 0)
      return fail(c, std::string("bind: ") + std::strerror(errno), now);
  }
  if (::connect(c.fd, reinterpret_cast<const sockaddr*>(&addr), opt_.addr_len) != 0 && errno != EINPROGRESS)
    return fail(c, std::string("connect: ") + std::strerror(errno), now);
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.u64 = static_cast<uint64_t>(&c - conns_.data());
  if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev) != 0) return fail(c, std::string("epoll_ctl: ") + std::strerror(errno), now);
  c.want_out = true;
}

void Worker::finish_connect(Conn& c, int64_t now) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == EINPROGRESS || err == EALREADY) return;
  if (err != 0) return fail(c, std::string("connect: ") + std::strerror(err), now);
  if (tls_ctx_) {
    c.ssl = SSL_new(tls_ctx_);
    SSL_set_fd(c.ssl, c.fd);
    SSL_set_connect_state(c.ssl);
    c.state = kTlsHandshake;
    return continue_handshake(c, now);
  }
  send_upgrade(c);
}

void Worker::continue_handshake(Conn& c, int64_t now) {
  int r = SSL_do_handshake(c.ssl);
  if (r == 1) return send_upgrade(c);
  int err = SSL_get_error(c.ssl, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return set_events(c, err == SSL_ERROR_WANT_WRITE);
  char why[256] = "connection closed";
  if (unsigned long e = ERR_get_error()) ERR_error_string_n(e, why, sizeof why);
  ERR_clear_error();
  fail(c, std::string("TLS handshake: ") + why, now);
}

void Worker::send_upgrade(Conn& c) {
  std::string target;
  if (opt_.protocol == Protocol::kSocketIo) {
    target = sio_target(opt_.path);  // the token goes in the Socket.IO CONNECT
    c.sio_step = 0;
  } else {
    const int64_t wall_s = static_cast<int64_t>(::time(nullptr));
    target = opt_.path + "?token=" + mint_hs256(opt_.jwt_secret, user_id(c.user + opt_.user_offset), wall_s, 3600);
  }
  Upgrade up = make_upgrade(host_headers_[static_cast<size_t>(c.user) % host_headers_.size()], target, rng_);
  c.accept = std::move(up.expected_accept);
  c.state = kUpgrading;
  c.out += up.request;
  set_events(c, false);
  write_pending(c);
}

void Worker::set_events(Conn& c, bool want_out) {
  if (c.fd < 0) return;
  epoll_event ev{};
  ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0u);
  ev.data.u64 = static_cast<uint64_t>(&c - conns_.data());
  epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
  c.want_out = want_out;
}

void Worker::fail(Conn& c, const std::string& why, int64_t now) {
  (void)now;
  const bool connecting =
      c.state == kConnecting || c.state == kTlsHandshake || c.state == kUpgrading || c.state == kAwaitEstablished;
  if (connecting) {
    ++totals_.connect_failures;
    --in_flight_;
  } else if (c.state == kOpen) {
    ++totals_.closed_early;
  }
  if (totals_.failure_samples.size() < 8)
    totals_.failure_samples.push_back("user " + std::to_string(c.user) + ": " + why);
  if (c.ssl) SSL_free(c.ssl);
  c.ssl = nullptr;
  if (c.fd >= 0) ::close(c.fd);  // also removes it from the epoll set
  c.fd = -1;
  c.state = kClosed;
}

// Under TLS, OpenSSL may hold decrypted bytes the socket no longer signals: read those too.
void Worker::on_readable(Conn& c, int64_t now) {
  do {
    read_once(c, now);
  } while (c.ssl && c.state != kClosed && SSL_pending(c.ssl) > 0);
}

void Worker::read_once(Conn& c, int64_t now) {
  if (c.in.empty()) {
    ssize_t n = read_some(c, scratch_.data(), scratch_.size());
    if (n > 0) {
      std::string_view data(scratch_.data(), static_cast<size_t>(n));
      size_t used = process(c, data, now);
      if (c.state != kClosed && used < data.size()) c.in.assign(data.substr(used));
      return;
    }
    if (n == 0) return fail(c, "server closed the TCP connection", now);
    if (errno == EAGAIN || errno == EINTR) return;
    return fail(c, std::string("recv: ") + std::strerror(errno), now);
  }
  const size_t old = c.in.size();
  c.in.resize(old + kReadChunk);
  ssize_t n = read_some(c, c.in.data() + old, kReadChunk);
  if (n <= 0) {
    c.in.resize(old);
    if (n == 0) return fail(c, "server closed the TCP connection", now);
    if (errno == EAGAIN || errno == EINTR) return;
    return fail(c, std::string("recv: ") + std::strerror(errno), now);
  }
  c.in.resize(old + static_cast<size_t>(n));
  size_t used = process(c, c.in, now);
  if (c.state == kClosed) {
    std::string().swap(c.in);
    return;
  }
  c.in.erase(0, used);
  if (c.in.capacity() > 4 * kReadChunk && c.in.size() < kReadChunk) c.in.shrink_to_fit();
}

size_t Worker::process(Conn& c, std::string_view data, int64_t now) {
  size_t pos = 0;
  std::string_view last_frame_tail;  // for error reports
  if (c.state == kUpgrading) {
    std::string error;
    long r = parse_upgrade_response(data, c.accept, &error);
    if (r == 0) return 0;
    if (r < 0) {
      fail(c, "upgrade refused: " + error, now);
      return data.size();
    }
    pos = static_cast<size_t>(r);
    c.state = kAwaitEstablished;
    std::string().swap(c.accept);
  }
  while (pos < data.size() && c.state != kClosed) {
    ServerFrame f;
    long r = parse_server_frame(data.substr(pos), f, kMaxPayload);
    if (r == 0) break;
    if (r < 0) {
      fail(c, "WebSocket protocol error from the server at stream byte " + std::to_string(c.bytes_in) + ": " +
                  hex_prefix(data.substr(pos), 16) + " after " + hex_prefix(last_frame_tail, 16),
           now);
      return data.size();
    }
    pos += static_cast<size_t>(r);
    c.bytes_in += static_cast<uint64_t>(r);
    switch (f.opcode) {
      case kText:
        if (c.frag_active) {
          fail(c, "text frame inside a fragmented message", now);
          return data.size();
        }
        if (f.fin) {
          on_text(c, f.payload, now);
        } else {
          c.frag.assign(f.payload);
          c.frag_active = true;
        }
        break;
      case kContinuation:
        if (!c.frag_active) {
          fail(c, "continuation without a first frame at stream byte " + std::to_string(c.bytes_in - static_cast<uint64_t>(r)) +
                      ": " + hex_prefix(data.substr(pos - static_cast<size_t>(r)), 16) + " after " +
                      hex_prefix(last_frame_tail, 16),
               now);
          return data.size();
        }
        c.frag.append(f.payload);
        if (f.fin) {
          c.frag_active = false;
          on_text(c, c.frag, now);
          c.frag.clear();
        }
        break;
      case kBinary:
        ++totals_.bad_frames;
        break;
      case kClose: {
        int code = f.payload.size() >= 2
                       ? (static_cast<unsigned char>(f.payload[0]) << 8) | static_cast<unsigned char>(f.payload[1])
                       : 1005;
        std::string reason(f.payload.size() > 2 ? f.payload.substr(2) : std::string_view{});
        fail(c, "server sent close " + std::to_string(code) + " " + reason, now);
        return data.size();
      }
      case kPing:
        send_frame(c, kPong, f.payload);
        break;
      case kPong:
        break;
      default:
        fail(c, "unknown opcode " + std::to_string(f.opcode), now);
        return data.size();
    }
    last_frame_tail = f.payload.substr(f.payload.size() > 16 ? f.payload.size() - 16 : 0);
  }
  return pos;
}

void Worker::send_frame(Conn& c, Opcode op, std::string_view payload) {
  append_client_frame(c.out, op, payload, static_cast<uint32_t>(rng_.next()));
  if (!c.dirty) {
    c.dirty = true;
    dirty_.push_back(static_cast<uint32_t>(&c - conns_.data()));
  }
}

void Worker::write_pending(Conn& c) {
  while (c.out_off < c.out.size()) {
    ssize_t n = write_some(c, c.out.data() + c.out_off, c.out.size() - c.out_off);
    if (n > 0) {
      c.out_off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (!c.want_out) set_events(c, true);
      return;
    }
    return fail(c, std::string("send: ") + std::strerror(errno), mono_ns());
  }
  c.out.clear();
  c.out_off = 0;
  if (c.want_out && c.state != kConnecting) set_events(c, false);
}

void Worker::flush() {
  for (uint32_t i : dirty_) {
    Conn& c = conns_[i];
    c.dirty = false;
    if (c.state == kClosed || c.state == kConnecting || c.state == kTlsHandshake || c.fd < 0) continue;
    write_pending(c);
  }
  dirty_.clear();
}

void Worker::publish(int64_t now) {
  constexpr auto r = std::memory_order_relaxed;
  progress_.established.store(totals_.established, r);
  progress_.connect_failures.store(totals_.connect_failures, r);
  progress_.closed_early.store(totals_.closed_early, r);
  progress_.sent.store(totals_.sent, r);
  progress_.acked.store(totals_.acked, r);
  progress_.outstanding.store(outstanding_, r);
  progress_.deliveries.store(totals_.deliveries, r);
  progress_.unique_deliveries.store(totals_.unique_deliveries, r);
  progress_.expected_deliveries.store(expected_deliveries_, r);
  if (now - interval_start_ >= 1'000'000'000) {
    progress_.interval_p99_ns.store(interval_.quantile(0.99), r);
    interval_.reset();
    interval_start_ = now;
  }
}

void Worker::close_all() {
  // Abortive close (RST): no TIME_WAIT left behind, so back-to-back runs of
  // tens of thousands of connections do not run out of local ports.
  linger lg{1, 0};
  for (auto& c : conns_) {
    if (c.ssl) SSL_free(c.ssl);
    c.ssl = nullptr;
    if (c.fd >= 0) {
      setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      ::close(c.fd);
      c.fd = -1;
    }
  }
  if (timer_fd_ >= 0) ::close(timer_fd_);
  if (ep_ >= 0) ::close(ep_);
  timer_fd_ = ep_ = -1;
}

}  // namespace bench
