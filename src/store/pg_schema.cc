#include "store/pg_schema.h"

#include <spdlog/spdlog.h>

#include <iterator>
#include <string>
#include <vector>

#include "store/pg_conn.h"
#include "store/phone_key.h"

namespace parley {

namespace {

// Any constant shared by every Parley node; "parley" in ASCII.
constexpr const char* kMigrationLock = "SELECT pg_advisory_lock(112971151656313)";
constexpr const char* kMigrationUnlock = "SELECT pg_advisory_unlock(112971151656313)";

struct Migration {
  int version;
  const char* sql;
  // Work SQL cannot say, run after `sql` in the same transaction; may be null.
  Status (*then)(PgConn& c) = nullptr;
};

Status fill_phone_keys(PgConn& c);

// Append-only: never edit a step that has shipped; add a new one instead.
// The same tables as the SQLite store's, with two differences: message
// content and client_msg_id are BYTEA (TEXT cannot hold a NUL byte, and
// content is stored exactly as sent), and commit_clock, the one row every
// writing transaction locks first (see docs/architecture.md, "Offline sync
// across nodes").
constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE users (
  id            TEXT PRIMARY KEY,
  username      TEXT NOT NULL UNIQUE,
  full_name     TEXT NOT NULL DEFAULT '',
  phone_number  TEXT UNIQUE,
  role          TEXT NOT NULL,
  password_hash TEXT NOT NULL DEFAULT '',
  created_at    BIGINT NOT NULL,
  last_seen     BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE threads (
  id            TEXT PRIMARY KEY,
  type          TEXT NOT NULL CHECK (type IN ('direct', 'group')),
  title         TEXT NOT NULL DEFAULT '',
  created_by    TEXT NOT NULL,
  created_at    BIGINT NOT NULL,
  last_activity BIGINT NOT NULL,
  last_seq      BIGINT NOT NULL DEFAULT 0,
  direct_key    TEXT UNIQUE
);

CREATE TABLE participants (
  thread_id          TEXT NOT NULL REFERENCES threads(id),
  user_id            TEXT NOT NULL REFERENCES users(id),
  is_admin           INTEGER NOT NULL DEFAULT 0,
  last_read_seq      BIGINT NOT NULL DEFAULT 0,
  joined_at          BIGINT NOT NULL,
  last_delivered_seq BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (thread_id, user_id)
);
CREATE INDEX participants_by_user ON participants(user_id);

CREATE TABLE messages (
  id            TEXT PRIMARY KEY,
  thread_id     TEXT NOT NULL REFERENCES threads(id),
  seq           BIGINT NOT NULL,
  sender_id     TEXT NOT NULL REFERENCES users(id),
  content       BYTEA NOT NULL,
  message_type  TEXT NOT NULL,
  client_msg_id BYTEA,
  created_at    BIGINT NOT NULL,
  edited_at     BIGINT,
  UNIQUE (thread_id, seq)
);
CREATE UNIQUE INDEX messages_client_msg ON messages(thread_id, sender_id, client_msg_id)
  WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_by_time ON messages(created_at);

CREATE TABLE commit_clock (
  id              INTEGER PRIMARY KEY CHECK (id = 1),
  last_created_at BIGINT NOT NULL
);
INSERT INTO commit_clock VALUES (1, 0);
)sql"},
    // Moderation and push, as SQLite's version 4: account state with its
    // change version, message tombstones, and the webhook outbox.
    {2, R"sql(
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN state_version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX users_by_state_version ON users(state_version);
ALTER TABLE messages ADD COLUMN deleted_at BIGINT;
CREATE TABLE webhook_outbox (
  id              TEXT PRIMARY KEY,
  recipient_id    TEXT NOT NULL,
  body            TEXT NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at BIGINT NOT NULL,
  created_at      BIGINT NOT NULL,
  dead            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_outbox_due ON webhook_outbox(dead, next_attempt_at);
)sql"},
    // As SQLite's version 7: outbox rows name their message and hold no copy
    // of its text. Older rows get their message_id from the body and their
    // content blanked (jsonb cannot hold an escaped NUL: a body with one keeps its
    // copy until it is delivered or the message deleted).
    {3, R"sql(
ALTER TABLE webhook_outbox ADD COLUMN message_id TEXT;
UPDATE webhook_outbox SET message_id = body::json #>> '{message,id}';
UPDATE webhook_outbox SET body = jsonb_set(body::jsonb, '{message,content}', '""')::text
  WHERE message_id IS NOT NULL AND strpos(body, '\u0000') = 0;
CREATE INDEX webhook_outbox_by_message ON webhook_outbox(message_id);
)sql"},
    // As SQLite's version 8: edits and deletions numbered in commit order.
    {4, R"sql(
ALTER TABLE messages ADD COLUMN change_no BIGINT;
CREATE INDEX messages_by_change ON messages(change_no) WHERE change_no IS NOT NULL;
)sql"},
    // As SQLite's version 9: phone numbers found by their digits, existing
    // ones keyed by fill_phone_keys (the same rule, in C++, for both stores).
    {5, R"sql(
ALTER TABLE users ADD COLUMN phone_key TEXT;
CREATE UNIQUE INDEX users_by_phone_key ON users(phone_key);
)sql",
     fill_phone_keys},
    // As SQLite's version 10: the marks of members who left.
    {6, R"sql(
CREATE TABLE former_marks (
  thread_id          TEXT NOT NULL,
  user_id            TEXT NOT NULL,
  last_read_seq      BIGINT NOT NULL,
  last_delivered_seq BIGINT NOT NULL,
  PRIMARY KEY (thread_id, user_id)
);
)sql"},
    // As SQLite's version 11: messages owed their push.
    {7, R"sql(
CREATE TABLE owed_pushes (
  message_id TEXT PRIMARY KEY,
  created_at BIGINT NOT NULL
);
)sql"},
    // Each change of a thread's members bumps its member_version in the
    // same commit, and an append reads it back under the commit clock: a
    // node whose member list is older than a change another node committed
    // before the message reads the members again for its fan-out
    // (ChatService::members_at_commit). From 1: 0 means "not numbered"
    // (SQLite, whose one process needs none).
    {8, R"sql(
ALTER TABLE threads ADD COLUMN member_version BIGINT NOT NULL DEFAULT 1;
)sql"},
    // As SQLite's version 12: one row per membership, with when it began.
    {9, R"sql(
ALTER TABLE former_marks ADD COLUMN joined_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE former_marks DROP CONSTRAINT former_marks_pkey;
ALTER TABLE former_marks ADD PRIMARY KEY (thread_id, user_id, joined_at);
)sql"},
    // As SQLite's version 13: where each membership ended.
    {10, R"sql(
ALTER TABLE former_marks ADD COLUMN left_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX former_marks_by_user ON former_marks(user_id);
)sql"},
};

Status fill_phone_keys(PgConn& c) {
  auto r = c.run("SELECT id, phone_number, created_at FROM users WHERE phone_number IS NOT NULL");
  if (!r.ok()) return internal_error("reading phone numbers: " + r.message());
  std::vector<PhoneOwner> owners;
  for (int i = 0; i < r.rows(); ++i) owners.push_back({r.text(i, 0), r.text(i, 1), r.i64(i, 2)});
  std::vector<std::string> ids, keys;
  for (auto& k : assign_phone_keys(std::move(owners))) {
    if (!k.key) continue;
    ids.push_back(std::move(k.id));
    keys.push_back(std::move(*k.key));
  }
  if (ids.empty()) return Ok{};
  // One statement for every user: a round trip each would make the step
  // take minutes on a large users table across a network.
  auto set = c.exec_once(
      "UPDATE users u SET phone_key = x.k FROM unnest($1::text[], $2::text[]) AS x(id, k) WHERE u.id = x.id",
      {PgParam::array(ids), PgParam::array(keys)});
  if (!set.ok()) return internal_error("storing phone keys: " + set.message());
  spdlog::info("event=migration_phone_keys store=postgres users={}", ids.size());
  return Ok{};
}

Status ensure_version_table(PgConn& c) {
  auto r = c.run("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)");
  if (!r.ok()) return internal_error("schema migration failed: " + r.message());
  return Ok{};
}

Result<int> current_version(PgConn& c) {
  auto r = c.run("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
  if (!r.ok() || r.rows() != 1) return internal_error("cannot read schema version: " + r.message());
  return static_cast<int>(r.i64(0, 0));
}

Status apply(PgConn& c, const Migration& m) {
  auto failed = [&](const std::string& msg) -> Status {
    c.run("ROLLBACK");
    return internal_error("schema migration " + std::to_string(m.version) + " failed: " + msg);
  };
  auto r = c.run("BEGIN;\n" + std::string(m.sql));
  if (!r.ok()) return failed(r.message());
  if (m.then) {
    if (auto st = m.then(c); !st) return failed(st.error().message);
  }
  r = c.run("INSERT INTO schema_migrations VALUES (" + std::to_string(m.version) +
            ", (extract(epoch from clock_timestamp()) * 1000000)::bigint);\nCOMMIT;");
  if (!r.ok()) return failed(r.message());
  spdlog::info("event=migration store=postgres version={}", m.version);
  return Ok{};
}

Status migrate_locked(PgConn& c, int version) {
  if (auto st = ensure_version_table(c); !st) return st;
  auto current = current_version(c);
  if (!current) return current.error();
  if (*current > latest_pg_schema_version())
    return internal_error("database schema version " + std::to_string(*current) + " is newer than this build (" +
                          std::to_string(latest_pg_schema_version()) + ")");
  for (const auto& m : kMigrations) {
    if (m.version <= *current || m.version > version) continue;
    if (auto st = apply(c, m); !st) return st;
  }
  return Ok{};
}

}  // namespace

int latest_pg_schema_version() { return std::prev(std::end(kMigrations))->version; }

Status migrate_pg_schema(PgConn& c) { return migrate_pg_schema_to(c, latest_pg_schema_version()); }

Status migrate_pg_schema_to(PgConn& c, int version) {
  // Session lock: held across the steps' own transactions; a second node
  // blocks here until the first is done, then sees every step applied.
  auto locked = c.run(kMigrationLock);
  if (!locked.ok()) return Error{ErrorKind::kUnavailable, "storage_unavailable", "cannot lock for migration: " + locked.message()};
  auto st = migrate_locked(c, version);
  c.run(kMigrationUnlock);
  return st;
}

}  // namespace parley
