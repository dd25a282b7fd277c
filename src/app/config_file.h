// Settings from a file (`--config parley.toml`, or PARLEY_CONFIG), read with
// CLI11's TOML-style reader: `key = value` lines named like the flags without
// their dashes (`port = 3100`, `shutdown-timeout = 20`; `_` works for `-`),
// strings quoted, lists as ["a", "b"], and a `[serve]`-style section for
// settings of one command only. Precedence, highest first: flags, PARLEY_*
// environment, the file, the defaults. CLI11's own config handling would let
// the file beat the environment, so the file is applied here, after CLI11
// has parsed flags and environment, to the options neither set.
//
// Main thread, at start; no state kept.
#pragma once

#include <map>
#include <string>

#include <CLI/CLI.hpp>

#include "common/error.h"

namespace parley {

// Where each option of a command got its value: "flag", "env PARLEY_X",
// "file", or absent (the default). Keyed by the long name without dashes.
using SettingSources = std::map<std::string, std::string>;

// Records which of cmd's options a flag or the environment set. Call after
// CLI11 parsed argv, before apply_config_file.
SettingSources given_settings(const CLI::App& cmd, int argc, char** argv);

// Applies the file at `path` to `cmd` (the command that runs): each key must
// name an option of some command of `root`, and a key under a [section] an
// option of the command of that name or of one under it ("unknown_setting"
// otherwise). Keys of options that `cmd` lacks are ignored, as are those
// `sources` already has, and those in a [section] that does not speak for
// cmd: `section` (cmd's name; "serve" for `config check`) or, after it, a
// command cmd is under ([user] for `user disable`), nearest first, then the
// top level. A value its option refuses is "bad_setting". Adds "file"
// entries to `sources`.
Status apply_config_file(const std::string& path, const CLI::App& root, CLI::App& cmd, const std::string& section,
                         SettingSources& sources);

// The effective settings of `cmd`, one `key = value  # source` line each,
// secrets masked: a setting named *secret* or *password* prints as "***",
// a URL's password as "***".
std::string describe_settings(const CLI::App& cmd, const SettingSources& sources);

}  // namespace parley
