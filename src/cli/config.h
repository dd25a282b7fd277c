// The saved login and listen's per-thread positions: one JSON file, mode 0600
// (it holds a bearer token), written atomically so a crash never truncates it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cli/json_util.h"

namespace parley::cli {

// thread id -> highest seq that `listen` printed.
using Positions = std::map<std::string, std::int64_t>;

struct CliConfig {
  std::string server;
  std::string token;
  std::string expires_at;
  json::object user;
  // user id -> {thread id -> seq}: positions are per user, so a token of
  // someone else never skips messages on the strength of another's reading.
  json::object positions;
};

// $XDG_CONFIG_HOME/parley/cli.json, else ~/.config/parley/cli.json.
std::string default_config_path();

// A missing file is an empty config; an unreadable one too (with a warning),
// so `login` can always repair it.
CliConfig load_config(const std::string& path);

// Throws CliError (exit 1) when the file cannot be written.
void save_config(const std::string& path, const CliConfig& config);

// nullopt when listen never ran for this user (then it starts "from now").
std::optional<Positions> saved_positions(const CliConfig& config, const std::string& user_id);

// The server store's id the positions were saved against (connection_established
// `store_id`; empty: none saved). Kept beside the positions under "$store".
std::string saved_store_id(const CliConfig& config, const std::string& user_id);

// The groups listen last saw this user leave or be removed from, and not
// yet added back to (what comes there meanwhile is history, not news).
// Kept beside the positions under "$away", saved with them.
std::set<std::string> saved_away(const CliConfig& config, const std::string& user_id);

// Where listen stands in the edits and deletions: the change mark of the
// server's last `changes_synced`, and the latest changes it printed (each
// "message id|edited_at" or "message id|deleted"), which the next sync may
// send again. Kept beside the positions under "$changes".
struct SavedChanges {
  std::int64_t mark = 0;
  std::vector<std::string> printed;
};
std::optional<SavedChanges> saved_changes(const CliConfig& config, const std::string& user_id);

// Re-reads the file and replaces only this user's positions, so a login done
// meanwhile by another process is kept.
void store_positions(const std::string& path, const std::string& user_id, const Positions& positions,
                     const std::string& store_id, const std::set<std::string>& away,
                     const std::optional<SavedChanges>& changes);

}  // namespace parley::cli
