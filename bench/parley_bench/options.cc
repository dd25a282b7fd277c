#include "options.h"

#include <arpa/inet.h>

#include <CLI/CLI.hpp>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>

namespace bench {

const char* scenario_name(Scenario s) {
  switch (s) {
    case Scenario::kFanout: return "fanout";
    case Scenario::kLatency: return "latency";
    case Scenario::kDm: return "dm";
    case Scenario::kIdle: return "idle";
    case Scenario::kConnect: return "connect";
  }
  return "?";
}

const char* protocol_name(Protocol p) { return p == Protocol::kSocketIo ? "socketio" : "native"; }

bool resolve_loopback(const std::string& host, int port, sockaddr_storage& addr, socklen_t& len) {
  std::memset(&addr, 0, sizeof addr);
  std::string h = host == "localhost" ? "127.0.0.1" : host;
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  in_addr a4{};
  in6_addr a6{};
  if (inet_pton(AF_INET, h.c_str(), &a4) == 1) {
    if ((ntohl(a4.s_addr) >> 24) != 127) return false;
    auto* sin = reinterpret_cast<sockaddr_in*>(&addr);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    sin->sin_addr = a4;
    len = sizeof(sockaddr_in);
    return true;
  }
  if (inet_pton(AF_INET6, h.c_str(), &a6) == 1) {
    if (!IN6_IS_ADDR_LOOPBACK(&a6)) return false;
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&addr);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    sin6->sin6_addr = a6;
    len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

bool parse_options(int argc, char** argv, Options& o, int& exit_code) {
  CLI::App app{
      "parley-bench: WebSocket and Socket.IO load generator for Parley and its peers (loopback only).\n"
      "Scenarios: fanout, latency, dm, idle, connect. One JSON object per run on stdout."};
  std::string scenario;
  const std::map<std::string, Scenario> names{{"fanout", Scenario::kFanout},
                                              {"latency", Scenario::kLatency},
                                              {"dm", Scenario::kDm},
                                              {"idle", Scenario::kIdle},
                                              {"connect", Scenario::kConnect}};
  app.add_option("scenario", scenario, "fanout | latency | dm | idle | connect")
      ->required()
      ->check(CLI::IsMember({"fanout", "latency", "dm", "idle", "connect"}));
  app.add_option("--host", o.host, "Server address: 127.0.0.0/8 or ::1 only")->capture_default_str();
  app.add_option("--port", o.ports, "Server port; several (comma-separated) spread the users over several nodes")
      ->required()
      ->delimiter(',')
      ->check(CLI::Range(1, 65535));
  std::string protocol = "native";
  app.add_option("--protocol", protocol,
                 "native: Parley's WebSocket frames; socketio: Socket.IO v5 over Engine.IO v4's WebSocket transport")
      ->capture_default_str()
      ->check(CLI::IsMember({"native", "socketio"}));
  auto* path_opt = app.add_option("--path", o.path, "WebSocket path (socketio: Engine.IO path, default /socket.io/)")
                       ->capture_default_str();
  app.add_flag("--sio-ack-deliveries", o.sio_ack_deliveries,
               "socketio: acknowledge new_message events that ask for an ack (a delivery receipt per delivery; "
               "the native mode sends none)");
  app.add_flag("--tls", o.tls, "Connect with TLS (a server run with --tls-cert); its certificate is not verified");
  app.add_option("--jwt-secret", o.jwt_secret, "HS256 secret shared with the server")->required();
  app.add_option("--target-name", o.target_name, "Name of the server under test, copied to the JSON")
      ->capture_default_str();
  app.add_option("--users", o.users, "Users (connections); ids by the seed rule")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000}));
  app.add_option("--group-size", o.group_size, "Users per group thread")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1'000'000}));
  app.add_option("--duration", o.duration_s, "Measured seconds")->capture_default_str()->check(CLI::Range(0.1, 3600.0));
  app.add_option("--warmup", o.warmup_s, "Seconds of load before measuring")->capture_default_str()->check(CLI::Range(0.0, 600.0));
  app.add_option("--drain-timeout", o.drain_timeout_s, "Seconds to wait for in-flight replies after sending")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 600.0));
  app.add_option("--settle-timeout", o.settle_timeout_s,
                 "fanout/latency/dm: seconds to wait after connecting for the server to go idle (with --server-pid)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 600.0));
  app.add_option("--connect-timeout", o.connect_timeout_s, "Seconds allowed to open every connection")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--server-pid", o.server_pids,
                 "Server process, for CPU (/proc/PID/stat) and RSS (/proc/PID/status); several are summed")
      ->delimiter(',');
  app.add_option("--senders", o.senders, "Sending users (fanout default: one per group; latency: all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1'000'000}));
  app.add_option("--window", o.window, "fanout: un-acked messages per sender")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--rate", o.rate, "latency: messages per second in total (open loop)")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 10'000'000.0));
  app.add_option("--concurrency", o.concurrency, "Connection attempts in flight")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--threads", o.threads, "Client threads (connections are split over them)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--message-bytes", o.message_bytes, "Content length of each message (padded)")
      ->capture_default_str()
      ->check(CLI::Range(24, 4000));
  app.add_option("--conn-rate-cap", o.conn_rate_cap,
                 "fanout/dm: frames/s per connection at most (stay under the server's per-connection limit); 0 = none")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e9));
  app.add_option("--backoff-ms", o.backoff_ms, "Pause of a sender after a rate_limited error")->capture_default_str();
  app.add_option("--source-ips", o.source_ips,
                 "IPv4: spread client sockets over source addresses 127.0.0.1..N (1 = kernel's choice)")
      ->capture_default_str()
      ->check(CLI::Range(1, 250));
  app.add_option("--user-offset", o.user_offset, "Index of the first user to use")->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{1'000'000'000}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);
    return false;
  }
  o.scenario = names.at(scenario);
  o.protocol = protocol == "socketio" ? Protocol::kSocketIo : Protocol::kNative;
  if (o.protocol == Protocol::kSocketIo && path_opt->count() == 0) o.path = "/socket.io/";
  o.port = o.ports.front();
  for (int port : o.ports) {
    o.addrs.emplace_back();
    if (!resolve_loopback(o.host, port, o.addrs.back(), o.addr_len)) {
      std::cerr << "parley-bench: refusing --host " << o.host << ": only 127.0.0.0/8 and ::1 are allowed\n";
      exit_code = 2;
      return false;
    }
  }
  if (o.group_size > o.users && (o.scenario == Scenario::kFanout || o.scenario == Scenario::kLatency ||
                                 o.scenario == Scenario::kDm)) {
    std::cerr << "parley-bench: --group-size must not exceed --users\n";
    exit_code = 2;
    return false;
  }
  if (o.user_offset % o.group_size != 0) {
    std::cerr << "parley-bench: --user-offset must be a multiple of --group-size\n";
    exit_code = 2;
    return false;
  }
  if (o.scenario == Scenario::kDm && o.group_size != 2)
    std::cerr << "parley-bench: note: dm is meant for --group-size 2 (pairs); running groups of " << o.group_size
              << "\n";
  const int64_t groups = o.users / o.group_size;
  if (o.scenario == Scenario::kFanout) {
    if (o.senders == 0) o.senders = groups;
    if (o.senders > groups * o.group_size) {
      std::cerr << "parley-bench: more --senders than grouped users\n";
      exit_code = 2;
      return false;
    }
  } else if (o.scenario == Scenario::kLatency) {
    if (o.senders == 0) o.senders = groups * o.group_size;
    if (o.senders > groups * o.group_size) {
      std::cerr << "parley-bench: more --senders than grouped users\n";
      exit_code = 2;
      return false;
    }
    if (o.rate / static_cast<double>(o.senders) > 190)
      std::cerr << "parley-bench: warning: " << o.rate / static_cast<double>(o.senders)
                << " messages/s per sender is above Parley's default per-connection limit (200/s)\n";
  } else if (o.scenario == Scenario::kDm) {
    o.senders = groups * o.group_size;
  } else {
    o.senders = 0;
  }
  if (o.threads > o.users) o.threads = static_cast<int>(o.users);
  return true;
}

std::string user_id(int64_t index) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012" PRIx64, static_cast<uint64_t>(index));
  return buf;
}

std::string thread_id(int64_t group) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-9000-%012" PRIx64, static_cast<uint64_t>(group));
  return buf;
}

Plan make_plan(const Options& o) {
  Plan p;
  p.users = o.users;
  p.group_size = o.group_size;
  p.groups = o.users / o.group_size;
  p.sender_of_user.assign(static_cast<size_t>(o.users), -1);
  p.senders_in_group.assign(static_cast<size_t>(p.groups), 0);
  for (int64_t g = 0; g < p.groups; ++g) p.thread_ids.push_back(thread_id(g + o.user_offset / o.group_size));
  // Senders spread over groups: sender s is member s/groups of group s%groups,
  // so every group gets its share before any group gets a second sender.
  for (int64_t s = 0; s < o.senders; ++s) {
    int64_t g = s % p.groups;
    int64_t member = s / p.groups;
    int64_t u = g * p.group_size + member;
    p.sender_of_user[static_cast<size_t>(u)] = static_cast<int32_t>(s);
    p.sender_user.push_back(u);
    p.sender_slot.push_back(p.senders_in_group[static_cast<size_t>(g)]++);
  }
  return p;
}

}  // namespace bench
