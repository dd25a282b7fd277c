#include "store/store_copy.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "common/clock.h"
#include "store/pg_conn.h"
#include "store/pg_schema.h"
#include "store/sqlite_conn.h"
#include "store/sqlite_schema.h"

namespace parley {

namespace {

// What migrate-store copies, in foreign-key order. Each table's primary key
// columns come first (`key_columns` of them). A column both schemas gain is
// one more name on its table's line; a table both gain is one more line.
// Anything both schemas have that is not listed here stops the copy
// (schema_mismatch) rather than leaving data behind.
struct TableSpec {
  const char* name;
  size_t key_columns;
  std::vector<std::string> columns;
};
const std::vector<TableSpec>& copied_tables() {
  static const std::vector<TableSpec> tables = {
      {"users", 1,
       {"id", "username", "full_name", "phone_number", "role", "password_hash", "created_at", "last_seen", "disabled",
        "tokens_valid_after", "state_version", "phone_key"}},
      {"threads", 1, {"id", "type", "title", "created_by", "created_at", "last_activity", "last_seq", "direct_key"}},
      {"participants", 2, {"thread_id", "user_id", "is_admin", "last_read_seq", "joined_at", "last_delivered_seq"}},
      {"former_marks", 3, {"thread_id", "user_id", "joined_at", "last_read_seq", "last_delivered_seq", "left_seq"}},
      {"messages", 1,
       {"id", "thread_id", "seq", "sender_id", "content", "message_type", "client_msg_id", "created_at", "edited_at",
        "deleted_at", "change_no"}},
      // Notifications for offline participants not yet delivered: they go on from the new store.
      {"webhook_outbox", 1,
       {"id", "recipient_id", "body", "attempts", "next_attempt_at", "created_at", "dead", "message_id"}},
      // Messages whose push was never stored: the new store's nodes make it.
      {"owed_pushes", 1, {"message_id", "created_at"}},
  };
  return tables;
}

// Tables that only one store's machinery uses (versions, the commit clock,
// this copy's own cursor): never copied, never compared.
bool bookkeeping_table(const std::string& name) {
  return name == "schema_migrations" || name == "commit_clock" || name == "parley_store_copy" ||
         name.rfind("sqlite_", 0) == 0;
}

// Columns only the SQLite store's own indexing uses (schema v6: its integer
// thread keys; PostgreSQL indexes messages by thread id): not copied, and
// not worth a "not copied" line.
bool sqlite_key_column(const std::string& table, const std::string& column) {
  return (table == "threads" && column == "no") || (table == "messages" && column == "thread_no");
}

// Any constant shared by every migrate-store run; differs from the schema
// migration lock's.
constexpr const char* kCopyLock = "SELECT pg_try_advisory_lock(112971151656314)";

constexpr const char* kCursorTable = R"sql(
CREATE TABLE IF NOT EXISTS parley_store_copy (
  table_name TEXT PRIMARY KEY,
  source     TEXT NOT NULL,
  last_key   BYTEA,
  done       BOOLEAN NOT NULL DEFAULT false,
  updated_at BIGINT NOT NULL
);
ALTER TABLE parley_store_copy ADD COLUMN IF NOT EXISTS fingerprint TEXT)sql";

// What the source held when a copy began: row counts and sums of what
// changes in place (sequence numbers, read marks, account versions, edit
// numbers, outbox attempts). A resume refuses a source that moved since:
// rows already copied are never updated (ON CONFLICT DO NOTHING), so a
// server run on it between two runs would leave stale rows behind (a
// thread's last_seq below its messages, which blocks every later send).
// Times are summed as whole seconds and remainders: SQLite's SUM of
// microsecond times overflows its 64 bits (an error) past about 5,000 rows.
constexpr const char* kFingerprint = R"sql(
SELECT 'users ' || (SELECT COUNT(*) || ' ' || COALESCE(MAX(state_version), 0) FROM users) ||
  ', threads ' || (SELECT COUNT(*) || ' ' || COALESCE(SUM(last_seq), 0) || ' ' || COALESCE(SUM(last_activity / 1000000), 0) || ' ' ||
                   COALESCE(SUM(last_activity % 1000000), 0) FROM threads) ||
  ', participants ' || (SELECT COUNT(*) || ' ' || COALESCE(SUM(last_read_seq), 0) || ' ' ||
                        COALESCE(SUM(last_delivered_seq), 0) || ' ' || COALESCE(SUM(is_admin), 0) FROM participants) ||
  ', former_marks ' || (SELECT COUNT(*) || ' ' || COALESCE(SUM(last_read_seq), 0) || ' ' ||
                        COALESCE(SUM(last_delivered_seq), 0) || ' ' || COALESCE(SUM(left_seq), 0) FROM former_marks) ||
  ', messages ' || (SELECT COUNT(*) || ' ' || COALESCE(MAX(change_no), 0) || ' ' || COALESCE(MAX(created_at), 0) FROM messages) ||
  ', webhook_outbox ' || (SELECT COUNT(*) || ' ' || COALESCE(SUM(attempts), 0) || ' ' || COALESCE(SUM(dead), 0) FROM webhook_outbox) ||
  ', owed_pushes ' || (SELECT COUNT(*) FROM owed_pushes)
)sql";

