// What only the embedded SQLite store has: its file, schema migrations and
// WAL checkpointer. The behaviour every Store shares is in store_contract_test.cc.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <optional>
#include <thread>

#include "app/store_options.h"
#include "store/data_dir_lock.h"
#include "store/message_key.h"
#include "store/sqlite_conn.h"
#include "store/sqlite_schema.h"
#include "store/sqlite_store.h"
#include "store/store_copy_lock.h"
#include "store_test_support.h"

namespace parley {
namespace {

class SqliteStoreTest : public StoreFixture {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/parley_store_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/data";  // not there yet: open must create it
    reopen();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(root_);
  }
  Result<std::unique_ptr<Store>> open_store() override {
    // Checkpoints at 1000 WAL pages (SQLite's own default, not ours): the
    // checkpointer test below then sees several rounds in a few MB.
    auto opened = SqliteStore::open(StoreOptions{dir_, false, 512, "", 1000});
    if (!opened) return opened.error();
    return std::unique_ptr<Store>(std::move(*opened));
  }
  uint64_t commit_count() override { return sqlite().commit_count(); }
  SqliteStore& sqlite() { return static_cast<SqliteStore&>(*store_); }

  std::string root_;
  std::string dir_;
};

int pragma_int(sqlite3* db, const char* sql) {
  sqlite3_stmt* st = nullptr;
  int v = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return v;
}

// A removal that fails after storing its notice (here a trigger refuses the
// DELETE) is rolled back whole, and the writer's caches with it: the next
// message takes the notice's seq, so the thread's seqs stay gapless.
TEST_F(SqliteStoreTest, AFailedOpAfterItsNoticeLeavesNoGapInSeqs) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  ASSERT_EQ(ok(store_->append_and_wait({t.id, a.id, "one", "text", ""})).message.seq, 1);
  auto on_writer = [&](const char* sql) {
    std::promise<void> done;
    sqlite().enqueue_op_for_test(
        [sql](SqliteConn& c) { return sqlite3_exec(c.db(), sql, nullptr, nullptr, nullptr) == SQLITE_OK; },
        /*needs_savepoint=*/false, [&](const Error*) { done.set_value(); });
    done.get_future().wait();
  };
  on_writer("CREATE TEMP TRIGGER refuse_leaving BEFORE DELETE ON participants BEGIN SELECT RAISE(ABORT, 'no'); END");
  auto removed = store_->remove_participant_and_wait({t.id, b.id, {}, AppendRequest{t.id, b.id, "bob left", "system", ""}});
  EXPECT_FALSE(removed.ok());
  on_writer("DROP TRIGGER temp.refuse_leaving");
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10)).size(), 1u) << "the notice was rolled back";
  EXPECT_EQ(ok(store_->append_and_wait({t.id, a.id, "two", "text", ""})).message.seq, 2);
  EXPECT_EQ(ok(store_->thread(t.id))->last_seq, 2);
}

// SQLite rolls the whole transaction back on some errors, even in a read (no
// memory, I/O, a full disk). An op that goes on writing after one must not
// commit those writes by themselves: they fail, and the batch with them.
TEST_F(SqliteStoreTest, AStatementAfterTheBatchLostItsTransactionFailsInsteadOfCommitting) {
  User a = make_user("alice");
  Thread t = make_group({a.id}, "before");
  std::promise<std::pair<bool, bool>> outcome;  // the write ran; the batch failed
  bool wrote = true;
  sqlite().enqueue_op_for_test(
      [&](SqliteConn& c) {
        sqlite3_exec(c.db(), "ROLLBACK", nullptr, nullptr, nullptr);  // as SQLite does on such an error
        wrote = c.prepare("UPDATE threads SET title = 'outside'").done();
        return true;
      },
      /*needs_savepoint=*/true, [&](const Error* e) { outcome.set_value({wrote, e != nullptr}); });
  auto [ran, batch_failed] = outcome.get_future().get();
  EXPECT_FALSE(ran);
  EXPECT_TRUE(batch_failed);
  EXPECT_EQ(ok(store_->thread(t.id))->title, "before");
  EXPECT_EQ(ok(store_->append_and_wait({t.id, a.id, "next", "text", ""})).message.seq, 1) << "the writer goes on";
}

