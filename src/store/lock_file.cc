#include "store/lock_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace parley {

Result<LockFile> LockFile::open(const std::string& path, int mode) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, mode);
  if (fd < 0) return internal_error("cannot open " + path + ": " + std::strerror(errno));
  return LockFile(fd, path);
}

LockFile::~LockFile() {
  if (fd_ >= 0) ::close(fd_);
}

LockFile::Outcome LockFile::try_lock(int op) {
  int rc;
  while ((rc = ::flock(fd_, op | LOCK_NB)) != 0 && errno == EINTR) {
  }
  if (rc == 0) return Outcome::kLocked;
  if (errno == EWOULDBLOCK) return Outcome::kHeld;
  err_ = errno;
  return Outcome::kFailed;
}

Status LockFile::take(bool exclusive, const std::function<Error(const std::string& holder_pid)>& held) {
  switch (try_lock(exclusive ? LOCK_EX : LOCK_SH)) {
    case Outcome::kLocked: return Ok{};
    case Outcome::kHeld: return held(holder_pid());
    case Outcome::kFailed: break;
  }
  return lock_error();
}

LockFile::Outcome LockFile::try_exclusive() { return try_lock(LOCK_EX); }

std::string LockFile::holder_pid() const {
  char buf[32] = {};
  ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
  std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  return pid;
}

void LockFile::write_pid() {
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    // The lock holds without the PID; only a refusal's message is poorer.
  }
}

Error LockFile::lock_error() const { return internal_error("cannot lock " + path_ + ": " + std::strerror(err_)); }

}  // namespace parley