using Row = std::vector<std::optional<std::string>>;

// A row's key as one value for the cursor column: each part length-prefixed
// ("<bytes>:<part>"), so no part's content can be mistaken for a separator.
std::string encode_key(const Row& row, size_t parts) {
  std::string out;
  for (size_t i = 0; i < parts; ++i) {
    const std::string& v = row[i] ? *row[i] : std::string();
    out += std::to_string(v.size()) + ":" + v;
  }
  return out;
}

std::optional<std::vector<std::string>> decode_key(const std::string& s, size_t parts) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (out.size() < parts) {
    size_t colon = s.find(':', pos);
    if (colon == std::string::npos) return std::nullopt;
    size_t n = std::stoul(s.substr(pos, colon - pos));
    if (colon + 1 + n > s.size()) return std::nullopt;
    out.push_back(s.substr(colon + 1, n));
    pos = colon + 1 + n;
  }
  if (pos != s.size()) return std::nullopt;
  return out;
}

std::string join(const std::vector<std::string>& names, size_t count, const char* sep = ", ") {
  std::string out;
  for (size_t i = 0; i < count; ++i) out += (i ? sep : "") + names[i];
  return out;
}

Error copy_error(const std::string& code, const std::string& message) { return {ErrorKind::kConflict, code, message}; }

Error pg_failure(const PgResult& r, const std::string& what) {
  std::string detail = r.message();
  while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
  return Error{ErrorKind::kUnavailable, "postgres_error", what + ": " + detail};
}

class Copier {
 public:
  Copier(const StoreCopyOptions& o, SqliteConn& src, PgConn& dst) : o_(o), src_(src), dst_(dst) {}

  Result<StoreCopyReport> run() {
    if (auto st = check_schemas(); !st) return st.error();
    auto locked = dst_.run(kCopyLock);
    if (!locked.ok()) return pg_failure(locked, "cannot lock the target");
    if (locked.text(0, 0) != "t")
      return copy_error("copy_running", "another migrate-store is copying into this database; wait for it to end");
    if (auto st = claim_target(); !st) return st.error();
    for (const auto& t : copied_tables()) {
      if (auto st = copy_table(t); !st) return st.error();
    }
    // PostgreSQL gives new messages created_at above this floor; it must lie
    // above every copied message for offline sync's cursor to hold.
    auto clock = dst_.run(
        "UPDATE commit_clock SET last_created_at = GREATEST(last_created_at, "
        "(SELECT COALESCE(MAX(created_at), 0) FROM messages)) WHERE id = 1");
    if (!clock.ok()) return pg_failure(clock, "cannot move the commit clock");
    if (auto st = verify(); !st) return st.error();
    return report_;
  }

