// SqliteCheckpointer: copies the WAL back into the database file on its own
// thread and connection, so the store's writer never pays for a
// checkpoint's copying and fsyncs in the middle of a commit.
//
// Each round is one or more PASSIVE checkpoints (they run beside the writer
// and readers and do the bulk of the work) and then, holding the writer gate
// so no transaction is open, a RESTART checkpoint that copies only what was
// committed meanwhile and lets the next transaction write the WAL from its
// start again. Without that second step a busy WAL is never fully copied at
// a moment when no commit is running, so it never restarts and grows without
// bound. The RESTART does not wait for readers (busy timeout 0): when one
// still reads an old snapshot, the round ends as a PASSIVE one and the next
// round tries again. Between the two the database file is flushed to disk,
// so the gated step's own sync only writes the pages it copied.
//
// notify() may be called from any thread (the writer's WAL hook calls it
// after each commit). The writer holds writer_gate() around every
// transaction. The checkpointer owns its connection and the gate; the store
// owns the checkpointer and destroys it (which stops the thread) after its
// writer thread has stopped.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/error.h"

struct sqlite3;

namespace parley {

class SqliteCheckpointer {
 public:
  // Starts the thread; a round begins once the WAL holds `threshold_frames`.
  static Result<std::unique_ptr<SqliteCheckpointer>> start(const std::string& path, bool fsync, int threshold_frames);
  ~SqliteCheckpointer();
  SqliteCheckpointer(const SqliteCheckpointer&) = delete;
  SqliteCheckpointer& operator=(const SqliteCheckpointer&) = delete;

  // Held by the writer around each transaction.
  std::mutex& writer_gate() { return gate_; }

  // Frames in the WAL as of the writer's last commit.
  int wal_frames() const { return wal_frames_.load(std::memory_order_relaxed); }

  // The WAL now holds `wal_frames` frames.
  void notify(int wal_frames);

  // Installs a WAL hook on the writer's connection that calls notify(), in
  // place of SQLite's own checkpoint-on-commit. Past `hard_limit_frames`
  // (the thread cannot keep up) the writer checkpoints itself, as SQLite would.
  void attach_to_writer(sqlite3* writer_db, int hard_limit_frames);

 private:
  SqliteCheckpointer(sqlite3* db, int db_fd, int threshold_frames);
  void run();
  void round();

  sqlite3* db_;
  const int db_fd_;  // the database file, for flushing it before the gated step; -1 if it would not open
  std::mutex gate_;
  const int threshold_frames_;
  int hard_limit_frames_ = 0;
  std::atomic<int> wal_frames_{0};  // as of the writer's last commit

  std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace parley
