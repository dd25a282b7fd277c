// The WAL-buffering VFS (store/sqlite_wal_buffer.h): a commit made through it
// is visible to other connections, and complete in the file, the moment it
// returns; its frames go out in a few writes; and the WAL stays valid when
// SQLite spills pages before the commit and rewrites them (and their
// checksums) inside one transaction; appends go out as whole 4 KiB blocks,
// also after the log restarts and when another connection writes the same log.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <random>
#include <string>

#include "store/sqlite_wal_buffer.h"

namespace parley {
namespace {

class WalBufferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(register_wal_buffer_vfs());
    char tmpl[] = "/tmp/parley_walbuf_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    path_ = root_ + "/t.db";
    writer_ = open(kWalBufferVfs, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    exec(writer_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;"
                  "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);");
    reader_ = open(nullptr, SQLITE_OPEN_READONLY);  // the default VFS, as the store's readers
  }
  void TearDown() override {
    sqlite3_close(reader_);
    sqlite3_close(writer_);
    std::filesystem::remove_all(root_);
  }

  sqlite3* open(const char* vfs, int flags) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path_.c_str(), &db, flags, vfs), SQLITE_OK);
    // Closing must leave the WAL as it is (see SpilledAndRewrittenFramesLeaveAValidWal).
    sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    return db;
  }
  static void exec(sqlite3* db, const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "") << " in " << sql.substr(0, 120);
    sqlite3_free(err);
  }
  static int64_t scalar(sqlite3* db, const char* sql) {
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    int64_t v = -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
  }
  // SQLite's own check of every page and index of db: "ok" or what is wrong.
  static std::string integrity(sqlite3* db) {
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr), SQLITE_OK);
    std::string result = "no answer";
    if (sqlite3_step(st) == SQLITE_ROW) result = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return result;
  }
  // A copy of the database and its WAL as the OS has them now (no wal-index),
  // opened with the default VFS: what a restart after kill -9 would see.
  sqlite3* open_crash_copy() {
    const std::string dir = root_ + "/crash" + std::to_string(++crashes_);
    std::filesystem::create_directory(dir);
    std::filesystem::copy_file(path_, dir + "/t.db");
    std::filesystem::copy_file(path_ + "-wal", dir + "/t.db-wal");
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2((dir + "/t.db").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
    return db;
  }
  // Inserts `rows` rows of `bytes` bytes each in one transaction.
  void insert(int rows, int bytes) {
    exec(writer_, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " +
                      std::to_string(rows) + ") INSERT INTO t (body) SELECT hex(randomblob(" +
                      std::to_string(bytes / 2) + ")) FROM n; COMMIT;");
  }

  std::string root_, path_;
  sqlite3* writer_ = nullptr;
  sqlite3* reader_ = nullptr;
  int crashes_ = 0;
};

TEST_F(WalBufferTest, EveryCommitIsVisibleToAnotherConnectionWhenItReturns) {
  int64_t expected = 0;
  // One row (one frame), a few pages, and more than the 124 KiB write piece
  // and the 2 MiB buffer.
  for (int rows : {1, 3, 40, 1, 200, 2, 3000, 1, 12000, 5}) {
    insert(rows, 300);
    expected += rows;
    ASSERT_EQ(scalar(reader_, "SELECT COUNT(*) FROM t"), expected) << "after a commit of " << rows << " rows";
    ASSERT_EQ(scalar(reader_, "SELECT MAX(id) FROM t"), expected);
    sqlite3* crashed = open_crash_copy();
    ASSERT_EQ(scalar(crashed, "SELECT COUNT(*) FROM t"), expected) << "recovered from the files after " << rows << " rows";
    sqlite3_close(crashed);
  }
}

TEST_F(WalBufferTest, ACommitsFramesGoOutInAFewWrites) {
  insert(10, 300);
  const uint64_t before = wal_buffer_writes();
  insert(1000, 300);  // about 100 pages: 200 write calls without the buffer
  const int64_t pages = scalar(writer_, "PRAGMA page_count");
  const uint64_t writes = wal_buffer_writes() - before;
  EXPECT_GE(pages, 80);
  EXPECT_GE(writes, 1u);
  EXPECT_LE(writes, 6u) << "frames of one commit of about " << pages << " pages";
  EXPECT_EQ(scalar(reader_, "SELECT COUNT(*) FROM t"), 1010);
  // A small commit, its commit frame's header and page included: one write.
  for (int i = 0; i < 5; ++i) {
    const uint64_t at = wal_buffer_writes();
    insert(1, 300);
    EXPECT_EQ(wal_buffer_writes() - at, 1u) << "commit " << i;
  }
  EXPECT_EQ(scalar(reader_, "SELECT COUNT(*) FROM t"), 1015);
}

