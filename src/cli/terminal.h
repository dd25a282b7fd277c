// Reading secrets and message text from the terminal or a pipe.
#pragma once

#include <string>

namespace parley::cli {

// On a terminal: prompts on stderr and reads without echo. Otherwise reads
// one line from stdin (so `echo pw | parley-cli login ...` works).
std::string read_password(const std::string& prompt);

// All of stdin, less one trailing newline (the one `echo` adds).
std::string read_all_stdin();

}  // namespace parley::cli
