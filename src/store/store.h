// Store: the durable home of users, threads, participants and messages.
//
// Any thread may call any method. Reads answer from committed data only, and
// every read returns a Result: a storage failure (a database outage, a lost
// connection) is an Error (kUnavailable "storage_unavailable" or kInternal),
// never an empty answer, so an outage is never mistaken for "no such user"
// or "not a participant". Absence is a successful answer: nullopt or empty.
// Writes go through a single group-commit writer: many writes share one
// transaction, and a write's callback (or a blocking write's return) happens
// only after that transaction is durable (survives kill -9; with
// fsync_commits it also survives power loss). Callbacks of async writes run
// on one store thread, one after another in commit order, so they must be
// short and must not call blocking Store writes.
//
// Implementations: SqliteStore (embedded default) and, for scale-out,
// a PostgreSQL one. The chat service only ever sees this interface.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "model/model.h"

namespace parley {

struct AppendRequest {
  std::string thread_id;
  std::string sender_id;
  std::string content;
  std::string message_type;   // already validated by the chat service
  std::string client_msg_id;  // empty = none
  // Also record the new message as owed its push, in the same commit, until
  // enqueue_notifications settles it: a node killed before its webhook
  // intake stored the notifications leaves the record for overdue_pushes.
  bool owes_push = false;
};

struct AppendResult {
  Message message;         // with id, seq, created_at and sender filled in
  bool duplicate = false;  // true: client_msg_id seen before; message is the original
  // The thread's ThreadMembers::version as the message committed (0 when
  // the store does not number them, or for a duplicate): a member list of a
  // lower version predates a change committed before the message, one of
  // the same version is exactly the members at the commit.
  int64_t member_version = 0;
};

using AppendCallback = std::function<void(Result<AppendResult>)>;

// Users joining a thread (Store::add_participants).
struct Addition {
  std::string thread_id;
  std::vector<std::string> user_ids;
  // The system message recording each user actually added (a chat rule, so
  // the caller's), stored in the same transaction right after the
  // additions: no addition commits without its record. Empty: none.
  std::function<AppendRequest(const std::string& user_id)> notice;
  // Who adds them; unless empty (tools), refused (forbidden "not_admin")
  // when not an admin of the thread as the addition commits: the caller's
  // check may be older (a removal of the actor can commit between the two).
  std::string actor_id{};  // (an initializer: brace lists may end before it)
  // > 0: refused (bad_input "group_too_large") when the thread would have
  // more participants as the addition commits: the caller's count may be
  // older (another addition can commit between the two).
  size_t max_members = 0;
};

struct Added {
  std::vector<std::string> user_ids;  // those actually added, in the order asked
  std::vector<Message> notices;       // Addition::notice of each, stored, in the same order
};

using AdditionCallback = std::function<void(Result<Added>)>;

// A member leaving a thread, or removed from it (Store::remove_participant).
struct Removal {
  std::string thread_id;
  std::string user_id;
  // The text announcing who became admin, given their username (a chat
  // rule, so the caller's); empty: no announcement is stored.
  std::function<std::string(const std::string& username)> promotion_notice;
  // The system message recording the removal, stored first in the same
  // transaction: the removed user's last message is this notice, and no
  // message commits between the two.
  std::optional<AppendRequest> notice;
  // Who removes them; unless empty (tools) or user_id (leaving), refused
  // (forbidden "not_admin") when not an admin of the thread as the removal
  // commits, as Addition::actor_id.
  std::string actor_id{};  // (an initializer: brace lists may end before it)
};

struct Removed {
  std::optional<Message> notice;     // Removal::notice, stored
  std::string new_admin_id;          // "" when nobody was made admin
  std::optional<Message> promotion;  // the system message announcing it
};

using RemovalCallback = std::function<void(Result<Removed>)>;

// The participants of a thread, as the chat service needs them on every send.
struct ThreadMembers {
  ThreadType type = ThreadType::kGroup;
  std::vector<std::string> user_ids;  // in the order they joined
  std::vector<std::string> admin_ids;
  std::vector<Micros> joined_at;      // when each of user_ids joined (the last time); may be shorter
  // Grows with every change of the members, in the same commit, from 1,
  // where the store is shared by several processes (PgStore); always 0 in
  // SqliteStore, whose one process sees its own changes in order.
  int64_t version = 0;
};

struct UnreadCount {
  std::string thread_id;
  int64_t unread_count = 0;
};

// A user's moderation state as running servers poll it (see
// Store::account_changes): version grows with every change, across the store.
struct AccountState {
  std::string user_id;
  bool disabled = false;
  int64_t tokens_valid_after = 0;  // seconds since epoch; 0 = no revocation
  int64_t version = 0;
};

// One webhook notification waiting in the outbox (CONTRACT section 9): `id`
// is its delivery id. With a `message_id`, `body` is the JSON POSTed with the
// message's content blanked; its content, edit time and change number are
// read by claim_notifications from the message itself: the outbox never
// holds a copy of message text, so an edit reaches retries and a delete
// (which removes the message's notifications) leaves no text behind
// (docs/moderation.md). Without one, `body` is sent as is.
struct Notification {
  std::string id;
  std::string recipient_id;
  std::string body;
  int attempts = 0;  // failed attempts so far
  Micros next_attempt_at = 0;
  std::string message_id;  // "" = not about a message
  // Filled by claim_notifications: the message's current content, edit time
  // and change number (0: never edited).
  std::string content;
  std::optional<Micros> edited_at;
  int64_t change_no = 0;
};

// What mark_read left: the reader's mark, and whether this call moved it.
struct ReadMark {
  int64_t seq = 0;
  bool moved = false;
  // The thread's ThreadMembers::version as the mark committed (PostgreSQL;
  // 0 where memberships are not numbered).
  int64_t member_version = 0;
};

// One participant's unread count in a thread (Store::thread_unread_counts).
struct ParticipantUnread {
  std::string user_id;
  int64_t unread_count = 0;
};

struct OfflinePage {
  std::vector<Message> messages;  // ascending created_at
  Micros cursor = 0;              // pass back as `since` to continue; never skips or repeats
  bool has_more = false;
};

// A page of one thread as a participant reads it (Store::member_page).
struct PageQuery {
  std::string thread_id;
  int64_t after_seq = -1;          // >= 0: the oldest `limit` with seq > after_seq
  int64_t before_seq = kAllSeqs;   // else: the newest `limit` with seq < before_seq
  int limit = 50;
  // With after_seq: the first membership of the reader's that ended past
  // after_seq is read first, up to the last notice of its removal (a
  // connection owed what it was sent as a member), then the current one.
  bool former_too = false;
};

struct MemberPage {
  Micros joined_at = 0;            // the reader's, as of the page's snapshot
  std::vector<Message> messages;   // ascending seq
  // > 0: read as a membership that ended: nothing past this seq, and for a
  // reader no longer a participant only what was said during it (from
  // joined_at; a participant reads the whole history, as always).
  int64_t ended_at_seq = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  // --- users ---
  // Errors: conflict "username_taken" / "phone_taken".
  virtual Result<User> create_user(const User& user) = 0;
  virtual Result<std::optional<User>> user_by_id(const std::string& id) = 0;
  virtual Result<std::optional<User>> user_by_username(const std::string& username) = 0;
  virtual Result<std::optional<User>> user_by_phone(const std::string& phone) = 0;
  // Users whose username or full_name contains `query` (case-insensitive):
  // the one whose username is `query` first, then by username.
  virtual Result<std::vector<User>> search_users(const std::string& query, int limit) = 0;
  virtual Result<size_t> user_count() = 0;
  // Up to `limit` users, those seen most recently first (then the newest):
  // for warming caches at start. One scan; blocks, so never from an event loop.
  virtual Result<std::vector<User>> recent_users(int limit) = 0;
  // Returns once stored (a failure is logged, not returned: presence is best
  // effort); blocks, so never from an event loop.
  virtual void set_last_seen(const std::string& user_id, Micros when) = 0;

