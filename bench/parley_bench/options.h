// parley-bench: command-line options, the run plan (who is in which group,
// who sends) and small shared helpers.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

namespace bench {

enum class Scenario { kFanout, kLatency, kDm, kIdle, kConnect };

// What the connections speak: Parley's native WebSocket frames, or Socket.IO
// v5 over Engine.IO v4's WebSocket transport (CONTRACT section 7's events).
enum class Protocol { kNative, kSocketIo };

const char* scenario_name(Scenario s);
const char* protocol_name(Protocol p);

struct Options {
  Scenario scenario = Scenario::kFanout;
  std::string host = "127.0.0.1";
  int port = 0;                   // the first of `ports`
  std::vector<int> ports;         // several: one server node each; user u connects to ports[u mod N]
  Protocol protocol = Protocol::kNative;
  std::string path = "/ws";   // "/socket.io/" for Socket.IO unless --path is given
  bool sio_ack_deliveries = false;  // Socket.IO: acknowledge new_message events that ask for it
  bool tls = false;                 // wss://: TLS under every connection (certificate not verified: loopback only)
  std::string jwt_secret;
  std::string target_name = "parley";
  int64_t users = 1000;
  int64_t group_size = 100;
  double duration_s = 10;
  double warmup_s = 2;
  double drain_timeout_s = 5;
  // Before sending: wait (at most this long) until the server has been idle
  // for a moment (run.cc, "settle"); 0 = start at once.
  double settle_timeout_s = 30;
  double connect_timeout_s = 60;
  std::vector<int64_t> server_pids;  // CPU and RSS are summed over them (several nodes)
  int64_t senders = 0;        // 0 = scenario default
  int window = 16;            // fanout: un-acked messages per sender
  double rate = 2000;         // latency: messages/s in total
  int concurrency = 200;      // connection attempts in flight
  int threads = 1;
  int message_bytes = 64;     // content length (padded)
  double conn_rate_cap = 190; // closed-loop senders: frames/s per connection (Parley's default limit is 200/s)
  double backoff_ms = 50;     // pause of a sender after a rate_limited error
  int64_t user_offset = 0;    // first user index (lets several bench runs share a seeded store)
  int source_ips = 16;        // IPv4: client sockets bound round-robin to 127.0.0.1..N (cheap port search)

  // Resolved addresses (loopback only), one per port.
  std::vector<sockaddr_storage> addrs;
  socklen_t addr_len = 0;
};

// Parses argv; on a usage error prints it and returns false with exit_code set.
bool parse_options(int argc, char** argv, Options& out, int& exit_code);

// True when `host` is 127.0.0.0/8, ::1 or "localhost"; fills the address.
bool resolve_loopback(const std::string& host, int port, sockaddr_storage& addr, socklen_t& len);

// Who is where. Users are indexed 0..users-1 (plus user_offset for ids);
// group k holds users kG..kG+G-1; users past groups*G are in no group.
struct Plan {
  int64_t users = 0;
  int64_t group_size = 0;
  int64_t groups = 0;
  std::vector<int32_t> sender_of_user;   // user -> global sender index, or -1
  std::vector<int64_t> sender_user;      // sender -> user
  std::vector<int32_t> sender_slot;      // sender -> position among its group's senders
  std::vector<int32_t> senders_in_group; // group -> number of senders in it
  std::vector<std::string> thread_ids;   // group -> thread id

  int64_t group_of(int64_t user) const { return user < groups * group_size ? user / group_size : -1; }
};

Plan make_plan(const Options& opt);

std::string user_id(int64_t index);    // 00000000-0000-4000-8000-%012x
std::string thread_id(int64_t group);  // 00000000-0000-4000-9000-%012x

inline int64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace bench
