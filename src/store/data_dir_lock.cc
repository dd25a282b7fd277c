#include "store/data_dir_lock.h"

#include <filesystem>
#include <string>

namespace parley {

Result<std::unique_ptr<DataDirLock>> DataDirLock::acquire(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  auto file = LockFile::open((std::filesystem::path(data_dir) / "LOCK").string(), 0644);
  if (!file) return file.error();
  auto locked = file->take(/*exclusive=*/true, [&](const std::string& pid) {
    return Error{ErrorKind::kConflict, "data_dir_locked",
                 "data dir " + data_dir + " is in use by another parley process" +
                     (pid.empty() ? "" : " (pid " + pid + ")") + "; stop it first or use another --data-dir"};
  });
  if (!locked) return locked.error();
  file->write_pid();
  return std::unique_ptr<DataDirLock>(new DataDirLock(std::move(*file)));
}

}  // namespace parley