 private:
  // --- schema: every column both stores have is listed, every listed one exists in both.
  Result<std::set<std::string>> sqlite_names(const std::string& sql, int col) {
    std::set<std::string> names;
    auto st = src_.prepare_once(sql);
    while (st.row()) names.insert(st.text(col));
    if (st.error() != SQLITE_OK) return internal_error("cannot read the SQLite schema: " + src_.errmsg());
    return names;
  }

  Result<std::map<std::string, std::string>> pg_names(const std::string& sql, const std::vector<PgParam>& params) {
    auto r = dst_.exec_once(sql, params);
    if (!r.ok()) return pg_failure(r, "cannot read the PostgreSQL schema");
    std::map<std::string, std::string> names;
    for (int i = 0; i < r.rows(); ++i) names[r.text(i, 0)] = r.rows() && !r.is_null(i, 1) ? r.text(i, 1) : "";
    return names;
  }

  Status check_schemas() {
    auto src_tables = sqlite_names("SELECT name FROM sqlite_master WHERE type = 'table'", 0);
    if (!src_tables) return src_tables.error();
    auto dst_tables = pg_names("SELECT tablename, NULL FROM pg_tables WHERE schemaname = current_schema()", {});
    if (!dst_tables) return dst_tables.error();
    std::set<std::string> listed;
    for (const auto& t : copied_tables()) listed.insert(t.name);
    for (const auto& name : *src_tables) {
      if (dst_tables->count(name) && !listed.count(name) && !bookkeeping_table(name))
        return copy_error("schema_mismatch", "table " + name +
                                                 " exists in both stores but migrate-store does not copy it "
                                                 "(src/store/store_copy.cc lists what it copies)");
    }
    for (const auto& t : copied_tables()) {
      if (t.key_columns < 1 || t.key_columns > 3 || t.key_columns > t.columns.size())
        return internal_error(std::string("copy list: ") + t.name + " needs a key of one to three columns");
      auto src_cols = sqlite_names(std::string("PRAGMA table_info(") + t.name + ")", 1);
      if (!src_cols) return src_cols.error();
      auto dst_cols = pg_names(
          "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
          "WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped",
          {PgParam(std::string(t.name))});
      if (!dst_cols) return dst_cols.error();
      std::vector<std::string> types;
      for (const auto& c : t.columns) {
        if (!src_cols->count(c) || !dst_cols->count(c))
          return copy_error("schema_mismatch", std::string("column ") + t.name + "." + c + " is missing in the " +
                                                   (src_cols->count(c) ? "PostgreSQL" : "SQLite") + " store");
        types.push_back(dst_cols->at(c));
      }
      for (const auto& c : *src_cols) {
        if (!dst_cols->count(c) && !sqlite_key_column(t.name, c)) report_.sqlite_only_columns.push_back(std::string(t.name) + "." + c);
        if (dst_cols->count(c) && std::find(t.columns.begin(), t.columns.end(), c) == t.columns.end())
          return copy_error("schema_mismatch", std::string("column ") + t.name + "." + c +
                                                   " exists in both stores but migrate-store does not copy it "
                                                   "(src/store/store_copy.cc lists what it copies)");
      }
      pg_types_[t.name] = std::move(types);
    }
    return Ok{};
  }

