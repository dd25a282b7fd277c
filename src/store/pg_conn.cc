#include "store/pg_conn.h"

#include <spdlog/spdlog.h>

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <iterator>
#include <vector>

#include "common/log_throttle.h"

namespace parley {

bool PgResult::ok() const {
  if (!r_) return false;
  auto s = PQresultStatus(r_.get());
  return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

std::string PgResult::text(int row, int col) const {
  const char* p = PQgetvalue(r_.get(), row, col);
  return std::string(p, static_cast<size_t>(PQgetlength(r_.get(), row, col)));
}

int64_t PgResult::i64(int row, int col) const { return std::strtoll(PQgetvalue(r_.get(), row, col), nullptr, 10); }

std::string PgResult::bytes(int row, int col) const {
  size_t n = 0;
  unsigned char* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(r_.get(), row, col)), &n);
  if (!raw) return {};
  std::string out(reinterpret_cast<const char*>(raw), n);
  PQfreemem(raw);
  return out;
}

int64_t PgResult::affected() const {
  const char* n = r_ ? PQcmdTuples(r_.get()) : "";
  return *n ? std::strtoll(n, nullptr, 10) : 0;
}

std::string PgResult::sqlstate() const {
  const char* s = r_ ? PQresultErrorField(r_.get(), PG_DIAG_SQLSTATE) : nullptr;
  return s ? s : "";
}

std::string PgResult::message() const {
  const char* s = r_ ? PQresultErrorMessage(r_.get()) : nullptr;
  return s ? s : "no result";
}

std::string PgResult::primary_message() const {
  const char* s = r_ ? PQresultErrorField(r_.get(), PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  return s ? s : message();
}

namespace {

void ignore_notice(void*, const PGresult*) {}  // "relation already exists, skipping" and the like

}  // namespace

// A node cut off from the database (no FIN, no RST: a partition, a dead
// host) would wait in a statement until TCP's retransmissions give up, 15
// minutes or more, with the writer holding every send unanswered. libpq's
// keepalives use the system's timing (a first probe after two hours); these
// find a silent peer while a statement waits for its answer (in about 25 s),
// the user timeout finds one that stops acknowledging what was
// sent (30 s), and a connect gives up after 10 s. These come before the URL,
// so a URL that sets any of them wins.
constexpr const char* kConnectKeywords[] = {"keepalives",       "keepalives_idle", "keepalives_interval",
                                            "keepalives_count", "tcp_user_timeout", "connect_timeout",
                                            "dbname",           nullptr};
constexpr const char* kConnectDefaults[] = {"1", "10", "5", "3", "30000", "10"};

Result<std::unique_ptr<PgConn>> PgConn::open(const std::string& url) {
  const char* values[std::size(kConnectKeywords)];
  std::copy(std::begin(kConnectDefaults), std::end(kConnectDefaults), values);
  values[std::size(kConnectDefaults)] = url.c_str();
  values[std::size(kConnectDefaults) + 1] = nullptr;
  static_assert(std::size(kConnectKeywords) == std::size(kConnectDefaults) + 2);
  PGconn* c = PQconnectdbParams(kConnectKeywords, values, /*expand_dbname=*/1);
  std::unique_ptr<PgConn> conn(new PgConn(c));  // frees the handle even when the connection failed
  if (!c) return internal_error("cannot allocate a PostgreSQL connection");
  if (PQstatus(c) != CONNECTION_OK)
    return Error{ErrorKind::kUnavailable, "storage_unavailable", "cannot connect to PostgreSQL: " + conn->errmsg()};
  PQsetNoticeReceiver(c, ignore_notice, nullptr);
  return conn;
}

PgConn::~PgConn() {
  if (conn_) PQfinish(conn_);
}

bool PgConn::reconnect() {
  PQreset(conn_);
  return set_up_session();
}

bool PgConn::reconnect(const std::function<bool()>& give_up) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  if (!PQresetStart(conn_)) return false;
  PostgresPollingStatusType state = PGRES_POLLING_WRITING;  // as libpq asks to begin
  while (state != PGRES_POLLING_OK) {
    // Given up half-way, the connection is not healthy(): the next use resets it.
    if (state == PGRES_POLLING_FAILED || give_up() || std::chrono::steady_clock::now() > deadline) return false;
    pollfd p{PQsocket(conn_), static_cast<short>(state == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    if (p.fd < 0) return false;
    const int ready = ::poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) return false;
    if (ready > 0) state = PQresetPoll(conn_);
  }
  return set_up_session();
}

bool PgConn::set_up_session() {
  prepared_.clear();  // a new session has none of them
  setup_missing_ = false;
  if (!healthy()) return false;
  PQsetNoticeReceiver(conn_, ignore_notice, nullptr);
  setup_missing_ = !session_setup_.empty() && !run(session_setup_).ok();
  return !setup_missing_;
}

bool PgConn::set_session_setup(std::string sql) {
  session_setup_ = std::move(sql);
  setup_missing_ = !run(session_setup_).ok();
  return !setup_missing_;
}

std::string PgConn::errmsg() const {
  std::string m = conn_ ? PQerrorMessage(conn_) : "no connection";
  m = m.substr(0, m.find('\n'));  // one log line: not the CONTEXT and DETAIL lines after it
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

PgResult PgConn::run(const std::string& sql) { return note(PgResult(PQexec(conn_, sql.c_str()))); }

PgResult PgConn::note(PgResult r) {
  if (!r.ok()) failed_ = true;
  return r;
}

PgParam PgParam::array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (const auto& item : items) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (char ch : item) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  out += '}';
  return PgParam{std::move(out)};
}

namespace {

// libpq's three parallel arrays for one statement's parameters.
struct ParamArrays {
  explicit ParamArrays(std::span<const PgParam> params) {
    values.reserve(params.size());
    lengths.reserve(params.size());
    formats.reserve(params.size());
    for (const auto& p : params) {
      values.push_back(p.value ? p.value->data() : nullptr);
      lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
      formats.push_back(p.binary ? 1 : 0);
    }
  }
  int count() const { return static_cast<int>(values.size()); }
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
};

}  // namespace

const std::string* PgConn::prepare(const char* sql, std::optional<PgResult>& failed) {
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = "p" + std::to_string(prepared_.size());
    PgResult prep(PQprepare(conn_, name.c_str(), sql, 0, nullptr));
    if (!prep.ok()) {
      failed.emplace(note(std::move(prep)));
      return nullptr;
    }
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  return &it->second;
}

std::vector<PgResult> PgConn::exec_pipelined(const char* sql, const std::vector<std::vector<PgParam>>& lists) {
  std::vector<PgResult> out;
  out.reserve(lists.size());
  std::optional<PgResult> failed;
  const std::string* name = lists.empty() ? nullptr : prepare(sql, failed);
  if (failed) out.push_back(std::move(*failed));
  for (size_t begin = 0; name && begin < lists.size(); begin += kPipelineDepth) {
    if (!pipeline_round(*name, lists, begin, std::min(lists.size(), begin + kPipelineDepth), out)) break;
  }
  while (out.size() < lists.size()) out.emplace_back(nullptr);  // not run: not ok()
  return out;
}

// One round: every statement sent, one sync, then every answer read. False
// when the connection broke or a statement failed (the caller stops: the
// transaction is aborted).
bool PgConn::pipeline_round(const std::string& name, const std::vector<std::vector<PgParam>>& lists, size_t begin,
                            size_t end, std::vector<PgResult>& out) {
  if (PQenterPipelineMode(conn_) != 1) return false;
  size_t sent = begin;
  for (; sent < end; ++sent) {
    ParamArrays a(lists[sent]);
    if (PQsendQueryPrepared(conn_, name.c_str(), a.count(), a.values.data(), a.lengths.data(), a.formats.data(), 0) !=
        1)
      break;
  }
  bool ok = sent == end;
  // Even after a failed send, what was sent is synced, read and the mode left.
  // Without the sync the server would answer nothing and reading would wait
  // forever: such a session is given up (the server rolls back its transaction).
  if (sent > begin && PQpipelineSync(conn_) != 1) return abandon_pipeline("PQpipelineSync", begin, out);
  // Each statement's answer is one result, then nullptr; the sync's is PGRES_PIPELINE_SYNC.
  for (size_t i = begin; i < sent; ++i) {
    PgResult r(PQgetResult(conn_));
    while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);
    if (!r.ok()) ok = false;
    out.push_back(note(std::move(r)));
  }
  if (sent > begin) {
    PgResult sync(PQgetResult(conn_));
    if (sync.status() != PGRES_PIPELINE_SYNC) ok = false;
  }
  // Still in pipeline mode, every later statement would fail on a session
  // that looks healthy: given up as above.
  if (PQexitPipelineMode(conn_) != 1) return abandon_pipeline("PQexitPipelineMode", begin, out);
  return ok && healthy();
}

