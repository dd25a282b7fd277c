#include "cli/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "cli/errors.h"
#include "cli/output.h"

namespace parley::cli {

namespace {

namespace fs = std::filesystem;

CliError write_failure(const std::string& path, int err) {
  return CliError("config_error", "cannot write " + path + ": " + std::strerror(err), kExitServerError);
}

// The directory is private too: it may later hold other secrets.
void ensure_parent(const fs::path& path) {
  fs::path dir = path.parent_path();
  if (dir.empty()) return;
  std::error_code ec;
  if (fs::exists(dir, ec)) return;
  fs::create_directories(dir, ec);
  if (ec) throw write_failure(dir.string(), ec.value());
  ::chmod(dir.c_str(), 0700);
}

void write_all(int fd, const std::string& text, const std::string& path) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw write_failure(path, errno);
    done += static_cast<size_t>(n);
  }
}

// The rename is made durable too: without it a power loss could bring back
// the old file (and listen would print again what it had printed).
void sync_parent(const fs::path& path) {
  fs::path dir = path.parent_path();
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Write to a temporary file created 0600, fsync it, then rename over the
// target: a crash at any moment leaves the old file or the new one, whole.
void write_private_file(const std::string& path, const std::string& text) {
  ensure_parent(path);
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw write_failure(tmp, errno);
  ::fchmod(fd, 0600);  // whatever the umask
  try {
    write_all(fd, text, tmp);
    if (::fsync(fd) != 0) throw write_failure(tmp, errno);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw write_failure(path, err);
  }
  sync_parent(path);
}

json::object to_json(const CliConfig& c) {
  json::object o;
  o["server"] = c.server;
  o["token"] = c.token;
  o["expires_at"] = c.expires_at;
  o["user"] = c.user;
  o["positions"] = c.positions;
  return o;
}

CliConfig from_json(const json::object& o) {
  CliConfig c;
  c.server = get_string(o, "server");
  c.token = get_string(o, "token");
  c.expires_at = get_string(o, "expires_at");
  if (const json::object* user = get_object(o, "user")) c.user = *user;
  if (const json::object* positions = get_object(o, "positions")) c.positions = *positions;
  return c;
}

}  // namespace

std::string default_config_path() {
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  if (xdg && *xdg) return (fs::path(xdg) / "parley" / "cli.json").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : ".") / ".config" / "parley" / "cli.json").string();
}

CliConfig load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  std::string text(std::istreambuf_iterator<char>(in), {});
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    note("ignoring " + path + ": not a JSON object (log in again to rewrite it)");
    return {};
  }
  return from_json(v.as_object());
}

void save_config(const std::string& path, const CliConfig& config) {
  write_private_file(path, json::serialize(to_json(config)) + "\n");
}

std::optional<Positions> saved_positions(const CliConfig& config, const std::string& user_id) {
  const json::object* mine = get_object(config.positions, user_id);
  if (!mine) return std::nullopt;
  Positions out;
  for (const auto& [thread, seq] : *mine) {
    if (auto n = seq.if_int64()) out[std::string(thread)] = *n;
  }
  return out;
}

void store_positions(const std::string& path, const std::string& user_id, const Positions& positions) {
  CliConfig config = load_config(path);
  json::object mine;
  for (const auto& [thread, seq] : positions) mine[thread] = seq;
  config.positions[user_id] = std::move(mine);
  save_config(path, config);
}

}  // namespace parley::cli