// `user add` and `token` run beside a server, without its lock. A newer
// binary's must not migrate the schema under an older server (which would go
// on writing the rows it knows): it refuses while the server holds the data
// dir, and migrates once none does.
TEST_F(SqliteStoreTest, ABesideServerOpenMigratesOnlyWhenNoServerHoldsTheDir) {
  const std::string older = root_ + "/older";
  std::filesystem::create_directories(older);
  auto version_of = [&] {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open((older + "/parley.db").c_str(), &db), SQLITE_OK);
    int v = pragma_int(db, "PRAGMA user_version");
    sqlite3_close(db);
    return v;
  };
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((older + "/parley.db").c_str(), &db), SQLITE_OK);
    ASSERT_TRUE(migrate_schema_to(db, latest_schema_version() - 1).ok());
    sqlite3_close(db);
  }
  StoreOptions options{older, false, 512, "", 1000};
  options.beside_server = true;
  {
    auto server = DataDirLock::acquire(older);
    ASSERT_TRUE(server.ok());
    auto refused = SqliteStore::open(options);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code, "schema_outdated");
    EXPECT_EQ(version_of(), latest_schema_version() - 1) << "nothing migrated";
  }
  auto opened = SqliteStore::open(options);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  (*opened)->close();
  EXPECT_EQ(version_of(), latest_schema_version());
  // Up to date: beside a server is fine (SQLite's own locking).
  auto server = DataDirLock::acquire(older);
  ASSERT_TRUE(server.ok());
  auto beside = SqliteStore::open(options);
  ASSERT_TRUE(beside.ok()) << beside.error().message;
  (*beside)->close();
}

// `parley migrate-store` and the commands beside a server keep apart
// (StoreCopyLock): while a copy runs such a store refuses to open, and a copy
// waits for (and then gives up on) one that is open.
TEST_F(SqliteStoreTest, BesideServerStoreAndCopyToPostgresKeepApart) {
  StoreOptions options{dir_, false, 512, "", 1000};
  options.beside_server = true;
  {
    auto copy = StoreCopyLock::exclusive(dir_, std::chrono::milliseconds(0));
    ASSERT_TRUE(copy.ok()) << copy.error().message;
    auto refused = SqliteStore::open(options);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code, "store_copy_running");
    EXPECT_NE(refused.error().message.find("pid " + std::to_string(::getpid())), std::string::npos)
        << refused.error().message;
  }
  auto first = SqliteStore::open(options);
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto second = SqliteStore::open(options);  // two commands at once: both shared
  ASSERT_TRUE(second.ok()) << second.error().message;
  (*second)->close();
  auto busy = StoreCopyLock::exclusive(dir_, std::chrono::milliseconds(100));
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code, "source_busy");
  // The copy waits for the command to close its store, then goes on.
  auto waiting = std::async(std::launch::async, [&] { return StoreCopyLock::exclusive(dir_, std::chrono::seconds(10)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  (*first)->close();
  auto copy = waiting.get();
  EXPECT_TRUE(copy.ok()) << copy.error().message;
}

TEST_F(SqliteStoreTest, MigratesNewDirAndDataSurvivesReopen) {
  EXPECT_EQ(store_->describe(), "sqlite:" + dir_ + "/parley.db");
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  Micros last_created = 0;
  for (int i = 1; i <= 3; ++i) last_created = send(t.id, a.id, "m" + std::to_string(i))->message.created_at;

  store_->close();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/parley.db").c_str(), &db), SQLITE_OK);
  EXPECT_EQ(pragma_int(db, "PRAGMA user_version"), latest_schema_version());
  sqlite3_close(db);

  reopen();  // migrations must be a no-op on an up-to-date database
  ASSERT_TRUE(ok(store_->user_by_username("alice")));
  EXPECT_EQ(ok(store_->user_by_username("alice"))->id, a.id);
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10)).size(), 3u);
  auto next = send(t.id, b.id, "after reopen");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->message.seq, 4);  // last_seq survived
  EXPECT_GT(next->message.created_at, last_created);
}