  // --- the target: empty (a new copy), or this source's earlier copy (resume).
  Status claim_target() {
    auto made = dst_.run(kCursorTable);
    if (!made.ok()) return pg_failure(made, "cannot create parley_store_copy");
    auto cursors = dst_.run("SELECT DISTINCT source FROM parley_store_copy");
    if (!cursors.ok()) return pg_failure(cursors, "cannot read parley_store_copy");
    if (cursors.rows() > 1 || (cursors.rows() == 1 && cursors.text(0, 0) != o_.source_name)) {
      return copy_error("target_other_source",
                        "the target database holds a copy from " + cursors.text(0, 0) + ", not from " +
                            o_.source_name + "; nothing was changed (use an empty database)");
    }
    auto fingerprint = source_fingerprint();
    if (!fingerprint) return fingerprint.error();
    if (cursors.rows() == 0) {
      std::string held;
      for (const auto& t : copied_tables()) {
        auto n = dst_.run(std::string("SELECT COUNT(*) FROM ") + t.name);
        if (!n.ok()) return pg_failure(n, std::string("cannot count ") + t.name);
        if (n.i64(0, 0) > 0) held += (held.empty() ? "" : ", ") + std::to_string(n.i64(0, 0)) + " " + t.name;
      }
      if (!held.empty()) {
        return copy_error("target_not_empty",
                          "the target database already holds data (" + held +
                              ") that no migrate-store run from this source put there; migrate-store only fills an "
                              "empty database or resumes its own run. Nothing was changed.");
      }
    } else {
      report_.resumed = true;
      auto began = dst_.run("SELECT DISTINCT COALESCE(fingerprint, '') FROM parley_store_copy");
      if (!began.ok()) return pg_failure(began, "cannot read parley_store_copy");
      if (began.rows() != 1 || began.text(0, 0) != *fingerprint) {
        return copy_error("source_changed",
                          "the source changed since the interrupted copy began (was a server run on it?): "
                          "resuming would keep rows copied before the change as they were. Nothing was "
                          "changed; copy again into an empty database");
      }
    }
    for (const auto& t : copied_tables()) {
      auto r = dst_.exec_once(
          "INSERT INTO parley_store_copy (table_name, source, updated_at, fingerprint) VALUES ($1, $2, $3::bigint, $4) "
          "ON CONFLICT (table_name) DO NOTHING",
          {PgParam(std::string(t.name)), PgParam(o_.source_name), PgParam(now_micros()), PgParam(*fingerprint)});
      if (!r.ok()) return pg_failure(r, "cannot write parley_store_copy");
    }
    return Ok{};
  }

  Result<std::string> source_fingerprint() {
    auto st = src_.prepare_once(kFingerprint);
    if (!st.row()) return internal_error("cannot read the source: " + src_.errmsg());
    return st.text(0);
  }

  Result<int64_t> sqlite_count(const std::string& table) {
    auto st = src_.prepare_once("SELECT COUNT(*) FROM " + table);
    if (!st.row()) return internal_error("cannot count " + table + " in SQLite: " + src_.errmsg());
    return st.i64(0);
  }

  Result<int64_t> pg_count(const std::string& table) {
    auto r = dst_.run("SELECT COUNT(*) FROM " + table);
    if (!r.ok()) return pg_failure(r, "cannot count " + table);
    return r.i64(0, 0);
  }