  // --- account moderation ---
  // Each bumps the user's state version. Errors: not_found "user_not_found".
  virtual Result<AccountState> set_user_disabled(const std::string& user_id, bool disabled) = 0;
  // Tokens whose iat is before valid_after (seconds) are refused from now on,
  // and so is every token issued before the call: the mark moves to at least
  // one past its old value, since tokens are issued with iat no earlier than
  // the old mark (Identity::issue_token), which may lie ahead of the clock
  // when the last revocation came in the same second. Never moves back.
  virtual Result<AccountState> revoke_tokens(const std::string& user_id, int64_t valid_after) = 0;
  // Account states changed after `after_version` (0: every user ever
  // changed), by version. Versions follow commit order, so a poller that
  // passes the highest version it saw misses no change.
  virtual Result<std::vector<AccountState>> account_changes(int64_t after_version) = 0;

  // --- threads ---
  // Creates a thread with the given participants (thread.participants: user_id and
  // is_admin are read). A direct thread is unique per unordered pair of users:
  // when it exists already, returns it with created=false.
  struct CreatedThread {
    Thread thread;
    bool created = false;
  };
  virtual Result<CreatedThread> create_thread(const Thread& thread) = 0;
  // The thread with its participants, or nullopt.
  virtual Result<std::optional<Thread>> thread(const std::string& thread_id) = 0;
  virtual Result<std::optional<ThreadMembers>> thread_members(const std::string& thread_id) = 0;
  // The user's threads, newest activity first, each with unread count and last message.
  virtual Result<std::vector<ThreadSummary>> threads_for_user(const std::string& user_id) = 0;
  // Adds users (ignoring those already in) and stores their notices (see
  // Addition); `done` runs like an append's callback, in commit order.
  // A new member's read and delivered marks start at the thread's last seq:
  // what was said before is history to them, not unread.
  virtual void add_participants(Addition addition, AdditionCallback done) = 0;
  // The same without notices, waiting for it; returns the ids actually added.
  Result<std::vector<std::string>> add_participants(const std::string& thread_id,
                                                    const std::vector<std::string>& user_ids);
  // Removes a participant, after storing removal.notice if any (see
  // Removal); `done` runs like an append's callback. A group is never left without an admin while it has members:
  // when no admin would remain, the member there longest (earliest
  // joined_at, then the lowest user id) becomes admin in the same
  // transaction, announced by a system message from the leaving user,
  // stored just before the removal. Errors: not_found "not_a_participant".
  virtual void remove_participant(Removal removal, RemovalCallback done) = 0;
  // Blocking form, for callers that may wait (tools, tests).
  Result<Removed> remove_participant_and_wait(Removal removal);