// A database written before schema v3 (three per-thread message indexes,
// rows in any order) migrates with its messages, cursors and retries intact.
TEST_F(SqliteStoreTest, MigratesVersion2Messages) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  std::vector<Message> sent;
  for (int i = 1; i <= 5; ++i)
    sent.push_back(send(t.id, i % 2 ? a.id : b.id, "m" + std::to_string(i), "c" + std::to_string(i))->message);
  store_->close();

  // Back to the v2 layout, rows inserted newest first so rowid order is not time order.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/parley.db").c_str(), &db), SQLITE_OK);
  const char* to_v2 = R"sql(
    CREATE TABLE old_messages (
      id TEXT PRIMARY KEY, thread_id TEXT NOT NULL REFERENCES threads(id), seq INTEGER NOT NULL,
      sender_id TEXT NOT NULL REFERENCES users(id), content TEXT NOT NULL, message_type TEXT NOT NULL,
      client_msg_id TEXT, created_at INTEGER NOT NULL, edited_at INTEGER,
      UNIQUE (thread_id, seq), UNIQUE (thread_id, sender_id, client_msg_id));
    INSERT INTO old_messages SELECT id, thread_id, seq, sender_id, content, message_type, client_msg_id,
      created_at, edited_at FROM messages ORDER BY created_at DESC;
    DROP TABLE messages;
    ALTER TABLE old_messages RENAME TO messages;
    CREATE INDEX messages_by_thread_time ON messages(thread_id, created_at);
    DROP INDEX users_by_state_version;
    ALTER TABLE users DROP COLUMN disabled;
    ALTER TABLE users DROP COLUMN tokens_valid_after;
    ALTER TABLE users DROP COLUMN state_version;
    DROP INDEX users_by_phone_key;
    ALTER TABLE users DROP COLUMN phone_key;
    DROP TABLE owed_pushes;
    DROP TABLE former_marks;
    DROP TABLE webhook_outbox;
    DROP TABLE message_keys;
    DROP INDEX threads_by_no;
    ALTER TABLE threads DROP COLUMN no;
    PRAGMA user_version = 2;)sql";
  ASSERT_EQ(sqlite3_exec(db, to_v2, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  reopen();
  auto after = ok(store_->messages_after(t.id, 0, 10));
  ASSERT_EQ(after.size(), 5u);
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].id, sent[i].id);
    EXPECT_EQ(after[i].seq, sent[i].seq);
    EXPECT_EQ(after[i].created_at, sent[i].created_at);
  }
  auto retry = send(t.id, b.id, "m2", "c2");
  ASSERT_TRUE(retry.ok());
  EXPECT_TRUE(retry->duplicate);
  EXPECT_EQ(retry->message.id, sent[1].id);
  auto next = send(t.id, a.id, "m6", "c6");
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->duplicate);
  EXPECT_EQ(next->message.seq, 6);
  EXPECT_GT(next->message.created_at, sent.back().created_at);  // the clock floor came from the newest row
  // Offline sync for bob from the second message on: a's 3rd, 5th and 6th.
  auto page = ok(store_->messages_since(b.id, sent[1].created_at, 10));
  ASSERT_EQ(page.messages.size(), 3u);
  EXPECT_EQ(page.messages[0].seq, 3);
  EXPECT_EQ(page.messages[1].seq, 5);
  EXPECT_EQ(page.messages[2].seq, 6);
  EXPECT_EQ(page.cursor, next->message.created_at);
}

// Back to schema v5: messages keyed by (thread_id, seq), threads unnumbered.
const char* kToVersion5 = R"sql(
  CREATE TABLE v5_messages (
    id TEXT PRIMARY KEY, thread_id TEXT NOT NULL REFERENCES threads(id), seq INTEGER NOT NULL,
    sender_id TEXT NOT NULL REFERENCES users(id), content TEXT NOT NULL, message_type TEXT NOT NULL,
    client_msg_id TEXT, created_at INTEGER NOT NULL, edited_at INTEGER, deleted_at INTEGER,
    UNIQUE (thread_id, seq));
  INSERT INTO v5_messages SELECT id, thread_id, seq, sender_id, content, message_type, client_msg_id,
    created_at, edited_at, deleted_at FROM messages ORDER BY rowid;
  DROP TABLE messages;
  ALTER TABLE v5_messages RENAME TO messages;
  DROP INDEX threads_by_no;
  ALTER TABLE threads DROP COLUMN no;
  DROP INDEX webhook_outbox_by_message;
  ALTER TABLE webhook_outbox DROP COLUMN message_id;
  DROP INDEX users_by_phone_key;
  ALTER TABLE users DROP COLUMN phone_key;
  DROP TABLE owed_pushes;
  DROP TABLE former_marks;
  PRAGMA user_version = 5;)sql";