TEST_F(WalBufferTest, SpilledAndRewrittenFramesLeaveAValidWal) {
  // A 16-page cache: the transaction spills pages into the WAL before its
  // commit and writes some of them again, so SQLite overwrites those frames
  // in place and rewrites their checksums at the commit.
  exec(writer_, "PRAGMA cache_size=16");
  exec(writer_, "BEGIN");
  for (int round = 0; round < 5; ++round) {
    exec(writer_, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) "
                  "INSERT INTO t (body) SELECT hex(randomblob(150)) FROM n");
    exec(writer_, "UPDATE t SET body = body || 'x' WHERE id % 7 = 0");
  }
  exec(writer_, "COMMIT");
  EXPECT_EQ(scalar(reader_, "SELECT COUNT(*) FROM t"), 2000);
  // What a kill -9 now would leave: the files as the OS has them, the writer
  // still open. Opening a copy recovers the WAL from the file alone and
  // checks every frame's checksum: a frame it rejects loses its commit.
  sqlite3* crashed = open_crash_copy();
  EXPECT_EQ(scalar(crashed, "SELECT COUNT(*) FROM t"), 2000);
  EXPECT_EQ(scalar(crashed, "SELECT COUNT(*) FROM t WHERE length(body) != 300 + "
                            "CASE WHEN id % 7 = 0 THEN 5 - (id - 1) / 400 ELSE 0 END"),
            0);
  EXPECT_EQ(integrity(crashed), "ok");
  sqlite3_close(crashed);
}

TEST_F(WalBufferTest, AppendsGoOutAsWholeBlocksAcrossLogRestarts) {
  insert(1, 300);  // the first write of a log may start mid-block
  int64_t expected = 1;
  const uint64_t partial_before = wal_buffer_partial_writes();
  const uint64_t writes_before = wal_buffer_writes();
  for (int round = 0; round < 3; ++round) {
    for (int rows : {1, 2, 5, 1, 40, 1, 3}) {
      insert(rows, 300);
      expected += rows;
    }
    // What a kill -9 would leave recovers every commit, the zeros past the
    // log's end included.
    sqlite3* crashed = open_crash_copy();
    ASSERT_EQ(scalar(crashed, "SELECT COUNT(*) FROM t"), expected) << "round " << round;
    ASSERT_EQ(scalar(crashed, "SELECT COUNT(*) FROM t WHERE length(body) != 300"), 0);
    sqlite3_close(crashed);
    // The next commit starts a new log at offset 0 over the old one's bytes.
    ASSERT_EQ(scalar(writer_, "PRAGMA wal_checkpoint(RESTART)"), 0);
  }
  insert(2, 300);
  expected += 2;
  EXPECT_GT(wal_buffer_writes() - writes_before, 20u);
  EXPECT_EQ(wal_buffer_partial_writes() - partial_before, 0u) << "an append left part of a block to merge";
  EXPECT_EQ(scalar(reader_, "SELECT COUNT(*) FROM t"), expected);
  std::error_code ec;
  EXPECT_EQ(std::filesystem::file_size(path_ + "-wal", ec) % 4096, 0u);
}

