#include "store/store_copy_lock.h"

#include <filesystem>
#include <thread>

namespace parley {

namespace {

Result<LockFile> open_lock_file(const std::string& data_dir) {
  return LockFile::open((std::filesystem::path(data_dir) / "COPY_LOCK").string(), 0600);
}

}  // namespace

Result<std::unique_ptr<StoreCopyLock>> StoreCopyLock::exclusive(const std::string& data_dir,
                                                                std::chrono::milliseconds wait) {
  auto file = open_lock_file(data_dir);
  if (!file) return file.error();
  // flock has no timeout: try, then sleep a little, until the deadline.
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const auto outcome = file->try_exclusive();
    if (outcome == LockFile::Outcome::kLocked) break;
    if (outcome == LockFile::Outcome::kFailed) return file->lock_error();
    if (std::chrono::steady_clock::now() >= deadline) {
      return Error{ErrorKind::kConflict, "source_busy",
                   "a parley command (user add, disable, enable, revoke-tokens or token) is still writing to " +
                       data_dir + "; let it finish, then run this again"};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  file->write_pid();
  return std::unique_ptr<StoreCopyLock>(new StoreCopyLock(std::move(*file)));
}

Result<std::unique_ptr<StoreCopyLock>> StoreCopyLock::shared(const std::string& data_dir) {
  auto file = open_lock_file(data_dir);
  if (!file) return file.error();
  auto locked = file->take(/*exclusive=*/false, [&](const std::string& pid) {
    return Error{ErrorKind::kConflict, "store_copy_running",
                 "parley migrate-store" + (pid.empty() ? "" : " (pid " + pid + ")") + " is copying the store in " +
                     data_dir +
                     " to PostgreSQL, and a change made here now would not reach the copy: run this once it has "
                     "finished, against PostgreSQL (--database)"};
  });
  if (!locked) return locked.error();
  return std::unique_ptr<StoreCopyLock>(new StoreCopyLock(std::move(*file)));
}

}  // namespace parley
