#include "store/data_dir_lock.h"

#include <filesystem>
#include <string>

namespace parley {

Result<std::unique_ptr<DataDirLock>> DataDirLock::acquire(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  auto file = LockFile::open((std::filesystem::path(data_dir) / "LOCK").string(), 0644);
  if (!file) return file.error();
  switch (file->try_exclusive()) {
    case LockFile::Outcome::kLocked:
      break;
    case LockFile::Outcome::kFailed:
      return file->lock_error();
    case LockFile::Outcome::kHeld: {
      std::string pid = file->holder_pid();
      return Error{ErrorKind::kConflict, "data_dir_locked",
                   "data dir " + data_dir + " is in use by another parley process" +
                       (pid.empty() ? "" : " (pid " + pid + ")") + "; stop it first or use another --data-dir"};
    }
  }
  file->write_pid();
  return std::unique_ptr<DataDirLock>(new DataDirLock(std::move(*file)));
}

}  // namespace parley