// Schema v6 numbers the threads and files every message under its thread's
// number: histories, retries, offline sync and unread counts read the same
// after it, and a thread created later gets a number of its own.
TEST_F(SqliteStoreTest, MigratesVersion5ToIntegerThreadKeys) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t1 = make_group({a.id, b.id});
  Thread t2 = make_group({a.id, b.id});
  std::vector<Message> sent;  // alternating threads, so each thread's rows interleave with the other's
  for (int i = 1; i <= 6; ++i)
    sent.push_back(send(i % 2 ? t1.id : t2.id, a.id, "m" + std::to_string(i), "c" + std::to_string(i))->message);
  store_->close();

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/parley.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, kToVersion5, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  reopen();
  for (const Thread* t : {&t1, &t2}) {
    auto history = ok(store_->messages_after(t->id, 0, 10));
    ASSERT_EQ(history.size(), 3u);
    for (size_t i = 0; i < history.size(); ++i) {
      EXPECT_EQ(history[i].thread_id, t->id);
      EXPECT_EQ(history[i].seq, static_cast<int64_t>(i + 1));
    }
    EXPECT_EQ(ok(store_->messages_before(t->id, kAllSeqs, 1)).front().seq, 3);
  }
  auto retry = send(t2.id, a.id, "m4", "c4");
  ASSERT_TRUE(retry.ok());
  EXPECT_TRUE(retry->duplicate);
  EXPECT_EQ(retry->message.id, sent[3].id);
  auto unread = ok(store_->unread_counts(b.id));
  ASSERT_EQ(unread.size(), 2u);
  EXPECT_EQ(unread[0].unread_count + unread[1].unread_count, 6);
  EXPECT_EQ(ok(store_->messages_since(b.id, 0, 10)).messages.size(), 6u);

  Thread t3 = make_group({a.id, b.id});  // numbered after the migrated ones
  auto first = send(t3.id, b.id, "new thread");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->message.seq, 1);
  EXPECT_EQ(ok(store_->messages_after(t3.id, 0, 10)).size(), 1u);
  EXPECT_EQ(ok(store_->messages_after(t1.id, 0, 10)).size(), 3u);
  store_->close();
  ASSERT_EQ(sqlite3_open((dir_ + "/parley.db").c_str(), &db), SQLITE_OK);
  EXPECT_EQ(pragma_int(db, "SELECT COUNT(DISTINCT no) FROM threads WHERE no IS NOT NULL"), 3);
  EXPECT_EQ(pragma_int(db, ("SELECT no FROM threads WHERE id = '" + t3.id + "'").c_str()), 3);
  sqlite3_close(db);
}

// Schema v7: an outbox row queued by an older version (the whole message in
// its body) gets its message_id and loses its copy of the text; the claim
// then brings the message's own content.
TEST_F(SqliteStoreTest, MigratesVersion6OutboxRowsToHoldNoText) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  auto m = send(t.id, a.id, "legacy secret");
  ASSERT_TRUE(m.ok());
  store_->close();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/parley.db").c_str(), &db), SQLITE_OK);
  const std::string to_v6 =
      "DROP INDEX webhook_outbox_by_message; ALTER TABLE webhook_outbox DROP COLUMN message_id; "
      "DROP INDEX messages_by_change; ALTER TABLE messages DROP COLUMN change_no; "
      "DROP INDEX users_by_phone_key; ALTER TABLE users DROP COLUMN phone_key; DROP TABLE former_marks; DROP TABLE owed_pushes; "
      "INSERT INTO webhook_outbox (id, recipient_id, body, attempts, next_attempt_at, created_at, dead) VALUES "
      "('old', '" + b.id + "', '{\"type\":\"message\",\"message\":{\"id\":\"" + m->message.id +
      "\",\"content\":\"legacy secret\"},\"unread_count\":1}', 0, 1, 1, 0); PRAGMA user_version = 6;";
  ASSERT_EQ(sqlite3_exec(db, to_v6.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  reopen();
  auto claimed = ok(store_->claim_notifications(10, 20, 10));
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].message_id, m->message.id);
  EXPECT_EQ(claimed[0].content, "legacy secret");
  EXPECT_EQ(claimed[0].body.find("legacy secret"), std::string::npos) << claimed[0].body;
  store_->close();
  ASSERT_EQ(sqlite3_open((dir_ + "/parley.db").c_str(), &db), SQLITE_OK);
  EXPECT_EQ(pragma_int(db, "PRAGMA user_version"), latest_schema_version());
  EXPECT_EQ(pragma_int(db, "SELECT COUNT(*) FROM webhook_outbox WHERE body LIKE '%legacy secret%'"), 0);
  sqlite3_close(db);
}

