// DataDirLock: the exclusive claim of one process on a data dir, held as an
// flock(2) on <data_dir>/LOCK for as long as the object lives (LevelDB's LOCK
// file, done the same way). The kernel drops the lock when the process dies,
// even by kill -9, so a stale LOCK file never blocks a restart. The file holds
// the holder's PID, only to name it in the error a second process gets.
//
// Who takes it: `serve`, and offline commands that write threads or messages
// (`seed`, and `migrate`, which may rewrite the messages table under a server
// that knows only the old schema), since two writers with their own view of
// each thread's seq would conflict; and `migrate-store`, whose copy must not
// change under it.
// Commands that only read or write user rows (`user add`, `token`, `user
// disable`) do not: SQLite's own locking keeps those safe beside a server,
// and StoreCopyLock keeps them off a copy to PostgreSQL.
// Unless the schema is older than theirs: then they take it to migrate, and
// refuse while a server holds it (StoreOptions::beside_server).
//
// Not thread-safe; one owner. Destroying it releases the lock.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "common/error.h"
#include "store/lock_file.h"

namespace parley {

class DataDirLock {
 public:
  // Creates data_dir if missing and takes the lock without waiting. Errors:
  // "data_dir_locked" (kConflict) naming the holder's PID, or internal_error
  // when the lock file cannot be opened.
  static Result<std::unique_ptr<DataDirLock>> acquire(const std::string& data_dir);
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  explicit DataDirLock(LockFile file) : file_(std::move(file)) {}
  LockFile file_;
};

}  // namespace parley
