#include "store/pg_store.h"
#include "store/store.h"

namespace parley {

Result<std::unique_ptr<Store>> open_postgres_store(const StoreOptions& options) {
  auto store = PgStore::open(options);
  if (!store) return store.error();
  return std::unique_ptr<Store>(std::move(*store));
}

Result<std::unique_ptr<Store>> open_store(const StoreOptions& options) {
  const std::string& url = options.database_url;
  if (url.empty()) return open_sqlite_store(options);
  if (url.rfind("postgres://", 0) == 0 || url.rfind("postgresql://", 0) == 0) return open_postgres_store(options);
  return bad_input("invalid_config", "--database must be a postgres:// URL");
}

}  // namespace parley
