// Versioned schema of the PostgreSQL store.
//
// Applied versions are rows of schema_migrations. Migrating holds a session
// advisory lock, so when several nodes start at once one applies each step
// and the others wait and then find nothing left to do. Each step commits
// together with its row, so a crash mid-upgrade leaves the last complete step.
#pragma once

#include "common/error.h"

namespace parley {

class PgConn;

int latest_pg_schema_version();

// Brings the database up to latest_pg_schema_version(), logging each applied
// step. Fails (touching nothing) when the database is newer than this binary.
Status migrate_pg_schema(PgConn& conn);
// Applies the steps up to `version` only: how tests build an older version's
// database to migrate from.
Status migrate_pg_schema_to(PgConn& conn, int version);

}  // namespace parley
