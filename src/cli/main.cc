// parley-cli: the terminal client of Parley. Data goes to stdout (JSON lines,
// or --pretty text), status and errors to stderr as
// "parley-cli: <code>: <message>". Exit codes: see the footer of --help.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <csignal>
#include <exception>
#include <functional>
#include <iostream>

#include "cli/commands.h"
#include "cli/errors.h"
#include "cli/json_util.h"
#include "cli/thread_ref.h"

namespace parley::cli {

namespace {

using Command = std::function<awaitable<int>(Context&)>;

// The same words as resolve_thread's refusal (kMinThreadPrefix).
const std::string kThreadHelp =
    "Thread id, or a unique prefix of it (" + std::to_string(kMinThreadPrefix) + " characters or more)";

// What to do about a refused token depends on where it came from: a new
// login is saved, but --token and PARLEY_TOKEN would still win over it.
void token_hint(const std::string& source, const std::string& username) {
  if (source == "--token")
    std::cerr << "parley-cli: the token given with --token is refused: pass a new one, or leave --token out to "
                 "use the saved login\n";
  else if (source == "PARLEY_TOKEN")
    std::cerr << "parley-cli: the token in PARLEY_TOKEN is refused: set a new one, or unset PARLEY_TOKEN to use "
                 "the saved login\n";
  else if (source == "saved")
    std::cerr << "parley-cli: log in again: parley-cli login --username "
              << (username.empty() ? "<your username>" : username) << "\n";
}

int report(std::exception_ptr error, const std::string& token_source = "", const std::string& username = "") {
  try {
    std::rethrow_exception(error);
  } catch (const CliError& e) {
    std::cerr << "parley-cli: " << e.code() << ": " << e.what() << "\n";
    if (e.code() == "token_expired" || e.code() == "token_revoked" || e.code() == "invalid_token")
      token_hint(token_source, username);
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "parley-cli: internal_error: " << e.what() << "\n";
    return kExitServerError;
  }
}

// One io_context for the whole process; the command runs as its coroutine.
int run_command(const GlobalOptions& globals, const Command& command) {
  asio::io_context ioc;
  int exit_code = 0;
  try {
    Context ctx = make_context(globals, ioc.get_executor());
    asio::co_spawn(ioc, command(ctx), [&](std::exception_ptr error, int code) {
      exit_code = error ? report(error, ctx.token_source, get_string(ctx.config.user, "username")) : code;
      ioc.stop();  // nothing the command left behind outlives it
    });
    ioc.run();
  } catch (...) {
    return report(std::current_exception());
  }
  return exit_code;
}

// For numbers that must not be negative. CLI11's NonNegativeNumber would say
// "Value -1 not in range 0.000000 to " and then DBL_MAX in full, 309 digits.
const CLI::Validator kNonNegative(
    [](std::string& input) -> std::string {
      double value = 0;
      if (!CLI::detail::lexical_cast(input, value)) return "Value " + input + " is not a number";
      return value < 0 ? "Value " + input + " is negative: give 0 or more" : std::string();
    },
    "NONNEGATIVE");

// A finite number of seconds, at least 0. A huge one (beyond any real wait)
// is read as "no limit", where converted to a timer it would overflow.
const CLI::Validator kSeconds(
    [](std::string& input) -> std::string {
      double value = 0;
      if (!CLI::detail::lexical_cast(input, value) || std::isnan(value)) return "Value " + input + " is not a number";
      if (value < 0) return "Value " + input + " is negative: give 0 or more";
      if (value > 1e9) input = "0";  // more than 31 years
      return {};
    },
    "SECONDS");

// Usernames as people type them in a list ("bob, carol"): the spaces around
// a name are no part of it.
const CLI::Validator kTrimmed(
    [](std::string& input) -> std::string {
      input = CLI::detail::trim_copy(input);
      return {};
    },
    "");

void add_globals(CLI::App& app, GlobalOptions& g) {
  app.add_option("--server", g.server,
                 "Server URL (default: $PARLEY_SERVER, the saved login's, or http://127.0.0.1:3000)");
  app.add_option("--token", g.token, "Bearer token (default: $PARLEY_TOKEN, else the saved login's)");
  app.add_option("--config", g.config_path, "Saved login file (default: $XDG_CONFIG_HOME/parley/cli.json)");
  app.add_flag("--pretty", g.pretty, "Readable lines instead of JSON lines");
}

// The word standing where a command is required but naming none
// (`parley-cli threds`, `group remove`), said with the commands there are:
// CLI11 itself only says "A subcommand is required". Empty when the
// command line has no such word.
std::string unknown_command(CLI::App& app, int argc, char** argv) {
  CLI::App* at = &app;
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.starts_with("-")) {
      if (word.find('=') != std::string::npos) continue;
      const CLI::Option* opt = at->get_option_no_throw(word);
      if (!opt) opt = app.get_option_no_throw(word);  // a global option after the command
      if (!opt) return "";  // a mistyped option: what CLI11 says of it stands
      if (opt->get_expected_min() > 0) ++i;  // skip its value (a flag has none)
      continue;
    }
    auto subs = at->get_subcommands([](CLI::App*) { return true; });
    auto named = std::find_if(subs.begin(), subs.end(), [&](CLI::App* c) { return c->get_name() == word; });
    if (named != subs.end()) {
      at = *named;
      continue;
    }
    if (at->get_require_subcommand_min() == 0) return "";  // an argument of the command
    std::string names;
    for (CLI::App* c : subs) names += (names.empty() ? "" : ", ") + c->get_name();
    const std::string under = at == &app ? "" : at->get_name() + " ";
    return "unknown command '" + under + word + "'; the " + under + "commands are " + names;
  }
  return "";
}

}  // namespace

