#include "store/sqlite_schema.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "store/message_key.h"
#include "store/phone_key.h"

namespace parley {

namespace {

struct Migration {
  int version;
  const char* sql;
  // Work SQL cannot say, run after `sql` in the same transaction; may be null.
  Status (*then)(sqlite3* db) = nullptr;
};

Status fill_phone_keys(sqlite3* db);

// Append-only: never edit a step that has shipped; add a new one instead.
constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE users (
  id            TEXT PRIMARY KEY,
  username      TEXT NOT NULL UNIQUE,
  full_name     TEXT NOT NULL DEFAULT '',
  phone_number  TEXT UNIQUE,
  role          TEXT NOT NULL,
  password_hash TEXT NOT NULL DEFAULT '',
  created_at    INTEGER NOT NULL,
  last_seen     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE threads (
  id            TEXT PRIMARY KEY,
  type          TEXT NOT NULL CHECK (type IN ('direct', 'group')),
  title         TEXT NOT NULL DEFAULT '',
  created_by    TEXT NOT NULL,
  created_at    INTEGER NOT NULL,
  last_activity INTEGER NOT NULL,
  last_seq      INTEGER NOT NULL DEFAULT 0,
  direct_key    TEXT UNIQUE
) WITHOUT ROWID;

CREATE TABLE participants (
  thread_id     TEXT NOT NULL REFERENCES threads(id),
  user_id       TEXT NOT NULL REFERENCES users(id),
  is_admin      INTEGER NOT NULL DEFAULT 0,
  last_read_seq INTEGER NOT NULL DEFAULT 0,
  joined_at     INTEGER NOT NULL,
  PRIMARY KEY (thread_id, user_id)
) WITHOUT ROWID;
CREATE INDEX participants_by_user ON participants(user_id);

CREATE TABLE messages (
  id            TEXT PRIMARY KEY,
  thread_id     TEXT NOT NULL REFERENCES threads(id),
  seq           INTEGER NOT NULL,
  sender_id     TEXT NOT NULL REFERENCES users(id),
  content       TEXT NOT NULL,
  message_type  TEXT NOT NULL,
  client_msg_id TEXT,
  created_at    INTEGER NOT NULL,
  edited_at     INTEGER,
  UNIQUE (thread_id, seq),
  UNIQUE (thread_id, sender_id, client_msg_id)
);
-- messages_since walks the user's threads by created_at; per-thread ranges
-- keep that proportional to the user's own traffic, not the whole store's.
CREATE INDEX messages_by_thread_time ON messages(thread_id, created_at);
)sql"},
    // Delivery receipts: the highest seq each participant's client acknowledged.
    {2, R"sql(
ALTER TABLE participants ADD COLUMN last_delivered_seq INTEGER NOT NULL DEFAULT 0;
)sql"},
    // Fewer pages per message. Every index keyed by thread puts one random
    // page per active thread into each commit's WAL, so a message now touches
    // one such index (thread_id, seq) instead of three: offline sync finds its
    // start through seq (co-monotonic with created_at within a thread), and
    // the idempotency index only holds messages that carry a client_msg_id.
    // Rows are copied in created_at order, so rowid order is created_at order.
    {3, R"sql(
CREATE TABLE messages_v3 (
  id            TEXT PRIMARY KEY,
  thread_id     TEXT NOT NULL REFERENCES threads(id),
  seq           INTEGER NOT NULL,
  sender_id     TEXT NOT NULL REFERENCES users(id),
  content       TEXT NOT NULL,
  message_type  TEXT NOT NULL,
  client_msg_id TEXT,
  created_at    INTEGER NOT NULL,
  edited_at     INTEGER,
  UNIQUE (thread_id, seq)
);
INSERT INTO messages_v3 (id, thread_id, seq, sender_id, content, message_type, client_msg_id, created_at, edited_at)
  SELECT id, thread_id, seq, sender_id, content, message_type, client_msg_id, created_at, edited_at
  FROM messages ORDER BY created_at;
DROP TABLE messages;
ALTER TABLE messages_v3 RENAME TO messages;
CREATE UNIQUE INDEX messages_client_msg ON messages(thread_id, sender_id, client_msg_id)
  WHERE client_msg_id IS NOT NULL;
)sql"},
    // Moderation and push. Accounts: disabled, tokens issued (iat, seconds)
    // before tokens_valid_after refused, and state_version, bumped on every
    // such change so running servers find changes by polling one index.
    // Messages: deleted_at marks a tombstone. webhook_outbox: notifications
    // for offline participants not yet delivered (dead = gave up).
    {4, R"sql(
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN tokens_valid_after INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN state_version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX users_by_state_version ON users(state_version);
ALTER TABLE messages ADD COLUMN deleted_at INTEGER;
CREATE TABLE webhook_outbox (
  id              TEXT PRIMARY KEY,
  recipient_id    TEXT NOT NULL,
  body            TEXT NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  created_at      INTEGER NOT NULL,
  dead            INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX webhook_outbox_due ON webhook_outbox(dead, next_attempt_at);
)sql"},
    // Cheaper appends. The idempotency index on (thread_id, sender_id,
    // client_msg_id) put a ~100-byte entry at a random place per message:
    // about half of an append's cost. message_keys holds a 64-bit hash of
    // the same three fields (store/message_key.h) and the message's seq: a
    // fifth of the size, confirmed against the row on every match.
    // parley_message_key() exists only on connections that register it.
    {5, R"sql(
CREATE TABLE message_keys (
  key INTEGER PRIMARY KEY,
  seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO message_keys (key, seq)
  SELECT parley_message_key(thread_id, sender_id, client_msg_id), seq FROM messages
  WHERE client_msg_id IS NOT NULL ORDER BY rowid;
DROP INDEX messages_client_msg;
)sql"},
    // Integer thread keys. Each append puts an entry into the (thread, seq)
    // index; keyed by the 36-byte thread id that entry was about 50 bytes,
    // keyed by a small integer about 8, so the index is a sixth of the size,
    // splits a sixth as often and compares integers instead of strings
    // (docs/benchmarks.md, "Integer thread keys"). threads.no numbers the
    // threads in creation order; messages keep thread_id for reading.
    // A message whose thread is missing stops the migration (NOT NULL).
    {6, R"sql(
ALTER TABLE threads ADD COLUMN no INTEGER;
UPDATE threads SET no = n.rn
  FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS rn FROM threads) AS n
  WHERE n.id = threads.id;
CREATE UNIQUE INDEX threads_by_no ON threads(no);
CREATE TABLE messages_v6 (
  id            TEXT PRIMARY KEY,
  thread_id     TEXT NOT NULL,
  thread_no     INTEGER NOT NULL,
  seq           INTEGER NOT NULL,
  sender_id     TEXT NOT NULL,
  content       TEXT NOT NULL,
  message_type  TEXT NOT NULL,
  client_msg_id TEXT,
  created_at    INTEGER NOT NULL,
  edited_at     INTEGER,
  deleted_at    INTEGER,
  UNIQUE (thread_no, seq)
);
INSERT INTO messages_v6 (id, thread_id, thread_no, seq, sender_id, content, message_type, client_msg_id,
                         created_at, edited_at, deleted_at)
  SELECT m.id, m.thread_id, t.no, m.seq, m.sender_id, m.content, m.message_type, m.client_msg_id,
         m.created_at, m.edited_at, m.deleted_at
  FROM messages m LEFT JOIN threads t ON t.id = m.thread_id ORDER BY m.rowid;
DROP TABLE messages;
ALTER TABLE messages_v6 RENAME TO messages;
)sql"},
    // Outbox rows name their message and hold no copy of its text: delivery
    // reads the message's current content, so an edit reaches retries, and
    // deleting a message removes its notifications (docs/moderation.md).
    // Rows queued before this version get their message_id from the body
    // and their copy of the content blanked.
    {7, R"sql(
ALTER TABLE webhook_outbox ADD COLUMN message_id TEXT;
UPDATE webhook_outbox
  SET message_id = json_extract(body, '$.message.id'), body = json_set(body, '$.message.content', '')
  WHERE json_valid(body) AND json_type(body, '$.message.id') = 'text';
CREATE INDEX webhook_outbox_by_message ON webhook_outbox(message_id);
)sql"},
    // Edits and deletions numbered in commit order (change_no, the next one
    // MAX + 1), so a node whose bus was cut finds those it missed by number
    // (docs/architecture.md, "Edits and deletions after an outage"). NULL
    // for a message never changed: the index holds changed messages only,
    // and an append writes no entry.
    {8, R"sql(
ALTER TABLE messages ADD COLUMN change_no INTEGER;
CREATE INDEX messages_by_change ON messages(change_no) WHERE change_no IS NOT NULL;
)sql"},
    // Phone numbers found by their digits (store/phone_key.h): "+1 555 0100"
    // and "15550100" are one account. Existing numbers get their key from
    // fill_phone_keys; of accounts already registered under two spellings
    // of one number, only the oldest keeps the key.
    {9, R"sql(
ALTER TABLE users ADD COLUMN phone_key TEXT;
CREATE UNIQUE INDEX users_by_phone_key ON users(phone_key);
)sql",
     fill_phone_keys},
    // A message's status counts the marks of members who left too
    // (docs/protocol.md, Message): a removal moves the member's marks here,
    // in its transaction. A member who rejoins starts again at the thread's
    // last seq, above these, so the two never disagree.
    {10, R"sql(
CREATE TABLE former_marks (
  thread_id          TEXT NOT NULL,
  user_id            TEXT NOT NULL,
  last_read_seq      INTEGER NOT NULL,
  last_delivered_seq INTEGER NOT NULL,
  PRIMARY KEY (thread_id, user_id)
) WITHOUT ROWID;
)sql"},
    // Messages owed their push (Store::overdue_pushes): written with the
    // message when webhooks are on, removed when its notifications are
    // stored, so a node killed in between leaves the record behind.
    {11, R"sql(
CREATE TABLE owed_pushes (
  message_id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
)sql"},
    // The marks a member left with count only for what was said since they
    // joined (FormerMarks::joined_at): one row per membership, since marks
    // merged across two would count what was said between them. Rows kept
    // before have 0 (every message).
    {12, R"sql(
CREATE TABLE former_marks_v12 (
  thread_id          TEXT NOT NULL,
  user_id            TEXT NOT NULL,
  joined_at          INTEGER NOT NULL,
  last_read_seq      INTEGER NOT NULL,
  last_delivered_seq INTEGER NOT NULL,
  PRIMARY KEY (thread_id, user_id, joined_at)
) WITHOUT ROWID;
INSERT INTO former_marks_v12 SELECT thread_id, user_id, 0, last_read_seq, last_delivered_seq FROM former_marks;
DROP TABLE former_marks;
ALTER TABLE former_marks_v12 RENAME TO former_marks;
)sql"},
    // Where each membership ended: the seq of the last notice of its removal.
    // What a member was owed up to there stays theirs after the removal: a
    // connection that missed its events (a node cut off from the bus) gets
    // it with its gap fill (PageQuery::former_too), a device offline then
    // with offline messages (by user, hence the index). Rows kept before
    // have 0: ended at a seq not known, nothing read.
    {13, R"sql(
ALTER TABLE former_marks ADD COLUMN left_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX former_marks_by_user ON former_marks(user_id);
)sql"},
};

// parley_message_key(thread_id, sender_id, client_msg_id) for migration 5.
void message_key_sql(sqlite3_context* ctx, int, sqlite3_value** argv) {
  auto text = [](sqlite3_value* v) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_value_text(v));
    return std::string_view(p ? p : "", static_cast<size_t>(sqlite3_value_bytes(v)));
  };
  sqlite3_result_int64(ctx, message_key(text(argv[0]), text(argv[1]), text(argv[2])));
}

