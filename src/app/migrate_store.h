// `parley migrate-store --from sqlite:DIR --to postgres://…`: moves an
// embedded installation's data into PostgreSQL (see store/store_copy.h),
// holding DIR's data dir lock so no server writes it meanwhile. Progress on
// stderr, a summary on stdout; 0 on success, 1 with a message otherwise.
// Runs on the calling thread.
#pragma once

#include <string>

namespace parley {

struct MigrateStoreOptions {
  std::string from;  // sqlite:DIR
  std::string to;    // postgres://USER:PASS@HOST:PORT/DB
  int batch_rows = 1000;
};

int run_migrate_store(const MigrateStoreOptions& options);

}  // namespace parley
