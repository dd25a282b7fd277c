#include "common/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace parley {

namespace {

Error failure(const std::string& path, int err) {
  return internal_error("cannot write " + path + ": " + std::strerror(err));
}

Status write_all(int fd, std::string_view text, const std::string& path) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failure(path, errno);
    done += static_cast<size_t>(n);
  }
  return Ok{};
}

// Without this a power loss after the rename could bring the old file back.
Status sync_directory_of(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return failure(dir.string(), errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return failure(dir.string(), err);
  return Ok{};
}

}  // namespace

Status write_file_atomically(const std::string& path, std::string_view text, mode_t mode) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return failure(tmp, errno);
  Status st = ::fchmod(fd, mode) == 0 ? Status(Ok{}) : Status(failure(tmp, errno));
  if (st) st = write_all(fd, text, tmp);
  if (st && ::fsync(fd) != 0) st = failure(tmp, errno);
  if (::close(fd) != 0 && st) st = failure(tmp, errno);
  if (st && ::rename(tmp.c_str(), path.c_str()) != 0) st = failure(path, errno);
  if (!st) {
    ::unlink(tmp.c_str());
    return st;
  }
  return sync_directory_of(path);
}

}  // namespace parley
