// The parley-cli commands. Each runs as a coroutine on the one io_context,
// prints its data on stdout and returns the exit code; failures are thrown
// as CliError and reported by main.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cli/asio.h"
#include "cli/context.h"

namespace parley::cli {

struct LoginOptions {
  std::string username;
  std::string phone;
  std::optional<std::string> password;  // prompted for when absent
};

struct HistoryOptions {
  std::string thread_id;
  std::optional<int> limit;
  std::optional<std::int64_t> before_seq;
};

struct SendOptions {
  std::string thread_id;  // one of thread_id / to
  std::string to;
  std::string client_msg_id;      // generated when empty
  std::string message_type;       // server default (text) when empty
  std::vector<std::string> text;  // joined with spaces; "-" alone reads stdin
};

struct ListenOptions {
  int exit_after = 0;          // 0: run until a signal
  double timeout_seconds = 0;  // 0: none
  bool presence = false;       // print presence events (hidden by default)
};

struct RegisterOptions {
  std::string username;
  std::optional<std::string> password;  // prompted for when absent
  std::string full_name;
  std::string phone;  // optional
  std::string role;   // optional: the server's default when empty
};

struct MarkReadOptions {
  std::string thread_id;  // a full id or a unique prefix
  std::optional<std::int64_t> up_to_seq;
};

struct GroupCreateOptions {
  std::string title;
  std::vector<std::string> members;  // usernames (or user ids)
};

struct GroupAddOptions {
  std::string thread_id;             // a full id or a unique prefix
  std::vector<std::string> members;  // usernames (or user ids)
};

awaitable<int> login(Context& ctx, LoginOptions options);
awaitable<int> register_user(Context& ctx, RegisterOptions options);
awaitable<int> whoami(Context& ctx);
awaitable<int> threads(Context& ctx);
awaitable<int> history(Context& ctx, HistoryOptions options);
awaitable<int> mark_read(Context& ctx, MarkReadOptions options);
awaitable<int> group_create(Context& ctx, GroupCreateOptions options);
awaitable<int> group_add(Context& ctx, GroupAddOptions options);
awaitable<int> send(Context& ctx, SendOptions options);
awaitable<int> listen(Context& ctx, ListenOptions options);

}  // namespace parley::cli