Status step_error(sqlite3* db, const char* what) {
  return internal_error(std::string("schema migration failed: ") + what + ": " + sqlite3_errmsg(db));
}

Status fill_phone_keys(sqlite3* db) {
  std::vector<PhoneOwner> owners;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT id, phone_number, created_at FROM users WHERE phone_number IS NOT NULL", -1, &st,
                         nullptr) != SQLITE_OK)
    return step_error(db, "reading phone numbers");
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    owners.push_back({reinterpret_cast<const char*>(sqlite3_column_text(st, 0)),
                      reinterpret_cast<const char*>(sqlite3_column_text(st, 1)), sqlite3_column_int64(st, 2)});
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return step_error(db, "reading phone numbers");
  if (sqlite3_prepare_v2(db, "UPDATE users SET phone_key = ? WHERE id = ?", -1, &st, nullptr) != SQLITE_OK)
    return step_error(db, "storing phone keys");
  for (const auto& k : assign_phone_keys(std::move(owners))) {
    if (!k.key) continue;
    sqlite3_bind_text(st, 1, k.key->data(), static_cast<int>(k.key->size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, k.id.data(), static_cast<int>(k.id.size()), SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) break;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return step_error(db, "storing phone keys");
  return Ok{};
}

int read_user_version(sqlite3* db) {
  sqlite3_stmt* st = nullptr;
  int version = -1;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    version = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return version;
}

Status exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) == SQLITE_OK) return Ok{};
  std::string msg = err ? err : sqlite3_errmsg(db);
  sqlite3_free(err);
  return internal_error("schema migration failed: " + msg);
}

