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
// The database's version (PRAGMA user_version): 0 for a new file, -1 when it
// cannot be read.
int schema_version(sqlite3* db);

// Brings `db` up to latest_schema_version(), logging each applied step.
// Fails (touching nothing) when the database is newer than this binary.
Status migrate_schema(sqlite3* db);
// Applies the steps up to `version` only: how tests build an older version's
// database to migrate from.
Status migrate_schema_to(sqlite3* db, int version);

// Adds parley_message_key(thread_id, sender_id, client_msg_id), the SQL face
// of store/message_key.h, to this connection (migrations and `parley check`
// use it; the schema itself never does, so other SQLite tools can read it).
Status register_message_key_function(sqlite3* db);

}  // namespace parley