int main_impl(int argc, char** argv) {
  CLI::App app{"parley-cli: the Parley chat client"};
  app.footer(
      "Exit codes: 0 done; 1 refused (the server said no, or a local failure such as a closed stdout);\n"
      "2 cannot connect; 3 listen --timeout passed; 64 bad command line.");
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the command
  GlobalOptions globals;
  add_globals(app, globals);

  LoginOptions login_opts;
  auto* login_cmd = app.add_subcommand("login", "Log in and save the token (prints the user)");
  auto* user_opt = login_cmd->add_option("--username", login_opts.username, "Username");
  auto* phone_opt = login_cmd->add_option("--phone", login_opts.phone, "Phone number, instead of --username");
  user_opt->excludes(phone_opt);
  login_cmd->add_option("--password", login_opts.password, "Password (default: prompt, or one line of stdin)");

  RegisterOptions register_opts;
  auto* register_cmd = app.add_subcommand("register", "Create an account on the server, log in and save the token");
  register_cmd->add_option("--username", register_opts.username, "3-32 of a-z 0-9 _ .")->required();
  register_cmd->add_option("--password", register_opts.password,
                           "At least 8 characters (default: prompt, or one line of stdin)");
  register_cmd->add_option("--full-name", register_opts.full_name, "Display name")->required();
  register_cmd->add_option("--phone", register_opts.phone, "Phone number (a login alternative)");
  register_cmd->add_option("--role", register_opts.role, "One of the server's roles (teacher, parent, student...)");

  auto* whoami_cmd = app.add_subcommand("whoami", "Print the logged-in user");
  auto* threads_cmd = app.add_subcommand("threads", "List your threads, newest activity first");

  HistoryOptions history_opts;
  auto* history_cmd = app.add_subcommand("history", "Print a thread's messages, oldest first");
  history_cmd->add_option("thread", history_opts.thread_id, kThreadHelp)
      ->required();
  history_cmd->add_option("--limit", history_opts.limit, "How many (1-200, default 50)")->check(CLI::Range(1, 200));
  history_cmd->add_option("--before", history_opts.before_seq, "Only messages before this seq")->check(kNonNegative);

  SendOptions send_opts;
  auto* send_cmd = app.add_subcommand("send", "Send a message (prints it once stored)");
  auto* thread_opt = send_cmd->add_option("--thread", send_opts.thread_id, kThreadHelp);
  auto* to_opt = send_cmd->add_option("--to", send_opts.to, "Username: a direct message")->transform(kTrimmed);
  thread_opt->excludes(to_opt);
  send_cmd->add_option("--client-msg-id", send_opts.client_msg_id, "Idempotency key (default: generated)");
  send_cmd->add_option("--type", send_opts.message_type, "text (default), image or file");
  send_cmd->add_option("text", send_opts.text, "The message; - reads it from stdin")->required();

  MarkReadOptions mark_opts;
  auto* mark_cmd = app.add_subcommand("mark-read", "Mark a thread read (all of it, or up to a seq)");
  mark_cmd->add_option("thread", mark_opts.thread_id, kThreadHelp)->required();
  mark_cmd->add_option("--up-to", mark_opts.up_to_seq, "Only up to this seq")->check(kNonNegative);

  auto* group_cmd = app.add_subcommand("group", "Group threads: create, add members");
  group_cmd->require_subcommand(1);
  GroupCreateOptions group_create_opts;
  auto* group_create_cmd = group_cmd->add_subcommand("create", "Create a group (you are its admin; prints the thread)");
  group_create_cmd->add_option("--title", group_create_opts.title, "The group's name")->required();
  group_create_cmd->add_option("--members", group_create_opts.members, "Usernames (or user ids), comma-separated")
      ->delimiter(',')
      ->transform(kTrimmed)
      ->required();
  GroupAddOptions group_add_opts;
  auto* group_add_cmd = group_cmd->add_subcommand("add", "Add members to a group you administer");
  group_add_cmd->add_option("thread", group_add_opts.thread_id, kThreadHelp)->required();
  group_add_cmd->add_option("users", group_add_opts.members, "Usernames (or user ids), space- or comma-separated")
      ->delimiter(',')
      ->transform(kTrimmed)
      ->required();

  ListenOptions listen_opts;
  auto* listen_cmd =
      app.add_subcommand("listen", "Print events as they come (JSON lines); once connected, reconnects and catches up by itself");
  listen_cmd->add_option("--exit-after", listen_opts.exit_after, "Exit 0 after printing this many new messages (0: no limit)")
      ->check(kNonNegative);
  listen_cmd->add_option("--timeout", listen_opts.timeout_seconds, "Exit 3 after this many seconds (0: no limit)")
      ->transform(kSeconds);
  listen_cmd->add_flag("--presence", listen_opts.presence, "Also print presence (online / offline) events");

  try {
    app.parse(argc, argv);
    if (login_cmd->parsed() && login_opts.username.empty() && login_opts.phone.empty()) {
      throw CLI::RequiredError("--username or --phone");
    }
    if (send_cmd->parsed() && send_opts.thread_id.empty() && send_opts.to.empty()) {
      throw CLI::RequiredError("--thread or --to");
    }
  } catch (const CLI::ParseError& e) {
    std::string unknown;
    if (dynamic_cast<const CLI::RequiredError*>(&e)) unknown = unknown_command(app, argc, argv);
    if (!unknown.empty()) {
      std::cerr << unknown << "\nRun with --help for more information.\n";
      return kExitUsage;
    }
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }

  std::signal(SIGPIPE, SIG_IGN);  // a closed stdout or socket is an error to handle, not a death
  Command command;
  if (login_cmd->parsed()) command = [&](Context& c) { return login(c, login_opts); };
  if (register_cmd->parsed()) command = [&](Context& c) { return register_user(c, register_opts); };
  if (whoami_cmd->parsed()) command = [](Context& c) { return whoami(c); };
  if (threads_cmd->parsed()) command = [](Context& c) { return threads(c); };
  if (history_cmd->parsed()) command = [&](Context& c) { return history(c, history_opts); };
  if (send_cmd->parsed()) command = [&](Context& c) { return send(c, send_opts); };
  if (mark_cmd->parsed()) command = [&](Context& c) { return mark_read(c, mark_opts); };
  if (group_create_cmd->parsed()) command = [&](Context& c) { return group_create(c, group_create_opts); };
  if (group_add_cmd->parsed()) command = [&](Context& c) { return group_add(c, group_add_opts); };
  if (listen_cmd->parsed()) command = [&](Context& c) { return listen(c, listen_opts); };
  return run_command(globals, command);
}

}  // namespace parley::cli

int main(int argc, char** argv) { return parley::cli::main_impl(argc, argv); }
