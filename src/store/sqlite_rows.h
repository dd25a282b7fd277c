// Row mapping of the SQLite store: the column lists its queries select and
// the functions that turn rows into model values. Used on whichever
// connection the caller holds (writer or reader), by one thread at a time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "store/sqlite_conn.h"

namespace parley {

// SQL fragments are macros so every statement is ONE string literal: the
// statement cache is keyed by the literal's address.
#define USER_COLS \
  "id, username, full_name, phone_number, role, password_hash, created_at, last_seen, disabled, tokens_valid_after"
#define THREAD_COLS "t.id, t.type, t.title, t.created_by, t.created_at, t.last_activity, t.last_seq"
#define MESSAGE_SELECT                                                                                  \
  "SELECT m.id, m.thread_id, m.seq, m.sender_id, m.content, m.message_type, m.client_msg_id, "         \
  "m.created_at, m.edited_at, u.username, u.full_name, u.role, m.deleted_at, m.change_no FROM messages m " \
  "JOIN users u ON u.id = m.sender_id "

// A participant row: p is participants, u the user (PARTICIPANTS_FROM).
#define PARTICIPANT_COLS                                                                                   \
  "p.user_id, u.username, u.full_name, u.role, p.is_admin, p.last_read_seq, p.joined_at, p.last_delivered_seq, " \
  "u.last_seen"
#define PARTICIPANTS_FROM "FROM participants p JOIN users u ON u.id = p.user_id"

// Participant p's unread count in thread t (the rule of docs/protocol.md:
// messages from others past p's read mark, deleted ones not counted), for
// queries over participants p JOIN threads t.
#define UNREAD_OF_P                                                                        \
  "(SELECT COUNT(*) FROM messages m WHERE m.thread_no = t.no AND m.seq > p.last_read_seq " \
  "AND m.sender_id <> p.user_id AND m.deleted_at IS NULL)"

// The store's last change number (0: none), and the next one for an edit or
// a deletion: on the single writer, in commit order. Through the partial
// index of changed messages.
#define LAST_CHANGE_NO \
  "COALESCE((SELECT change_no FROM messages WHERE change_no IS NOT NULL ORDER BY change_no DESC LIMIT 1), 0)"
#define NEXT_CHANGE_NO "(" LAST_CHANGE_NO " + 1)"

// The message index's key of the thread whose id is `id` (an SQL expression):
// a lookup by thread id goes through it to use the (thread_no, seq) index.
#define THREAD_NO_OF(id) "(SELECT no FROM threads WHERE id = " id ")"

User read_user(const SqliteStmt& st);      // a row of USER_COLS
Thread read_thread(const SqliteStmt& st);  // a row of THREAD_COLS, without participants
Message read_message(const SqliteStmt& st);  // a row of MESSAGE_SELECT
Participant read_participant(const SqliteStmt& st, int col);  // PARTICIPANT_COLS from column `col` on
std::vector<Message> read_messages(SqliteConn& c, SqliteStmt& st, std::string_view op);

// `sql` selects USER_COLS by one key.
std::optional<User> find_user(SqliteConn& c, const char* sql, const std::string& key);
bool user_exists(SqliteConn& c, const std::string& id);
std::vector<Participant> load_participants(SqliteConn& c, const std::string& thread_id);
std::vector<FormerMarks> load_former_marks(SqliteConn& c, const std::string& thread_id);
// The thread with its participants and the marks of those who left.
std::optional<Thread> load_thread(SqliteConn& c, const std::string& id);
std::optional<Message> message_at(SqliteConn& c, const std::string& thread_id, int64_t seq);
// The newest message's created_at (0: none), where new ones continue from.
Result<Micros> max_created_at(SqliteConn& c);

inline int64_t clamp_limit(int limit) { return std::max(limit, 0); }  // SQLite reads a negative LIMIT as "none"

}  // namespace parley
