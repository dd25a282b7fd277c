#include "cli/output.h"

#include <cstdio>
#include <iostream>

#include "cli/errors.h"

namespace parley::cli {

// Boost.JSON escapes only U+0000-001F. DEL and the C1 controls (U+0080-009F,
// one of them a CSI that some terminals obey) from other people's messages
// would reach the terminal raw; escaped, the line is the same JSON.
void print_json_line(const json::value& v) {
  std::string text = json::serialize(v);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const auto next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
    if (c == 0x7f) {
      out += "\\u007f";
    } else if (c == 0xc2 && next >= 0x80 && next <= 0x9f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", next);
      out += esc;
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  print_line(out);
}

// SIGPIPE is ignored (see main), so a reader that went away shows up here;
// throwing keeps listen from counting a line nobody received as printed.
void print_line(std::string_view text) {
  std::cout << text << '\n' << std::flush;
  if (!std::cout) throw CliError("stdout_closed", "cannot write to stdout", kExitServerError);
}

void note(std::string_view text) { std::cerr << "parley-cli: " << text << '\n' << std::flush; }

}  // namespace parley::cli
