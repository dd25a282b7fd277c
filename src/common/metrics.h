// Process-wide counters and one latency histogram, exported as Prometheus
// text. All members are atomics: any thread may update or render them.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

namespace parley {

class Metrics {
 public:
  static Metrics& get();

  std::atomic<int64_t> connections{0};           // open WebSocket connections
  std::atomic<uint64_t> connections_total{0};
  std::atomic<uint64_t> messages_in{0};          // messages accepted for storage
  std::atomic<uint64_t> messages_out{0};         // frames queued to clients
  std::atomic<uint64_t> deliveries{0};           // new_message frames queued to recipients
  std::atomic<uint64_t> socket_writes{0};          // gathered WebSocket writes (frames out / writes = batching)
  std::atomic<uint64_t> socket_write_waits{0};     // writes that found the socket buffer full (backpressure)
  std::atomic<uint64_t> http_requests{0};
  // A connection's sends and relays: run on its event loop (the thread's
  // members cached) or handed to a worker (a miss, or behind one in order).
  std::atomic<uint64_t> steps_on_loop{0};
  std::atomic<uint64_t> steps_on_worker{0};
  std::atomic<uint64_t> slow_consumer_drops{0};
  std::atomic<uint64_t> gap_fills{0};              // store reads for seqs the bus did not bring
  std::atomic<uint64_t> bus_published{0};          // events sent to the networked bus
  std::atomic<uint64_t> bus_received{0};           // events from other nodes
  std::atomic<uint64_t> bus_dropped{0};            // events not sent while the bus was down (a resync follows)
  std::atomic<uint64_t> bus_reconnects{0};
  std::atomic<uint64_t> socketio_forwarded{0};     // polling requests sent to their session's node
  std::atomic<uint64_t> webhook_queued{0};           // notifications stored for offline participants
  std::atomic<uint64_t> webhook_delivered{0};        // answered 2xx
  std::atomic<uint64_t> webhook_failed_attempts{0};  // POSTs that failed (non-2xx, refused, timed out)
  std::atomic<uint64_t> webhook_dead_letters{0};     // notifications given up after the last attempt (store-wide at start)

  void count_error(std::string_view code);
  // Latency of one storage group commit, microseconds.
  void observe_commit(int64_t micros, size_t batch_size);

  std::string render() const;

 private:
  Metrics() = default;
  static constexpr std::array<int64_t, 12> kBucketsUs = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};
  std::array<std::atomic<uint64_t>, 13> commit_buckets_{};
  std::atomic<uint64_t> commit_count_{0};
  std::atomic<uint64_t> commit_sum_us_{0};
  std::atomic<uint64_t> committed_items_{0};
  static constexpr int kMaxCodes = 48;
  std::array<std::atomic<const char*>, kMaxCodes> error_codes_{};
  std::array<std::atomic<uint64_t>, kMaxCodes> error_counts_{};
};

}  // namespace parley
