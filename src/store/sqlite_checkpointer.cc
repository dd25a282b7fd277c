#include "store/sqlite_checkpointer.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>

#include "common/log_throttle.h"
#include "common/thread_pool.h"

namespace parley {

namespace {
constexpr int kMaxPassivePasses = 4;
constexpr int kSmallGapFrames = 256;
}  // namespace

Result<std::unique_ptr<SqliteCheckpointer>> SqliteCheckpointer::start(const std::string& path, bool fsync,
                                                                      int threshold_frames) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return internal_error("checkpointer cannot open " + path + ": " + msg);
  }
  // The checkpointing connection's synchronous setting decides its fsyncs:
  // the same as the writer's, so a checkpoint is as durable as a commit.
  const char* pragmas = fsync ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;";
  if (sqlite3_exec(db, pragmas, nullptr, nullptr, nullptr) != SQLITE_OK) {
    std::string msg = sqlite3_errmsg(db);
    sqlite3_close_v2(db);
    return internal_error("checkpointer cannot configure: " + msg);
  }
  sqlite3_busy_timeout(db, 0);  // never wait for readers while holding the writer gate
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // fdatasync needs no write access
  std::unique_ptr<SqliteCheckpointer> c(new SqliteCheckpointer(db, fd, threshold_frames));
  c->thread_ = named_thread("checkpointer", [p = c.get()] { p->run(); });
  return c;
}

SqliteCheckpointer::SqliteCheckpointer(sqlite3* db, int db_fd, int threshold_frames)
    : db_(db), db_fd_(db_fd), threshold_frames_(threshold_frames) {}

SqliteCheckpointer::~SqliteCheckpointer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  sqlite3_close_v2(db_);
  if (db_fd_ >= 0) ::close(db_fd_);
}

void SqliteCheckpointer::notify(int wal_frames) {
  wal_frames_.store(wal_frames, std::memory_order_relaxed);
  if (wal_frames < threshold_frames_) return;
  {
    std::lock_guard lock(mu_);
    if (pending_) return;
    pending_ = true;
  }
  cv_.notify_one();
}

void SqliteCheckpointer::attach_to_writer(sqlite3* writer_db, int hard_limit_frames) {
  hard_limit_frames_ = hard_limit_frames;
  sqlite3_wal_hook(
      writer_db,
      [](void* arg, sqlite3* db, const char* name, int frames) -> int {
        auto* self = static_cast<SqliteCheckpointer*>(arg);
        if (frames >= self->hard_limit_frames_) {
          spdlog::warn("event=wal_checkpoint_fallback frames={}", frames);
          sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
        }
        self->notify(frames);
        return SQLITE_OK;
      },
      this);
}

void SqliteCheckpointer::run() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || pending_; });
      if (stopping_) return;
      pending_ = false;
    }
    // A notify from before the last round's restart asks for nothing more.
    if (wal_frames_.load(std::memory_order_relaxed) >= threshold_frames_) round();
  }
}

void SqliteCheckpointer::round() {
  const auto started = std::chrono::steady_clock::now();
  int log = 0, copied = 0, rc = SQLITE_OK, passes = 0;
  // Passive passes until what was committed meanwhile is small (or a few
  // passes under heavy writes), so the gated step below is short.
  while (passes < kMaxPassivePasses) {
    ++passes;
    rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
    if (rc != SQLITE_OK) break;
    // Not `copied >= log`: a pass that copied all it saw took long enough
    // (tens of ms for a full WAL) for the writer to commit more, which the
    // gated step would otherwise copy while commits wait.
    if (wal_frames_.load(std::memory_order_relaxed) - copied <= kSmallGapFrames) break;
  }
  // A passive pass syncs the database file only when it copied the whole
  // WAL; while commits flow it never does, and the gated step would then
  // sync everything the passes wrote (tens of MB) while commits wait. Its
  // result is not ours to act on: the gated step's own sync reports an error.
  if (db_fd_ >= 0) ::fdatasync(db_fd_);
  const auto passive_done = std::chrono::steady_clock::now();
  int rc_restart = SQLITE_OK;
  {
    std::lock_guard gate(gate_);
    rc_restart = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_RESTART, &log, &copied);
  }
  // Restarted: the next commit writes the WAL from its start (and reports its size).
  if (rc_restart == SQLITE_OK) wal_frames_.store(0, std::memory_order_relaxed);
  const auto done = std::chrono::steady_clock::now();
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  if ((rc != SQLITE_OK && rc != SQLITE_BUSY) || (rc_restart != SQLITE_OK && rc_restart != SQLITE_BUSY)) {
    static LogThrottle throttle;  // tried again after every commit while the disk is full
    if (auto held_back = throttle.admit())
      spdlog::error("event=wal_checkpoint_failed error=\"{}\" suppressed={}", sqlite3_errmsg(db_), *held_back);
    return;
  }
  spdlog::debug("event=wal_checkpoint frames={} restarted={} passes={} passive_ms={:.1f} gate_ms={:.1f}", log,
                rc_restart == SQLITE_OK, passes, ms(passive_done - started), ms(done - passive_done));
}

}  // namespace parley
