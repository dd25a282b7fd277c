#include "store/store_copy_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

namespace parley {

namespace {

Result<int> open_lock_file(const std::string& data_dir) {
  const std::string path = (std::filesystem::path(data_dir) / "COPY_LOCK").string();
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return internal_error("cannot open " + path + ": " + std::strerror(errno));
  return fd;
}

std::string holder_pid(int fd) {
  char buf[32] = {};
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  return pid;
}

}  // namespace

Result<std::unique_ptr<StoreCopyLock>> StoreCopyLock::exclusive(const std::string& data_dir,
                                                                std::chrono::milliseconds wait) {
  auto fd = open_lock_file(data_dir);
  if (!fd) return fd.error();
  // flock has no timeout: try, then sleep a little, until the deadline.
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (::flock(*fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK && err != EINTR) {
      ::close(*fd);
      return internal_error("cannot lock " + data_dir + "/COPY_LOCK: " + std::strerror(err));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::close(*fd);
      return Error{ErrorKind::kConflict, "source_busy",
                   "a parley command (user add, disable, enable, revoke-tokens or token) is still writing to " +
                       data_dir + "; let it finish, then run this again"};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(*fd, 0) != 0 || ::pwrite(*fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    // The lock holds without the PID; only the refusal's message is poorer.
  }
  return std::unique_ptr<StoreCopyLock>(new StoreCopyLock(*fd));
}

Result<std::unique_ptr<StoreCopyLock>> StoreCopyLock::shared(const std::string& data_dir) {
  auto fd = open_lock_file(data_dir);
  if (!fd) return fd.error();
  int rc;
  while ((rc = ::flock(*fd, LOCK_SH | LOCK_NB)) != 0 && errno == EINTR) {
  }
  if (rc != 0) {
    const int err = errno;
    std::string pid = err == EWOULDBLOCK ? holder_pid(*fd) : "";
    ::close(*fd);
    if (err != EWOULDBLOCK) return internal_error("cannot lock " + data_dir + "/COPY_LOCK: " + std::strerror(err));
    return Error{ErrorKind::kConflict, "store_copy_running",
                 "parley migrate-store" + (pid.empty() ? "" : " (pid " + pid + ")") + " is copying the store in " +
                     data_dir +
                     " to PostgreSQL, and a change made here now would not reach the copy: run this once it has "
                     "finished, against PostgreSQL (--database)"};
  }
  return std::unique_ptr<StoreCopyLock>(new StoreCopyLock(*fd));
}

StoreCopyLock::~StoreCopyLock() { ::close(fd_); }

}  // namespace parley
