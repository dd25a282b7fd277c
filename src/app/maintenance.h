// The maintenance commands: `parley backup`, `parley restore`, `parley check`.
// Each prints its result (stdout) or one error line (stderr) and returns the
// exit code. Main thread; they open what they need and close it.
#pragma once

#include <string>

#include "common/config.h"

namespace parley {

// SQLite only; on PostgreSQL they explain that pg_dump/pg_restore do this.
int backup(const Config& config, const std::string& to);
int restore(const Config& config, const std::string& from);
// 0 when everything holds (one summary line), 1 with the list of problems,
// or when the store cannot be read. as_json: one JSON object instead.
int check(const Config& config, bool as_json);

}  // namespace parley