// The round's answers are dropped: what they say was done went with the old
// session, so none of them may read as done.
bool PgConn::abandon_pipeline(const char* what, size_t begin, std::vector<PgResult>& out) {
  spdlog::error("event=pg_pipeline_abandoned call={} error=\"{}\"", what, errmsg());
  out.erase(out.begin() + static_cast<std::ptrdiff_t>(begin), out.end());
  reconnect();
  failed_ = true;
  return false;
}

PgResult PgConn::exec(const char* sql, std::span<const PgParam> params) {
  std::optional<PgResult> failed;
  const std::string* name = prepare(sql, failed);
  if (!name) return std::move(*failed);
  ParamArrays a(params);
  return note(
      PgResult(PQexecPrepared(conn_, name->c_str(), a.count(), a.values.data(), a.lengths.data(), a.formats.data(), 0)));
}

PgResult PgConn::exec_once(const std::string& sql, const std::vector<PgParam>& params) {
  ParamArrays a(params);
  return note(PgResult(
      PQexecParams(conn_, sql.c_str(), a.count(), nullptr, a.values.data(), a.lengths.data(), a.formats.data(), 0)));
}

Error pg_error(const PgConn& c, const PgResult& r, std::string_view op) {
  std::string state = r.sqlstate();
  if (c.healthy() && state.rfind("23", 0) == 0) {
    // An answer (two requests raced for one key), not a failure of the store.
    spdlog::info("event=store_conflict op={} sqlstate={} error=\"{}\"", op, state, r.primary_message());
    return {ErrorKind::kConflict, "conflict", std::string(op) + " conflicts"};
  }
  // A database going away fails every statement: a line a second, with how many it stands for.
  static LogThrottle throttle;
  if (auto held_back = throttle.admit())
    spdlog::error("event=store_error op={} sqlstate={} error=\"{}\" suppressed={}", op, state,
                  c.healthy() ? r.primary_message() : c.errmsg(), *held_back);
  if (!c.healthy() || state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0)
    return storage_unavailable();
  return internal_error("storage error");
}

}  // namespace parley