  // --- messages ---
  // Stores a message: assigns the next seq of its thread (no gaps, also when
  // several processes append to one PostgreSQL database at once), a UUID and
  // created_at. created_at follows commit order across the whole store, in
  // every implementation and across processes: a message committed after
  // another has a greater created_at, so any snapshot holds every message up
  // to some created_at and none after (messages_since relies on exactly this;
  // see docs/architecture.md). A repeated (thread_id, sender_id,
  // client_msg_id) stores nothing and answers the original with
  // duplicate=true, whichever process stored the original. The sender's last_read_seq moves to the
  // new seq (one's own message is read). Errors: not_found "thread_not_found",
  // "user_not_found"; forbidden when the sender is not a participant when the
  // message commits (the caller's own check may be older: a removal, from
  // this process or another, can commit between the two). A retry of a
  // message stored while the sender was a participant still answers it.
  // Callback: see the class comment.
  virtual void append(AppendRequest request, AppendCallback done) = 0;
  // Blocking form of append, for callers that may wait (REST workers, tools).
  Result<AppendResult> append_and_wait(AppendRequest request);

  virtual Result<std::optional<Message>> message(const std::string& message_id) = 0;
  // Ascending seq: the oldest `limit` messages with seq > after_seq.
  virtual Result<std::vector<Message>> messages_after(const std::string& thread_id, int64_t after_seq, int limit) = 0;
  // Ascending seq: the newest `limit` messages with seq < before_seq
  // (kAllSeqs: the newest of all).
  virtual Result<std::vector<Message>> messages_before(const std::string& thread_id, int64_t before_seq, int limit) = 0;
  // messages_after or messages_before for a reader who must be a participant,
  // read from one snapshot with the membership: a removal that commits while
  // the page is read never lets through a message stored after it (a check
  // apart from the read would, for as long as the read took to start).
  // With former_too, a membership that ended past after_seq is read, up to
  // where it ended, before the current one or instead of none (removals
  // from SQLite schema 13 / PostgreSQL 10 on).
  // Errors: not_found "not_a_participant", also for a thread that does not exist.
  virtual Result<MemberPage> member_page(const std::string& user_id, const PageQuery& query) = 0;
  // The highest seq in (lowest_seq, below_seq) of a message of the thread
  // created before `created_before`; lowest_seq when there is none. Reads
  // back from below_seq, so it costs the messages newer than that time.
  virtual Result<int64_t> last_seq_created_before(const std::string& thread_id, int64_t below_seq,
                                                 Micros created_before, int64_t lowest_seq) = 0;
  // Messages from others in the user's threads with created_at > since, oldest
  // first, read from one snapshot; the page's cursor chained back as `since`
  // never skips or repeats a message, however many writers commit meanwhile.
  // A membership that ended counts up to its removal's last notice, as a
  // former member's member_page reads it.
  virtual Result<OfflinePage> messages_since(const std::string& user_id, Micros since, int limit) = 0;
  // The threads the user left, is not in now, and still has messages from
  // others of an ended membership they never got: past both of the
  // membership's marks (delivered, read), up to its removal's last notice,
  // which is newer than the user's last_seen (their last connection closed
  // before it, or is open still). Each with the highest of those marks (of the earliest such
  // membership): what a connect's catch-up reads after. Removals from
  // SQLite schema 13 / PostgreSQL 10 on.
  virtual Result<std::vector<std::pair<std::string, int64_t>>> left_threads_owed(const std::string& user_id) = 0;

