// PgConn: one libpq connection and its prepared statements, and PgResult,
// the rows one statement returned. The PostgreSQL store's only contact with
// the libpq API besides its schema.
//
// A connection is used by one thread at a time: the store gives one to its
// writer thread and lends others to readers from a pool. Statements are
// prepared on first use on each connection (the cache is keyed by the SQL
// literal's address) and prepared again after a reconnect.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/error.h"

namespace parley {

// One statement parameter, sent in text form; `binary` sends the bytes as
// they are (for BYTEA columns: message content may hold any byte, NUL too).
struct PgParam {
  PgParam(std::nullptr_t) {}
  PgParam(const char* s) : value(s) {}
  PgParam(std::string s) : value(std::move(s)) {}
  PgParam(const std::optional<std::string>& s) : value(s) {}
  PgParam(int64_t v) : value(std::to_string(v)) {}
  PgParam(int v) : value(std::to_string(v)) {}
  PgParam(bool v) : value(v ? "1" : "0") {}
  static PgParam bytes(const std::string& b) {
    PgParam p{b};
    p.binary = true;
    return p;
  }
  static PgParam bytes(const std::optional<std::string>& b) {
    PgParam p{b};
    p.binary = true;
    return p;
  }
  // A text[] (or, cast, int[]) literal of `items`, each quoted, so a
  // statement can take a whole list: ... = ANY($1::text[]), unnest($1::text[]).
  static PgParam array(const std::vector<std::string>& items);
  std::optional<std::string> value;  // nullopt = NULL
  bool binary = false;
};

class PgResult {
 public:
  explicit PgResult(PGresult* r) : r_(r, &PQclear) {}
  // True when the statement ran (with or without rows).
  bool ok() const;
  ExecStatusType status() const { return r_ ? PQresultStatus(r_.get()) : PGRES_FATAL_ERROR; }
  int rows() const { return r_ ? PQntuples(r_.get()) : 0; }
  bool is_null(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
  std::string text(int row, int col) const;
  int64_t i64(int row, int col) const;
  std::string bytes(int row, int col) const;  // a BYTEA column, decoded
  int64_t affected() const;                   // rows an INSERT/UPDATE/DELETE touched
  std::string sqlstate() const;               // "" when none
  std::string message() const;
  // The error's first line only, without DETAIL (which quotes row values:
  // "Key (phone_number)=(…)", "Failing row contains (…)"): what may be logged.
  std::string primary_message() const;

 private:
  std::unique_ptr<PGresult, void (*)(PGresult*)> r_;
};

class PgConn {
 public:
  // Connects (and fails) at once; `url` is a libpq URI (postgres://…).
  static Result<std::unique_ptr<PgConn>> open(const std::string& url);
  ~PgConn();
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  // Runs `sql` as a prepared statement; `sql` must be a string literal.
  PgResult exec(const char* sql, std::initializer_list<PgParam> params = {}) {
    return exec(sql, std::span<const PgParam>(params.begin(), params.size()));
  }
  PgResult exec(const char* sql, std::span<const PgParam> params);
  // Runs the prepared statement `sql` once per parameter list, sent back to
  // back without waiting for each answer (libpq's pipeline mode), in rounds
  // of kPipelineDepth: one round trip per round instead of per statement.
  // One result per list, in order; after a statement fails, the rest of its
  // round are not run (their results are not ok()) and, as after any failed
  // statement, the transaction is aborted.
  std::vector<PgResult> exec_pipelined(const char* sql, const std::vector<std::vector<PgParam>>& lists);
  // Runs a statement built at run time once, unprepared, with its parameters.
  PgResult exec_once(const std::string& sql, const std::vector<PgParam>& params);
  // Runs SQL text without parameters (transaction control, DDL; several statements allowed).
  PgResult run(const std::string& sql);
  // False once the server went away, or when a new session's setup failed
  // (it would run without its timeouts); reconnect() then tries again.
  bool healthy() const { return PQstatus(conn_) == CONNECTION_OK && !setup_missing_; }
  // Reconnects, then runs the session setup again (a new session has none of it).
  bool reconnect();
  // The same, but gives up as soon as `give_up` turns true (checked every
  // 100 ms) or after 10 s: a caller that must be able to stop does not wait
  // out an unreachable server's connect timeout.
  bool reconnect(const std::function<bool()>& give_up);
  // Session settings (SET …): runs `sql` now and again after every reconnect.
  bool set_session_setup(std::string sql);
  bool in_transaction() const { return PQtransactionStatus(conn_) != PQTRANS_IDLE; }
  // A statement failed inside the open transaction: only a rollback is accepted now.
  bool transaction_failed() const { return PQtransactionStatus(conn_) == PQTRANS_INERROR; }
  // Whether any statement failed since the last call; clears the flag. A
  // read checks it so that a failure is an error, not a shorter answer.
  bool take_failure() { return std::exchange(failed_, false); }
  std::string errmsg() const;
  // The connection's socket, -1 when there is none (tests read its TCP options).
  int socket() const { return PQsocket(conn_); }

 private:
  // Statements per pipeline round: many enough that a round trip is shared,
  // few enough that a round's answers, which libpq reads into its buffer
  // while it is still sending (so a large round cannot deadlock), stay small.
  static constexpr size_t kPipelineDepth = 64;
  explicit PgConn(PGconn* c) : conn_(c) {}
  bool set_up_session();  // after a reset: forgets prepared statements, runs the setup
  PgResult note(PgResult r);  // sets failed_ when r failed
  // The prepared statement's name, preparing it on first use; nullptr when
  // PQprepare failed, whose result is then in `failed`.
  const std::string* prepare(const char* sql, std::optional<PgResult>& failed);
  bool pipeline_round(const std::string& name, const std::vector<std::vector<PgParam>>& lists, size_t begin,
                      size_t end, std::vector<PgResult>& out);
  // A pipeline that cannot be read back or left: a new session, this round's
  // answers dropped from `out` (from `begin` on), and false.
  bool abandon_pipeline(const char* what, size_t begin, std::vector<PgResult>& out);
  PGconn* conn_;
  std::unordered_map<const char*, std::string> prepared_;  // literal -> statement name
  std::string session_setup_;                              // "" = none
  bool setup_missing_ = false;                             // the setup failed on this session
  bool failed_ = false;
};

// Logs the detail (never shown to clients) and maps it to an Error: a lost
// connection is kUnavailable "storage_unavailable", a constraint a conflict.
Error pg_error(const PgConn& c, const PgResult& r, std::string_view op);

}  // namespace parley