// A v5 message whose thread is missing (only a hand-edited store has one)
// stops the migration: the store does not open and stays at v5, unchanged.
TEST_F(SqliteStoreTest, MigrationToVersion6RefusesAMessageWithoutItsThread) {
  User a = make_user("alice");
  Thread t = make_group({a.id});
  ASSERT_TRUE(send(t.id, a.id, "kept").ok());
  store_->close();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/parley.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, kToVersion5, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE messages SET thread_id = 'gone'", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);

  auto opened = SqliteStore::open(StoreOptions{dir_, false, 512, "", 1000});
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.error().message.find("thread_no"), std::string::npos) << opened.error().message;
  ASSERT_EQ(sqlite3_open((dir_ + "/parley.db").c_str(), &db), SQLITE_OK);
  EXPECT_EQ(pragma_int(db, "PRAGMA user_version"), 5);
  EXPECT_EQ(pragma_int(db, "SELECT COUNT(*) FROM messages WHERE thread_id = 'gone'"), 1);
  sqlite3_close(db);
}

// Appends run without a savepoint. An op run that way that fails after it
// wrote cannot be undone alone: its whole batch fails and stores nothing,
// and the store goes on from what was committed. One that fails before
// writing fails alone.
TEST_F(SqliteStoreTest, OpWithoutSavepointThatFailsAfterWritingFailsItsBatch) {
  User a = make_user("alice");
  Thread t = make_group({a.id});
  ASSERT_TRUE(send(t.id, a.id, "first").ok());

  auto batch_of = [&](bool write_before_failing) {
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::promise<void> blocked;
    sqlite().run_inside_write_for_test([&] {
      blocked.set_value();
      released.wait();
    });
    blocked.get_future().wait();
    std::vector<std::optional<Result<AppendResult>>> results(2);
    std::optional<bool> op_failed_batch;
    Countdown pending(3);
    auto append = [&](int i) {
      store_->append(AppendRequest{t.id, a.id, "m" + std::to_string(i), "text", "k" + std::to_string(i)},
                     [&, i](Result<AppendResult> r) {
                       results[i].emplace(std::move(r));
                       pending.done();
                     });
    };
    append(0);
    sqlite().enqueue_op_for_test(
        [write_before_failing](SqliteConn& c) {
          if (write_before_failing)
            sqlite3_exec(c.db(), "UPDATE threads SET title = 'written'", nullptr, nullptr, nullptr);
          return false;
        },
        /*needs_savepoint=*/false, [&](const Error* e) {
          op_failed_batch = e != nullptr;
          pending.done();
        });
    append(1);
    release.set_value();
    pending.wait();
    return std::make_pair(std::move(results), *op_failed_batch);
  };

  auto [failed, failed_batch] = batch_of(true);
  EXPECT_TRUE(failed_batch);
  EXPECT_FALSE(failed[0]->ok());
  EXPECT_FALSE(failed[1]->ok());
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10)).size(), 1u);
  EXPECT_EQ(ok(store_->thread(t.id))->title, t.title);

  auto [kept, kept_batch] = batch_of(false);
  EXPECT_FALSE(kept_batch);
  ASSERT_TRUE(kept[0]->ok());
  ASSERT_TRUE(kept[1]->ok());
  EXPECT_EQ((*kept[0])->message.seq, 2);  // the failed batch took no seq
  EXPECT_EQ((*kept[1])->message.seq, 3);
  auto retry = send(t.id, a.id, "m0 again", "k0");  // its key was stored with it, not with the failed batch
  ASSERT_TRUE(retry.ok());
  EXPECT_TRUE(retry->duplicate);
  EXPECT_EQ(retry->message.seq, 2);
}

TEST_F(SqliteStoreTest, OpenRejectsNewerSchema) {
  store_->close();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/parley.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 999", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  EXPECT_FALSE(SqliteStore::open(StoreOptions{dir_, false, 512, "", 1000}).ok());
}

// Checkpoints happen beside the writer while the store is open: the main
// database file takes in what was committed, and the WAL restarts instead
// of holding everything written.
// `serve --wal-checkpoint-pages` defaults to the store's own default (the
// two live apart: common/ does not know the store).
TEST(SqliteStoreOptions, ServeDefaultsToTheStoresCheckpointThreshold) {
  EXPECT_EQ(store_options(Config{}).wal_checkpoint_pages, StoreOptions{}.wal_checkpoint_pages);
  EXPECT_EQ(StoreOptions{}.wal_checkpoint_pages, kDefaultWalCheckpointPages);
}