  Status copy_table(const TableSpec& t) {
    auto state = dst_.exec_once("SELECT last_key, done FROM parley_store_copy WHERE table_name = $1",
                                {PgParam(std::string(t.name))});
    if (!state.ok() || state.rows() != 1) return pg_failure(state, "cannot read parley_store_copy");
    std::optional<std::vector<std::string>> cursor;
    if (!state.is_null(0, 0)) {
      cursor = decode_key(state.bytes(0, 0), t.key_columns);
      if (!cursor) return internal_error(std::string("parley_store_copy holds a bad cursor for ") + t.name);
    }
    const bool done = state.text(0, 1) == "t";
    auto total = sqlite_count(t.name);
    if (!total) return total.error();
    auto present = pg_count(t.name);
    if (!present) return present.error();
    StoreCopyTableReport table_report{t.name, *total, 0};
    StoreCopyProgress progress{t.name, *present, *total};
    if (o_.progress) o_.progress(progress);

    const std::string keys = join(t.columns, t.key_columns);
    std::string select = "SELECT " + join(t.columns, t.columns.size()) + " FROM " + t.name;
    std::string select_after = select + " WHERE (" + keys + ") > (";
    for (size_t i = 0; i < t.key_columns; ++i) select_after += i ? ", ?" : "?";
    select_after += ") ORDER BY " + keys + " LIMIT ?";
    select += " ORDER BY " + keys + " LIMIT ?";
    // A statement takes at most 65535 parameters.
    const size_t batch_rows = std::min(static_cast<size_t>(o_.batch_rows), 65535 / t.columns.size());

    while (!done) {
      std::vector<Row> rows;
      {
        auto st = src_.prepare_once(cursor ? select_after : select);
        if (cursor) {
          // Bound as text: SQLite compares them with an INTEGER key column
          // (former_marks.joined_at) by its affinity, as numbers.
          if (t.key_columns == 1)
            st.bind((*cursor)[0], static_cast<int64_t>(batch_rows));
          else if (t.key_columns == 2)
            st.bind((*cursor)[0], (*cursor)[1], static_cast<int64_t>(batch_rows));
          else
            st.bind((*cursor)[0], (*cursor)[1], (*cursor)[2], static_cast<int64_t>(batch_rows));
        } else {
          st.bind(static_cast<int64_t>(batch_rows));
        }
        while (st.row()) {
          Row row;
          row.reserve(t.columns.size());
          for (size_t c = 0; c < t.columns.size(); ++c) {
            if (st.is_null(static_cast<int>(c))) row.emplace_back(std::nullopt);
            else row.emplace_back(st.text(static_cast<int>(c)));
          }
          rows.push_back(std::move(row));
        }
        if (st.error() != SQLITE_OK) return internal_error(std::string("cannot read ") + t.name + ": " + src_.errmsg());
      }
      if (rows.empty()) break;
      auto inserted = insert_batch(t, rows);
      if (!inserted) return inserted.error();
      table_report.copied_now += *inserted;
      progress.copied += *inserted;
      cursor = std::vector<std::string>();
      for (size_t i = 0; i < t.key_columns; ++i) cursor->push_back(rows.back()[i].value_or(""));
      if (o_.progress) o_.progress(progress);
      if (o_.stop_after_batches > 0 && ++batches_ >= o_.stop_after_batches)
        return Error{ErrorKind::kInternal, "copy_stopped",
                     "stopped after " + std::to_string(batches_) + " batches (test setting)"};
      if (rows.size() < batch_rows) break;
    }
    if (!done) {
      auto r = dst_.exec_once("UPDATE parley_store_copy SET done = true, updated_at = $2::bigint WHERE table_name = $1",
                              {PgParam(std::string(t.name)), PgParam(now_micros())});
      if (!r.ok()) return pg_failure(r, "cannot write parley_store_copy");
    }
    report_.tables.push_back(table_report);
    return Ok{};
  }

  // One transaction: the rows (those already there skipped) and the cursor
  // after the last of them. Returns how many rows were inserted.
  Result<int64_t> insert_batch(const TableSpec& t, const std::vector<Row>& rows) {
    const auto& types = pg_types_.at(t.name);
    std::string sql = "INSERT INTO " + std::string(t.name) + " (" + join(t.columns, t.columns.size()) + ") VALUES ";
    std::vector<PgParam> params;
    params.reserve(rows.size() * t.columns.size());
    for (size_t r = 0; r < rows.size(); ++r) {
      sql += r ? ", (" : "(";
      for (size_t c = 0; c < t.columns.size(); ++c) {
        sql += (c ? ", $" : "$") + std::to_string(params.size() + 1) + "::" + types[c];
        // BYTEA columns take the source's bytes as they are (binary format).
        params.push_back(types[c] == "bytea" ? PgParam::bytes(rows[r][c]) : PgParam(rows[r][c]));
      }
      sql += ")";
    }
    sql += " ON CONFLICT DO NOTHING";
    auto begin = dst_.run("BEGIN");
    if (!begin.ok()) return pg_failure(begin, "cannot begin a transaction");
    auto ins = dst_.exec_once(sql, params);
    if (!ins.ok()) {
      Error e = pg_failure(ins, std::string("cannot insert into ") + t.name);
      dst_.run("ROLLBACK");
      return e;
    }
    auto cur = dst_.exec_once(
        "UPDATE parley_store_copy SET last_key = $2::bytea, updated_at = $3::bigint WHERE table_name = $1",
        {PgParam(std::string(t.name)), PgParam::bytes(encode_key(rows.back(), t.key_columns)), PgParam(now_micros())});
    if (!cur.ok()) {
      Error e = pg_failure(cur, "cannot write parley_store_copy");
      dst_.run("ROLLBACK");
      return e;
    }
    auto commit = dst_.run("COMMIT");
    if (!commit.ok()) return pg_failure(commit, "cannot commit");
    return ins.affected();
  }

