// check_store: what `parley check` verifies in a store, SQLite or
// PostgreSQL, while a server may be running on it (it only reads): the
// database's own integrity check (SQLite's integrity_check; PostgreSQL has
// none to run here) and the invariants the server relies on — each thread's
// messages have seq 1..last_seq with no gap, read and delivery marks lie
// within 0..last_seq, and participants and messages name users and threads
// that exist.
//
// Blocking; any thread; opens its own connection and closes it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "store/store.h"

namespace parley {

struct CheckProblem {
  std::string kind;       // "integrity", "seq_gap", "last_seq_mismatch", "read_mark_out_of_range", ...
  std::string thread_id;  // when the problem is in one thread
  std::string user_id;    // when it concerns one participant or sender
  std::string detail;     // one human sentence
};

struct CheckReport {
  std::string store;  // "sqlite:/path" or "postgres://host/db" (no password)
  int64_t users = 0;
  int64_t threads = 0;
  int64_t messages = 0;
  int64_t participants = 0;
  bool counted = false;  // the counts above were read (a damaged file may stop before)
  std::vector<CheckProblem> problems;  // empty: everything holds
  bool capped = false;  // some kind had more problems than it lists (kMaxRowsPerCheck)
};

// An error only when the store cannot be read at all ("no_database",
// "not_parley_database", "database_corrupt" when not even SQLite's own
// check can read it, a connection failure); problems found are in the report.
Result<CheckReport> check_store(const StoreOptions& options);

}  // namespace parley
