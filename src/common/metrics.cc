#include "common/metrics.h"

#include <mutex>
#include <set>
#include <sstream>

namespace parley {

Metrics& Metrics::get() {
  static Metrics m;
  return m;
}

// Error codes are few and fixed; keep their text alive in one set so the
// counters can hold plain pointers.
static const char* intern(std::string_view code) {
  static std::mutex mu;
  static std::set<std::string, std::less<>> names;
  std::lock_guard lock(mu);
  auto it = names.find(code);
  if (it == names.end()) it = names.emplace(code).first;
  return it->c_str();
}

void Metrics::count_error(std::string_view code) {
  const char* name = intern(code);
  for (int i = 0; i < kMaxCodes; ++i) {
    const char* cur = error_codes_[i].load(std::memory_order_acquire);
    if (cur == nullptr) {
      const char* expected = nullptr;
      if (error_codes_[i].compare_exchange_strong(expected, name) || expected == name) {
        error_counts_[i].fetch_add(1, std::memory_order_relaxed);
        return;
      }
      continue;
    }
    if (cur == name) {
      error_counts_[i].fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
}

void Metrics::observe_commit(int64_t micros, size_t batch_size) {
  size_t i = 0;
  while (i < kBucketsUs.size() && micros > kBucketsUs[i]) ++i;
  commit_buckets_[i].fetch_add(1, std::memory_order_relaxed);
  commit_count_.fetch_add(1, std::memory_order_relaxed);
  commit_sum_us_.fetch_add(static_cast<uint64_t>(micros), std::memory_order_relaxed);
  committed_items_.fetch_add(batch_size, std::memory_order_relaxed);
}

std::string Metrics::render() const {
  std::ostringstream o;
  o << "# HELP parley_connections Open WebSocket connections.\n# TYPE parley_connections gauge\n"
    << "parley_connections " << connections.load() << "\n";
  o << "# HELP parley_connections_total WebSocket connections accepted.\n# TYPE parley_connections_total counter\n"
    << "parley_connections_total " << connections_total.load() << "\n";
  o << "# HELP parley_messages_in_total Messages stored.\n# TYPE parley_messages_in_total counter\n"
    << "parley_messages_in_total " << messages_in.load() << "\n";
  o << "# HELP parley_messages_out_total Frames sent to clients.\n# TYPE parley_messages_out_total counter\n"
    << "parley_messages_out_total " << messages_out.load() << "\n";
  o << "# HELP parley_deliveries_total new_message frames queued to recipients.\n# TYPE parley_deliveries_total counter\n"
    << "parley_deliveries_total " << deliveries.load() << "\n";
  o << "# HELP parley_socket_writes_total Gathered WebSocket write calls.\n# TYPE parley_socket_writes_total counter\n"
    << "parley_socket_writes_total " << socket_writes.load() << "\n";
  o << "# HELP parley_socket_write_waits_total Writes that found the client's socket buffer full.\n"
    << "# TYPE parley_socket_write_waits_total counter\n"
    << "parley_socket_write_waits_total " << socket_write_waits.load() << "\n";
  o << "# HELP parley_steps_on_loop_total Sends and relays run on their connection's event loop.\n"
    << "# TYPE parley_steps_on_loop_total counter\n"
    << "parley_steps_on_loop_total " << steps_on_loop.load() << "\n";
  o << "# HELP parley_steps_on_worker_total Sends and relays handed to a worker (members not cached, or in order behind one).\n"
    << "# TYPE parley_steps_on_worker_total counter\n"
    << "parley_steps_on_worker_total " << steps_on_worker.load() << "\n";
  o << "# HELP parley_http_requests_total HTTP requests served.\n# TYPE parley_http_requests_total counter\n"
    << "parley_http_requests_total " << http_requests.load() << "\n";
  o << "# HELP parley_slow_consumer_disconnects_total Connections dropped for a full outbound queue.\n"
    << "# TYPE parley_slow_consumer_disconnects_total counter\n"
    << "parley_slow_consumer_disconnects_total " << slow_consumer_drops.load() << "\n";
  o << "# HELP parley_gap_fills_total Store reads for messages the bus did not bring (lost or reordered events).\n"
    << "# TYPE parley_gap_fills_total counter\n"
    << "parley_gap_fills_total " << gap_fills.load() << "\n";
  o << "# HELP parley_bus_published_total Events sent to the networked bus.\n"
    << "# TYPE parley_bus_published_total counter\n"
    << "parley_bus_published_total " << bus_published.load() << "\n";
  o << "# HELP parley_bus_received_total Events received from other nodes.\n"
    << "# TYPE parley_bus_received_total counter\n"
    << "parley_bus_received_total " << bus_received.load() << "\n";
  o << "# HELP parley_bus_dropped_total Events not sent while the bus was disconnected (receivers resync from the store).\n"
    << "# TYPE parley_bus_dropped_total counter\n"
    << "parley_bus_dropped_total " << bus_dropped.load() << "\n";
  o << "# HELP parley_bus_reconnects_total Reconnections of the networked bus.\n"
    << "# TYPE parley_bus_reconnects_total counter\n"
    << "parley_bus_reconnects_total " << bus_reconnects.load() << "\n";
  o << "# HELP parley_socketio_forwarded_total Socket.IO polling requests forwarded to the node that owns their session.\n"
    << "# TYPE parley_socketio_forwarded_total counter\n"
    << "parley_socketio_forwarded_total " << socketio_forwarded.load() << "\n";
  o << "# HELP parley_webhook_queued_total Webhook notifications stored for offline participants.\n"
    << "# TYPE parley_webhook_queued_total counter\n"
    << "parley_webhook_queued_total " << webhook_queued.load() << "\n";
  o << "# HELP parley_webhook_delivered_total Webhook notifications answered with 2xx.\n"
    << "# TYPE parley_webhook_delivered_total counter\n"
    << "parley_webhook_delivered_total " << webhook_delivered.load() << "\n";
  o << "# HELP parley_webhook_failed_attempts_total Webhook POSTs that failed and will be retried or given up.\n"
    << "# TYPE parley_webhook_failed_attempts_total counter\n"
    << "parley_webhook_failed_attempts_total " << webhook_failed_attempts.load() << "\n";
  o << "# HELP parley_webhook_dead_letters Webhook notifications given up after the last attempt (kept in the store).\n"
    << "# TYPE parley_webhook_dead_letters gauge\n"
    << "parley_webhook_dead_letters " << webhook_dead_letters.load() << "\n";
  o << "# HELP parley_errors_total Errors answered to clients, by code.\n# TYPE parley_errors_total counter\n";
  for (int i = 0; i < kMaxCodes; ++i) {
    const char* name = error_codes_[i].load();
    if (name) o << "parley_errors_total{code=\"" << name << "\"} " << error_counts_[i].load() << "\n";
  }
  o << "# HELP parley_storage_commit_seconds Storage group commit latency.\n"
    << "# TYPE parley_storage_commit_seconds histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i < kBucketsUs.size(); ++i) {
    cum += commit_buckets_[i].load();
    o << "parley_storage_commit_seconds_bucket{le=\"" << kBucketsUs[i] / 1e6 << "\"} " << cum << "\n";
  }
  cum += commit_buckets_[kBucketsUs.size()].load();
  o << "parley_storage_commit_seconds_bucket{le=\"+Inf\"} " << cum << "\n"
    << "parley_storage_commit_seconds_sum " << commit_sum_us_.load() / 1e6 << "\n"
    << "parley_storage_commit_seconds_count " << commit_count_.load() << "\n";
  o << "# HELP parley_storage_committed_items_total Writes committed by group commits.\n"
    << "# TYPE parley_storage_committed_items_total counter\n"
    << "parley_storage_committed_items_total " << committed_items_.load() << "\n";
  return o.str();
}

}  // namespace parley