TEST_F(SqliteStoreTest, CheckpointerCopiesAndRestartsTheWalWhileOpen) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  const std::string content(2000, 'w');
  constexpr int kMessages = 6000;  // ~12 MB of content, about 3000 WAL pages or more
  Countdown pending(kMessages);
  for (int i = 0; i < kMessages; ++i)
    store_->append(AppendRequest{t.id, a.id, content, "text", ""}, [&](Result<AppendResult>) { pending.done(); });
  pending.wait();
  const auto db = dir_ + "/parley.db";
  const auto written = static_cast<uintmax_t>(kMessages) * content.size();
  uintmax_t db_size = 0;
  for (int i = 0; i < 100 && (db_size = std::filesystem::file_size(db)) < written / 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_GE(db_size, written / 2) << "the checkpointer copied committed pages into the database file";
  // Without restarts the WAL would hold every page written (3000 or more).
  int frames = sqlite().wal_frames();
  for (int i = 0; i < 100 && frames >= 1000; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(send(t.id, b.id, "one more").ok());
    frames = sqlite().wal_frames();
  }
  EXPECT_LT(frames, 1000) << "the WAL restarted from its start";
  auto last = ok(store_->messages_after(t.id, kMessages - 1, 1));
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].content, content);
}

// A retry is found through message_keys, a 64-bit hash of (thread, sender,
// client_msg_id). Two sends whose hashes collide must both be stored, and
// each one's retry must still find its own original.
TEST_F(SqliteStoreTest, RetryIsRecognisedWhenItsKeyCollidesWithAnotherSend) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  auto first = send(t.id, a.id, "first", "c1");
  ASSERT_TRUE(first.ok());
  store_->close();
  // Make bob's "c2" collide: its key already names seq 1 (alice's "c1").
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/parley.db").c_str(), &db), SQLITE_OK);
  std::string sql = "INSERT INTO message_keys (key, seq) VALUES (" + std::to_string(message_key(t.id, b.id, "c2")) + ", 1)";
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
  reopen();

  auto second = send(t.id, b.id, "second", "c2");
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->duplicate) << "a colliding key is not the same send";
  EXPECT_EQ(second->message.seq, 2);
  auto retry2 = send(t.id, b.id, "second", "c2");
  ASSERT_TRUE(retry2.ok());
  EXPECT_TRUE(retry2->duplicate);
  EXPECT_EQ(retry2->message.id, second->message.id);
  auto retry1 = send(t.id, a.id, "first", "c1");
  ASSERT_TRUE(retry1.ok());
  EXPECT_TRUE(retry1->duplicate);
  EXPECT_EQ(retry1->message.id, first->message.id);
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10)).size(), 2u);
}

// Appends update their thread row and the sender's read mark once per batch;
// an op queued behind them in the same batch (mark_read up to "the end",
// unread counts) must still see every one of them.
TEST_F(SqliteStoreTest, OpsAfterAppendsInOneBatchSeeTheirThreadState) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  for (int round = 0; round < 20; ++round) {
    constexpr int kSends = 50;
    Countdown pending(kSends);
    for (int i = 0; i < kSends; ++i)
      store_->append(AppendRequest{t.id, i % 5 ? a.id : b.id, "m", "text", ""},
                     [&](Result<AppendResult>) { pending.done(); });
    int64_t marked = ok(store_->mark_read(t.id, b.id, kAllSeqs)).seq;
    pending.wait();
    EXPECT_EQ(marked, (round + 1) * kSends) << "round " << round;
    EXPECT_EQ(ok(store_->thread(t.id))->last_seq, (round + 1) * kSends);
    for (const auto& c : ok(store_->unread_counts(b.id))) EXPECT_EQ(c.unread_count, 0);
  }
  // alice's own sends are read by her: her read mark is her last message.
  auto thread = ok(store_->thread(t.id));
  ASSERT_TRUE(thread);
  for (const auto& p : thread->participants) {
    if (p.user_id == a.id) {
      EXPECT_EQ(p.last_read_seq, 20 * 50);
    }
  }
}

TEST_F(SqliteStoreTest, OpenSqliteStoreFactory) {
  store_.reset();
  auto s = open_sqlite_store(StoreOptions{dir_, true, 8, ""});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(ok((*s)->user_count()), 0u);
}

}  // namespace
}  // namespace parley
