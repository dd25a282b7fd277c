// Small files that must never be seen half-written (the JWT secret in the
// data dir, parley-cli's saved login): written beside their final name,
// flushed, then renamed over it, so a crash, a kill or a full disk at any
// moment leaves the old file or the new one, whole. Blocking; any thread.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/error.h"

namespace parley {

// Writes `text` to <path>.tmp-<pid> created with `mode` (whatever the
// umask), fsyncs it, renames it over `path`, then fsyncs the directory so the
// rename itself survives a power loss. The directory must exist. On failure
// the temporary file is removed and `path` is as it was; the error
// (internal_error) names the file and the system's reason.
Status write_file_atomically(const std::string& path, std::string_view text, mode_t mode = 0600);

}  // namespace parley
