// One client thread: an epoll loop that owns a share of the connections
// (user u belongs to worker u % threads), drives them through connect ->
// upgrade -> connection_established (Socket.IO: upgrade -> open packet ->
// CONNECT -> connection_success), sends what the scenario asks and checks
// every frame that comes back. Nothing is shared with other workers except
// the read-only plan, the phase flag and the progress counters.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "options.h"
#include "stats.h"
#include "ws.h"

namespace bench {

enum Phase : int { kPhaseConnect = 0, kPhaseSend = 1, kPhaseDrain = 2, kPhaseStop = 3 };

// Written by the orchestrator, read by workers.
struct Shared {
  const Options* opt = nullptr;
  const Plan* plan = nullptr;
  std::atomic<int> phase{kPhaseConnect};
  std::atomic<int64_t> send_start_ns{0};    // first scheduled send
  std::atomic<int64_t> window_start_ns{0};  // measuring starts (after warmup)
  std::atomic<int64_t> window_end_ns{0};    // measuring and sending stop
  int64_t hard_deadline_ns = 0;             // every worker stops by then, whatever happens
  uint64_t run_nonce = 0;                   // makes client_msg_id unique per run
  int64_t run_start_ns = 0;                 // messages stamped before this are history, not this run's
};

// Live counters of one worker, published every loop turn for progress lines
// and for the orchestrator's drain check.
struct alignas(64) Progress {
  std::atomic<int64_t> established{0};
  std::atomic<int64_t> connect_failures{0};
  std::atomic<int64_t> closed_early{0};
  std::atomic<int64_t> sent{0};
  std::atomic<int64_t> acked{0};
  std::atomic<int64_t> outstanding{0};  // sent, not yet answered
  std::atomic<int64_t> deliveries{0};
  std::atomic<int64_t> unique_deliveries{0};
  std::atomic<int64_t> expected_deliveries{0};  // from acks: acked x (members - 1)
  std::atomic<int64_t> interval_p99_ns{0};      // of the last second
};

// Everything a worker counted; merged by the orchestrator after the run.
struct Totals {
  int64_t established = 0, connect_failures = 0, closed_early = 0;
  int64_t first_connect_ns = INT64_MAX, last_established_ns = 0;
  int64_t sent = 0, sent_in_window = 0, acked = 0, acked_in_window = 0;
  int64_t deliveries = 0, deliveries_in_window = 0, unique_deliveries = 0;
  int64_t duplicates = 0, out_of_order = 0, misrouted = 0, seq_violations = 0;
  int64_t own_echoes = 0;  // of misrouted: the connection's own message back as new_message
  int64_t duplicate_acks = 0, rejected = 0, rate_limited = 0, cap_waits = 0;
  int64_t bad_frames = 0, other_frames = 0, late_sends = 0;
  int64_t replayed = 0;  // new_message of an earlier run (Socket.IO's catch-up on connect): not counted
  std::map<std::string, int64_t> errors;  // error frames by code
  std::vector<std::pair<std::string, int64_t>> other_types;  // other_frames by type / event name (few)
  std::vector<std::string> failure_samples;
  Histogram delivery;  // scheduled send -> new_message, messages sent in the window
  Histogram ack;       // scheduled send -> message_sent, messages sent in the window
  Histogram connect;   // connect() -> connection_established

  void merge(const Totals& o);
};

// What one recipient got from one sender: a bit per counter.
struct RecvTrack {
  int64_t last = -1;
  std::vector<uint64_t> bits;
};

struct SenderState {
  int64_t user = 0;
  uint32_t conn = 0;  // index in the worker's connections
  int64_t next_counter = 0;
  int64_t outstanding = 0;
  int64_t acked_count = 0, rejected = 0, rate_limited = 0;
  int64_t paused_until = 0;
  double tokens = 0;
  int64_t refilled_at = 0;
  bool blocked = false;
  std::vector<uint64_t> acked;  // a bit per counter
};

enum ConnState : uint8_t { kNotStarted, kConnecting, kTlsHandshake, kUpgrading, kAwaitEstablished, kOpen, kClosed };

struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;      // --tls: the TLS session over fd
  ConnState state = kNotStarted;
  bool dirty = false;      // in the flush list
  bool want_out = false;   // EPOLLOUT registered
  bool frag_active = false;
  uint8_t sio_step = 0;    // Socket.IO, while kAwaitEstablished: 0 open packet due, 1 CONNECT due, 2 connection_success due
  int32_t sender = -1;     // local SenderState index
  int64_t user = 0;
  int64_t group = -1;
  int64_t t_start = 0;
  int64_t last_seq = 0;
  uint64_t bytes_in = 0;   // WebSocket bytes parsed so far (for error reports)
  size_t out_off = 0;
  std::string out;
  std::string in;
  std::string frag;
  std::string accept;
  std::vector<RecvTrack> recv;  // by sender slot in the group
};

