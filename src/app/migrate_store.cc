#include "app/migrate_store.h"

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include "common/redact.h"
#include "store/data_dir_lock.h"
#include "store/store_copy.h"
#include "store/store_copy_lock.h"

namespace parley {

namespace {

namespace fs = std::filesystem;

int fail(const std::string& code, const std::string& message) {
  std::cerr << "parley: " << code << ": " << message << "\n";  // as every command says it
  return 1;
}

}  // namespace

int run_migrate_store(const MigrateStoreOptions& options) {
  if (options.from.rfind("sqlite:", 0) != 0)
    return fail("invalid_config", "--from must be sqlite:DIR (the data dir of the embedded installation)");
  std::string dir = options.from.substr(7);
  if (dir.rfind("//", 0) == 0) dir = dir.substr(2);  // sqlite://DIR too
  if (dir.empty()) return fail("invalid_config", "--from sqlite:DIR needs a directory");
  if (options.to.rfind("postgres://", 0) != 0 && options.to.rfind("postgresql://", 0) != 0)
    return fail("invalid_config", "--to must be a postgres:// URL");

  std::error_code ec;
  fs::path data_dir = fs::absolute(dir, ec).lexically_normal();
  if (ec) data_dir = dir;
  fs::path db = data_dir / "parley.db";
  if (!fs::exists(db, ec)) return fail("no_database", "no Parley store at " + db.string());
  // Held to the end: no server may write the source while it is copied.
  auto lock = DataDirLock::acquire(data_dir.string());
  if (!lock) return fail(lock.error().code, lock.error().message);
  // And the commands that write beside a server (`user disable`…) kept out:
  // what they change now would stay behind in SQLite (store_copy_lock.h).
  auto copy_lock = StoreCopyLock::exclusive(data_dir.string(), std::chrono::seconds(30));
  if (!copy_lock) return fail(copy_lock.error().code, copy_lock.error().message);

  StoreCopyOptions copy;
  copy.sqlite_path = db.string();
  copy.source_name = db.string();
  copy.pg_url = options.to;
  copy.batch_rows = options.batch_rows;
  // Tests only: stop after N batches as a kill would (see tests/e2e/node/migrate_store.test.mjs).
  if (const char* stop = std::getenv("PARLEY_TEST_MIGRATE_STOP_AFTER_BATCHES")) copy.stop_after_batches = std::atoi(stop);
  // Tests only: a pause after each batch, so a test can kill the copy while it runs.
  const char* pause_env = std::getenv("PARLEY_TEST_MIGRATE_BATCH_PAUSE_MS");
  const auto pause = std::chrono::milliseconds(pause_env ? std::atoi(pause_env) : 0);
  auto last_print = std::chrono::steady_clock::now() - std::chrono::seconds(2);
  copy.progress = [&last_print, pause](const StoreCopyProgress& p) {
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
    auto now = std::chrono::steady_clock::now();
    bool finished = p.copied >= p.total;
    if (!finished && now - last_print < std::chrono::seconds(1)) return;
    last_print = now;
    std::cerr << "migrate-store: " << p.table << " " << p.copied << "/" << p.total
              << (p.total > 0 ? " (" + std::to_string(p.copied * 100 / p.total) + "%)" : std::string()) << "\n";
  };
  std::cerr << "migrate-store: copying " << db.string() << " into " << redact_url_password(options.to) << "\n";
  auto report = copy_sqlite_to_postgres(copy);
  if (!report) return fail(report.error().code, report.error().message);

  int64_t copied_now = 0;
  for (const auto& t : report->tables) copied_now += t.copied_now;
  const char* what = !report->resumed ? "finished" : copied_now > 0 ? "resumed and finished" : "nothing left to copy";
  std::cout << "migrate-store: " << what << "; checked:";
  for (const auto& t : report->tables)
    std::cout << " " << t.table << " " << t.rows << (t.copied_now != t.rows ? " (" + std::to_string(t.copied_now) + " copied now)" : "");
  std::cout << "; " << report->threads_checked << " threads with equal message count and max seq\n";
  for (const auto& column : report->sqlite_only_columns)
    std::cout << "migrate-store: not copied: " << column << " (PostgreSQL has no such column)\n";
  std::cout << "migrate-store: tokens are signed with the JWT secret: start the PostgreSQL nodes with the same "
               "--jwt-secret (without one, the old server used "
            << (data_dir / "jwt_secret").string() << ")\n";
  return 0;
}

}  // namespace parley
