// StoreCopy: copies an embedded installation's SQLite store into a
// PostgreSQL database (`parley migrate-store`), row for row: ids, seq,
// timestamps, password hashes and read state exactly as stored.
//
// The tables and columns copied are the list in store_copy.cc (one line per
// table). Rows go over in batches in key order, each batch in one PostgreSQL
// transaction together with the cursor it reached (table parley_store_copy in
// the target), so a run killed at any moment resumes after the last committed
// batch; inserts are ON CONFLICT DO NOTHING, so nothing is ever doubled.
// The target must be empty, or hold an earlier run's copy of this same source,
// unchanged since that run began (its fingerprint: counts and sums of what
// changes in place). The source's write lock is held for the whole run.
// The run ends by comparing row counts per table and each thread's message
// count and highest seq on both sides.
//
// One caller at a time; blocking. The caller holds the source data dir's
// lock (no server may write the SQLite store meanwhile). `progress` is called
// on the calling thread after every batch.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"

namespace parley {

struct StoreCopyProgress {
  std::string table;
  int64_t copied = 0;  // rows of this table in the target so far (this run and earlier ones)
  int64_t total = 0;   // rows of this table in the source
};

struct StoreCopyOptions {
  std::string sqlite_path;  // <data dir>/parley.db; must exist
  std::string source_name;  // identifies the source in the target (its absolute path)
  std::string pg_url;       // postgres://…
  int batch_rows = 1000;
  // Tests only: return "copy_stopped" after this many batches, as a kill would
  // leave it (0 = never).
  int stop_after_batches = 0;
  std::function<void(const StoreCopyProgress&)> progress;
};

struct StoreCopyTableReport {
  std::string table;
  int64_t rows = 0;          // in the source, equal in the target
  int64_t copied_now = 0;    // inserted by this run
};

struct StoreCopyReport {
  std::vector<StoreCopyTableReport> tables;
  int64_t threads_checked = 0;  // threads whose message count and max seq matched
  bool resumed = false;         // an earlier run had started this copy
  std::vector<std::string> sqlite_only_columns;  // "table.column": no such column in PostgreSQL, not copied
};

// Errors: "target_not_empty" / "target_other_source" / "copy_running" /
// "source_changed" / "source_busy" (kConflict, nothing changed), "schema_mismatch" (a column in both schemas that the list
// misses, or a listed one missing), "copy_mismatch" (the final check failed;
// the message says where), "copy_stopped", "postgres_error" (a statement
// failed; in the middle of a copy, running again resumes), store errors.
Result<StoreCopyReport> copy_sqlite_to_postgres(const StoreCopyOptions& options);

}  // namespace parley