class Worker {
 public:
  Worker(int index, int count, Shared& shared, Progress& progress);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void run();  // the thread body; returns when the phase is Stop or the hard deadline passes

  const Totals& totals() const { return totals_; }
  const std::vector<Conn>& conns() const { return conns_; }
  const std::vector<SenderState>& senders() const { return senders_; }

 private:
  // loop.cc: connections and bytes
  void start_connections(int64_t now);
  void begin_connect(Conn& c, int64_t now);
  void finish_connect(Conn& c, int64_t now);
  void continue_handshake(Conn& c, int64_t now);  // --tls: drives SSL_do_handshake, then sends the upgrade
  void send_upgrade(Conn& c);
  // recv/send, or SSL_read/SSL_write under --tls: >0 bytes, 0 closed, -1 errno set (EAGAIN: wait).
  ssize_t read_some(Conn& c, char* buf, size_t len);
  ssize_t write_some(Conn& c, const char* buf, size_t len);
  void on_readable(Conn& c, int64_t now);
  void read_once(Conn& c, int64_t now);
  size_t process(Conn& c, std::string_view data, int64_t now);
  void send_frame(Conn& c, Opcode op, std::string_view payload);
  void write_pending(Conn& c);
  void flush();
  void fail(Conn& c, const std::string& why, int64_t now);
  void set_events(Conn& c, bool want_out);
  void publish(int64_t now);
  void close_all();

  // traffic.cc: what the scenario sends and how replies are checked
  void setup_sending(int64_t now);
  void pump(int64_t now);
  void try_send(uint32_t s, int64_t now);
  void send_message(SenderState& s, int64_t send_ns);
  void arm_timer();
  void on_text(Conn& c, std::string_view text, int64_t now);
  void count_other(std::string_view type);  // ++other_frames, by type
  void on_established(Conn& c, int64_t now);
  void on_delivery(Conn& c, std::string_view text, int64_t now);
  void on_ack(Conn& c, std::string_view text, int64_t now);
  void on_error(Conn& c, std::string_view text, int64_t now);
  // Counts counter's acknowledgement (send_ns: its send time) and sends more.
  void acknowledged(Conn& c, SenderState& s, int64_t counter, int64_t send_ns, int64_t now);
  // A send the server refused (never stored): code "rate_limited" backs off.
  void refused(Conn& c, SenderState& s, bool rate_limited, int64_t now);

  // sio_traffic.cc: the same traffic as Socket.IO packets
  void on_sio_text(Conn& c, std::string_view text, int64_t now);
  void on_sio_ack(Conn& c, int64_t ack_id, std::string_view data, int64_t now);
  void append_sio_send(std::string& f, const Conn& c, const SenderState& s, int64_t counter, int64_t send_ns);
  // The content value (its opening quote already written) and client_msg_id, to its closing quote.
  void append_content_fields(std::string& f, const SenderState& s, int64_t counter, int64_t send_ns);
  bool in_window(int64_t t) const { return t >= window_start_ && t < window_end_; }

  const int index_;
  const int count_;
  Shared& shared_;
  Progress& progress_;
  const Options& opt_;
  const Plan& plan_;
  Rng rng_;
  int ep_ = -1;
  int timer_fd_ = -1;
  SSL_CTX* tls_ctx_ = nullptr;  // --tls
  std::vector<Conn> conns_;
  std::vector<SenderState> senders_;
  std::vector<uint32_t> dirty_;
  std::vector<uint32_t> blocked_;
  std::vector<char> scratch_;
  std::string frame_buf_;
  std::vector<std::string> host_headers_;  // one per port
  size_t next_to_connect_ = 0;
  int64_t in_flight_ = 0;
  int64_t max_in_flight_ = 1;
  Totals totals_;
  Histogram interval_;
  int64_t interval_start_ = 0;
  int64_t outstanding_ = 0;
  int64_t expected_deliveries_ = 0;

  // sending
  bool sending_ = false;
  int64_t send_start_ = 0, window_start_ = 0, window_end_ = 0;
  double burst_ = 1;
  // latency scenario: this worker's share of the open-loop schedule
  int64_t sched_next_ = 0;
  double sched_interval_ns_ = 0;
  int64_t sched_index_ = 0;
};

// Exact delivery check over every worker, after all have stopped: for each
// acked message, did each other member of its group get it?
struct Correctness {
  int64_t expected = 0;    // acked messages x (group members - 1)
  int64_t delivered = 0;   // of those, received
  int64_t missing = 0;     // of those, never received
  int64_t unexpected = 0;  // received, but never acked to its sender
  int64_t unacked = 0;     // sent, no message_sent and no error by the end
};

Correctness check_deliveries(const Plan& plan, int threads, const std::vector<std::unique_ptr<Worker>>& workers);

}  // namespace bench
