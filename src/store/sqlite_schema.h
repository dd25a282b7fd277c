// Versioned schema of the embedded SQLite store.
//
// The database's version lives in PRAGMA user_version. Each migration step is
// applied in its own transaction together with the version bump, so a crash
// mid-upgrade leaves the database at the last complete step.
#pragma once

#include <sqlite3.h>

#include "common/error.h"

namespace parley {

// The version a fully migrated database has.
int latest_schema_version();

// Brings `db` up to latest_schema_version(), logging each applied step.
// Fails (touching nothing) when the database is newer than this binary.
Status migrate_schema(sqlite3* db);

}  // namespace parley