  // A tombstone: content emptied, deleted set, seq and everything else kept;
  // the message's webhook notifications (queued and dead) are removed in the
  // same transaction. Deleting a deleted message answers it as it is.
  // `actor_id`, unless empty (tools), must be a participant of the thread
  // when this commits, and its sender or an admin: the caller's check may be
  // older (a removal can commit between the two). Errors: not_found
  // "message_not_found", forbidden "not_allowed".
  virtual Result<Message> delete_message(const std::string& message_id, const std::string& actor_id) = 0;
  // New content and edited_at = `when`. `actor_id`, unless empty, must be
  // its sender and a participant when this commits. Errors: not_found
  // "message_not_found", conflict "message_deleted", forbidden "not_allowed".
  virtual Result<Message> edit_message(const std::string& message_id, const std::string& actor_id,
                                       const std::string& content, Micros when) = 0;
  // Every edit and deletion (not the repeat of one) gives its message the
  // next change number of the whole store (Message::change_no): in commit
  // order across every writer, without gaps, 1 first. A node that may have
  // missed the events of some (its bus was cut) finds them by number: the
  // last number given (0: none yet), and the messages of the user's threads
  // whose last change is numbered above `after`, in that order, at most
  // `limit` (docs/architecture.md, "Edits and deletions after an outage").
  virtual Result<int64_t> last_change() = 0;
  virtual Result<std::vector<Message>> changes_after(const std::string& user_id, int64_t after, int limit) = 0;

