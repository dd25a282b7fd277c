// The orchestrator: starts the workers, moves them through the phases
// (connect, send with warmup and measured window, drain, stop), samples the
// server's CPU and memory at the window's edges, prints one progress line a
// second on stderr and one JSON object on stdout.
#include "run.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>

#include "proc.h"
#include "worker.h"

namespace bench {

namespace {

struct Sum {
  int64_t established = 0, connect_failures = 0, closed_early = 0, sent = 0, acked = 0, outstanding = 0,
          deliveries = 0, unique_deliveries = 0, expected_deliveries = 0, p99_ns = 0;
};

Sum sum_progress(const std::vector<std::unique_ptr<Progress>>& ps) {
  Sum s;
  constexpr auto r = std::memory_order_relaxed;
  for (const auto& p : ps) {
    s.established += p->established.load(r);
    s.connect_failures += p->connect_failures.load(r);
    s.closed_early += p->closed_early.load(r);
    s.sent += p->sent.load(r);
    s.acked += p->acked.load(r);
    s.outstanding += p->outstanding.load(r);
    s.deliveries += p->deliveries.load(r);
    s.unique_deliveries += p->unique_deliveries.load(r);
    s.expected_deliveries += p->expected_deliveries.load(r);
    s.p99_ns = std::max(s.p99_ns, p->interval_p99_ns.load(r));
  }
  return s;
}

std::string human(double v) {
  char buf[32];
  if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e4) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

void sleep_until_ns(int64_t t) {
  int64_t now = mono_ns();
  if (t > now) std::this_thread::sleep_for(std::chrono::nanoseconds(t - now));
}

// Progress once a second while waiting until `until` (or `done()`).
template <typename Done>
void wait_with_progress(const char* name, const char* stage, int64_t t0, int64_t until,
                        const std::vector<std::unique_ptr<Progress>>& ps, Sum& last, int64_t& last_print, Done done) {
  for (;;) {
    const int64_t now = mono_ns();
    if (now >= until || done()) return;
    if (now - last_print >= 1'000'000'000) {
      Sum s = sum_progress(ps);
      const double dt = static_cast<double>(now - last_print) / 1e9;
      std::fprintf(stderr, "%s %s t=%.0fs conns=%" PRId64 " sent=%" PRId64 " acked=%s/s delivered=%s/s p99=%.2fms%s\n",
                   name, stage, static_cast<double>(now - t0) / 1e9, s.established, s.sent,
                   human(static_cast<double>(s.acked - last.acked) / dt).c_str(),
                   human(static_cast<double>(s.deliveries - last.deliveries) / dt).c_str(),
                   static_cast<double>(s.p99_ns) / 1e6,
                   s.closed_early + s.connect_failures ? " FAILURES" : "");
      last = s;
      last_print = now;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Connecting sets off work on the server that is not the scenario's: Parley
// announces each new user's presence to everyone sharing a thread with them
// (at 19,000 users in groups of 500, 9.5 million frames). Sending starts once
// the server's CPU has stayed under a tenth of a core for 400 ms (two steps
// of 200 ms: /proc counts CPU time in 10 ms ticks), so the window measures
// the scenario whenever that work happens to run; at most --settle-timeout
// seconds, and not at all without --server-pid. Returns the seconds waited.
double settle(const Options& opt, const char* name, int64_t t0, const std::vector<std::unique_ptr<Progress>>& ps,
              Sum& last, int64_t& last_print) {
  if (opt.server_pids.empty() || opt.settle_timeout_s <= 0) return 0;
  constexpr int64_t kStepNs = 200'000'000;
  constexpr double kQuietCpuSeconds = 0.1 * kStepNs / 1e9;
  constexpr int kQuietSteps = 2;
  const int64_t start = mono_ns();
  const int64_t deadline = start + static_cast<int64_t>(opt.settle_timeout_s * 1e9);
  ProcSample prev = sample_processes(opt.server_pids);
  int64_t next = start + kStepNs;
  int quiet = 0;
  wait_with_progress(name, "settle", t0, deadline, ps, last, last_print, [&] {
    const int64_t now = mono_ns();
    if (now < next) return false;
    next = now + kStepNs;
    ProcSample cur = sample_processes(opt.server_pids);
    if (!cur.ok || !prev.ok) return true;  // cannot tell: do not wait
    quiet = cur.cpu_seconds - prev.cpu_seconds < kQuietCpuSeconds ? quiet + 1 : 0;
    prev = cur;
    return quiet >= kQuietSteps;
  });
  return static_cast<double>(mono_ns() - start) / 1e9;
}

double per(double a, double b) { return b > 0 ? a / b : NAN; }

}  // namespace

int run(const Options& opt) {
  ::signal(SIGPIPE, SIG_IGN);
  const int64_t fd_limit = raise_fd_limit();
  if (fd_limit > 0 && opt.users + 64 > fd_limit) {
    std::fprintf(stderr, "parley-bench: %" PRId64 " connections need more than the open-file limit %" PRId64 "\n",
                 opt.users, fd_limit);
    return 2;
  }
  const Plan plan = make_plan(opt);
  const char* name = scenario_name(opt.scenario);

  Shared shared;
  shared.opt = &opt;
  shared.plan = &plan;
  shared.run_nonce = std::random_device{}() ^ (static_cast<uint64_t>(mono_ns()) << 16);
  shared.run_start_ns = mono_ns();
  const double budget_s =
      opt.connect_timeout_s + opt.settle_timeout_s + opt.warmup_s + opt.duration_s + opt.drain_timeout_s + 30;
  shared.hard_deadline_ns = mono_ns() + static_cast<int64_t>(budget_s * 1e9);

  const int threads = opt.threads;
  std::vector<std::unique_ptr<Progress>> progress;
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < threads; ++i) {
    progress.push_back(std::make_unique<Progress>());
    workers.push_back(std::make_unique<Worker>(i, threads, shared, *progress.back()));
  }

  const ProcSample before = sample_processes(opt.server_pids);
  const double client_cpu_before = own_cpu_seconds();
  const int64_t t_begin = mono_ns();
  std::vector<std::thread> pool;
  for (auto& w : workers) pool.emplace_back([&w] { w->run(); });

  // --- connect
  Sum last{};
  int64_t last_print = t_begin;
  const int64_t connect_deadline = t_begin + static_cast<int64_t>(opt.connect_timeout_s * 1e9);
  wait_with_progress(name, "connect", t_begin, connect_deadline, progress, last, last_print, [&] {
    Sum s = sum_progress(progress);
    return s.established + s.connect_failures >= opt.users;
  });
  const int64_t t_connected = mono_ns();
  const ProcSample after_connect = sample_processes(opt.server_pids);
  Sum s = sum_progress(progress);
  const bool all_connected = s.established == opt.users;

  ProcSample w0, w1;
  int64_t window_start = 0, window_end = 0;
  double settle_s = 0;
  std::string error;
  if (!all_connected && opt.scenario != Scenario::kConnect) {
    error = "only " + std::to_string(s.established) + " of " + std::to_string(opt.users) + " connections established";
  } else if (opt.scenario == Scenario::kIdle) {
    window_start = t_connected;
    window_end = t_connected + static_cast<int64_t>(opt.duration_s * 1e9);
    w0 = after_connect;
    wait_with_progress(name, "hold", t_connected, window_end, progress, last, last_print, [] { return false; });
    w1 = sample_processes(opt.server_pids);
  } else if (opt.scenario != Scenario::kConnect) {
    settle_s = settle(opt, name, t_connected, progress, last, last_print);
    const int64_t send_start = mono_ns() + 50'000'000;  // workers see the phase change well before this
    window_start = send_start + static_cast<int64_t>(opt.warmup_s * 1e9);
    window_end = window_start + static_cast<int64_t>(opt.duration_s * 1e9);
    shared.send_start_ns.store(send_start, std::memory_order_release);
    shared.window_start_ns.store(window_start, std::memory_order_release);
    shared.window_end_ns.store(window_end, std::memory_order_release);
    shared.phase.store(kPhaseSend, std::memory_order_release);
    wait_with_progress(name, "warmup", send_start, window_start, progress, last, last_print, [] { return false; });
    sleep_until_ns(window_start);
    w0 = sample_processes(opt.server_pids);
    wait_with_progress(name, "run", send_start, window_end, progress, last, last_print, [] { return false; });
    sleep_until_ns(window_end);
    w1 = sample_processes(opt.server_pids);
    shared.phase.store(kPhaseDrain, std::memory_order_release);
    const int64_t drain_deadline = mono_ns() + static_cast<int64_t>(opt.drain_timeout_s * 1e9);
    wait_with_progress(name, "drain", send_start, drain_deadline, progress, last, last_print, [&] {
      Sum d = sum_progress(progress);
      return d.outstanding <= 0 && d.unique_deliveries >= d.expected_deliveries;
    });
  }
  const int64_t t_end = mono_ns();
  const Sum at_end = sum_progress(progress);
  const bool drain_complete = at_end.outstanding <= 0 && at_end.unique_deliveries >= at_end.expected_deliveries;
  shared.phase.store(kPhaseStop, std::memory_order_release);
  for (auto& t : pool) t.join();
  const ProcSample after = sample_processes(opt.server_pids);
  const double client_cpu = own_cpu_seconds() - client_cpu_before;

  Totals tot;
  for (const auto& w : workers) tot.merge(w->totals());
  const Correctness corr = check_deliveries(plan, threads, workers);

  // --- verdict
  const bool messaging = opt.scenario == Scenario::kFanout || opt.scenario == Scenario::kLatency ||
                         opt.scenario == Scenario::kDm;
  bool ok = error.empty() && tot.connect_failures == 0 && tot.closed_early == 0;
  if (messaging)
    ok = ok && corr.missing == 0 && tot.duplicates == 0 && tot.out_of_order == 0 && tot.misrouted == 0 &&
         tot.seq_violations == 0 && corr.unexpected == 0 && corr.unacked == 0 && tot.duplicate_acks == 0 &&
         tot.bad_frames == 0 && tot.acked > 0;
  if (error.empty() && !ok) {
    if (tot.connect_failures || tot.closed_early) error = "connections failed or were closed by the server";
    else if (messaging && tot.acked == 0) error = "no message was acknowledged";
    else if (messaging && !drain_complete)
      error = "drain timed out with " + std::to_string(at_end.outstanding) + " sends unanswered and " +
              std::to_string(std::max<int64_t>(0, at_end.expected_deliveries - at_end.unique_deliveries)) +
              " deliveries still due (server behind; a longer --drain-timeout may let them arrive)";
    else error = "delivery check failed";
  }

  // --- report
  const double window_s = static_cast<double>(window_end - window_start) / 1e9;
  const bool have_server = before.ok && after.ok;
  Json j;
  j.begin_object();
  j.kv("scenario", name);
  j.kv("target", opt.target_name);
  j.kv("ok", ok);
  if (!error.empty()) j.kv("error", error);
  j.begin_object("params");
  j.kv("protocol", protocol_name(opt.protocol));
  j.kv("tls", opt.tls);
  j.kv("users", opt.users);
  j.kv("group_size", opt.group_size);
  j.kv("groups", plan.groups);
  j.kv("senders", static_cast<int64_t>(plan.sender_user.size()));
  if (opt.scenario == Scenario::kFanout) j.kv("window", opt.window);
  if (opt.scenario == Scenario::kDm) j.kv("window", 1);
  if (opt.scenario == Scenario::kLatency) j.kv("rate", opt.rate);
  if (opt.scenario == Scenario::kFanout || opt.scenario == Scenario::kDm) j.kv("conn_rate_cap", opt.conn_rate_cap);
  j.kv("duration_s", opt.duration_s);
  j.kv("warmup_s", opt.warmup_s);
  j.kv("threads", threads);
  j.kv("concurrency", opt.concurrency);
  j.kv("message_bytes", opt.message_bytes);
  j.kv("port", opt.port);
  j.kv("nodes", static_cast<int64_t>(opt.ports.size()));
  j.end_object();

  j.kv("connections", tot.established);
  const double connect_s = tot.last_established_ns > tot.first_connect_ns
                               ? static_cast<double>(tot.last_established_ns - tot.first_connect_ns) / 1e9
                               : 0;
  j.kv("connect_seconds", connect_s);
  j.kv("settle_seconds", settle_s);
  j.kv("window_seconds", window_s);
  j.kv("client_cpu_seconds", client_cpu);

  if (messaging) {
    j.kv("sent", tot.sent);
    j.kv("acked", tot.acked);
    j.kv("sent_per_s", per(static_cast<double>(tot.sent_in_window), window_s));
    j.kv("acked_per_s", per(static_cast<double>(tot.acked_in_window), window_s));
    j.kv("deliveries_per_s", per(static_cast<double>(tot.deliveries_in_window), window_s));
    j.latency("delivery_latency_ms", tot.delivery);
    j.latency("ack_latency_ms", tot.ack);
    if (opt.scenario == Scenario::kLatency) j.kv("late_sends", tot.late_sends);
    j.kv("drain_complete", drain_complete);
    j.kv("drain_seconds", window_end > 0 ? static_cast<double>(t_end - std::max(window_end, t_connected)) / 1e9 : 0.0);
  }
  if (opt.scenario == Scenario::kConnect) {
    j.kv("connects_per_s", per(static_cast<double>(tot.established), connect_s));
    j.latency("connect_latency_ms", tot.connect);
  }

  // Server cost: over the measured window (messaging, idle) or the connect phase.
  double cpu = NAN;
  int64_t rss_before = 0, rss_after = 0;
  if (have_server) {
    if (opt.scenario == Scenario::kConnect) {
      cpu = after_connect.cpu_seconds - before.cpu_seconds;
    } else if (w0.ok && w1.ok) {
      cpu = w1.cpu_seconds - w0.cpu_seconds;
    }
    rss_before = before.rss_kb;
    rss_after = opt.scenario == Scenario::kIdle && w1.ok ? w1.rss_kb : after_connect.rss_kb;
    j.kv("server_cpu_seconds", cpu);
    j.kv("server_cpu_percent", opt.scenario == Scenario::kConnect ? per(cpu * 100, connect_s) : per(cpu * 100, window_s));
    j.kv("server_rss_kb_before", rss_before);
    j.kv("server_rss_kb_after", rss_after);
    j.kv("server_rss_kb_end", after.rss_kb);
    j.kv("rss_per_connection_kb", per(static_cast<double>(rss_after - rss_before), static_cast<double>(tot.established)));
    if (messaging) {
      j.kv("deliveries_per_cpu_s", per(static_cast<double>(tot.deliveries_in_window), cpu));
      j.kv("acked_per_cpu_s", per(static_cast<double>(tot.acked_in_window), cpu));
    }
    if (opt.scenario == Scenario::kConnect) j.kv("connects_per_cpu_s", per(static_cast<double>(tot.established), cpu));
  } else {
    j.null("server_cpu_seconds");
  }

  // Correctness.
  j.kv("expected", corr.expected);
  j.kv("delivered", corr.delivered);
  j.kv("missing", corr.missing);
  j.kv("duplicates", tot.duplicates);
  j.kv("out_of_order", tot.out_of_order);
  j.kv("seq_violations", tot.seq_violations);
  j.kv("misrouted", tot.misrouted);
  j.kv("own_echoes", tot.own_echoes);
  j.kv("unexpected", corr.unexpected);
  j.kv("unacked", corr.unacked);
  j.kv("rejected", tot.rejected);
  j.kv("rate_limited", tot.rate_limited);
  j.kv("cap_waits", tot.cap_waits);
  j.kv("deliveries_total", tot.deliveries);
  j.kv("replayed", tot.replayed);
  j.kv("other_frames", tot.other_frames);
  j.kv("bad_frames", tot.bad_frames);
  j.kv("connect_failures", tot.connect_failures);
  j.kv("closed_early", tot.closed_early);
  j.begin_object("errors");
  for (const auto& [code, n] : tot.errors) j.kv(code, n);
  j.end_object();
  j.begin_object("other_types");
  for (const auto& [type, n] : tot.other_types) j.kv(type, n);
  j.end_object();
  j.kv("elapsed_seconds", static_cast<double>(t_end - t_begin) / 1e9);
  j.end_object();

  for (const auto& f : tot.failure_samples) std::fprintf(stderr, "parley-bench: %s\n", f.c_str());
  std::printf("%s\n", j.str().c_str());
  std::fflush(stdout);
  if (!ok) std::fprintf(stderr, "parley-bench: %s: FAILED (%s)\n", name, error.c_str());
  return ok ? 0 : 1;
}

}  // namespace bench
