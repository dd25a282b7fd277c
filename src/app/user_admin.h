// `parley user disable | enable | revoke-tokens USERNAME`: account moderation
// from the command line, against the store a server may be running on. The
// server notices within its account poll interval (chat/account_watcher.h).
#pragma once

#include <string>

#include "common/config.h"

namespace parley {

enum class UserAdminAction { kDisable, kEnable, kRevokeTokens };

// Applies the action, prints what it did and writes one audit line
// (event=audit) to stderr. Returns the process exit code.
int run_user_admin(const Config& config, UserAdminAction action, const std::string& username);

}  // namespace parley
