#include "app/seed.h"

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "app/store_options.h"
#include "auth/jwt.h"
#include "common/clock.h"
#include "store/data_dir_lock.h"
#include "store/store.h"

namespace parley {

namespace {

constexpr int64_t kMaxUsers = 10'000'000;

struct Counts {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<int64_t> created{0};
  std::atomic<int64_t> existing{0};
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  std::string first_error;

  void fail(std::string what) {
    std::lock_guard lock(error_mu);
    if (!failed.exchange(true)) first_error = std::move(what);
  }
};

// One user; true when created, false when it was there already.
Result<bool> seed_user(Store& store, int64_t i) {
  const std::string id = bench_user_id(static_cast<uint64_t>(i));
  const std::string username = "bench_" + std::to_string(i);
  auto existing = store.user_by_id(id);
  if (!existing) return existing.error();
  if (const auto& u = *existing) {
    if (u->username != username)
      return Error{ErrorKind::kConflict, "seed_mismatch", "user " + id + " exists with username " + u->username};
    return false;
  }
  User u;
  u.id = id;
  u.username = username;
  u.full_name = "Bench " + std::to_string(i);
  u.role = "bench";
  auto r = store.create_user(u);
  if (!r) {
    // Created by a concurrent seeder between the check and the write: fine.
    if (auto again = store.user_by_id(id); again && *again && (*again)->username == username) return false;
    return Error{r.error().kind, r.error().code, "user " + username + ": " + r.error().message};
  }
  return true;
}

Result<bool> seed_thread(Store& store, int64_t k, int64_t group_size) {
  const std::string id = bench_thread_id(static_cast<uint64_t>(k));
  std::set<std::string> want;
  for (int64_t j = 0; j < group_size; ++j) want.insert(bench_user_id(static_cast<uint64_t>(k * group_size + j)));
  auto same_members = [&](const Thread& t) {
    std::set<std::string> have;
    for (const auto& p : t.participants) have.insert(p.user_id);
    return have == want;
  };
  auto existing = store.thread(id);
  if (!existing) return existing.error();
  if (const auto& t = *existing) {
    if (!same_members(*t))
      return Error{ErrorKind::kConflict, "seed_mismatch",
                   "thread " + id + " exists with other participants (seeded with another --group-size?); "
                   "use a fresh --data-dir"};
    return false;
  }
  Thread t;
  t.id = id;
  t.type = ThreadType::kGroup;
  t.title = "bench group " + std::to_string(k);
  t.created_by = bench_user_id(static_cast<uint64_t>(k * group_size));
  for (int64_t j = 0; j < group_size; ++j) {
    Participant p;
    p.user_id = bench_user_id(static_cast<uint64_t>(k * group_size + j));
    p.is_admin = j == 0;
    t.participants.push_back(std::move(p));
  }
  auto r = store.create_thread(t);
  if (!r) {
    if (auto again = store.thread(id); again && *again && same_members(**again)) return false;
    return Error{r.error().kind, r.error().code, "thread " + id + ": " + r.error().message};
  }
  return true;
}

// Runs `one(i)` for i in [0, total) on `threads` threads, printing progress
// on stderr once a second. False when any call failed.
template <typename Fn>
bool parallel_seed(const char* what, int64_t total, int threads, Counts& c, Fn one) {
  std::vector<std::thread> pool;
  const int n = static_cast<int>(std::clamp<int64_t>(total, 1, std::max(1, threads)));
  for (int t = 0; t < n; ++t) {
    pool.emplace_back([&] {
      for (;;) {
        if (c.failed.load()) return;
        int64_t i = c.next.fetch_add(1);
        if (i >= total) return;
        Result<bool> r = one(i);
        if (!r) {
          c.fail(r.error().code + ": " + r.error().message);
          return;
        }
        (*r ? c.created : c.existing).fetch_add(1);
        c.done.fetch_add(1);
      }
    });
  }
  auto last_print = std::chrono::steady_clock::now();
  for (;;) {
    // Bounded: every worker makes progress or fails; the loop ends when they do.
    bool finished = c.done.load() >= total || c.failed.load();
    auto now = std::chrono::steady_clock::now();
    if (finished || now - last_print >= std::chrono::seconds(1)) {
      std::fprintf(stderr, "seed: %s %" PRId64 "/%" PRId64 "\n", what, c.done.load(), total);
      last_print = now;
    }
    if (finished) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (auto& t : pool) t.join();
  return !c.failed.load();
}

}  // namespace

std::string bench_user_id(uint64_t index) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012" PRIx64, index);
  return buf;
}

std::string bench_thread_id(uint64_t group) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-9000-%012" PRIx64, group);
  return buf;
}

int run_seed(const Config& config, const SeedOptions& options) {
  if (options.users <= 0 || options.users > kMaxUsers) {
    std::cerr << "parley seed: --users must be 1.." << kMaxUsers << "\n";
    return 2;
  }
  if (options.group_size < 2 || options.group_size > options.users) {
    std::cerr << "parley seed: --group-size must be 2..users\n";
    return 2;
  }
  const auto started = std::chrono::steady_clock::now();
  // Seeding writes threads and messages: never beside a server on this data dir.
  // (With --database the database's own locking and seq rules apply instead.)
  Result<std::unique_ptr<DataDirLock>> lock = std::unique_ptr<DataDirLock>();
  if (config.database_url.empty()) lock = DataDirLock::acquire(config.data_dir);
  if (!lock) {
    std::cerr << "parley seed: " << lock.error().code << ": " << lock.error().message << "\n";
    return 1;
  }
  auto store = open_store(store_options(config));
  if (!store) {
    std::cerr << "parley seed: " << store.error().code << ": " << store.error().message << "\n";
    return 1;
  }
  const int64_t groups = options.users / options.group_size;
  Counts users;
  bool ok = parallel_seed("users", options.users, options.threads, users,
                          [&](int64_t i) { return seed_user(**store, i); });
  Counts threads;
  if (ok) {
    ok = parallel_seed("threads", groups, options.threads, threads,
                       [&](int64_t k) { return seed_thread(**store, k, options.group_size); });
  }
  (*store)->close();
  if (!ok) {
    std::cerr << "parley seed: " << (users.failed ? users.first_error : threads.first_error) << "\n";
    return 1;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  boost::json::object out{
      {"data_dir", config.data_dir},
      {"users", options.users},
      {"users_created", users.created.load()},
      {"users_existing", users.existing.load()},
      {"group_size", options.group_size},
      {"groups", groups},
      {"threads_created", threads.created.load()},
      {"threads_existing", threads.existing.load()},
      {"ungrouped_users", options.users - groups * options.group_size},
      {"seconds", seconds},
      {"first_user_id", bench_user_id(0)},
      {"first_thread_id", bench_thread_id(0)},
  };
  if (!config.jwt_secret.empty()) {
    // A ready-made token for user 0 (1 hour), handy for trying a seeded server by hand.
    if (auto jwt = JwtVerifier::create(config.jwt_secret)) {
      out["sample_token"] = (*jwt)->sign(bench_user_id(0), now_micros() / 1'000'000, 3600);
    }
  }
  std::cout << boost::json::serialize(out) << "\n";
  return 0;
}

}  // namespace parley
