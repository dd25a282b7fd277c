#include "cli/output.h"

#include <iostream>

#include "cli/errors.h"

namespace parley::cli {

void print_json_line(const json::value& v) { print_line(json::serialize(v)); }

// SIGPIPE is ignored (see main), so a reader that went away shows up here;
// throwing keeps listen from counting a line nobody received as printed.
void print_line(std::string_view text) {
  std::cout << text << '\n' << std::flush;
  if (!std::cout) throw CliError("stdout_closed", "cannot write to stdout", kExitServerError);
}

void note(std::string_view text) { std::cerr << "parley-cli: " << text << '\n' << std::flush; }

}  // namespace parley::cli
