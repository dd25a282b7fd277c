// StoreCopyLock: keeps `parley migrate-store`'s copy of a SQLite data dir
// and the commands that write beside a server (`user add`, `user disable`,
// `enable`, `revoke-tokens`, `token`) apart, as an flock(2) on
// <data_dir>/COPY_LOCK: the copy holds it exclusively for its whole run,
// each of those commands shared for as long as its store is open. The
// DataDirLock cannot do it: those commands must run beside a server, which
// holds that one. Without it, a `user disable` that waited on the copy's
// SQLite write lock went through the moment the copy ended, so the account
// was locked in the old store only, and the operator was told it was done.
//
// The kernel drops the lock when the process dies, even by kill -9. The
// file holds the copy's PID, only to name it in a command's refusal.
//
// Not thread-safe; one owner. Destroying it releases the lock.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "common/error.h"
#include "store/lock_file.h"

namespace parley {

class StoreCopyLock {
 public:
  // For the copy: waits up to `wait` for the commands holding it shared
  // (each a moment's write) to finish. Errors: "source_busy" (kConflict),
  // or internal_error when the file cannot be opened.
  static Result<std::unique_ptr<StoreCopyLock>> exclusive(const std::string& data_dir, std::chrono::milliseconds wait);

  // For a command beside a server: at once, or "store_copy_running"
  // (kConflict) naming the copy's PID while a copy runs. data_dir exists.
  static Result<std::unique_ptr<StoreCopyLock>> shared(const std::string& data_dir);

  StoreCopyLock(const StoreCopyLock&) = delete;
  StoreCopyLock& operator=(const StoreCopyLock&) = delete;

 private:
  explicit StoreCopyLock(LockFile file) : file_(std::move(file)) {}
  LockFile file_;
};

}  // namespace parley
