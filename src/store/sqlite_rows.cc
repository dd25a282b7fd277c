#include "store/sqlite_rows.h"

#include <algorithm>

#include "store/store.h"

namespace parley {

User read_user(const SqliteStmt& st) {
  User u;
  u.id = st.text(0);
  u.username = st.text(1);
  u.full_name = st.text(2);
  if (!st.is_null(3)) u.phone_number = st.text(3);
  u.role = st.text(4);
  u.password_hash = st.text(5);
  u.created_at = st.i64(6);
  u.last_seen = st.i64(7);
  u.disabled = st.i64(8) != 0;
  u.tokens_valid_after = st.i64(9);
  return u;
}

Thread read_thread(const SqliteStmt& st) {
  Thread t;
  t.id = st.text(0);
  t.type = thread_type_from_stored(st.text(1));
  t.title = st.text(2);
  t.created_by = st.text(3);
  t.created_at = st.i64(4);
  t.last_activity = st.i64(5);
  t.last_seq = st.i64(6);
  return t;
}

Message read_message(const SqliteStmt& st) {
  Message m;
  m.id = st.text(0);
  m.thread_id = st.text(1);
  m.seq = st.i64(2);
  m.sender_id = st.text(3);
  m.content = st.text(4);
  m.message_type = st.text(5);
  m.client_msg_id = st.text(6);  // NULL reads as ""
  m.created_at = st.i64(7);
  if (!st.is_null(8)) m.edited_at = st.i64(8);
  m.sender = UserRef{m.sender_id, st.text(9), st.text(10), st.text(11)};
  m.deleted = !st.is_null(12);
  if (!st.is_null(13)) m.change_no = st.i64(13);
  return m;
}

std::vector<Message> read_messages(SqliteConn& c, SqliteStmt& st, std::string_view op) {
  std::vector<Message> out;
  while (st.row()) out.push_back(read_message(st));
  log_read_error(c, st, op);
  return out;
}

std::optional<User> find_user(SqliteConn& c, const char* sql, const std::string& key) {
  auto st = c.prepare(sql);
  st.bind(key);
  if (st.row()) return read_user(st);
  log_read_error(c, st, "find_user");
  return std::nullopt;
}

bool user_exists(SqliteConn& c, const std::string& id) {
  return c.prepare("SELECT 1 FROM users WHERE id = ?").bind(id).row();
}

Participant read_participant(const SqliteStmt& st, int col) {
  return Participant{st.text(col),         st.text(col + 1), st.text(col + 2),
                     st.text(col + 3),     st.i64(col + 4) != 0, st.i64(col + 5),
                     st.i64(col + 6),      st.i64(col + 7), st.i64(col + 8)};
}

std::vector<Participant> load_participants(SqliteConn& c, const std::string& thread_id) {
  auto st = c.prepare("SELECT " PARTICIPANT_COLS " " PARTICIPANTS_FROM " WHERE p.thread_id = ? ORDER BY p.joined_at, p.user_id");
  st.bind(thread_id);
  std::vector<Participant> out;
  while (st.row()) out.push_back(read_participant(st, 0));
  log_read_error(c, st, "load_participants");
  return out;
}

std::vector<FormerMarks> load_former_marks(SqliteConn& c, const std::string& thread_id) {
  auto st = c.prepare(
      "SELECT user_id, last_read_seq, last_delivered_seq, joined_at FROM former_marks WHERE thread_id = ?");
  st.bind(thread_id);
  std::vector<FormerMarks> out;
  while (st.row()) out.push_back(FormerMarks{st.text(0), st.i64(1), st.i64(2), st.i64(3)});
  log_read_error(c, st, "load_former_marks");
  return out;
}

std::optional<Thread> load_thread(SqliteConn& c, const std::string& id) {
  std::optional<Thread> t;
  {
    auto st = c.prepare("SELECT " THREAD_COLS " FROM threads t WHERE t.id = ?");
    st.bind(id);
    if (st.row()) t = read_thread(st);
    log_read_error(c, st, "load_thread");
  }
  if (t) {
    t->participants = load_participants(c, id);
    t->former_marks = load_former_marks(c, id);
  }
  return t;
}

std::optional<Message> message_at(SqliteConn& c, const std::string& thread_id, int64_t seq) {
  auto st = c.prepare(MESSAGE_SELECT "WHERE m.thread_no = " THREAD_NO_OF("?") " AND m.seq = ?");
  st.bind(thread_id, seq);
  auto found = read_messages(c, st, "message_at");
  if (found.empty()) return std::nullopt;
  return std::move(found.front());
}

// The newest row is the newest message: rows are inserted in created_at order
// (schema v3), and created_at has no index of its own.
Result<Micros> max_created_at(SqliteConn& c) {
  Micros last = 0;
  auto st = c.prepare("SELECT created_at FROM messages ORDER BY rowid DESC LIMIT 1");
  if (st.row())
    last = st.i64(0);
  else if (st.error() != SQLITE_OK)
    return storage_error(c, st.error(), "max_created_at");
  // Joins are on the message clock too (SqliteStore::join_time): one at the
  // end of it, with a wall clock now behind, must still precede what follows.
  // (A scan of participants, once at start.)
  auto joined = c.prepare("SELECT COALESCE(MAX(joined_at), 0) FROM participants");
  if (!joined.row()) return storage_error(c, joined.error(), "max_created_at");
  return std::max(last, joined.i64(0));
}


}  // namespace parley
