#include "cli/terminal.h"

#include <termios.h>
#include <unistd.h>

#include <iostream>
#include <iterator>

namespace parley::cli {

namespace {

std::string strip_newline(std::string s) {
  if (!s.empty() && s.back() == '\n') s.pop_back();
  if (!s.empty() && s.back() == '\r') s.pop_back();
  return s;
}

}  // namespace

std::string read_password(const std::string& prompt) {
  std::string line;
  if (!::isatty(STDIN_FILENO)) {
    std::getline(std::cin, line);
    return strip_newline(line);
  }
  std::cerr << prompt << std::flush;
  termios saved{};
  bool restore = ::tcgetattr(STDIN_FILENO, &saved) == 0;
  if (restore) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  std::getline(std::cin, line);
  if (restore) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  std::cerr << "\n";
  return strip_newline(line);
}

std::string read_all_stdin() {
  std::string text(std::istreambuf_iterator<char>(std::cin), {});
  return strip_newline(text);
}

}  // namespace parley::cli
