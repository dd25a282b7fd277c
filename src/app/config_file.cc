#include "app/config_file.h"

#include <cstdlib>
#include <fstream>
#include <functional>

#include "common/redact.h"

namespace parley {

namespace {

std::string key_of(const CLI::Option* opt) {
  std::vector<std::string> names = opt->get_lnames();
  return names.empty() ? "" : names.front();
}

// Options a file may set: long-named, not --help, not --config itself.
bool settable(const CLI::Option* opt) {
  std::string key = key_of(opt);
  return !key.empty() && key != "help" && key != "config";
}

void each_command(const CLI::App& app, const std::function<void(const CLI::App&)>& fn) {
  fn(app);
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) each_command(*sub, fn);
}

bool known_anywhere(const CLI::App& root, const std::string& key) {
  bool found = false;
  each_command(root, [&](const CLI::App& c) {
    const CLI::Option* opt = c.get_option_no_throw("--" + key);
    if (opt && settable(opt)) found = true;
  });
  return found;
}

bool on_command_line(const std::string& key, int argc, char** argv) {
  const std::string flag = "--" + key;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == flag || (a.size() > flag.size() && a.substr(0, flag.size() + 1) == flag + "=")) return true;
  }
  return false;
}

bool secret_key(const std::string& key) {
  return key.find("secret") != std::string::npos || key.find("password") != std::string::npos;
}

