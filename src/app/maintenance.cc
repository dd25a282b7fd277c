#include "app/maintenance.h"

#include <boost/json.hpp>

#include <iostream>

#include "app/store_options.h"
#include "store/sqlite_backup.h"
#include "store/store_check.h"

namespace parley {

namespace {

int print_error(const Error& e) {
  std::cerr << "parley: " << e.code << ": " << e.message << "\n";
  return 1;
}

// PostgreSQL has its own tools for this, and they do it better than a copy
// through libpq would (docs/operations.md shows the commands).
int postgres_refusal(const char* what, const char* tool) {
  return print_error(bad_input("use_" + std::string(tool), std::string(what) +
                                   " works on the SQLite store; for PostgreSQL use " + tool +
                                   " (docs/operations.md, \"Backups\")"));
}

std::string counts(const CopySummary& s) {
  return std::to_string(s.users) + " users, " + std::to_string(s.threads) + " threads, " +
         std::to_string(s.messages) + " messages, " + std::to_string(s.bytes) + " bytes";
}

}  // namespace

int backup(const Config& config, const std::string& to) {
  if (!config.database_url.empty()) return postgres_refusal("backup", "pg_dump");
  auto r = sqlite_backup(config.data_dir, to);
  if (!r) return print_error(r.error());
  std::cout << "backup " << r->path << ": " << counts(*r) << "\n";
  return 0;
}

int restore(const Config& config, const std::string& from) {
  if (!config.database_url.empty()) return postgres_refusal("restore", "pg_restore");
  auto r = sqlite_restore(from, config.data_dir);
  if (!r) return print_error(r.error());
  std::cout << "restored " << r->path << ": " << counts(*r) << "\n";
  if (!config.jwt_secret.empty()) return 0;
  std::cerr << "parley: note: the backup holds no JWT secret; copy the old data dir's jwt_secret file here, or "
               "start with the old --jwt-secret, or tokens issued before are refused\n";
  return 0;
}

int check(const Config& config, bool as_json) {
  auto r = check_store(store_options(config));
  if (!r) return print_error(r.error());
  const bool ok = r->problems.empty();
  if (as_json) {
    boost::json::array problems;
    for (const CheckProblem& p : r->problems)
      problems.push_back(
          boost::json::object{{"kind", p.kind}, {"thread_id", p.thread_id}, {"user_id", p.user_id}, {"detail", p.detail}});
    boost::json::object out{{"ok", ok},
                            {"store", r->store},
                            {"users", r->counted ? boost::json::value(r->users) : nullptr},
                            {"threads", r->counted ? boost::json::value(r->threads) : nullptr},
                            {"messages", r->counted ? boost::json::value(r->messages) : nullptr},
                            {"participants", r->counted ? boost::json::value(r->participants) : nullptr},
                            {"problems", std::move(problems)},
                            {"capped", r->capped}};
    std::cout << boost::json::serialize(out) << "\n";
    return ok ? 0 : 1;
  }
  const std::string what = !r->counted ? std::string("counts not read")
                                       : std::to_string(r->users) + " users, " + std::to_string(r->threads) +
                                             " threads, " + std::to_string(r->messages) + " messages, " +
                                             std::to_string(r->participants) + " participants";
  if (ok) {
    std::cout << "ok " << r->store << ": " << what << "; integrity and invariants hold\n";
    return 0;
  }
  for (const CheckProblem& p : r->problems) std::cout << "problem " << p.kind << ": " << p.detail << "\n";
  // A capped query found more than it lists: the count is a floor, and says so.
  std::cout << r->problems.size() << " problem" << (r->problems.size() == 1 ? "" : "s")
            << (r->capped ? " listed, and more not listed (each query lists at most 1000)" : "") << " in " << r->store
            << " (" << what << ")\n";
  return 1;
}

}  // namespace parley