// A migration that copies a table runs for seconds per million messages in
// one statement; this says it is still going, about every two seconds,
// while SQLite runs statements (not inside one long step such as dropping
// the old table or the commit: 1M messages took 3 s of copying, then 6 s).
struct MigrationProgress {
  int version;
  std::chrono::steady_clock::time_point started, last_report;
};

int report_progress(void* arg) {
  auto* p = static_cast<MigrationProgress*>(arg);
  auto now = std::chrono::steady_clock::now();
  if (now - p->last_report >= std::chrono::seconds(2)) {
    p->last_report = now;
    spdlog::info("event=migration_progress version={} seconds={}", p->version,
                 std::chrono::duration_cast<std::chrono::seconds>(now - p->started).count());
  }
  return 0;  // never interrupts
}

Status apply(sqlite3* db, const Migration& m) {
  // IMMEDIATE: a second process opening the same file waits instead of racing us.
  if (auto st = exec(db, "BEGIN IMMEDIATE"); !st) return st;
  // Re-check under the write lock: another opener may have applied it meanwhile.
  if (read_user_version(db) >= m.version) return exec(db, "COMMIT");
  spdlog::info("event=migration_started version={}", m.version);
  auto now = std::chrono::steady_clock::now();
  MigrationProgress progress{m.version, now, now};
  sqlite3_progress_handler(db, 1'000'000, report_progress, &progress);
  auto st = exec(db, m.sql);
  if (st && m.then) st = m.then(db);
  if (st) st = exec(db, "PRAGMA user_version = " + std::to_string(m.version));
  sqlite3_progress_handler(db, 0, nullptr, nullptr);
  if (st) st = exec(db, "COMMIT");
  if (!st) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return st;
  }
  spdlog::info("event=migration version={}", m.version);
  return Ok{};
}

}  // namespace

