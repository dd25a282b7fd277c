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
#include <optional>
#include <utility>

#include "cli/errors.h"
#include "cli/output.h"
#include "common/atomic_file.h"

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

// A crash at any moment leaves the old file or the new one, whole (and
// listen does not print again what it had printed).
void write_private_file(const std::string& path, const std::string& text) {
  ensure_parent(path);
  if (auto st = write_file_atomically(path, text, 0600); !st)
    throw CliError("config_error", st.error().message, kExitServerError);
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

// Whether a file's object is a login file: its keys are among to_json's
// (a package.json named by a mistyped --config is not).
bool is_login_file(const json::object& o) {
  for (const auto& [key, value] : o) {
    if (key != "server" && key != "token" && key != "expires_at" && key != "user" && key != "positions") return false;
  }
  return true;
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

namespace {

// The file's object: empty when there is no file or it is empty, none when
// it holds anything else.
std::optional<json::object> read_object(const std::string& path) {
  std::ifstream in(path);
  if (!in) return json::object();
  std::string text(std::istreambuf_iterator<char>(in), {});
  if (text.empty()) return json::object();
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return std::move(v.as_object());
}

}  // namespace

CliConfig load_config(const std::string& path) {
  std::error_code fs_ec;
  if (fs::is_directory(path, fs_ec))
    throw CliError("config_error", path + " is a directory: --config names the saved login's file", kExitServerError);
  auto object = read_object(path);
  if (!object) {
    note("ignoring " + path + ": not a JSON object (log in again to rewrite it)");
    return {};
  }
  return from_json(*object);
}

void save_config(const std::string& path, const CliConfig& config) {
  write_private_file(path, json::serialize(to_json(config)) + "\n");
}

// Not thread ids; saved_positions reads integers only, so earlier versions skip them.
constexpr std::string_view kStoreKey = "$store";
constexpr std::string_view kAwayKey = "$away";
// An object ({"change_mark": N}), not a number: earlier versions would take a
// number for a thread's position.
constexpr std::string_view kChangesKey = "$changes";

std::optional<Positions> saved_positions(const CliConfig& config, const std::string& user_id) {
  const json::object* mine = get_object(config.positions, user_id);
  if (!mine) return std::nullopt;
  Positions out;
  for (const auto& [thread, seq] : *mine) {
    if (auto n = seq.if_int64()) out[std::string(thread)] = *n;
  }
  return out;
}

std::string saved_store_id(const CliConfig& config, const std::string& user_id) {
  const json::object* mine = get_object(config.positions, user_id);
  return mine ? get_string(*mine, kStoreKey) : std::string();
}

std::set<std::string> saved_away(const CliConfig& config, const std::string& user_id) {
  std::set<std::string> out;
  const json::object* mine = get_object(config.positions, user_id);
  const json::array* away = mine ? get_array(*mine, kAwayKey) : nullptr;
  for (size_t i = 0; away && i < away->size(); ++i)
    if (const json::string* id = (*away)[i].if_string()) out.emplace(*id);
  return out;
}

std::optional<SavedChanges> saved_changes(const CliConfig& config, const std::string& user_id) {
  const json::object* mine = get_object(config.positions, user_id);
  const json::object* changes = mine ? get_object(*mine, kChangesKey) : nullptr;
  std::optional<std::int64_t> mark = changes ? get_int(*changes, "change_mark") : std::nullopt;
  if (!mark) return std::nullopt;
  SavedChanges out{*mark, {}};
  if (const json::array* printed = get_array(*changes, "printed"))
    for (const json::value& v : *printed)
      if (const json::string* key = v.if_string()) out.printed.emplace_back(*key);
  return out;
}

void store_positions(const std::string& path, const std::string& user_id, const Positions& positions,
                     const std::string& store_id, const std::set<std::string>& away,
                     const std::optional<SavedChanges>& changes) {
  // A file that is not ours (a mistyped --config naming someone's notes) is
  // left as it is: only a login, asked for, rewrites it.
  auto object = read_object(path);
  if (!object || !is_login_file(*object)) {
    static bool said = false;
    if (!std::exchange(said, true)) note("not saving positions to " + path + ": not a login file");
    return;
  }
  CliConfig config = from_json(*object);
  json::object mine;
  for (const auto& [thread, seq] : positions) mine[thread] = seq;
  if (!store_id.empty()) mine[kStoreKey] = store_id;
  if (!away.empty()) {
    json::array list;
    for (const std::string& id : away) list.emplace_back(id);
    mine[kAwayKey] = std::move(list);
  }
  if (changes) {
    json::array printed;
    for (const std::string& key : changes->printed) printed.emplace_back(key);
    mine[kChangesKey] = json::object{{"change_mark", changes->mark}, {"printed", std::move(printed)}};
  }
  config.positions[user_id] = std::move(mine);
  save_config(path, config);
}

}  // namespace parley::cli
