// Thread ids as people type them: a full UUID, or any unique prefix of one
// (the 8 characters `threads` and `--pretty` print). Called on the command's
// coroutine; asks the server for the caller's threads only for a prefix.
#pragma once

#include <string>

#include "cli/asio.h"
#include "cli/http_client.h"

namespace parley::cli {

inline constexpr size_t kMinThreadPrefix = 4;

// The full thread id `given` stands for. A full UUID is returned as is (the
// server decides whether it is the caller's: `forbidden` if not). Throws
// CliError invalid_thread_id (exit 64) when `given` cannot be an id or a
// prefix of one, no_such_thread (exit 1) when no thread of the caller starts
// with it, ambiguous_thread (exit 1) when several do.
awaitable<std::string> resolve_thread(HttpClient& http, const std::string& given);

}  // namespace parley::cli
