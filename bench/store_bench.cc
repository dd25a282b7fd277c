// parley-store-bench: the store's write path alone, without sockets or a
// load generator sharing the CPU. Appends messages to many direct threads in
// random order through Store::append (group commit, callbacks and all), the
// way the `dm` scenario does, and prints one JSON line: messages/s and the
// writer's cost per message. Used to weigh schema and write-path changes
// (docs/benchmarks.md, "The write path"); not a test.
//
//   parley-store-bench --data-dir /tmp/sb --threads 1000 --messages 200000
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include "common/clock.h"
#include "common/ids.h"
#include "common/log.h"
#include "store/store.h"

using namespace parley;

int main(int argc, char** argv) {
  CLI::App app{"Measures the store's durable write path"};
  std::string data_dir = "/tmp/parley-store-bench";
  int threads = 1000;
  int messages = 200000;
  int in_flight = 4096;
  bool fsync = false;
  bool keep = false;
  bool no_client_ids = false;
  app.add_option("--data-dir", data_dir, "a scratch directory (emptied first unless --keep)");
  app.add_option("--threads", threads, "direct threads (two users each)")->check(CLI::Range(1, 1000000));
  app.add_option("--messages", messages, "messages to append")->check(CLI::Range(1, 100000000));
  app.add_option("--in-flight", in_flight, "appends waiting for their commit at most")->check(CLI::Range(1, 1000000));
  app.add_flag("--fsync", fsync, "fsync every commit (power-loss mode)");
  app.add_flag("--keep", keep, "append to an existing store in --data-dir");
  app.add_flag("--no-client-msg-id", no_client_ids, "append without a client_msg_id (no idempotency key per message)");
  CLI11_PARSE(app, argc, argv);

  if (!keep) std::filesystem::remove_all(data_dir);
  StoreOptions options;
  options.data_dir = data_dir;
  options.fsync_commits = fsync;
  auto opened = open_store(options);
  if (!opened) {
    std::fprintf(stderr, "store-bench: %s\n", opened.error().message.c_str());
    return 1;
  }
  auto& store = **opened;

  // Two users per thread; seeded through the Store like `parley seed` would.
  std::vector<std::pair<std::string, std::string>> members;  // thread id -> (a, b)
  std::vector<std::string> thread_ids;
  for (int i = 0; i < threads; ++i) {
    User a, b;
    for (User* u : {&a, &b}) {
      u->id = new_uuid();
      u->username = "sb" + std::to_string(i) + (u == &a ? "a" : "b") + std::to_string(now_micros() % 100000);
      u->full_name = u->username;
      u->role = "parent";
      u->created_at = now_micros();
      if (auto r = store.create_user(*u); !r) {
        std::fprintf(stderr, "store-bench: create_user: %s\n", r.error().message.c_str());
        return 1;
      }
    }
    Thread t;
    t.type = ThreadType::kDirect;
    t.created_by = a.id;
    t.participants.push_back(Participant{a.id, a.username, a.full_name, a.role, false, 0, 0, 0});
    t.participants.push_back(Participant{b.id, b.username, b.full_name, b.role, false, 0, 0, 0});
    auto created = store.create_thread(t);
    if (!created) {
      std::fprintf(stderr, "store-bench: create_thread: %s\n", created.error().message.c_str());
      return 1;
    }
    thread_ids.push_back(created->thread.id);
    members.emplace_back(a.id, b.id);
  }
  std::fprintf(stderr, "store-bench: %d threads seeded, appending %d messages\n", threads, messages);

  std::mt19937_64 rng(42);
  std::atomic<int> done{0}, failed{0}, waiting{0};
  const std::string content(64, 'x');
  auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < messages; ++i) {
    while (waiting.load(std::memory_order_acquire) >= in_flight) std::this_thread::yield();
    size_t t = rng() % thread_ids.size();
    AppendRequest r;
    r.thread_id = thread_ids[t];
    r.sender_id = (rng() & 1) ? members[t].first : members[t].second;
    r.content = content;
    r.message_type = "text";
    if (!no_client_ids) r.client_msg_id = "sb-" + std::to_string(i);
    waiting.fetch_add(1, std::memory_order_acq_rel);
    store.append(std::move(r), [&](Result<AppendResult> res) {
      if (!res) failed.fetch_add(1, std::memory_order_relaxed);
      done.fetch_add(1, std::memory_order_relaxed);
      waiting.fetch_sub(1, std::memory_order_acq_rel);
    });
    if (i % 50000 == 49999) std::fprintf(stderr, "store-bench: %d queued\n", i + 1);
  }
  while (done.load() < messages) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  store.close();
  std::printf("{\"messages\":%d,\"threads\":%d,\"failed\":%d,\"seconds\":%.3f,\"messages_per_s\":%.0f,\"us_per_message\":%.2f}\n",
              messages, threads, failed.load(), secs, messages / secs, secs * 1e6 / messages);
  return failed.load() == 0 ? 0 : 1;
}