  // --- webhook outbox ---
  // Stores notifications (id, recipient_id, body, next_attempt_at,
  // message_id are read) and settles owed pushes (AppendRequest::owes_push),
  // in one write: the records of the messages in `settles` are removed, and
  // an item about one of them is stored only if its record was there, so of
  // two callers settling one message (the intake and a sweep of overdue
  // pushes, on one node or two) exactly one stores its notifications. Items
  // about other messages are stored as they are. `done` (may be empty) gets
  // how many items were stored and runs like an append's callback.
  virtual void enqueue_notifications(std::vector<Notification> items, std::vector<std::string> settles,
                                     std::function<void(Result<size_t>)> done) = 0;
  // Messages still owed their push that were recorded before `before`, at
  // most `limit`, in the order of their ids (oldest first to the
  // millisecond): their node died between the commit and storing the
  // notifications, or its intake dropped them (a backlog, a stop).
  virtual Result<std::vector<std::string>> overdue_pushes(Micros before, int limit) = 0;
  // Takes up to `limit` live notifications due at `now` and moves their
  // next_attempt_at to `lease_until`, in one write: several nodes sharing a
  // database never claim one notification at once, and a node that dies
  // mid-delivery leaves its claims to be taken again after the lease. Each
  // comes with its message's current content and edited_at; one whose
  // message is deleted (or gone) is removed instead of returned.
  virtual Result<std::vector<Notification>> claim_notifications(Micros now, Micros lease_until, int limit) = 0;
  // When the earliest live notification is due (claimed ones: when their
  // lease ends); nullopt when none is queued.
  virtual Result<std::optional<Micros>> next_notification_due() = 0;
  // Delivered: removed.
  virtual Status finish_notification(const std::string& id) = 0;
  // Failed: tried again at next_attempt_at.
  virtual Status retry_notification(const std::string& id, int attempts, Micros next_attempt_at) = 0;
  // Given up: kept, marked dead, never claimed again.
  virtual Status dead_letter_notification(const std::string& id, int attempts) = 0;
  // Notifications given up so far.
  virtual Result<int64_t> dead_notification_count() = 0;

  // --- read state ---
  virtual Result<std::vector<UnreadCount>> unread_counts(const std::string& user_id) = 0;
  // Every participant's unread count in one thread (one read for a whole
  // thread, where unread_counts reads all of one user's threads).
  virtual Result<std::vector<ParticipantUnread>> thread_unread_counts(const std::string& thread_id) = 0;
  // Moves the user's last_read_seq up to min(up_to_seq, thread's last seq)
  // (kAllSeqs: the whole thread; 0 changes nothing). Never moves it back.
  // Returns the mark as it now is, and whether this call moved it.
  virtual Result<ReadMark> mark_read(const std::string& thread_id, const std::string& user_id, int64_t up_to_seq) = 0;

  // Moves the user's last_delivered_seq up to seq (never back); returns the new value.
  // Errors: not_found "not_a_participant".
  virtual Result<int64_t> mark_delivered(const std::string& thread_id, const std::string& user_id, int64_t seq) = 0;
  // A former member's receipt: moves the delivery mark of the user's ended
  // membership that held the message (joined by created_at, ended at or
  // past seq) up to seq, never back. False: no membership of theirs held
  // it, or its end is not known (removals before SQLite schema 13 /
  // PostgreSQL 10).
  virtual Result<bool> mark_former_delivered(const std::string& thread_id, const std::string& user_id, int64_t seq,
                                             Micros created_at) = 0;
  // Every user who shares at least one thread with user_id (not user_id itself).
  virtual Result<std::vector<std::string>> contacts(const std::string& user_id) = 0;
  // Every user who created a thread user_id is in and is still in it (not
  // user_id itself): those who opened a conversation with user_id, and so
  // show them their phone number.
  virtual Result<std::vector<std::string>> openers(const std::string& user_id) = 0;
  // contacts() of each user, in the same order: what a burst of presence
  // announcements needs. The default asks one by one; a store may read them
  // all in one transaction.
  virtual Result<std::vector<std::vector<std::string>>> contacts_of_each(const std::vector<std::string>& user_ids);

