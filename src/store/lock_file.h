// LockFile: an open lock file in a data dir and the flock(2) taken on it,
// the common part of DataDirLock and StoreCopyLock. The kernel drops the lock
// when the process dies, even by kill -9, so a stale file never blocks a
// restart. An exclusive holder writes its PID into the file, only so that
// whoever is refused can be told who holds it.
//
// Not thread-safe; one owner. Destroying it closes the file, which releases
// the lock.
#pragma once

#include <functional>
#include <string>
#include <utility>

#include "common/error.h"

namespace parley {

class LockFile {
 public:
  // Opens (creating) `path` with `mode`; internal_error when it cannot.
  static Result<LockFile> open(const std::string& path, int mode);
  LockFile(LockFile&& other) noexcept : fd_(other.fd_), err_(other.err_), path_(std::move(other.path_)) {
    other.fd_ = -1;
  }
  LockFile& operator=(LockFile&&) = delete;
  LockFile(const LockFile&) = delete;
  ~LockFile();

  enum class Outcome { kLocked, kHeld, kFailed };
  // One try for the exclusive lock, without waiting (EINTR retried). kHeld:
  // another process holds a lock; kFailed: flock failed otherwise (see
  // lock_error).
  Outcome try_exclusive();
  // One try: kLocked is ok; kHeld is `held(holder_pid())`, kFailed lock_error().
  Status take(bool exclusive, const std::function<Error(const std::string& holder_pid)>& held);
  // The PID an exclusive holder wrote, without its newline ("" if none).
  std::string holder_pid() const;
  // Records this process as the holder (best effort: the lock holds without
  // it; only a refusal's message is poorer).
  void write_pid();
  // "cannot lock <path>: <why>", for kFailed.
  Error lock_error() const;

 private:
  LockFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  Outcome try_lock(int op);
  int fd_;
  int err_ = 0;  // errno of the last kFailed
  std::string path_;
};

}  // namespace parley