  // --- the check: row counts per table, message count and max seq per thread.
  Status verify() {
    std::string problems;
    auto note = [&](const std::string& p) { problems += (problems.empty() ? "" : "; ") + p; };
    for (const auto& t : copied_tables()) {
      auto src = sqlite_count(t.name);
      if (!src) return src.error();
      auto dst = pg_count(t.name);
      if (!dst) return dst.error();
      if (*src != *dst)
        note(std::string(t.name) + ": " + std::to_string(*src) + " rows in the source, " + std::to_string(*dst) +
             " in the target");
    }
    using PerThread = std::map<std::string, std::pair<int64_t, int64_t>>;  // thread -> (count, max seq)
    PerThread src, dst;
    {
      auto st = src_.prepare_once("SELECT thread_id, COUNT(*), MAX(seq) FROM messages GROUP BY thread_id");
      while (st.row()) src[st.text(0)] = {st.i64(1), st.i64(2)};
      if (st.error() != SQLITE_OK) return internal_error("cannot read messages: " + src_.errmsg());
    }
    auto r = dst_.run("SELECT thread_id, COUNT(*), MAX(seq) FROM messages GROUP BY thread_id");
    if (!r.ok()) return pg_failure(r, "cannot read messages");
    for (int i = 0; i < r.rows(); ++i) dst[r.text(i, 0)] = {r.i64(i, 1), r.i64(i, 2)};
    int shown = 0;
    int64_t matched = 0;
    auto describe = [](const std::pair<int64_t, int64_t>* v) {
      return v ? std::to_string(v->first) + " messages up to seq " + std::to_string(v->second) : std::string("none");
    };
    std::set<std::string> ids;
    for (const auto& [id, v] : src) ids.insert(id);
    for (const auto& [id, v] : dst) ids.insert(id);
    for (const auto& id : ids) {
      auto s = src.find(id), d = dst.find(id);
      const auto* sv = s == src.end() ? nullptr : &s->second;
      const auto* dv = d == dst.end() ? nullptr : &d->second;
      if (sv && dv && *sv == *dv) {
        ++matched;
      } else if (shown++ < 5) {
        note("thread " + id + ": " + describe(sv) + " in the source, " + describe(dv) + " in the target");
      }
    }
    if (shown > 5) note(std::to_string(shown - 5) + " more threads differ");
    report_.threads_checked = matched;
    if (!problems.empty()) return copy_error("copy_mismatch", problems);
    return Ok{};
  }

  const StoreCopyOptions& o_;
  SqliteConn& src_;
  PgConn& dst_;
  std::map<std::string, std::vector<std::string>> pg_types_;  // table -> target type of each listed column
  StoreCopyReport report_;
  int batches_ = 0;
};

}  // namespace

Result<StoreCopyReport> copy_sqlite_to_postgres(const StoreCopyOptions& options) {
  if (options.batch_rows < 1 || options.batch_rows > 5000)
    return bad_input("invalid_config", "batch rows must be 1 to 5000");
  auto src = SqliteConn::open(options.sqlite_path, /*writer=*/true, /*fsync=*/false);
  if (!src) return src.error();
  // The source at this build's schema, as `serve` would leave it.
  if (auto st = migrate_schema((*src)->db()); !st) return st.error();
  // The source's write lock for the whole copy: one snapshot, and the tools
  // that write beside a server (`parley user disable`…) wait and fail
  // instead of changing what was already copied. Ends with the connection.
  if (auto begin = (*src)->prepare_once("BEGIN IMMEDIATE"); !begin.done())
    return copy_error("source_busy", "cannot lock the source for writing: " + (*src)->errmsg());
  auto dst = PgConn::open(options.pg_url);
  if (!dst) return dst.error();
  if (auto st = migrate_pg_schema(**dst); !st) return st.error();
  Copier copier(options, **src, **dst);
  return copier.run();
}

}  // namespace parley