// TOML-ish: numbers and booleans bare, everything else quoted.
std::string toml_value(const std::string& v) {
  if (v == "true" || v == "false") return v;
  if (!v.empty()) {
    char* end = nullptr;
    std::strtod(v.c_str(), &end);
    if (end && *end == '\0' && v.find_first_not_of("0123456789.-") == std::string::npos) return v;
  }
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// CLI11's reader takes `key = "value` (no closing quote) as the value
// `"value`, so a data dir of `"/srv/parley` would start a new, empty store
// beside it. A value that opens a quote must close it on its line
// (multi-line strings, triple-quoted, and lists are left to CLI11).
Status check_closed_values(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    size_t eq = line.find('=');
    size_t start = line.find_first_not_of(" \t");
    if (eq == std::string::npos || start == std::string::npos || line[start] == '#' || line[start] == '[') continue;
    std::string_view v(line);
    v.remove_prefix(std::min(v.size(), v.find_first_not_of(" \t", eq + 1)));
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.remove_suffix(1);
    if (v.empty() || v.starts_with(R"(""")") || v.starts_with("'''")) continue;
    const char open = v.front();
    bool closed = true;
    if (open == '"' || open == '\'') {
      closed = false;
      for (size_t i = 1; i < v.size(); ++i) {
        if (open == '"' && v[i] == '\\') {
          ++i;
        } else if (v[i] == open) {
          closed = true;
          break;
        }
      }
    }
    if (!closed)
      return bad_input("bad_setting", path + ":" + std::to_string(n) + ": the value opens " + std::string(1, open) +
                                          " and does not close it");
  }
  return Ok{};
}

}  // namespace

SettingSources given_settings(const CLI::App& cmd, int argc, char** argv) {
  SettingSources sources;
  for (const CLI::Option* opt : cmd.get_options()) {
    if (!settable(opt) || opt->count() == 0) continue;
    std::string key = key_of(opt);
    bool flag = false;
    for (const std::string& name : opt->get_lnames()) flag = flag || on_command_line(name, argc, argv);
    sources[key] = flag || opt->get_envname().empty() ? "flag" : "env " + opt->get_envname();
  }
  return sources;
}

// `config check` has serve's settings and reads the [serve] section: neither
// [config] nor [check] (that is `parley check`'s) speaks for it.
bool reads_serve_section(const CLI::App& c) {
  const CLI::App* parent = c.get_parent();
  return (parent && parent->get_name() == "config" && c.get_name() == "check") ||
         (c.get_name() == "config" && parent && !parent->get_parent());
}

// Whether `key` is a setting of a command named `name`, or of one under it
// (a [user] section speaks for `user disable`, `user enable`…). Several
// commands may share a name (`check`, `config check`): any of them counts.
bool setting_of_section(const CLI::App& root, const std::string& name, const std::string& key) {
  bool found = false;
  each_command(root, [&](const CLI::App& c) {
    if (c.get_name() != name || reads_serve_section(c)) return;
    each_command(c, [&](const CLI::App& under) {
      const CLI::Option* opt = under.get_option_no_throw("--" + key);
      if (opt && settable(opt)) found = true;
    });
  });
  return found;
}

Status apply_config_file(const std::string& path, const CLI::App& root, CLI::App& cmd, const std::string& section,
                         SettingSources& sources) {
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::FileError& e) {
    return bad_input("config_unreadable", "cannot read config file " + path + ": " + e.what());
  }
  if (auto st = check_closed_values(path); !st) return st;
  // The sections that speak for cmd, the nearest first: its own name, then
  // each command it is under (`parley user disable`: [disable], [user]);
  // `config check` reads as serve ([serve] only).
  std::vector<std::string> chain{section};
  if (section == cmd.get_name())
    for (const CLI::App* up = cmd.get_parent(); up && up->get_parent(); up = up->get_parent())
      chain.push_back(up->get_name());
  for (const CLI::ConfigItem& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // section boundaries
    std::string key = item.name;
    for (char& c : key) c = c == '_' ? '-' : c;
    const std::string shown = item.fullname();
    if (item.parents.size() > 1) return bad_input("unknown_setting", path + ": unknown setting '" + shown + "'");
    if (!known_anywhere(root, key)) return bad_input("unknown_setting", path + ": unknown setting '" + shown + "'");
    if (item.parents.empty()) continue;
    bool command_exists = false;
    each_command(root, [&](const CLI::App& c) { command_exists = command_exists || c.get_name() == item.parents.front(); });
    if (!command_exists) return bad_input("unknown_setting", path + ": unknown section [" + item.parents.front() + "]");
    // Checked whichever command runs: a key another command would refuse
    // is refused here too, not left to sit unused.
    if (!setting_of_section(root, item.parents.front(), key))
      return bad_input("unknown_setting", path + ": '" + item.name + "' is not a setting of " + item.parents.front());
  }
  // The nearest section first, then the others, then the top level: a key
  // in several takes the nearest one's value (TOML puts top-level keys
  // before any section, so file order would always pick the general one).
  for (size_t pass = 0; pass <= chain.size(); ++pass) {
    const bool top = pass == chain.size();
    for (const CLI::ConfigItem& item : items) {
      if (item.name == "++" || item.name == "--") continue;
      if (top ? !item.parents.empty() : item.parents.empty() || item.parents.front() != chain[pass]) continue;
      std::string key = item.name;
      for (char& c : key) c = c == '_' ? '-' : c;
      CLI::Option* opt = cmd.get_option_no_throw("--" + key);
      if (!top && pass == 0 && (!opt || !settable(opt)))
        return bad_input("unknown_setting", path + ": '" + item.name + "' is not a setting of " + section);
      if (!opt || !settable(opt)) continue;  // another command's setting
      key = key_of(opt);
      if (sources.count(key)) continue;  // a flag, the environment, or a nearer section's value wins
      if (item.inputs.empty()) continue;  // `key = []`: the default (as `config check` prints an empty list)
      try {
        for (const std::string& v : item.inputs) opt->add_result(v);
        opt->run_callback();
      } catch (const CLI::Error& e) {
        return bad_input("bad_setting", path + ": bad value for '" + item.fullname() + "': " + e.what());
      }
      sources[key] = "file";
    }
  }
  return Ok{};
}

std::string describe_settings(const CLI::App& cmd, const SettingSources& sources) {
  std::string out;
  for (const CLI::Option* opt : cmd.get_options()) {
    if (!settable(opt)) continue;
    std::string key = key_of(opt);
    std::vector<std::string> values = opt->results();
    if (values.empty()) {
      std::string d = opt->get_default_str();
      if (d.size() >= 2 && d.front() == '[' && d.back() == ']') values = CLI::detail::split(d.substr(1, d.size() - 2), ',');
      else if (!d.empty()) values = {d};
      else if (opt->get_expected_min() == 0) values = {"false"};  // a flag not given
    }
    for (std::string& v : values) v = secret_key(key) && !v.empty() ? "***" : redact_url_password(v);
    std::string shown;
    if (opt->get_expected_max() > 1) {  // a list: printed as one, so the output works as a config file
      for (const std::string& v : values) shown += (shown.empty() ? "" : ", ") + toml_value(v);
      shown = "[" + shown + "]";
    } else {
      shown = toml_value(values.empty() ? "" : values.front());
    }
    auto source = sources.find(key);
    out += key + " = " + shown + "  # " + (source == sources.end() ? "default" : source->second) + "\n";
  }
  return out;
}

}  // namespace parley
