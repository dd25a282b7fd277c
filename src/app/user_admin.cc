#include "app/user_admin.h"

#include <CLI/CLI.hpp>
#include <pwd.h>
#include <unistd.h>

#include <iostream>

#include "app/store_options.h"
#include "auth/identity.h"
#include "common/clock.h"
#include "store/store.h"

namespace parley {

namespace {

// Who ran the command, for the audit line: the operating-system login.
std::string operator_name() {
  if (const char* name = getlogin()) return name;
  if (const char* user = std::getenv("USER")) return user;
  // No terminal and no USER (cron, a container's exec): the account the
  // command runs as.
  if (const passwd* pw = getpwuid(geteuid())) return pw->pw_name;
  return "uid-" + std::to_string(geteuid());
}

const char* action_name(UserAdminAction a) {
  switch (a) {
    case UserAdminAction::kDisable: return "user_disable";
    case UserAdminAction::kEnable: return "user_enable";
    case UserAdminAction::kRevokeTokens: return "user_revoke_tokens";
  }
  return "user_unknown";
}

int fail(const Error& e) {
  std::cerr << "parley: " << e.code << ": " << e.message << "\n";
  return 1;
}

}  // namespace

void add_moderation_options(CLI::App& cmd, Config& c) {
  cmd.add_option("--edit-window", c.limits.edit_window_seconds, "Seconds after sending during which a sender may edit")
      ->envname("PARLEY_EDIT_WINDOW")
      ->check(CLI::Range(0, 365 * 24 * 3600))
      ->capture_default_str();
  cmd.add_option("--account-poll-ms", c.limits.account_poll_ms,
                 "How often to look for accounts disabled or revoked by `parley user`")
      ->envname("PARLEY_ACCOUNT_POLL_MS")
      ->check(CLI::Range(50, 60000))
      ->capture_default_str();
}

int run_user_admin(const Config& config, UserAdminAction action, const std::string& username) {
  StoreOptions options = store_options(config);
  options.beside_server = true;  // no DataDirLock: it runs beside a server
  auto store = open_store(options);
  if (!store) return fail(store.error());
  auto close_and = [&](int code) {
    (*store)->close();
    return code;
  };
  auto u = (*store)->user_by_username(ascii_lowercase(username));
  if (!u) return close_and(fail(u.error()));
  if (!*u) return close_and(fail(not_found("user_not_found", "no user named " + username)));
  const User& user = **u;
  Result<AccountState> state = internal_error("no action");
  switch (action) {
    case UserAdminAction::kDisable: state = (*store)->set_user_disabled(user.id, true); break;
    case UserAdminAction::kEnable: state = (*store)->set_user_disabled(user.id, false); break;
    case UserAdminAction::kRevokeTokens:
      // iat is in whole seconds: every token issued up to now has iat <= this
      // second, so the next second is the first one still valid. The server
      // issues new tokens with iat no earlier than it (Identity::issue_token).
      state = (*store)->revoke_tokens(user.id, now_micros() / 1000000 + 1);
      break;
  }
  if (!state) return close_and(fail(state.error()));
  // The audit record: who, what, whom; one line, whatever the log level.
  std::cerr << "event=audit action=" << action_name(action) << " actor=cli:" << operator_name()
            << " target_user_id=" << user.id << " target_username=" << user.username
            << " disabled=" << (state->disabled ? "true" : "false")
            << " tokens_valid_after=" << state->tokens_valid_after << "\n";
  switch (action) {
    case UserAdminAction::kDisable: std::cout << "disabled user " << user.username << "\n"; break;
    case UserAdminAction::kEnable: std::cout << "enabled user " << user.username << "\n"; break;
    case UserAdminAction::kRevokeTokens:
      std::cout << "revoked tokens of user " << user.username << " issued before "
                << iso8601_millis(state->tokens_valid_after * 1000000) << "\n";
      break;
  }
  return close_and(0);
}

}  // namespace parley