  // --- operations ---
  virtual std::string describe() const = 0;  // "sqlite:/path" for /health and logs
  // Names this store's history: a store restored from a backup gets a new
  // one, so a client that saw messages the backup lacks can tell that seqs
  // it holds may have been given again (docs/operations.md). Empty: none.
  // Read when the store opens; safe from any thread.
  virtual std::string store_id() const { return {}; }
  // The outcome of the last commit, for /health: a store whose writes all fail
  // (disk full, read-only files) must not look healthy. The cause is logged
  // where it happened; `error` is a short, secret-free summary.
  struct WriteState {
    bool ok = true;
    std::string error;
  };
  virtual WriteState write_state() const { return {}; }
  // Waits until every write queued so far is committed, then stops the writer.
  virtual void close() = 0;
};

// SQLite checkpoints once the WAL holds this many 4 KiB pages (64 MiB). A
// page written by many commits meanwhile (a busy thread's index page) is
// copied into the database once per checkpoint, not once per commit, so a
// larger WAL costs less copying per message; it costs that much disk and a
// longer replay of the WAL when the store opens after a crash.
inline constexpr int kDefaultWalCheckpointPages = 16000;

struct StoreOptions {
  std::string data_dir;
  bool fsync_commits = false;
  size_t max_batch = 4096;  // writes per group commit, at most
  std::string database_url{};  // postgres://… selects the PostgreSQL store; empty = SQLite in data_dir
  int wal_checkpoint_pages = kDefaultWalCheckpointPages;  // SQLite: WAL pages that start a checkpoint round
  // SQLite: the caller holds no DataDirLock and may run beside a server
  // (`user add`, `token`): a schema migration takes the lock for itself, and
  // is refused while a server holds it (it knows only its own schema).
  bool beside_server = false;
};

// --- rules every Store implementation applies the same way ---

// A thread's type as stored: "direct" or "group".
const char* stored_thread_type(ThreadType type);
ThreadType thread_type_from_stored(std::string_view name);

// A thread ready to be stored: participants deduplicated (the first entry of
// a user wins), id and created_at filled when empty, and for a direct thread
// its key, one per unordered pair of users ("lo:hi").
struct NewThread {
  Thread thread;
  std::optional<std::string> direct_key;
};
// Errors: bad_input "invalid_participants".
Result<NewThread> prepare_new_thread(const Thread& requested);

// The system message announcing that `username` became admin as `removal`
// commits, sent by the leaving user; nullopt when the removal announces none.
std::optional<AppendRequest> promotion_notice(const Removal& removal, const std::string& username);

// Where a removed member's membership ended (former_marks.left_seq): the seq
// of their last message, the promotion's notice, else the removal's; 0 when
// neither was stored.
int64_t last_notice_seq(const Removed& removed);

// messages_since's page from its two reads, each oldest first and at most
// limit + 1 long: the current memberships' and the ended ones' (which never
// overlap). The oldest `limit` of both; has_more and the cursor when more
// are left.
OfflinePage offline_page(std::vector<Message> current, std::vector<Message> former, int limit);

// The refusals of the store's own checks of who may change what (Addition::actor_id,
// Removal::actor_id, Store::delete_message, Store::edit_message).
Error not_admin();
Error not_allowed();
Error group_too_large(size_t max_members);

// A LIKE pattern matching strings that contain `text`, with LIKE's own
// wildcards (and the escape character) escaped by a backslash.
std::string like_contains_pattern(std::string_view text);

// Opens the embedded SQLite store in options.data_dir (created if missing),
// running schema migrations first.
Result<std::unique_ptr<Store>> open_sqlite_store(const StoreOptions& options);

// Opens the PostgreSQL store at options.database_url, running migrations
// first (under an advisory lock: nodes starting together migrate once).
Result<std::unique_ptr<Store>> open_postgres_store(const StoreOptions& options);

// The one place a backend is chosen: PostgreSQL when database_url is set
// (postgres:// or postgresql://), else SQLite in data_dir.
Result<std::unique_ptr<Store>> open_store(const StoreOptions& options);

}  // namespace parley