TEST_F(WalBufferTest, AnotherWriterOnTheSameLogIsNeverOverwritten) {
  // A second writer through the VFS, as `parley user disable` is beside a
  // running server: each connection's idea of the log's last block goes
  // stale when the other writes, and must then not be written back.
  sqlite3* other = open(kWalBufferVfs, SQLITE_OPEN_READWRITE);
  int64_t expected = 0;
  for (int round = 0; round < 6; ++round) {
    insert(1 + round, 300);
    exec(other, "INSERT INTO t (body) SELECT hex(randomblob(150))");
    expected += 2 + round;
    if (round == 2) {
      ASSERT_EQ(scalar(other, "PRAGMA wal_checkpoint(RESTART)"), 0);
    }
    if (round == 4) {
      ASSERT_EQ(scalar(writer_, "PRAGMA wal_checkpoint(RESTART)"), 0);
    }
    sqlite3* crashed = open_crash_copy();
    ASSERT_EQ(scalar(crashed, "SELECT COUNT(*) FROM t"), expected) << "round " << round;
    ASSERT_EQ(scalar(crashed, "SELECT COUNT(*) FROM t WHERE length(body) != 300"), 0);
    sqlite3_close(crashed);
  }
  // Two new logs of one frame each, the writer's then other's: other's log
  // ends exactly where the writer's last write did, in the block the writer
  // remembers, and the writer's next write continues there. Each UPDATE
  // changes one leaf page and not its size; row 1 is the one at the page's
  // end, so the bytes the writer remembers are no longer the file's.
  ASSERT_EQ(scalar(writer_, "PRAGMA wal_checkpoint(RESTART)"), 0);
  exec(writer_, "UPDATE t SET body = lower(body) WHERE id = 1");
  ASSERT_EQ(scalar(other, "PRAGMA wal_checkpoint(RESTART)"), 0);
  exec(other, "UPDATE t SET body = upper(body) WHERE id = 1");
  exec(writer_, "UPDATE t SET body = lower(body) WHERE id = 3");
  sqlite3* crashed = open_crash_copy();
  EXPECT_EQ(scalar(crashed, "SELECT COUNT(*) FROM t"), expected);
  EXPECT_EQ(scalar(crashed, "SELECT COUNT(*) FROM t WHERE (id = 1 AND body GLOB '*[A-F]*') OR "
                            "(id = 3 AND body NOT GLOB '*[A-F]*')"),
            2);
  EXPECT_EQ(integrity(crashed), "ok");
  sqlite3_close(crashed);
  EXPECT_EQ(scalar(reader_, "SELECT COUNT(*) FROM t WHERE (id = 1 AND body GLOB '*[A-F]*') OR "
                            "(id = 3 AND body NOT GLOB '*[A-F]*')"),
            2);
  sqlite3_close(other);
}

// Random commits of every size from two writers, with transactions that
// spill and rewrite frames, and log restarts and truncations in between:
// after every step, a copy of the files as the OS has them (what a restart
// after kill -9 would find) holds exactly what the live database holds.
TEST_F(WalBufferTest, RandomWritesFromTwoWritersSurviveACrashAfterEveryStep) {
  sqlite3* other = open(kWalBufferVfs, SQLITE_OPEN_READWRITE);
  std::mt19937 rng(20261202);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  // Cheap to compute, and changed by any lost or torn row.
  const char* fingerprint =
      "SELECT count(*) * 1000003 + total(length(body)) * 7 + total(id * unicode(substr(body, 1 + id % 40, 1))) FROM t";
  insert(20, 200);
  for (int step = 0; step < 150; ++step) {
    sqlite3* db = pick(0, 3) == 0 ? other : writer_;
    const int action = pick(0, 9);
    if (action <= 4) {
      exec(db, "INSERT INTO t (body) SELECT hex(randomblob(" + std::to_string(pick(10, 1500)) +
                   ")) FROM (SELECT 1 FROM t LIMIT " + std::to_string(pick(1, 30)) + ")");
    } else if (action <= 6) {
      exec(db, "UPDATE t SET body = lower(body) || 'x' WHERE id % " + std::to_string(pick(2, 40)) + " = " +
                   std::to_string(pick(0, 1)));
    } else if (action == 7) {
      // A page cache this small spills pages into the log before the commit
      // and writes some of them again, in place.
      exec(db, "PRAGMA cache_size=" + std::to_string(pick(10, 20)));
      exec(db, "BEGIN; INSERT INTO t (body) SELECT hex(randomblob(300)) FROM (SELECT 1 FROM t LIMIT 200);"
               "UPDATE t SET body = upper(body) WHERE id % 5 = 0; COMMIT;");
      exec(db, "PRAGMA cache_size=-2000");
    } else if (action == 8) {
      ASSERT_EQ(scalar(db, "PRAGMA wal_checkpoint(RESTART)"), 0) << "step " << step;
    } else {
      ASSERT_EQ(scalar(db, "PRAGMA wal_checkpoint(TRUNCATE)"), 0) << "step " << step;
    }
    sqlite3* crashed = open_crash_copy();
    ASSERT_EQ(scalar(crashed, fingerprint), scalar(reader_, fingerprint)) << "step " << step << " action " << action;
    if (step % 25 == 24) {
      EXPECT_EQ(integrity(crashed), "ok") << "step " << step;
    }
    sqlite3_close(crashed);
    std::filesystem::remove_all(root_ + "/crash" + std::to_string(crashes_));
  }
  EXPECT_GT(scalar(reader_, "SELECT COUNT(*) FROM t"), 500);
  sqlite3_close(other);
}

}  // namespace
}  // namespace parley
