#include "cli/terminal.h"

#include <signal.h>
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

namespace {

// The terminal's settings while echo is off, for a signal (Ctrl-C at the
// prompt) to put back before it ends the process: left off, the shell would
// show nothing the user types next.
termios g_saved_tty{};
constexpr int kPromptSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

extern "C" void restore_tty_and_reraise(int sig) {
  ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_tty);  // async-signal-safe
  ::signal(sig, SIG_DFL);
  ::raise(sig);
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
  struct sigaction before[std::size(kPromptSignals)];
  if (restore) {
    g_saved_tty = saved;
    struct sigaction on_signal{};
    on_signal.sa_handler = restore_tty_and_reraise;
    sigemptyset(&on_signal.sa_mask);
    for (size_t i = 0; i < std::size(kPromptSignals); ++i) {
      ::sigaction(kPromptSignals[i], nullptr, &before[i]);
      // One ignored (nohup) stays ignored.
      if (before[i].sa_handler != SIG_IGN) ::sigaction(kPromptSignals[i], &on_signal, nullptr);
    }
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  std::getline(std::cin, line);
  if (restore) {
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    for (size_t i = 0; i < std::size(kPromptSignals); ++i) ::sigaction(kPromptSignals[i], &before[i], nullptr);
  }
  std::cerr << "\n";
  return strip_newline(line);
}

std::string read_all_stdin() {
  std::string text(std::istreambuf_iterator<char>(std::cin), {});
  return strip_newline(text);
}

}  // namespace parley::cli
