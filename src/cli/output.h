// Where things go: stdout carries data (one JSON line per item, or --pretty
// text), stderr carries status and errors. Every stdout line is flushed at
// once so a script reading a pipe sees each event as it happens.
#pragma once

#include <string_view>

#include "cli/json_util.h"

namespace parley::cli {

// Both throw CliError stdout_closed when the reader is gone.
void print_json_line(const json::value& v);
void print_line(std::string_view text);
// A status line on stderr: "parley-cli: <text>".
void note(std::string_view text);

}  // namespace parley::cli