int schema_version(sqlite3* db) { return read_user_version(db); }

Status register_message_key_function(sqlite3* db) {
  if (sqlite3_create_function_v2(db, "parley_message_key", 3, SQLITE_UTF8 | SQLITE_DETERMINISTIC, nullptr,
                                 message_key_sql, nullptr, nullptr, nullptr) != SQLITE_OK)
    return internal_error(std::string("cannot register parley_message_key: ") + sqlite3_errmsg(db));
  return Ok{};
}

int latest_schema_version() { return std::prev(std::end(kMigrations))->version; }

Status migrate_schema(sqlite3* db) { return migrate_schema_to(db, latest_schema_version()); }

Status migrate_schema_to(sqlite3* db, int version) {
  int current = read_user_version(db);
  if (current < 0) return internal_error(std::string("cannot read schema version: ") + sqlite3_errmsg(db));
  if (current > latest_schema_version())
    return internal_error("database schema version " + std::to_string(current) + " is newer than this build (" +
                          std::to_string(latest_schema_version()) + ")");
  if (current < version) {
    if (auto st = register_message_key_function(db); !st) return st;
  }
  for (const auto& m : kMigrations) {
    if (m.version <= current || m.version > version) continue;
    if (auto st = apply(db, m); !st) return st;
  }
  return Ok{};
}

}  // namespace parley
