// The Store contract: one test body, run against every backend this build
// can reach. SQLite always; PostgreSQL when PARLEY_TEST_DATABASE_URL names a
// server (each test gets a fresh database there; see tests/db/pg.sh).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <tuple>
#include <thread>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include <sqlite3.h>

#include "common/clock.h"
#include "common/ids.h"
#include "common/wait.h"
#include "store/pg_conn.h"
#include "store/pg_schema.h"
#include "store/sqlite_schema.h"
#include "store/pg_store.h"
#include "store/sqlite_store.h"
#include "store_test_support.h"

namespace parley {
namespace {

// The test PostgreSQL's base URL (postgres://user@host:port, no database):
// PARLEY_TEST_DATABASE_URL, else the url file of tests/db/pg.sh's state dir
// PARLEY_TEST_PG_STATE (CTest's parley_pg fixture); empty when neither is set.
std::string pg_base_url() {
  if (const char* url = std::getenv("PARLEY_TEST_DATABASE_URL"); url && *url) return url;
  const char* state = std::getenv("PARLEY_TEST_PG_STATE");
  if (!state || !*state) return "";
  std::ifstream in(std::string(state) + "/url");
  std::string url;
  std::getline(in, url);
  return url;
}

std::vector<std::string> backends() {
  std::vector<std::string> out{"sqlite"};
  if (!pg_base_url().empty()) out.push_back("postgres");
  return out;
}

// A new empty database on the test server; its URL.
Result<std::string> fresh_pg_database() {
  static std::atomic<int> counter{0};
  const std::string base = pg_base_url();
  auto admin = PgConn::open(base + "/postgres");
  if (!admin) return admin.error();
  std::string name = "store_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  (*admin)->run("DROP DATABASE IF EXISTS " + name);
  auto created = (*admin)->run("CREATE DATABASE " + name);
  if (!created.ok()) return internal_error("CREATE DATABASE failed: " + created.message());
  return base + "/" + name;
}

class StoreContract : public StoreFixture, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/parley_store_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    if (GetParam() == "postgres") {
      auto url = fresh_pg_database();
      ASSERT_TRUE(url.ok()) << url.error().message;
      database_url_ = *url;
    }
    reopen();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(root_);
  }
  Result<std::unique_ptr<Store>> open_store() override { return open_store_with(options()); }
  StoreOptions options() const {
    StoreOptions o{root_ + "/data", false, 512, ""};
    o.database_url = database_url_;
    return o;
  }
  Result<std::unique_ptr<Store>> open_store_with(const StoreOptions& o) { return parley::open_store(o); }
  uint64_t commit_count() override {
    if (auto* pg = dynamic_cast<PgStore*>(store_.get())) return pg->commit_count();
    return dynamic_cast<SqliteStore&>(*store_).commit_count();
  }
  // Runs fn on the writer thread inside a batch transaction (holding the writer).
  void run_inside_write(std::function<void()> fn) {
    if (auto* pg = dynamic_cast<PgStore*>(store_.get())) return pg->run_inside_write_for_test(std::move(fn));
    dynamic_cast<SqliteStore&>(*store_).run_inside_write_for_test(std::move(fn));
  }
  // Holds the writer inside a batch transaction (not in a callback, which
  // runs on the completion thread and would not hold it) until the returned
  // function is called: writes queued meanwhile form the next batch together.
  std::function<void()> hold_writer() {
    auto release = std::make_shared<std::promise<void>>();
    std::shared_future<void> released = release->get_future().share();
    auto blocked = std::make_shared<std::promise<void>>();
    auto held = blocked->get_future();
    run_inside_write([blocked, released] {
      blocked->set_value();
      released.wait();
    });
    held.wait();
    return [release] { release->set_value(); };
  }

  std::string root_;
  std::string database_url_;  // empty: SQLite
};

TEST_P(StoreContract, UsersFindAndConflicts) {
  User a = make_user("alice", "+15550001");
  EXPECT_EQ(a.id.size(), 36u);
  EXPECT_GT(a.created_at, 0);
  ASSERT_TRUE(ok(store_->user_by_id(a.id)));
  EXPECT_EQ(ok(store_->user_by_id(a.id))->full_name, "Full alice");
  EXPECT_EQ(ok(store_->user_by_phone("+15550001"))->id, a.id);
  EXPECT_FALSE(ok(store_->user_by_username("nobody")));

  User dup;
  dup.username = "alice";
  dup.role = "member";
  auto r = store_->create_user(dup);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kConflict);
  EXPECT_EQ(r.error().code, "username_taken");

  dup.username = "alice2";
  dup.phone_number = "+15550001";
  r = store_->create_user(dup);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "phone_taken");

  make_user("nophone1");
  make_user("nophone2");  // NULL phones never collide
  EXPECT_EQ(ok(store_->user_count()), 3u);
}

// A number is found, and taken, by its digits (store/phone_key.h); the
// user keeps it as typed.
TEST_P(StoreContract, PhoneNumbersAreOneAccountWhateverTheSpelling) {
  User a = make_user("alice", "+1 555 0100");
  for (const char* spelling : {"+1 555 0100", "+15550100", "1-555-0100", "(1) 555.0100"}) {
    auto found = ok(store_->user_by_phone(spelling));
    ASSERT_TRUE(found) << spelling;
    EXPECT_EQ(found->id, a.id) << spelling;
    EXPECT_EQ(found->phone_number, "+1 555 0100");
  }
  EXPECT_FALSE(ok(store_->user_by_phone("+1 555 01000")));
  EXPECT_FALSE(ok(store_->user_by_phone("alice"))) << "no digits: no number";
  EXPECT_FALSE(ok(store_->user_by_phone("")));

  User dup;
  dup.username = "alice2";
  dup.role = "member";
  for (const char* spelling : {"15550100", "+1-555-0100", "+1 555 0100"}) {
    dup.phone_number = spelling;
    auto r = store_->create_user(dup);
    ASSERT_FALSE(r.ok()) << spelling;
    EXPECT_EQ(r.error().code, "phone_taken") << spelling;
  }
  User b = make_user("bob", "+1 555 0101");
  EXPECT_EQ(ok(store_->user_by_phone("15550101"))->id, b.id);
}

// Schema version 8 (SQLite) / 4 (PostgreSQL) kept numbers as typed, so one
// number may be registered twice under two spellings. Migrating keys every
// number; of such a pair the older account keeps the key, the other keeps
// its number and its username login, and nothing is lost.
TEST_P(StoreContract, MigrationKeysStoredPhoneNumbersAndKeepsCollisionsApart) {
  store_.reset();
  const char* kRows =
      "INSERT INTO users (id, username, full_name, phone_number, role, password_hash, created_at) VALUES "
      "('u-newer', 'newer', 'N', '+15550100', 'member', '', 2000), "
      "('u-older', 'older', 'O', '+1 555 0100', 'member', '', 1000), "
      "('u-other', 'other', 'X', '1-555-0199', 'member', '', 1500), "
      "('u-none', 'none', 'Z', NULL, 'member', '', 1)";
  if (GetParam() == "postgres") {
    auto url = fresh_pg_database();
    ASSERT_TRUE(url.ok()) << url.error().message;
    database_url_ = *url;
    auto c = PgConn::open(database_url_);
    ASSERT_TRUE(c.ok()) << c.error().message;
    ASSERT_TRUE(migrate_pg_schema_to(**c, 4).ok());
    auto r = (*c)->run(kRows);
    ASSERT_TRUE(r.ok()) << r.message();
  } else {
    std::filesystem::remove_all(root_ + "/data");
    std::filesystem::create_directories(root_ + "/data");
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((root_ + "/data/parley.db").c_str(), &db), SQLITE_OK);
    ASSERT_TRUE(migrate_schema_to(db, 8).ok());
    EXPECT_EQ(sqlite3_exec(db, kRows, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  reopen();

  EXPECT_EQ(ok(store_->user_count()), 4u);
  EXPECT_EQ(ok(store_->user_by_phone("15550100"))->id, "u-older") << "the older account keeps the number";
  EXPECT_EQ(ok(store_->user_by_phone("+1 (555) 0199"))->id, "u-other");
  auto newer = ok(store_->user_by_username("newer"));
  ASSERT_TRUE(newer);
  EXPECT_EQ(newer->phone_number, "+15550100") << "kept, as typed";
  EXPECT_EQ(ok(store_->user_by_id("u-older"))->phone_number, "+1 555 0100");

  User dup;
  dup.username = "third";
  dup.role = "member";
  for (const char* spelling : {"+1-555-0100", "+15550100", "15550199"}) {
    dup.phone_number = spelling;
    auto r = store_->create_user(dup);
    ASSERT_FALSE(r.ok()) << spelling;
    EXPECT_EQ(r.error().code, "phone_taken") << spelling;
  }
  reopen();  // migrated once: opening again changes nothing
  EXPECT_EQ(ok(store_->user_by_phone("+1 555 0100"))->id, "u-older");
}

// A member who leaves, or is removed, leaves their read and delivered marks
// with the thread (schema v10 / v6): the thread and the thread list carry
// them, the member's return (a new participant row at the thread's last
// seq) leaves them as they are, and a second departure keeps a second row,
// with when that membership began (schema v12 / v9).
TEST_P(StoreContract, RemovalKeepsTheMembersMarks) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id, c.id});
  ASSERT_TRUE(send(t.id, a.id, "one").ok());
  ASSERT_TRUE(send(t.id, a.id, "two").ok());
  ASSERT_TRUE(send(t.id, a.id, "three").ok());
  ASSERT_TRUE(store_->mark_read(t.id, b.id, 1).ok());
  ASSERT_TRUE(store_->mark_delivered(t.id, b.id, 2).ok());
  EXPECT_TRUE(ok(store_->thread(t.id))->former_marks.empty());

  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, b.id, {}, {}}).ok());
  auto marks = [&](const std::vector<FormerMarks>& all, const std::string& user_id) {
    std::vector<std::pair<int64_t, int64_t>> out;
    for (const auto& f : all)
      if (f.user_id == user_id) out.emplace_back(f.last_read_seq, f.last_delivered_seq);
    std::sort(out.begin(), out.end());
    return out;
  };
  using Marks = std::vector<std::pair<int64_t, int64_t>>;
  auto after = ok(store_->thread(t.id));
  ASSERT_TRUE(after);
  EXPECT_EQ(marks(after->former_marks, b.id), (Marks{{1, 2}}));
  EXPECT_EQ(after->participants.size(), 2u) << "not a participant";
  auto list = ok(store_->threads_for_user(a.id));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(marks(list[0].thread.former_marks, b.id), (Marks{{1, 2}}));

  ASSERT_EQ(ok(store_->add_participants(t.id, {b.id})), std::vector<std::string>{b.id});
  EXPECT_EQ(marks(ok(store_->thread(t.id))->former_marks, b.id), (Marks{{1, 2}}));
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, b.id, {}, {}}).ok());
  EXPECT_EQ(marks(ok(store_->thread(t.id))->former_marks, b.id), (Marks{{1, 2}, {3, 3}}))
      << "rejoined at the last seq, then left again: one row per membership";
  reopen();
  auto rows = ok(store_->thread(t.id))->former_marks;
  EXPECT_EQ(marks(rows, b.id), (Marks{{1, 2}, {3, 3}}));
  std::vector<Micros> joined;
  for (const auto& f : rows)
    if (f.user_id == b.id) joined.push_back(f.joined_at);
  ASSERT_EQ(joined.size(), 2u);
  EXPECT_NE(joined[0], joined[1]) << "each membership with when it began";
  EXPECT_GT(std::min(joined[0], joined[1]), 0);
  EXPECT_TRUE(marks(ok(store_->thread(t.id))->former_marks, c.id).empty());

  // The notice stored for the leaver is theirs, but reads nothing for them.
  ASSERT_TRUE(store_->remove_participant_and_wait(
                        {t.id, c.id, {}, AppendRequest{t.id, c.id, "carol left", "system", ""}})
                  .ok());
  EXPECT_EQ(marks(ok(store_->thread(t.id))->former_marks, c.id), (Marks{{0, 0}}));
}

// A store from before former_marks (SQLite v9, PostgreSQL v5) migrates with
// its threads and marks as they were, and keeps marks from then on.
TEST_P(StoreContract, MigrationToFormerMarksKeepsThreadsAndMarks) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  ASSERT_TRUE(send(t.id, a.id, "one").ok());
  ASSERT_TRUE(send(t.id, a.id, "two").ok());
  ASSERT_TRUE(store_->mark_read(t.id, b.id, 1).ok());
  store_.reset();
  if (GetParam() == "postgres") {
    auto c = PgConn::open(database_url_);
    ASSERT_TRUE(c.ok()) << c.error().message;
    auto r = (*c)->run("ALTER TABLE threads DROP COLUMN member_version; DROP TABLE owed_pushes; DROP TABLE former_marks; "
                       "DELETE FROM schema_migrations WHERE version >= 6");
    ASSERT_TRUE(r.ok()) << r.message();
  } else {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((root_ + "/data/parley.db").c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, "DROP TABLE owed_pushes; DROP TABLE former_marks; PRAGMA user_version = 9", nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  reopen();
  auto before = ok(store_->thread(t.id));
  ASSERT_TRUE(before);
  ASSERT_EQ(before->participants.size(), 2u);
  for (const auto& p : before->participants) EXPECT_EQ(p.last_read_seq, p.user_id == b.id ? 1 : 2) << p.user_id;
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10)).size(), 2u);
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, b.id, {}, {}}).ok());
  auto after = ok(store_->thread(t.id));
  ASSERT_EQ(after->former_marks.size(), 1u);
  EXPECT_EQ(after->former_marks[0].user_id, b.id);
  EXPECT_EQ(after->former_marks[0].last_read_seq, 1);
}

TEST_P(StoreContract, SearchUsersEscapesWildcardsAndIgnoresCase) {
  make_user("a_b");
  make_user("axb");
  make_user("100%real");
  make_user("Alice");
  auto names = [](const std::vector<User>& us) {
    std::vector<std::string> out;
    for (const auto& u : us) out.push_back(u.username);
    return out;
  };
  EXPECT_EQ(names(ok(store_->search_users("_", 10))), std::vector<std::string>{"a_b"});
  EXPECT_EQ(names(ok(store_->search_users("%", 10))), std::vector<std::string>{"100%real"});
  EXPECT_EQ(names(ok(store_->search_users("ALICE", 10))), std::vector<std::string>{"Alice"});
  // full_name matches too ("Full ..."), ordered by username, limited.
  EXPECT_EQ(names(ok(store_->search_users("full", 2))), (std::vector<std::string>{"100%real", "Alice"}));
  // Only ASCII letters match either case, on every store (SQLite's LIKE).
  make_user("\xc3\x89mile");  // "Émile"
  EXPECT_EQ(names(ok(store_->search_users("\xc3\x89MILE", 10))), std::vector<std::string>{"\xc3\x89mile"});
  EXPECT_TRUE(ok(store_->search_users("\xc3\xa9mile", 10)).empty()) << "é does not match É";
}

TEST_P(StoreContract, SearchUsersPutsTheExactUsernameFirst) {
  for (const char* name : {"alee0", "alee1", "alee2", "lee", "leeds"}) make_user(name);
  auto first = [&](const char* q, int limit) {
    auto found = ok(store_->search_users(q, limit));
    return found.empty() ? std::string() : found[0].username;
  };
  // Past the limit, the user named in full would otherwise be cut off.
  EXPECT_EQ(first("lee", 2), "lee");
  EXPECT_EQ(first("LEE", 2), "lee");
  EXPECT_EQ(ok(store_->search_users("lee", 10)).size(), 5u);
  EXPECT_EQ(first("ale", 10), "alee0") << "no exact match: by username";
}

TEST_P(StoreContract, RecentUsersComeMostRecentlySeenFirstAndLimited) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  store_->set_last_seen(c.id, 2000);
  store_->set_last_seen(a.id, 3000);
  auto names = [](const std::vector<User>& us) {
    std::vector<std::string> out;
    for (const auto& u : us) out.push_back(u.username);
    return out;
  };
  EXPECT_EQ(names(ok(store_->recent_users(10))), (std::vector<std::string>{"alice", "carol", "bob"}));
  EXPECT_EQ(names(ok(store_->recent_users(2))), (std::vector<std::string>{"alice", "carol"}));
  EXPECT_TRUE(ok(store_->recent_users(0)).empty());
  EXPECT_EQ(ok(store_->recent_users(1)).at(0).id, a.id);
}

TEST_P(StoreContract, DirectThreadIsUniquePerPairInBothOrders) {
  User a = make_user("alice");
  User b = make_user("bob");
  auto first = make_direct(a.id, b.id);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->created);
  EXPECT_EQ(first->thread.participants.size(), 2u);
  auto again = make_direct(b.id, a.id);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->thread.id, first->thread.id);

  auto self = make_direct(a.id, a.id);
  ASSERT_FALSE(self.ok());
  EXPECT_EQ(self.error().kind, ErrorKind::kBadInput);
  auto ghost = make_direct(a.id, "00000000-0000-4000-8000-000000000000");
  ASSERT_FALSE(ghost.ok());
  EXPECT_EQ(ghost.error().code, "user_not_found");
}

// contacts_of_each answers, per user and in order, what contacts() answers
// for that user: a burst of presence announcements reads them in one go.
TEST_P(StoreContract, ContactsOfEachMatchContactsInOrder) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  User d = make_user("dave");  // shares no thread
  ASSERT_TRUE(make_direct(a.id, b.id).ok());
  make_group({c.id, a.id, b.id});
  const std::string unknown = "00000000-0000-4000-8000-000000000000";
  const std::vector<std::string> asked{a.id, c.id, d.id, unknown, a.id};
  auto each = store_->contacts_of_each(asked);
  ASSERT_TRUE(each.ok()) << each.error().message;
  ASSERT_EQ(each->size(), asked.size());
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  for (size_t i = 0; i < asked.size(); ++i) {
    auto one = store_->contacts(asked[i]);
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(sorted((*each)[i]), sorted(*one)) << "user " << i;
  }
  EXPECT_EQ(sorted((*each)[0]), sorted({b.id, c.id}));
  EXPECT_EQ(sorted((*each)[1]), sorted({a.id, b.id}));
  EXPECT_TRUE((*each)[2].empty());
  EXPECT_TRUE((*each)[3].empty());
  auto none = store_->contacts_of_each({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

// openers(): who created a thread the user is in and is still in it: the
// users whose phone number the user is shown.
TEST_P(StoreContract, OpenersAreCreatorsStillInASharedThread) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  User d = make_user("dave");
  ASSERT_TRUE(make_direct(a.id, b.id).ok());  // alice opened it
  Thread g = make_group({c.id, a.id, b.id});  // carol opened it
  make_group({d.id, a.id});                   // dave opened it
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  auto of = [&](const std::string& id) {
    auto r = store_->openers(id);
    EXPECT_TRUE(r.ok());
    return r.ok() ? sorted(*r) : std::vector<std::string>{};
  };
  EXPECT_EQ(of(b.id), sorted({a.id, c.id})) << "bob: alice's direct thread and carol's group";
  EXPECT_EQ(of(a.id), sorted({c.id, d.id})) << "alice: not bob, whose thread she opened";
  EXPECT_TRUE(of(c.id).empty()) << "carol opened her only thread";
  ASSERT_TRUE(store_->remove_participant_and_wait({g.id, c.id, {}, {}}).ok());
  EXPECT_EQ(of(a.id), sorted({d.id})) << "carol left the group she opened";
  EXPECT_EQ(of(b.id), sorted({a.id}));
}

TEST_P(StoreContract, ThreadsParticipantsAndMembers) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id});
  auto members = ok(store_->thread_members(t.id));
  ASSERT_TRUE(members);
  EXPECT_EQ(members->user_ids.size(), 2u);
  EXPECT_EQ(members->admin_ids, std::vector<std::string>{a.id});

  auto added = store_->add_participants(t.id, {b.id, c.id});
  ASSERT_TRUE(added.ok());
  EXPECT_EQ(*added, std::vector<std::string>{c.id});  // bob was in already
  EXPECT_EQ(ok(store_->thread(t.id))->participants.size(), 3u);

  EXPECT_TRUE(store_->remove_participant_and_wait({t.id, c.id, {}, {}}).ok());
  auto gone = store_->remove_participant_and_wait({t.id, c.id, {}, {}});
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, "not_a_participant");
  EXPECT_FALSE(ok(store_->thread("no-such-thread")));
}

// An addition's notices are stored in its transaction, after the members:
// each added member's first message, never an addition without its record,
// and a notice the store refuses takes the addition back with it.
TEST_P(StoreContract, AnAdditionAndItsNoticesCommitTogether) {
  User a = make_user("alice"), b = make_user("bob"), c = make_user("carol"), d = make_user("dave"),
       e = make_user("erin");
  Thread t = make_group({a.id, b.id});
  send(t.id, b.id, "before");
  auto add = [&](Addition addition) {
    auto promise = std::make_shared<std::promise<Result<Added>>>();
    auto future = promise->get_future();
    store_->add_participants(std::move(addition), [promise](Result<Added> r) { promise->set_value(std::move(r)); });
    return future.get();
  };
  auto notice = [&](const std::string& sender) {
    return [&t, sender](const std::string& user_id) { return AppendRequest{t.id, sender, "added " + user_id, "system", ""}; };
  };
  auto added = ok(add({t.id, {b.id, c.id}, notice(a.id)}));
  EXPECT_EQ(added.user_ids, std::vector<std::string>{c.id}) << "bob was in already: no notice for him";
  ASSERT_EQ(added.notices.size(), 1u);
  EXPECT_EQ(added.notices[0].content, "added " + c.id);
  EXPECT_EQ(added.notices[0].seq, 2);
  auto members = ok(store_->thread_members(t.id));
  ASSERT_TRUE(members && members->joined_at.size() == 3u);
  EXPECT_LE(members->joined_at[2], added.notices[0].created_at) << "the notice is carol's (stored from her joining on)";
  EXPECT_GT(members->joined_at[2], ok(store_->messages_after(t.id, 0, 10))[0].created_at) << "'before' is not";

  // erin is no member: a notice sent as her is refused, and dave is not
  // added without it.
  auto refused = add({t.id, {d.id}, notice(e.id)});
  EXPECT_FALSE(refused.ok());
  members = ok(store_->thread_members(t.id));
  ASSERT_TRUE(members);
  EXPECT_EQ(members->user_ids.size(), 3u) << "dave was not added without his notice";
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10)).size(), 2u);
}

// Who changes the members is checked again as the change commits: an admin
// removed (or a member never admin) whose request was checked before cannot
// add or remove anyone, themselves included; anyone may leave.
TEST_P(StoreContract, MembershipChangesNeedAnAdminAsTheyCommit) {
  User a = make_user("alice"), b = make_user("bob"), c = make_user("carol"), d = make_user("dave");
  Thread t = make_group({a.id, b.id, c.id});  // alice is the admin
  auto add = [&](std::vector<std::string> ids, const std::string& actor) {
    return wait_for_callback<Result<Added>>([&](AdditionCallback done) {
      store_->add_participants(Addition{t.id, std::move(ids), {}, actor}, std::move(done));
    });
  };
  auto member_count = [&] { return ok(store_->thread_members(t.id))->user_ids.size(); };
  auto by_member = add({d.id}, b.id);
  ASSERT_FALSE(by_member.ok());
  EXPECT_EQ(by_member.error().code, "not_admin");
  EXPECT_EQ(member_count(), 3u);
  auto removal_by_member = store_->remove_participant_and_wait({t.id, c.id, {}, {}, b.id});
  ASSERT_FALSE(removal_by_member.ok());
  EXPECT_EQ(removal_by_member.error().code, "not_admin");
  EXPECT_EQ(member_count(), 3u);
  EXPECT_TRUE(store_->remove_participant_and_wait({t.id, c.id, {}, {}, c.id}).ok()) << "anyone may leave";
  EXPECT_EQ(ok(add({c.id}, a.id)).user_ids.size(), 1u) << "the admin adds";

  // bob made admin when alice leaves; alice, out, cannot add herself back.
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, a.id, {}, {}, a.id}).ok());
  auto self_back = add({a.id}, a.id);
  ASSERT_FALSE(self_back.ok());
  EXPECT_EQ(self_back.error().code, "not_admin");
  auto removal_by_former = store_->remove_participant_and_wait({t.id, c.id, {}, {}, a.id});
  ASSERT_FALSE(removal_by_former.ok());
  EXPECT_EQ(member_count(), 2u) << "bob and carol";
}

// Edits and deletions: the sender, or for a deletion an admin too, and a
// participant either way, as the change commits.
TEST_P(StoreContract, MessageChangesNeedTheirRightsAsTheyCommit) {
  User a = make_user("alice"), b = make_user("bob"), c = make_user("carol");
  Thread t = make_group({a.id, b.id, c.id});  // alice is the admin
  auto bobs_sent = send(t.id, b.id, "bob's");
  auto carols_sent = send(t.id, c.id, "carol's");
  ASSERT_TRUE(bobs_sent.ok() && carols_sent.ok());
  const Message bobs_message = bobs_sent->message, carols_message = carols_sent->message;
  auto refused = [](const Result<Message>& r) { return !r.ok() && r.error().code == "not_allowed"; };
  EXPECT_TRUE(refused(store_->edit_message(bobs_message.id, c.id, "not hers", 1))) << "only the sender edits";
  EXPECT_TRUE(refused(store_->edit_message(bobs_message.id, a.id, "nor the admin's", 1)));
  EXPECT_TRUE(refused(store_->delete_message(bobs_message.id, c.id))) << "a member deletes only their own";
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10))[0].content, "bob's") << "nothing changed";
  EXPECT_EQ(ok(store_->edit_message(bobs_message.id, b.id, "bob's, edited", 1)).content, "bob's, edited");
  EXPECT_TRUE(ok(store_->delete_message(carols_message.id, a.id)).deleted) << "an admin deletes anyone's";

  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, b.id, {}, {}}).ok());
  EXPECT_TRUE(refused(store_->edit_message(bobs_message.id, b.id, "after leaving", 2))) << "a former member";
  EXPECT_TRUE(refused(store_->delete_message(bobs_message.id, b.id)));
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, a.id, {}, {}}).ok());
  EXPECT_TRUE(refused(store_->delete_message(bobs_message.id, a.id))) << "a former admin";
  auto kept = ok(store_->messages_after(t.id, 0, 10))[0];
  EXPECT_EQ(kept.content, "bob's, edited");
  EXPECT_FALSE(kept.deleted);
  auto unknown = store_->delete_message("00000000-0000-0000-0000-000000000000", a.id);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, "message_not_found");
}

// Members are written as one list (one statement on PostgreSQL): every
// one stored with its flags, the added ones reported once each in the order
// asked, and a list naming anyone unknown stores none of it.
TEST_P(StoreContract, GroupsAndAdditionsOfManyMembersAtOnce) {
  std::vector<User> users;
  for (int i = 0; i < 60; ++i) users.push_back(make_user("member" + std::to_string(i)));
  std::vector<std::string> first_fifty;
  for (int i = 0; i < 50; ++i) first_fifty.push_back(users[i].id);
  Thread t = make_group(first_fifty, "class");
  auto members = ok(store_->thread_members(t.id));
  ASSERT_TRUE(members);
  EXPECT_EQ(members->user_ids.size(), 50u);
  EXPECT_EQ(members->admin_ids, std::vector<std::string>{users[0].id});
  send(t.id, users[1].id, "before they came");

  const auto& u = users;
  auto added = ok(store_->add_participants(t.id, {u[50].id, u[3].id, u[51].id, u[50].id, u[52].id}));
  EXPECT_EQ(added, (std::vector<std::string>{u[50].id, u[51].id, u[52].id}));
  auto stored = ok(store_->thread(t.id));
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->participants.size(), 53u);
  for (const auto& p : stored->participants) {
    bool is_new = p.user_id == u[50].id || p.user_id == u[51].id || p.user_id == u[52].id;
    if (is_new) {
      EXPECT_EQ(p.last_read_seq, 1) << "a new member has read what was said before";
    }
    EXPECT_EQ(p.is_admin, p.user_id == u[0].id);
  }

  for (const std::string ghost : {"00000000-0000-4000-8000-00000000dead", "a\"b\\c,{}"}) {
    auto haunted = store_->add_participants(t.id, {u[53].id, ghost});
    ASSERT_FALSE(haunted.ok()) << ghost;
    EXPECT_EQ(haunted.error().code, "user_not_found");
  }
  EXPECT_EQ(ok(store_->thread(t.id))->participants.size(), 53u) << "nothing of a refused list is stored";
}

// A group is never left without an admin while it has members: the member
// there longest (then the lowest user id) takes over in the removal's own
// transaction, announced just before it by a message from the one leaving.
TEST_P(StoreContract, RemovingTheLastAdminPromotesTheLongestStandingMember) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  User d = make_user("dave");
  Thread t = make_group({a.id, c.id, b.id});  // bob and carol joined together
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(store_->add_participants(t.id, {d.id}).ok());
  auto text = [](const std::string& name) { return name + " took over"; };
  auto removed = store_->remove_participant_and_wait({t.id, a.id, text, {}});
  ASSERT_TRUE(removed.ok()) << removed.error().code;
  const std::string first = std::min(b.id, c.id);
  EXPECT_EQ(removed->new_admin_id, first);
  ASSERT_TRUE(removed->promotion);
  EXPECT_EQ(removed->promotion->sender_id, a.id);
  EXPECT_EQ(removed->promotion->message_type, "system");
  EXPECT_EQ(removed->promotion->content, (first == b.id ? "bob" : "carol") + std::string(" took over"));
  EXPECT_EQ(removed->promotion->seq, 1);
  EXPECT_EQ(ok(store_->thread_members(t.id))->admin_ids, std::vector<std::string>{first});

  // An admin remains: nobody else is promoted, nothing is announced.
  const std::string second = first == b.id ? c.id : b.id;
  auto again = store_->remove_participant_and_wait({t.id, second, text, {}});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->new_admin_id, "");
  EXPECT_FALSE(again->promotion);
  // The admin leaves the last other member: they take over; without a text, silently.
  auto last = store_->remove_participant_and_wait({t.id, first, {}, {}});
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->new_admin_id, d.id);
  EXPECT_FALSE(last->promotion);
  EXPECT_EQ(ok(store_->thread(t.id))->last_seq, 1);
  auto empty = store_->remove_participant_and_wait({t.id, d.id, text, {}});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->new_admin_id, "") << "nobody is left to promote";
  auto send_after = send(t.id, a.id, "gone");
  EXPECT_FALSE(send_after.ok());
}

// The notice of a removal and the removal are one transaction: nothing
// commits between them, and a notice that cannot be stored (its author is
// no longer a participant) removes nobody.
TEST_P(StoreContract, RemovalNoticeIsStoredWithTheRemoval) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id, c.id});
  ASSERT_TRUE(send(t.id, b.id, "hello").ok());
  auto removed = store_->remove_participant_and_wait(
      {t.id, c.id, {}, AppendRequest{t.id, a.id, "alice removed carol", "system", ""}});
  ASSERT_TRUE(removed.ok()) << removed.error().code;
  ASSERT_TRUE(removed->notice);
  EXPECT_EQ(removed->notice->seq, 2);
  EXPECT_EQ(removed->notice->content, "alice removed carol");
  EXPECT_EQ(ok(store_->thread_members(t.id))->user_ids.size(), 2u);
  auto refused = store_->remove_participant_and_wait(
      {t.id, b.id, {}, AppendRequest{t.id, c.id, "carol removed bob", "system", ""}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, "forbidden");
  EXPECT_EQ(ok(store_->thread_members(t.id))->user_ids.size(), 2u) << "bob is still in";
  EXPECT_EQ(ok(store_->thread(t.id))->last_seq, 2) << "nothing stored";
  ASSERT_TRUE(send(t.id, b.id, "gapless").ok());
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10)).back().seq, 3);
}

// A write that names a user or thread that does not exist is refused and
// stores nothing. The SQLite writer runs without foreign keys, so these
// checks are the store's own; `parley check` would report any orphan.
TEST_P(StoreContract, WritesNamingMissingUsersOrThreadsStoreNothing) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  const std::string ghost = "00000000-0000-4000-8000-00000000dead";

  auto from_ghost = send(t.id, ghost, "boo");
  ASSERT_FALSE(from_ghost.ok());
  EXPECT_EQ(from_ghost.error().code, "user_not_found");
  auto to_nowhere = send("00000000-0000-4000-8000-00000000beef", a.id, "hello?");
  ASSERT_FALSE(to_nowhere.ok());
  EXPECT_EQ(to_nowhere.error().code, "thread_not_found");
  auto add_ghost = store_->add_participants(t.id, {ghost});
  ASSERT_FALSE(add_ghost.ok());
  EXPECT_EQ(add_ghost.error().code, "user_not_found");
  Thread with_ghost;
  with_ghost.type = ThreadType::kGroup;
  with_ghost.title = "haunted";
  with_ghost.created_by = a.id;
  with_ghost.participants = {member(a.id), member(ghost)};
  auto haunted = store_->create_thread(with_ghost);
  ASSERT_FALSE(haunted.ok());
  EXPECT_EQ(haunted.error().code, "user_not_found");

  auto stored = ok(store_->thread(t.id));
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->participants.size(), 2u);
  EXPECT_EQ(stored->last_seq, 0);
  EXPECT_TRUE(ok(store_->messages_after(t.id, 0, 10)).empty());
  EXPECT_TRUE(ok(store_->threads_for_user(ghost)).empty());
  // The next real message still gets seq 1: the refused ones took no seq.
  auto real = send(t.id, a.id, "hi");
  ASSERT_TRUE(real.ok());
  EXPECT_EQ(real->message.seq, 1);
}

TEST_P(StoreContract, ConcurrentAppendsAreGaplessAndShareCommits) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t1 = make_group({a.id, b.id}, "one");
  Thread t2 = make_group({a.id, b.id}, "two");
  constexpr int kWriters = 4, kPerWriter = 250;
  const uint64_t commits_before = commit_count();

  std::mutex mu;
  std::map<std::string, std::vector<int64_t>> seqs;
  Countdown pending(kWriters * kPerWriter);
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < kPerWriter; ++i) {
        const Thread& t = (i % 2) ? t1 : t2;
        store_->append(AppendRequest{t.id, w % 2 ? a.id : b.id, "x", "text", ""}, [&](Result<AppendResult> r) {
          if (r.ok()) {
            std::lock_guard lock(mu);
            seqs[r->message.thread_id].push_back(r->message.seq);
          }
          pending.done();
        });
      }
    });
  }
  for (auto& w : writers) w.join();
  pending.wait();

  for (const Thread* t : {&t1, &t2}) {
    auto& got = seqs[t->id];
    std::sort(got.begin(), got.end());
    ASSERT_EQ(got.size(), 500u);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], static_cast<int64_t>(i + 1));
    EXPECT_EQ(ok(store_->thread(t->id))->last_seq, 500);
    EXPECT_EQ(ok(store_->messages_after(t->id, 0, 1000)).size(), 500u);
  }
  const uint64_t commits = commit_count() - commits_before;
  EXPECT_GE(commits, 1u);
  EXPECT_LT(commits, 1000u);  // group commit: many appends per transaction
}

TEST_P(StoreContract, ClientMsgIdMakesAppendIdempotent) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t1 = make_group({a.id, b.id});
  Thread t2 = make_group({a.id, b.id});
  auto first = send(t1.id, a.id, "hello", "c-1");
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(first->duplicate);
  EXPECT_EQ(first->message.sender.username, "alice");

  auto again = send(t1.id, a.id, "hello (retry)", "c-1");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->message.id, first->message.id);
  EXPECT_EQ(again->message.seq, first->message.seq);
  EXPECT_EQ(again->message.content, "hello");  // the original, not the retry
  EXPECT_EQ(again->message.sender.username, "alice");

  auto other_sender = send(t1.id, b.id, "hi", "c-1");
  ASSERT_TRUE(other_sender.ok());
  EXPECT_FALSE(other_sender->duplicate);
  EXPECT_EQ(other_sender->message.seq, 2);
  auto other_thread = send(t2.id, a.id, "hi", "c-1");
  ASSERT_TRUE(other_thread.ok());
  EXPECT_FALSE(other_thread->duplicate);
  auto no_id = send(t1.id, a.id, "no id");
  auto no_id2 = send(t1.id, a.id, "no id");
  EXPECT_FALSE(no_id->duplicate);
  EXPECT_FALSE(no_id2->duplicate);  // empty client_msg_id never dedups
  EXPECT_EQ(ok(store_->thread(t1.id))->last_seq, 4);
}

TEST_P(StoreContract, FailingOpInBatchDoesNotFailTheOthers) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});

  send(t.id, a.id, "first");
  // The next three appends queue up behind the held writer and are committed
  // together as one batch.
  auto release = hold_writer();
  const uint64_t commits_before = commit_count();  // the held batch has not committed yet

  std::vector<std::optional<Result<AppendResult>>> results(3);
  Countdown pending(3);
  const std::string targets[] = {t.id, "no-such-thread", t.id};
  for (int i = 0; i < 3; ++i) {
    store_->append(AppendRequest{targets[i], b.id, "m" + std::to_string(i), "text", ""},
                   [&, i](Result<AppendResult> r) {
                     results[i].emplace(std::move(r));
                     pending.done();
                   });
  }
  release();
  pending.wait();

  EXPECT_EQ(commit_count() - commits_before, 2u);  // the held batch, then all three in one commit
  ASSERT_TRUE(results[0]->ok());
  EXPECT_EQ((*results[0])->message.seq, 2);
  ASSERT_FALSE(results[1]->ok());
  EXPECT_EQ(results[1]->error().code, "thread_not_found");
  ASSERT_TRUE(results[2]->ok());
  EXPECT_EQ((*results[2])->message.seq, 3);
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10)).size(), 3u);
}

// An exception out of a batch (in the store's own code, or an op that does
// not catch its own) fails the whole batch and leaves nothing of it: its
// transaction must not stay open for the next batch to commit or trip over.
TEST_P(StoreContract, ABatchThatThrowsLeavesNothingAndTheNextCommits) {
  User a = make_user("alice");
  Thread t = make_group({a.id});
  auto release = hold_writer();
  // Queued behind the held batch, so the append and the throw share one batch.
  std::optional<Result<AppendResult>> lost;
  Countdown pending(1);
  store_->append(AppendRequest{t.id, a.id, "in the batch that throws", "text", "k-lost"},
                 [&](Result<AppendResult> r) {
                   lost.emplace(std::move(r));
                   pending.done();
                 });
  run_inside_write([] { throw std::runtime_error("thrown inside the batch"); });
  release();
  pending.wait();
  ASSERT_FALSE(lost->ok()) << "the whole batch failed";

  auto next = send(t.id, a.id, "after", "k-next");
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_EQ(next->message.seq, 1) << "the failed batch took no seq";
  auto stored = ok(store_->messages_after(t.id, 0, 10));
  ASSERT_EQ(stored.size(), 1u) << "the failed batch's append was not committed by the next batch";
  EXPECT_EQ(stored[0].content, "after");
  auto retry = send(t.id, a.id, "in the batch that throws", "k-lost");
  ASSERT_TRUE(retry.ok());
  EXPECT_FALSE(retry->duplicate) << "a retry of the failed append stores it";
  EXPECT_EQ(retry->message.seq, 2);
}

// A removal commits after the caller checked membership (on another node,
// or queued ahead of the append on this one): the store itself must refuse
// the removed member's next message, and still answer a retry of an earlier one.
TEST_P(StoreContract, AppendFromARemovedParticipantIsRefused) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  ASSERT_TRUE(send(t.id, b.id, "while a member", "k1").ok());
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, b.id, {}, {}}).ok());
  auto after = send(t.id, b.id, "after removal");
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code, "forbidden");
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10)).size(), 1u) << "nothing stored";
  auto retry = send(t.id, b.id, "while a member", "k1");
  ASSERT_TRUE(retry.ok());
  EXPECT_TRUE(retry->duplicate);
  EXPECT_EQ(retry->message.seq, 1);
  auto next = send(t.id, a.id, "still gapless");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->message.seq, 2);
}

TEST_P(StoreContract, MessagesAfterAndBeforePage) {
  User a = make_user("alice");
  Thread t = make_group({a.id});
  for (int i = 1; i <= 10; ++i) send(t.id, a.id, std::to_string(i));
  auto seqs = [](const std::vector<Message>& ms) {
    std::vector<int64_t> out;
    for (const auto& m : ms) out.push_back(m.seq);
    return out;
  };
  EXPECT_EQ(seqs(ok(store_->messages_after(t.id, 0, 3))), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(seqs(ok(store_->messages_after(t.id, 8, 5))), (std::vector<int64_t>{9, 10}));
  EXPECT_EQ(seqs(ok(store_->messages_before(t.id, kAllSeqs, 3))), (std::vector<int64_t>{8, 9, 10}));
  EXPECT_TRUE(ok(store_->messages_before(t.id, 0, 3)).empty());
  EXPECT_TRUE(ok(store_->messages_before(t.id, 1, 3)).empty());
  EXPECT_EQ(seqs(ok(store_->messages_before(t.id, 8, 3))), (std::vector<int64_t>{5, 6, 7}));
  EXPECT_EQ(seqs(ok(store_->messages_before(t.id, 2, 5))), (std::vector<int64_t>{1}));
  EXPECT_TRUE(ok(store_->messages_after(t.id, 0, -1)).empty());  // never "no limit"
  auto m = ok(store_->message(ok(store_->messages_after(t.id, 4, 1)).front().id));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->content, "5");
  EXPECT_EQ(m->sender.username, "alice");
}

// A participant's page: the messages and their membership from one read,
// refused to anyone not in the thread when it is read.
TEST_P(StoreContract, MemberPageIsReadWithTheMembership) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id});
  for (int i = 1; i <= 4; ++i) send(t.id, a.id, std::to_string(i));
  auto seqs = [](const MemberPage& p) {
    std::vector<int64_t> out;
    for (const auto& m : p.messages) out.push_back(m.seq);
    return out;
  };
  auto members = ok(store_->thread_members(t.id));
  ASSERT_TRUE(members);
  const auto at = std::find(members->user_ids.begin(), members->user_ids.end(), b.id) - members->user_ids.begin();
  auto after = ok(store_->member_page(b.id, PageQuery{t.id, 0, kAllSeqs, 3}));
  EXPECT_EQ(seqs(after), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(after.joined_at, members->joined_at[static_cast<size_t>(at)]);
  EXPECT_EQ(seqs(ok(store_->member_page(b.id, PageQuery{t.id, -1, kAllSeqs, 2}))), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(seqs(ok(store_->member_page(b.id, PageQuery{t.id, -1, 3, 5}))), (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(ok(store_->member_page(b.id, PageQuery{t.id, 4, kAllSeqs, 5})).messages.empty());

  auto refused = [&](const std::string& user_id, const std::string& thread_id) {
    auto p = store_->member_page(user_id, PageQuery{thread_id, 0, kAllSeqs, 10});
    return !p.ok() && p.error().code == "not_a_participant";
  };
  EXPECT_TRUE(refused(c.id, t.id)) << "never a member";
  EXPECT_TRUE(refused(b.id, new_uuid())) << "no such thread";
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, b.id, {}, {}}).ok());
  send(t.id, a.id, "after the removal");
  EXPECT_TRUE(refused(b.id, t.id)) << "removed";
  ASSERT_TRUE(store_->add_participants(t.id, {b.id}).ok());
  auto back = ok(store_->member_page(b.id, PageQuery{t.id, 0, kAllSeqs, 10}));
  EXPECT_GT(back.joined_at, after.joined_at) << "the joined_at of the new membership";
  EXPECT_EQ(back.messages.size(), 5u) << "history, as for any member";
}

// A former member reads, with former_too, what each of their memberships
// was sent: what was said during it, up to the last notice of its removal
// (schema v13 / v10), never past it, and only after_seq pages. A removal without a notice records no
// end, and reads nothing.
TEST_P(StoreContract, AFormerMemberReadsUpToTheirRemovalsNotice) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  User d = make_user("dave");
  Thread t = make_group({a.id, b.id, c.id, d.id});
  send(t.id, a.id, "1");
  send(t.id, a.id, "2");
  auto seqs = [](const MemberPage& p) {
    std::vector<int64_t> out;
    for (const auto& m : p.messages) out.push_back(m.seq);
    return out;
  };
  auto former = [&](const std::string& user_id, int64_t after, int limit = 10) {
    return store_->member_page(user_id, PageQuery{t.id, after, kAllSeqs, limit, /*former_too=*/true});
  };
  auto refused = [](const Result<MemberPage>& p) { return !p.ok() && p.error().code == "not_a_participant"; };
  auto member = ok(former(b.id, 0));
  EXPECT_EQ(seqs(member), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(member.ended_at_seq, 0) << "a member reads as one";

  auto notice = [&](const std::string& user_id) {
    return AppendRequest{t.id, a.id, "alice removed " + user_id, "system", ""};
  };
  auto first = ok(store_->remove_participant_and_wait({t.id, b.id, {}, notice(b.id)}));
  ASSERT_TRUE(first.notice);
  EXPECT_EQ(first.notice->seq, 3);
  send(t.id, a.id, "4 (after the removal)");
  EXPECT_TRUE(refused(store_->member_page(b.id, PageQuery{t.id, 0, kAllSeqs, 10}))) << "without former_too";
  auto out = ok(former(b.id, 0));
  EXPECT_EQ(seqs(out), (std::vector<int64_t>{1, 2, 3})) << "up to the notice";
  EXPECT_EQ(out.ended_at_seq, 3);
  EXPECT_EQ(out.joined_at, member.joined_at);
  EXPECT_EQ(seqs(ok(former(b.id, 1, 1))), (std::vector<int64_t>{2})) << "paged";
  EXPECT_TRUE(refused(former(b.id, 3))) << "nothing past the end";
  EXPECT_TRUE(refused(store_->member_page(b.id, PageQuery{t.id, -1, kAllSeqs, 10, true}))) << "after_seq pages only";
  EXPECT_TRUE(refused(former(make_user("erin").id, 0))) << "never a member";

  // Back, then removed again: the second membership ends at its own notice.
  ASSERT_TRUE(store_->add_participants(t.id, {b.id}).ok());
  auto ended = ok(former(b.id, 0));
  EXPECT_EQ(seqs(ended), (std::vector<int64_t>{1, 2, 3})) << "the membership that ended comes first, though back";
  EXPECT_EQ(ended.ended_at_seq, 3);
  auto again = ok(former(b.id, 3));
  EXPECT_EQ(again.ended_at_seq, 0) << "then the current one";
  EXPECT_GT(again.joined_at, ended.joined_at);
  EXPECT_EQ(ok(store_->member_page(b.id, PageQuery{t.id, 0, kAllSeqs, 10})).ended_at_seq, 0) << "without former_too";
  send(t.id, a.id, "5");
  ASSERT_EQ(ok(store_->remove_participant_and_wait({t.id, b.id, {}, notice(b.id)})).notice->seq, 6);
  send(t.id, a.id, "7");
  reopen();
  EXPECT_EQ(ok(former(b.id, 0)).ended_at_seq, 3) << "the first membership that ended past after_seq";
  auto second = ok(former(b.id, 3));
  EXPECT_EQ(seqs(second), (std::vector<int64_t>{5, 6})) << "only what was said during it: not 4, said while out";
  EXPECT_EQ(second.ended_at_seq, 6);
  EXPECT_GT(second.joined_at, out.joined_at) << "read as the second membership (its joined_at)";
  EXPECT_TRUE(refused(former(b.id, 6)));

  // Removed with no notice stored: no end is known.
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, c.id, {}, {}}).ok());
  EXPECT_TRUE(refused(former(c.id, 0)));

  // The last admin leaves: the promotion's notice, stored after theirs, is their last.
  auto promote = [](const std::string& username) { return username + " is now an admin"; };
  auto left = ok(store_->remove_participant_and_wait({t.id, a.id, promote, notice(a.id)}));
  ASSERT_TRUE(left.promotion);
  EXPECT_EQ(left.promotion->seq, 9);
  auto admin = ok(former(a.id, 7));
  EXPECT_EQ(seqs(admin), (std::vector<int64_t>{8, 9}));
  EXPECT_EQ(admin.ended_at_seq, 9);
}

// Where several processes share the store, a member list carries the
// version of the membership it was read at, and an append the version it
// committed under: a list older than a change committed before the message
// is caught (ChatService::members_at_commit). SQLite's one process needs none.
TEST_P(StoreContract, MemberVersionGrowsWithEachChangeAndComesWithEachAppend) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id});
  auto version = [&] {
    auto m = ok(store_->thread_members(t.id));
    return m ? m->version : -1;
  };
  const int64_t v0 = version();
  auto first = send(t.id, a.id, "one");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->member_version, v0) << "an append reads the version it commits under";
  ASSERT_TRUE(store_->add_participants(t.id, {c.id}).ok());
  const int64_t v1 = version();
  ASSERT_TRUE(store_->add_participants(t.id, {c.id}).ok());  // already in: no change
  EXPECT_EQ(version(), v1);
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, b.id, {}, {}}).ok());
  const int64_t v2 = version();
  auto second = send(t.id, a.id, "two");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->member_version, v2);
  if (GetParam() == "sqlite") {
    EXPECT_EQ(v0, 0);
    EXPECT_EQ(v2, 0) << "one process: never numbered";
    return;
  }
  EXPECT_GE(v0, 1) << "numbered from 1: 0 means not numbered";
  EXPECT_GT(v1, v0) << "an addition";
  EXPECT_GT(v2, v1) << "a removal";
  // Appends sent together (PgStore's pipelined run) each read the version.
  std::vector<std::shared_ptr<std::promise<Result<AppendResult>>>> waiting;
  for (int i = 0; i < 3; ++i) {
    waiting.push_back(std::make_shared<std::promise<Result<AppendResult>>>());
    store_->append(AppendRequest{t.id, a.id, "run " + std::to_string(i), "text", ""},
                   [p = waiting.back()](Result<AppendResult> r) { p->set_value(std::move(r)); });
  }
  for (auto& w : waiting) {
    auto r = w->get_future().get();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->member_version, v2);
  }
}

// Where a connection's first fill starts (Connection::fill_gap): after the
// newest message older than the connection, within the range asked.
TEST_P(StoreContract, LastSeqCreatedBeforeFindsTheNewestOlderMessageInRange) {
  User a = make_user("alice");
  Thread t = make_group({a.id});
  for (int i = 1; i <= 10; ++i) send(t.id, a.id, std::to_string(i));
  auto all = ok(store_->messages_after(t.id, 0, 10));
  ASSERT_EQ(all.size(), 10u);
  // What the answer must be, from the messages themselves (two may share a time).
  auto expected = [&](int64_t below, Micros before, int64_t lowest) {
    int64_t found = lowest;
    for (const auto& m : all)
      if (m.seq < below && m.seq > lowest && m.created_at < before) found = std::max(found, m.seq);
    return found;
  };
  ASSERT_LT(all[0].created_at, all[9].created_at);
  const Micros mid = all[5].created_at + 1;
  for (auto [below, before, lowest] : {std::tuple<int64_t, Micros, int64_t>{11, mid, 0}, {5, mid, 0}, {11, mid, 7},
                                       {11, all[0].created_at, 0}, {11, all[9].created_at + 1, 0}}) {
    EXPECT_EQ(ok(store_->last_seq_created_before(t.id, below, before, lowest)), expected(below, before, lowest))
        << below << " " << before << " " << lowest;
  }
  EXPECT_EQ(ok(store_->last_seq_created_before(t.id, 11, all[9].created_at + 1, 0)), 10);
  EXPECT_EQ(ok(store_->last_seq_created_before(t.id, 11, all[0].created_at, 0)), 0) << "nothing older at all";
  EXPECT_EQ(ok(store_->last_seq_created_before(t.id, 11, mid, 10)), 10) << "nothing in range: lowest_seq";
}

TEST_P(StoreContract, MessagesSinceChainsWithoutSkipsOrRepeats) {
  User me = make_user("me");
  User b = make_user("bob");
  User c = make_user("carol");
  User outsider = make_user("outsider");
  Thread t1 = make_group({me.id, b.id});
  Thread t2 = make_group({me.id, c.id});
  Thread other = make_group({b.id, outsider.id});  // not mine: never delivered to me

  // Fired without waiting, so many land in the same millisecond (and batch).
  const User* senders[] = {&me, &b, &c};
  Countdown pending(300);
  for (int i = 0; i < 300; ++i) {
    const User& s = *senders[i % 3];
    const Thread& t = (i % 5 == 0) ? other : (s.id == c.id ? t2 : (s.id == b.id ? t1 : (i % 2 ? t1 : t2)));
    const std::string& sender = (&t == &other) ? outsider.id : s.id;
    store_->append(AppendRequest{t.id, sender, std::to_string(i), "text", ""},
                   [&](Result<AppendResult> r) {
                     EXPECT_TRUE(r.ok());
                     pending.done();
                   });
  }
  pending.wait();

  std::set<std::string> expected;
  for (const Thread* t : {&t1, &t2})
    for (const auto& m : ok(store_->messages_after(t->id, 0, 1000)))
      if (m.sender_id != me.id) expected.insert(m.id);
  ASSERT_GT(expected.size(), 100u);

  std::vector<std::string> got;
  Micros cursor = 0, prev_created = 0;
  for (int calls = 0; calls < 1000; ++calls) {
    OfflinePage page = ok(store_->messages_since(me.id, cursor, 7));
    ASSERT_LE(page.messages.size(), 7u);
    for (const auto& m : page.messages) {
      EXPECT_NE(m.sender_id, me.id);
      EXPECT_GT(m.created_at, prev_created);  // ascending, across pages too
      prev_created = m.created_at;
      got.push_back(m.id);
    }
    EXPECT_GE(page.cursor, cursor);
    cursor = page.cursor;
    if (!page.has_more) break;
  }
  EXPECT_EQ(got.size(), expected.size());
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), expected);  // with the size: each exactly once

  // The cursor moved past my own trailing messages; nothing new means an empty page.
  send(t1.id, me.id, "mine, last");
  OfflinePage tail = ok(store_->messages_since(me.id, cursor, 7));
  EXPECT_TRUE(tail.messages.empty());
  EXPECT_FALSE(tail.has_more);
  EXPECT_GT(tail.cursor, cursor);
  auto fresh = send(t2.id, c.id, "new");
  OfflinePage next = ok(store_->messages_since(me.id, tail.cursor, 7));
  ASSERT_EQ(next.messages.size(), 1u);
  EXPECT_EQ(next.messages[0].id, fresh->message.id);
}

// A participant who had an earlier membership reads, with former_too, the
// whole history as any member does: the ended membership's page is bounded
// by its end only, not by its start.
TEST_P(StoreContract, AMemberBackReadsTheWholeHistoryThroughTheirEndedMembership) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id});
  send(t.id, a.id, "1 (before bob)");
  ASSERT_TRUE(store_->add_participants(t.id, {b.id}).ok());
  send(t.id, a.id, "2");
  ASSERT_TRUE(
      store_->remove_participant_and_wait({t.id, b.id, {}, AppendRequest{t.id, a.id, "alice removed bob", "system", ""}})
          .ok());
  send(t.id, a.id, "4 (while out)");
  auto former = [&](int64_t after) {
    return store_->member_page(b.id, PageQuery{t.id, after, kAllSeqs, 10, /*former_too=*/true});
  };
  auto seqs = [](const MemberPage& p) {
    std::vector<int64_t> out;
    for (const auto& m : p.messages) out.push_back(m.seq);
    return out;
  };
  EXPECT_EQ(seqs(ok(former(0))), (std::vector<int64_t>{2, 3})) << "not a member: only the time in the group";
  ASSERT_TRUE(store_->add_participants(t.id, {b.id}).ok());
  send(t.id, a.id, "5");
  auto first = ok(former(0));
  EXPECT_EQ(seqs(first), (std::vector<int64_t>{1, 2, 3})) << "a member again: the history from the start";
  EXPECT_EQ(first.ended_at_seq, 3);
  EXPECT_EQ(seqs(ok(former(3))), (std::vector<int64_t>{4, 5}));
}

// Offline messages of a member removed while offline: what was said in
// each membership up to its removal's notice, then nothing of the thread;
// pages chained through the cursor skip and repeat nothing across current
// and ended memberships, and the cursor moves past an ended one's notice.
TEST_P(StoreContract, OfflineMessagesKeepWhatAnEndedMembershipWasOwed) {
  User a = make_user("alice"), b = make_user("bob"), c = make_user("carol");
  Thread group = make_group({a.id, b.id, c.id}, "class");
  Thread dm = make_group({a.id, b.id}, "pair");
  const Micros start = ok(send(group.id, a.id, "before")).message.created_at;
  std::vector<std::string> want;
  auto note = [&](const Result<AppendResult>& r) { want.push_back(r->message.content); };
  note(send(group.id, a.id, "g1"));
  note(send(dm.id, a.id, "d1"));
  note(send(group.id, c.id, "g2"));
  auto notice = [&](const std::string& text) { return AppendRequest{group.id, a.id, text, "system", ""}; };
  auto removed = ok(store_->remove_participant_and_wait({group.id, b.id, {}, notice("alice removed bob")}));
  want.push_back("alice removed bob");
  send(group.id, a.id, "while bob was out");
  note(send(dm.id, a.id, "d2"));
  ASSERT_EQ(ok(store_->add_participants(group.id, {b.id})), std::vector<std::string>{b.id});
  note(send(group.id, c.id, "g3 (back)"));
  ASSERT_TRUE(store_->remove_participant_and_wait({group.id, b.id, {}, notice("alice removed bob again")}).ok());
  want.push_back("alice removed bob again");
  send(group.id, a.id, "after the second removal");
  send(dm.id, b.id, "bob's own");

  for (int per_page : {2, 3, 50}) {
    std::vector<std::string> got;
    Micros cursor = start;
    for (int calls = 0; calls < 50; ++calls) {
      OfflinePage page = ok(store_->messages_since(b.id, cursor, per_page));
      ASSERT_LE(page.messages.size(), static_cast<size_t>(per_page));
      for (const auto& m : page.messages) got.push_back(m.content);
      cursor = page.cursor;
      if (!page.has_more) break;
    }
    EXPECT_EQ(got, want) << "pages of " << per_page;
  }
  OfflinePage last = ok(store_->messages_since(b.id, start, 50));
  EXPECT_TRUE(ok(store_->messages_since(b.id, last.cursor, 50)).messages.empty()) << "nothing twice";
  EXPECT_GT(last.cursor, removed.notice->created_at);

  // Only the group's end is left: the cursor is its notice, not a later message.
  auto off = make_user("dora");
  Thread once = make_group({a.id, off.id}, "once");
  send(once.id, a.id, "hello dora");
  auto gone = ok(store_->remove_participant_and_wait({once.id, off.id, {}, AppendRequest{once.id, a.id, "alice removed dora", "system", ""}}));
  send(once.id, a.id, "not for dora");
  OfflinePage dora = ok(store_->messages_since(off.id, 0, 50));
  ASSERT_EQ(dora.messages.size(), 2u);
  EXPECT_EQ(dora.messages[1].content, "alice removed dora");
  EXPECT_EQ(dora.cursor, gone.notice->created_at);
  EXPECT_TRUE(ok(store_->messages_since(off.id, dora.cursor, 50)).messages.empty());
}

// What a connect's catch-up owes a removed user: the end of a membership
// that never reached them, from its marks, until their receipt of its
// notice, a connection of theirs closing after it, or their coming back.
TEST_P(StoreContract, LeftThreadsOwedUntilReceivedSeenOrBack) {
  using Owed = std::vector<std::pair<std::string, int64_t>>;
  User a = make_user("alice"), b = make_user("bob"), c = make_user("carol");
  Thread group = make_group({a.id, b.id, c.id}, "class");
  Thread kept = make_group({a.id, b.id}, "kept");
  send(group.id, a.id, "g1");
  ASSERT_TRUE(store_->mark_delivered(group.id, b.id, 1).ok());
  auto g2 = ok(send(group.id, a.id, "g2")).message;
  send(kept.id, a.id, "k1");
  auto notice = [&](const std::string& text) { return AppendRequest{group.id, a.id, text, "system", ""}; };
  const Message bob_out = *ok(store_->remove_participant_and_wait({group.id, b.id, {}, notice("alice removed bob")})).notice;
  const Message carol_out = *ok(store_->remove_participant_and_wait({group.id, c.id, {}, notice("alice removed carol")})).notice;
  send(group.id, a.id, "after");
  EXPECT_EQ(ok(store_->left_threads_owed(b.id)), (Owed{{group.id, 1}})) << "from bob's delivered mark";
  EXPECT_EQ(ok(store_->left_threads_owed(c.id)), (Owed{{group.id, 0}}));
  EXPECT_EQ(ok(store_->left_threads_owed(a.id)), Owed{});

  // Receipts: short of the end the position moves; the notice's ends it.
  EXPECT_TRUE(ok(store_->mark_former_delivered(group.id, b.id, g2.seq, g2.created_at)));
  EXPECT_EQ(ok(store_->left_threads_owed(b.id)), (Owed{{group.id, g2.seq}}));
  EXPECT_FALSE(ok(store_->mark_former_delivered(group.id, b.id, carol_out.seq, carol_out.created_at)))
      << "past bob's end: not his";
  EXPECT_FALSE(ok(store_->mark_former_delivered(kept.id, b.id, 1, carol_out.created_at))) << "no ended membership";
  EXPECT_TRUE(ok(store_->mark_former_delivered(group.id, b.id, bob_out.seq, bob_out.created_at)));
  EXPECT_EQ(ok(store_->left_threads_owed(b.id)), Owed{});
  EXPECT_TRUE(ok(store_->mark_former_delivered(group.id, b.id, 1, g2.created_at))) << "an older receipt moves nothing back";
  EXPECT_EQ(ok(store_->left_threads_owed(b.id)), Owed{});
  auto th = ok(store_->thread(group.id));
  ASSERT_TRUE(th);
  int64_t bob_delivered = -1;
  for (const auto& f : th->former_marks)
    if (f.user_id == b.id) bob_delivered = f.last_delivered_seq;
  EXPECT_EQ(bob_delivered, bob_out.seq) << "the mark a message's status counts";

  // A connection of carol's that closed after her removal got its notice live.
  store_->set_last_seen(c.id, carol_out.created_at - 1);
  EXPECT_EQ(ok(store_->left_threads_owed(c.id)), (Owed{{group.id, 0}}));
  store_->set_last_seen(c.id, carol_out.created_at + 1);
  EXPECT_EQ(ok(store_->left_threads_owed(c.id)), Owed{});

  // Back in the group, the current membership's catch-up is hers.
  store_->set_last_seen(c.id, 0);
  ASSERT_EQ(ok(store_->add_participants(group.id, {c.id})), std::vector<std::string>{c.id});
  EXPECT_EQ(ok(store_->left_threads_owed(c.id)), Owed{});

  // One who left by themselves never acknowledges their own notice: what
  // others said before it is owed, the notice alone is not.
  User d = make_user("dave");
  Thread club = make_group({a.id, d.id}, "club");
  auto said = ok(send(club.id, a.id, "see you")).message;
  ASSERT_TRUE(store_->remove_participant_and_wait({club.id, d.id, {}, AppendRequest{club.id, d.id, "dave left", "system", ""}}).ok());
  EXPECT_EQ(ok(store_->left_threads_owed(d.id)), (Owed{{club.id, 0}}));
  EXPECT_TRUE(ok(store_->mark_former_delivered(club.id, d.id, said.seq, said.created_at)));
  EXPECT_EQ(ok(store_->left_threads_owed(d.id)), Owed{});
}

// The cursor is the newest message of the caller's threads (or the epoch),
// whatever time was asked: never the store's newest commit, and never an
// answer that shows how the time asked compares with it (bisection would
// find it). Either would tell anyone when someone, anywhere, last wrote.
TEST_P(StoreContract, OfflineCursorPastTheClockTellsNothingOfOthersThreads) {
  User a = make_user("alice"), b = make_user("bob"), c = make_user("carol"), d = make_user("dave"),
       loner = make_user("loner");
  Thread mine = make_group({a.id, b.id}, "mine"), theirs = make_group({c.id, d.id}, "theirs");
  auto own = send(mine.id, a.id, "to bob");
  auto other = send(theirs.id, c.id, "elsewhere, later");
  ASSERT_GT(other->message.created_at, own->message.created_at);
  const Micros ahead = other->message.created_at + Micros{3600} * 1000000;

  OfflinePage page = ok(store_->messages_since(b.id, ahead, 10));
  EXPECT_TRUE(page.messages.empty());
  EXPECT_EQ(page.cursor, own->message.created_at);
  // Nor by bisection: a time before the newest commit is answered alike.
  const Micros between = (own->message.created_at + other->message.created_at) / 2;
  EXPECT_EQ(ok(store_->messages_since(b.id, between, 10)).cursor, own->message.created_at);
  for (Micros asked : {Micros{0}, between, other->message.created_at, ahead})
    EXPECT_EQ(ok(store_->messages_since(loner.id, asked, 10)).cursor, 0) << asked;

  // The cursor still skips nothing sent later.
  auto later = send(mine.id, a.id, "after");
  OfflinePage next = ok(store_->messages_since(b.id, page.cursor, 10));
  ASSERT_EQ(next.messages.size(), 1u);
  EXPECT_EQ(next.messages[0].id, later->message.id);
}

TEST_P(StoreContract, UnreadCountsAndMarkRead) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  Thread quiet = make_group({a.id, b.id});
  for (int i = 0; i < 5; ++i) send(t.id, b.id, "from bob");
  send(t.id, a.id, "from alice");  // own message: read, and moves alice's mark to 6

  auto counts = [&](const std::string& user) {
    std::map<std::string, int64_t> out;
    for (const auto& u : ok(store_->unread_counts(user))) out[u.thread_id] = u.unread_count;
    return out;
  };
  EXPECT_EQ(counts(a.id), (std::map<std::string, int64_t>{{t.id, 0}, {quiet.id, 0}}));
  EXPECT_EQ(counts(b.id), (std::map<std::string, int64_t>{{t.id, 1}, {quiet.id, 0}}));

  send(t.id, b.id, "more");
  send(t.id, b.id, "more");
  EXPECT_EQ(counts(a.id)[t.id], 2);
  // The mark as it is after each call, and whether that call moved it.
  auto mark = [&](const std::string& thread, const std::string& user, int64_t up_to) {
    ReadMark m = ok(store_->mark_read(thread, user, up_to));
    return std::make_pair(m.seq, m.moved);
  };
  EXPECT_EQ(mark(t.id, a.id, 0), std::make_pair(int64_t{6}, false));  // up to 0: nothing read, nothing moved
  EXPECT_EQ(counts(a.id)[t.id], 2);
  EXPECT_EQ(mark(t.id, a.id, 7), std::make_pair(int64_t{7}, true));
  EXPECT_EQ(counts(a.id)[t.id], 1);
  EXPECT_EQ(mark(t.id, a.id, 7), std::make_pair(int64_t{7}, false));    // again: nothing moved
  EXPECT_EQ(mark(t.id, a.id, 3), std::make_pair(int64_t{7}, false));    // never back
  EXPECT_EQ(mark(t.id, a.id, 100), std::make_pair(int64_t{8}, true));  // clamped to last_seq
  EXPECT_EQ(counts(a.id)[t.id], 0);
  // b sent 7 and 8: sending marked them read already.
  EXPECT_EQ(mark(t.id, b.id, kAllSeqs), std::make_pair(int64_t{8}, false));
  EXPECT_EQ(mark(quiet.id, b.id, kAllSeqs), std::make_pair(int64_t{0}, false));

  User c = make_user("carol");
  auto outsider = store_->mark_read(t.id, c.id, 1);
  ASSERT_FALSE(outsider.ok());
  EXPECT_EQ(outsider.error().code, "not_a_participant");
}

// A deleted message is no longer there to read: it leaves the unread counts.
TEST_P(StoreContract, DeletedMessagesAreNotUnread) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  auto first = send(t.id, b.id, "taken down");
  ASSERT_TRUE(first.ok());
  send(t.id, b.id, "kept");
  ASSERT_TRUE(store_->delete_message(first->message.id, "").ok());
  auto mine = ok(store_->unread_counts(a.id));
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].unread_count, 1);
  auto list = ok(store_->threads_for_user(a.id));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].unread_count, 1);
  for (const auto& u : ok(store_->thread_unread_counts(t.id)))
    EXPECT_EQ(u.unread_count, u.user_id == a.id ? 1 : 0) << u.user_id;
}

TEST_P(StoreContract, ThreadsForUserNewestFirstWithSummary) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread older = make_group({a.id, b.id}, "older");
  Thread newer = make_group({a.id, b.id}, "newer");
  send(newer.id, b.id, "n1");
  send(older.id, b.id, "o1");
  send(older.id, b.id, "o2");  // older now has the newest activity

  auto list = ok(store_->threads_for_user(a.id));
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].thread.id, older.id);
  EXPECT_EQ(list[0].unread_count, 2);
  ASSERT_TRUE(list[0].last_message);
  EXPECT_EQ(list[0].last_message->content, "o2");
  EXPECT_EQ(list[0].last_message->sender.username, "bob");
  ASSERT_EQ(list[0].thread.participants.size(), 2u);
  for (const auto& p : list[0].thread.participants) {
    EXPECT_FALSE(p.username.empty());
    EXPECT_EQ(p.full_name, "Full " + p.username);
    EXPECT_EQ(p.role, "member");
  }
  EXPECT_EQ(list[1].thread.id, newer.id);
  EXPECT_EQ(list[1].unread_count, 1);
  EXPECT_TRUE(ok(store_->threads_for_user(make_user("loner").id)).empty());
}

// The summaries are read a table at a time for all the user's threads; each
// must hold exactly what reading its thread alone gives.
TEST_P(StoreContract, ThreadsForUserAgreesWithEachThread) {
  User a = make_user("alice");
  std::vector<User> others;
  for (int i = 0; i < 6; ++i) others.push_back(make_user("user" + std::to_string(i)));
  Thread quiet = make_group({a.id, others[0].id}, "quiet");  // no message
  Thread left = make_group({a.id, others[1].id, others[2].id}, "left");
  send(left.id, others[1].id, "before leaving");
  ASSERT_TRUE(store_->mark_read(left.id, others[1].id, 1).ok());
  ASSERT_TRUE(store_->remove_participant_and_wait({left.id, others[1].id, {}, {}}).ok());
  Thread deleted = make_group({a.id, others[3].id}, "deleted");
  send(deleted.id, a.id, "kept");
  auto gone = send(deleted.id, others[3].id, "taken down");
  ASSERT_TRUE(gone.ok());
  ASSERT_TRUE(store_->delete_message(gone->message.id, "").ok());
  auto direct = make_direct(a.id, others[4].id);
  ASSERT_TRUE(direct.ok());
  send(direct->thread.id, others[4].id, "hi");
  Thread big = make_group({a.id, others[0].id, others[2].id, others[3].id, others[4].id, others[5].id}, "big");
  send(big.id, others[5].id, "one");
  send(big.id, a.id, "two");
  make_group({others[0].id, others[1].id}, "not alice's");

  auto list = ok(store_->threads_for_user(a.id));
  ASSERT_EQ(list.size(), 5u);
  auto ids = [](const auto& rows) {
    std::vector<std::string> out;
    for (const auto& r : rows) out.push_back(r.user_id);
    return out;
  };
  for (const auto& s : list) {
    auto alone = ok(store_->thread(s.thread.id));
    ASSERT_TRUE(alone) << s.thread.title;
    EXPECT_EQ(ids(s.thread.participants), ids(alone->participants)) << s.thread.title;
    for (size_t i = 0; i < s.thread.participants.size() && i < alone->participants.size(); ++i) {
      EXPECT_EQ(s.thread.participants[i].username, alone->participants[i].username);
      EXPECT_EQ(s.thread.participants[i].last_read_seq, alone->participants[i].last_read_seq);
      EXPECT_EQ(s.thread.participants[i].is_admin, alone->participants[i].is_admin);
    }
    EXPECT_EQ(ids(s.thread.former_marks), ids(alone->former_marks)) << s.thread.title;
    ASSERT_EQ(s.last_message.has_value(), alone->last_seq > 0) << s.thread.title;
    if (!s.last_message) continue;
    EXPECT_EQ(s.last_message->thread_id, s.thread.id);
    EXPECT_EQ(s.last_message->seq, alone->last_seq) << s.thread.title;
    auto newest = ok(store_->messages_before(s.thread.id, kAllSeqs, 1));
    ASSERT_EQ(newest.size(), 1u);
    EXPECT_EQ(s.last_message->id, newest[0].id);
    EXPECT_EQ(s.last_message->deleted, newest[0].deleted);
  }
  auto find = [&](const std::string& id) {
    return std::find_if(list.begin(), list.end(), [&](const ThreadSummary& s) { return s.thread.id == id; });
  };
  EXPECT_EQ(find(big.id)->thread.participants.size(), 6u);
  EXPECT_EQ(find(big.id)->last_message->content, "two");
  EXPECT_FALSE(find(quiet.id)->last_message);
  EXPECT_EQ(ids(find(left.id)->thread.former_marks), std::vector<std::string>{others[1].id});
  EXPECT_TRUE(find(deleted.id)->last_message->deleted);
}

TEST_P(StoreContract, ContentIsStoredVerbatim) {
  User a = make_user("alice");
  Thread t = make_group({a.id});
  const std::string sql = "'); DROP TABLE messages;--";
  const std::string multibyte = "héllo 世界 👋🏽 👨‍👩‍👧 \xF0\x9F\x92\xA9 e\xCC\x81";
  const std::string with_nul("a\0b", 3);
  for (const std::string& content : {sql, multibyte, with_nul}) {
    auto sent = send(t.id, a.id, content, content);  // also as client_msg_id
    ASSERT_TRUE(sent.ok());
    auto stored = ok(store_->message(sent->message.id));
    ASSERT_TRUE(stored);
    EXPECT_EQ(stored->content, content);
    EXPECT_EQ(stored->content.size(), content.size());
    EXPECT_EQ(stored->client_msg_id, content);
  }
  EXPECT_EQ(ok(store_->messages_after(t.id, 0, 10)).size(), 3u);  // the table is still there
  EXPECT_EQ(ok(store_->search_users("'", 10)).size(), 0u);
}

TEST_P(StoreContract, CloseDrainsQueuedWritesThenRefuses) {
  User a = make_user("alice");
  Thread t = make_group({a.id});
  std::atomic<int> committed{0};
  for (int i = 0; i < 100; ++i)
    store_->append(AppendRequest{t.id, a.id, "x", "text", ""}, [&](Result<AppendResult> r) { committed += r.ok(); });
  store_->close();
  EXPECT_EQ(committed.load(), 100);

  std::optional<Error> refused;
  store_->append(AppendRequest{t.id, a.id, "late", "text", ""}, [&](Result<AppendResult> r) {
    if (!r.ok()) refused.emplace(r.error());
  });
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->kind, ErrorKind::kUnavailable);

  reopen();
  EXPECT_EQ(ok(store_->thread(t.id))->last_seq, 100);
}

// Several processes on one PostgreSQL database (here: two stores, each with
// its own connections and writer) appending to one thread at once: seq stays
// gapless with no duplicates, and a client_msg_id retried on the other one is
// recognised. (One SQLite file has one writing process.)
TEST_P(StoreContract, TwoStoresOnOneDatabaseKeepSeqGaplessAndRetriesRecognised) {
  if (GetParam() == "sqlite") GTEST_SKIP() << "one SQLite file is written by one process";
  auto second = open_store_with(options());
  ASSERT_TRUE(second.ok()) << second.error().message;
  Store& other = **second;
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  constexpr int kPerWriter = 150;
  std::mutex mu;
  std::vector<int64_t> seqs;
  std::set<std::string> ids;
  int failures = 0;
  Countdown pending(4 * kPerWriter);
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      Store& s = w % 2 ? other : *store_;
      for (int i = 0; i < kPerWriter; ++i) {
        s.append(AppendRequest{t.id, w < 2 ? a.id : b.id, "m", "text", "w" + std::to_string(w) + "-" + std::to_string(i)},
                 [&](Result<AppendResult> r) {
                   std::lock_guard lock(mu);
                   if (r.ok() && !r->duplicate) {
                     seqs.push_back(r->message.seq);
                     ids.insert(r->message.id);
                   } else {
                     ++failures;
                   }
                   pending.done();
                 });
      }
    });
  }
  for (auto& w : writers) w.join();
  pending.wait();
  EXPECT_EQ(failures, 0);
  std::sort(seqs.begin(), seqs.end());
  ASSERT_EQ(seqs.size(), 4u * kPerWriter);
  for (size_t i = 0; i < seqs.size(); ++i) ASSERT_EQ(seqs[i], static_cast<int64_t>(i + 1));
  EXPECT_EQ(ids.size(), seqs.size());
  auto stored = ok(other.messages_after(t.id, 0, 1000));
  ASSERT_EQ(stored.size(), seqs.size());
  for (size_t i = 1; i < stored.size(); ++i) EXPECT_LT(stored[i - 1].created_at, stored[i].created_at);

  auto first = send(t.id, a.id, "once", "retry-1");
  ASSERT_TRUE(first.ok());
  auto retried = other.append_and_wait(AppendRequest{t.id, a.id, "once (retry)", "text", "retry-1"});
  ASSERT_TRUE(retried.ok());
  EXPECT_TRUE(retried->duplicate);
  EXPECT_EQ(retried->message.id, first->message.id);
  EXPECT_EQ(retried->message.content, "once");
  EXPECT_EQ(ok(other.thread(t.id))->last_seq, static_cast<int64_t>(seqs.size()) + 1);
  other.close();
}

// Offline sync chained while several writers (two stores on PostgreSQL)
// commit: every message is returned exactly once across the chain.
TEST_P(StoreContract, OfflineChainUnderConcurrentCommitsNeverSkipsOrRepeats) {
  std::unique_ptr<Store> second;
  if (GetParam() == "postgres") {
    auto opened = open_store_with(options());
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    second = std::move(*opened);
  }
  Store& other = second ? *second : *store_;
  User a = make_user("alice");
  User c = make_user("carol");
  User b = make_user("bob");
  Thread t1 = make_group({a.id, b.id}, "one");
  Thread t2 = make_group({c.id, b.id}, "two");
  constexpr int kPerWriter = 200;
  std::atomic<int> left{2 * kPerWriter};
  std::mutex mu;
  std::set<std::string> sent;
  auto writer = [&](Store& s, const Thread& t, const std::string& sender) {
    for (int i = 0; i < kPerWriter; ++i) {
      s.append(AppendRequest{t.id, sender, "x", "text", ""}, [&](Result<AppendResult> r) {
        if (r.ok()) {
          std::lock_guard lock(mu);
          sent.insert(r->message.id);
        }
        --left;
      });
      if (i % 20 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  std::thread w1(writer, std::ref(*store_), std::cref(t1), a.id);
  std::thread w2(writer, std::ref(other), std::cref(t2), c.id);
  std::vector<std::string> seen;
  Micros cursor = 0;
  auto chain_once = [&] {
    auto page = ok(store_->messages_since(b.id, cursor, 25));
    for (const auto& m : page.messages) seen.push_back(m.id);
    EXPECT_GE(page.cursor, cursor);
    cursor = page.cursor;
    return page.has_more;
  };
  for (int i = 0; i < 10000 && left.load() > 0; ++i) chain_once();
  w1.join();
  w2.join();
  while (left.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  for (int i = 0; i < 1000 && chain_once(); ++i) {
  }
  chain_once();
  std::set<std::string> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), seen.size()) << "a message was repeated";
  EXPECT_EQ(unique, sent) << "a message was skipped";
  if (second) second->close();
}

// --- moderation and the webhook outbox ---

TEST_P(StoreContract, AccountStateChangesAreVersionedInCommitOrder) {
  User a = make_user("alice");
  User b = make_user("bob");
  EXPECT_TRUE(ok(store_->account_changes(0)).empty());
  EXPECT_FALSE(ok(store_->user_by_id(a.id))->disabled);

  auto disabled = store_->set_user_disabled(a.id, true);
  ASSERT_TRUE(disabled.ok());
  EXPECT_TRUE(disabled->disabled);
  auto revoked = store_->revoke_tokens(b.id, 1000);
  ASSERT_TRUE(revoked.ok());
  EXPECT_EQ(revoked->tokens_valid_after, 1000);
  EXPECT_GT(revoked->version, disabled->version);
  // Never moves back, and a second revocation always moves it on: tokens
  // issued after the first carry iat = the mark (Identity::issue_token),
  // which a revocation in the same second must refuse too.
  EXPECT_EQ(ok(store_->revoke_tokens(b.id, 500)).tokens_valid_after, 1001);
  EXPECT_EQ(ok(store_->revoke_tokens(b.id, 1001)).tokens_valid_after, 1002);
  EXPECT_EQ(ok(store_->revoke_tokens(b.id, 5000)).tokens_valid_after, 5000);
  EXPECT_EQ(ok(store_->set_user_disabled(b.id, false)).tokens_valid_after, 5000) << "not a revocation";

  User stored = *ok(store_->user_by_username("alice"));
  EXPECT_TRUE(stored.disabled);
  EXPECT_EQ(ok(store_->user_by_id(b.id))->tokens_valid_after, 5000);

  auto all = ok(store_->account_changes(0));
  ASSERT_EQ(all.size(), 2u);  // one row per user, its latest state
  EXPECT_EQ(all[0].user_id, a.id);
  EXPECT_EQ(all[1].user_id, b.id);
  auto later = ok(store_->account_changes(disabled->version));
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].user_id, b.id);

  auto enabled = store_->set_user_disabled(a.id, false);
  ASSERT_TRUE(enabled.ok());
  EXPECT_FALSE(enabled->disabled);
  auto after_enable = ok(store_->account_changes(later.back().version));
  ASSERT_EQ(after_enable.size(), 1u);
  EXPECT_EQ(after_enable[0].user_id, a.id);
  EXPECT_FALSE(after_enable[0].disabled);

  auto missing = store_->set_user_disabled("00000000-0000-0000-0000-000000000000", true);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, "user_not_found");
  reopen();
  EXPECT_TRUE(ok(store_->user_by_id(b.id))->tokens_valid_after == 5000);
}

TEST_P(StoreContract, DeleteLeavesATombstoneAndEditSetsEditedAt) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  auto m1 = send(t.id, a.id, "first");
  auto m2 = send(t.id, b.id, "second");
  ASSERT_TRUE(m1.ok() && m2.ok());

  auto edited = store_->edit_message(m2->message.id, "", "second, edited", 12345);
  ASSERT_TRUE(edited.ok()) << edited.error().code;
  EXPECT_EQ(edited->content, "second, edited");
  ASSERT_TRUE(edited->edited_at.has_value());
  EXPECT_EQ(*edited->edited_at, 12345);
  EXPECT_EQ(edited->seq, 2);

  auto deleted = store_->delete_message(m1->message.id, "");
  ASSERT_TRUE(deleted.ok()) << deleted.error().code;
  EXPECT_TRUE(deleted->deleted);
  EXPECT_EQ(deleted->content, "");
  EXPECT_EQ(deleted->seq, 1);
  EXPECT_EQ(deleted->created_at, m1->message.created_at);
  EXPECT_TRUE(ok(store_->delete_message(m1->message.id, "")).deleted);  // again: the same tombstone

  auto history = ok(store_->messages_after(t.id, 0, 10));
  ASSERT_EQ(history.size(), 2u);
  EXPECT_TRUE(history[0].deleted);
  EXPECT_EQ(history[0].content, "");
  EXPECT_FALSE(history[1].deleted);
  EXPECT_EQ(history[1].content, "second, edited");
  auto since = ok(store_->messages_since(b.id, 0, 10));
  ASSERT_EQ(since.messages.size(), 1u);
  EXPECT_TRUE(since.messages[0].deleted);
  EXPECT_EQ(ok(store_->thread(t.id))->last_seq, 2);  // no new seq

  auto on_tombstone = store_->edit_message(m1->message.id, "", "back", 1);
  ASSERT_FALSE(on_tombstone.ok());
  EXPECT_EQ(on_tombstone.error().code, "message_deleted");
  auto unknown = store_->delete_message("00000000-0000-0000-0000-000000000000", "");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, "message_not_found");
  auto unknown_edit = store_->edit_message("00000000-0000-0000-0000-000000000000", "", "x", 1);
  ASSERT_FALSE(unknown_edit.ok());
  EXPECT_EQ(unknown_edit.error().code, "message_not_found");
  // The next message still gets the next seq.
  EXPECT_EQ(send(t.id, a.id, "third")->message.seq, 3);
}

// Edits and deletions are numbered in commit order without gaps (a repeated
// delete takes no number), and changes_after finds those above a number in
// the user's threads only, in that order, paged by `limit`.
TEST_P(StoreContract, ChangesAreNumberedAndFoundByUserAfterANumber) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread ab = make_group({a.id, b.id});
  Thread ac = make_group({a.id, c.id});
  auto m1 = send(ab.id, a.id, "one");
  auto m2 = send(ab.id, a.id, "two");
  auto m3 = send(ac.id, a.id, "three");
  ASSERT_TRUE(m1.ok() && m2.ok() && m3.ok());
  EXPECT_EQ(ok(store_->last_change()), 0);
  EXPECT_EQ(m1->message.change_no, 0);

  EXPECT_EQ(ok(store_->edit_message(m1->message.id, "", "one, edited", 1)).change_no, 1);
  EXPECT_EQ(ok(store_->edit_message(m3->message.id, "", "three, edited", 2)).change_no, 2);
  EXPECT_EQ(ok(store_->delete_message(m2->message.id, "")).change_no, 3);
  EXPECT_EQ(ok(store_->delete_message(m2->message.id, "")).change_no, 3) << "deleting a tombstone again changes nothing";
  EXPECT_EQ(ok(store_->edit_message(m1->message.id, "", "one, edited twice", 3)).change_no, 4);
  EXPECT_EQ(ok(store_->last_change()), 4);

  // Each message once, with its last change; bob's threads only.
  auto bob = ok(store_->changes_after(b.id, 0, 10));
  ASSERT_EQ(bob.size(), 2u);
  EXPECT_EQ(bob[0].id, m2->message.id);
  EXPECT_TRUE(bob[0].deleted);
  EXPECT_EQ(bob[0].change_no, 3);
  EXPECT_EQ(bob[1].id, m1->message.id);
  EXPECT_EQ(bob[1].content, "one, edited twice");
  EXPECT_EQ(bob[1].change_no, 4);
  EXPECT_EQ(ok(store_->changes_after(b.id, 3, 10)).size(), 1u);
  EXPECT_TRUE(ok(store_->changes_after(b.id, 4, 10)).empty());
  auto carol = ok(store_->changes_after(c.id, 0, 10));
  ASSERT_EQ(carol.size(), 1u);
  EXPECT_EQ(carol[0].id, m3->message.id);
  auto paged = ok(store_->changes_after(a.id, 0, 2));
  ASSERT_EQ(paged.size(), 2u);
  EXPECT_EQ(paged[1].change_no, 3);
  auto rest = ok(store_->changes_after(a.id, paged[1].change_no, 2));
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].change_no, 4);
  // A plain read of a message carries its last change's number too.
  EXPECT_EQ(ok(store_->messages_after(ab.id, 0, 10))[0].change_no, 4);
  // And a new message none.
  EXPECT_EQ(send(ab.id, b.id, "four")->message.change_no, 0);
}

// Two stores on one PostgreSQL database number their changes as one.
TEST_P(StoreContract, ChangesOfTwoStoresOnOneDatabaseShareOneNumbering) {
  if (GetParam() == "sqlite") GTEST_SKIP() << "one SQLite file is written by one process";
  auto second = open_store_with(options());
  ASSERT_TRUE(second.ok()) << second.error().message;
  Store& other = **second;
  User a = make_user("alice");
  Thread t = make_group({a.id});
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(send(t.id, a.id, "m" + std::to_string(i))->message.id);
  std::vector<std::thread> writers;
  std::mutex mu;
  std::vector<int64_t> numbers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      Store& s = w ? other : *store_;
      for (int i = w; i < 20; i += 2) {
        auto r = i % 4 < 2 ? s.edit_message(ids[static_cast<size_t>(i)], "", "edited", 1) : s.delete_message(ids[static_cast<size_t>(i)], "");
        std::lock_guard lock(mu);
        numbers.push_back(r.ok() ? r->change_no : -1);
      }
    });
  }
  for (auto& w : writers) w.join();
  std::sort(numbers.begin(), numbers.end());
  for (size_t i = 0; i < numbers.size(); ++i) EXPECT_EQ(numbers[i], static_cast<int64_t>(i + 1));
  EXPECT_EQ(ok(other.last_change()), 20);
  EXPECT_EQ(ok(other.changes_after(a.id, 0, 100)).size(), 20u);
  other.close();
}

namespace {

// How many it stored.
Result<size_t> enqueue_and_wait(Store& store, std::vector<Notification> items, std::vector<std::string> settles = {}) {
  std::promise<Result<size_t>> done;
  store.enqueue_notifications(std::move(items), std::move(settles),
                              [&](Result<size_t> r) { done.set_value(std::move(r)); });
  return done.get_future().get();
}

Notification notification(const std::string& id, Micros due) {
  Notification n;
  n.id = id;
  n.recipient_id = "user-" + id;
  n.body = "{\"n\":\"" + id + "\"}";
  n.next_attempt_at = due;
  return n;
}

// A notification of message `m` for `recipient`, due at 100.
Notification notification_of(const std::string& id, const Message& m, const User& recipient) {
  Notification n = notification(id, 100);
  n.message_id = m.id;
  n.recipient_id = recipient.id;
  return n;
}

}  // namespace

// A message stored owing its push is listed as overdue until its
// notifications are stored with it settled; of two settles only the first
// stores anything. A retry adds no record, a deletion removes it.
TEST_P(StoreContract, OwedPushesAreSettledOnce) {
  User a = make_user("alice"), b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  auto owed = store_->append_and_wait(AppendRequest{t.id, a.id, "owed", "text", "c-1", true});
  ASSERT_TRUE(owed.ok()) << owed.error().code;
  ASSERT_TRUE(send(t.id, a.id, "not owed").ok());
  auto retry = store_->append_and_wait(AppendRequest{t.id, a.id, "owed", "text", "c-1", true});
  ASSERT_TRUE(retry.ok());
  ASSERT_TRUE(retry->duplicate);
  auto deleted = store_->append_and_wait(AppendRequest{t.id, b.id, "deleted", "text", "", true});
  ASSERT_TRUE(deleted.ok());
  const Micros later = now_micros() + 60'000'000;
  auto both = ok(store_->overdue_pushes(later, 10));
  std::sort(both.begin(), both.end());
  auto expected = std::vector<std::string>{owed->message.id, deleted->message.id};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(both, expected) << "in the order of their ids (time-ordered to the millisecond)";
  EXPECT_EQ(ok(store_->overdue_pushes(owed->message.created_at, 10)), std::vector<std::string>{})
      << "recorded at the message's time, not before it";
  ASSERT_TRUE(store_->delete_message(deleted->message.id, "").ok());
  EXPECT_EQ(ok(store_->overdue_pushes(later, 10)), std::vector<std::string>{owed->message.id});

  // One write settles two messages; the item of the one settled before (deleted) is not stored.
  auto other = store_->append_and_wait(AppendRequest{t.id, a.id, "owed too", "text", "", true});
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(ok(enqueue_and_wait(*store_,
                                {notification_of("first", owed->message, b), notification_of("gone", deleted->message, b)},
                                {owed->message.id, deleted->message.id, other->message.id})),
            1u);
  EXPECT_EQ(ok(enqueue_and_wait(*store_, {notification_of("second", owed->message, b)}, {owed->message.id})), 0u)
      << "settled already";
  EXPECT_EQ(ok(store_->overdue_pushes(later, 10)), std::vector<std::string>{});
  auto claimed = ok(store_->claim_notifications(later, later + 1, 10));
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].id, "first");
  // Items about a message not being settled, or about none, are stored as they are.
  EXPECT_EQ(ok(enqueue_and_wait(*store_, {notification_of("third", owed->message, b), notification("plain", 100)},
                                {other->message.id, other->message.id})),
            2u);
  EXPECT_EQ(ok(store_->claim_notifications(later, later + 1, 10)).size(), 2u);
}

TEST_P(StoreContract, OutboxClaimsLeasesRetriesAndBuries) {
  ASSERT_TRUE(enqueue_and_wait(*store_, {notification("n1", 100), notification("n2", 100), notification("n3", 500)}).ok());
  // Enqueuing an id again changes nothing.
  ASSERT_TRUE(enqueue_and_wait(*store_, {notification("n1", 100)}).ok());

  auto first = ok(store_->claim_notifications(200, 10000, 10));
  ASSERT_EQ(first.size(), 2u);  // n3 is not due yet
  std::set<std::string> ids{first[0].id, first[1].id};
  EXPECT_EQ(ids, (std::set<std::string>{"n1", "n2"}));
  EXPECT_EQ(first[0].body, "{\"n\":\"" + first[0].id + "\"}");
  EXPECT_EQ(first[0].recipient_id, "user-" + first[0].id);
  EXPECT_EQ(first[0].attempts, 0);
  // Claimed: leased until 10000, so not claimed again before then.
  auto second = ok(store_->claim_notifications(600, 20000, 10));
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].id, "n3");
  EXPECT_TRUE(ok(store_->claim_notifications(9999, 20000, 10)).empty());

  ASSERT_TRUE(store_->finish_notification("n1").ok());
  ASSERT_TRUE(store_->retry_notification("n2", 1, 300).ok());
  ASSERT_TRUE(store_->dead_letter_notification("n3", 5).ok());
  EXPECT_EQ(ok(store_->dead_notification_count()), 1);

  reopen();  // kept across a restart
  auto again = ok(store_->claim_notifications(400, 50000, 10));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].id, "n2");
  EXPECT_EQ(again[0].attempts, 1);
  EXPECT_EQ(ok(store_->dead_notification_count()), 1);
  // After the lease a claim that was never answered is taken again.
  auto expired = ok(store_->claim_notifications(60000, 70000, 10));
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].id, "n2");
  EXPECT_TRUE(ok(store_->claim_notifications(69999, 80000, 10)).empty());  // leased again until 70000
}

// A batch of notifications is written in one statement on PostgreSQL (a
// list per column): every body comes back byte for byte, whatever it holds.
TEST_P(StoreContract, OutboxKeepsEveryBodyOfALargeBatchExactly) {
  std::vector<Notification> items;
  std::map<std::string, std::string> bodies;
  for (int i = 0; i < 300; ++i) {
    Notification n = notification("b" + std::to_string(i), 100);
    n.body = "{\"text\":\"quote \\\" backslash \\\\ braces {} comma, NULL \u00e9 " + std::to_string(i) + "\"}";
    n.attempts = i % 3;
    bodies[n.id] = n.body;
    items.push_back(std::move(n));
  }
  ASSERT_TRUE(enqueue_and_wait(*store_, items).ok());
  auto claimed = ok(store_->claim_notifications(200, 10000, 1000));
  ASSERT_EQ(claimed.size(), 300u);
  for (const auto& n : claimed) {
    EXPECT_EQ(n.body, bodies.at(n.id));
    EXPECT_EQ(n.attempts, std::stoi(n.id.substr(1)) % 3);
    EXPECT_EQ(n.recipient_id, "user-" + n.id);
  }
}

// The outbox keeps no message text: a claim reads the message as it is now,
// so an edit reaches the next attempt and a delete removes the message's
// notifications, queued or dead, in its own transaction.
TEST_P(StoreContract, OutboxFollowsEditsAndDeletesOfItsMessage) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  auto kept = send(t.id, a.id, "kept");
  auto gone = send(t.id, a.id, "secret");
  ASSERT_TRUE(kept.ok() && gone.ok());
  // To bob, a participant: only participants get a message's notifications.
  auto about = [&b](const std::string& id, const Message& m) { return notification_of(id, m, b); };
  ASSERT_TRUE(enqueue_and_wait(*store_, {about("k1", kept->message), about("g1", gone->message),
                                         about("g2", gone->message), notification("plain", 100)})
                  .ok());
  ASSERT_TRUE(store_->edit_message(kept->message.id, "", "kept, edited", 4242).ok());
  auto claimed = ok(store_->claim_notifications(200, 10000, 10));
  ASSERT_EQ(claimed.size(), 4u);
  for (const auto& n : claimed) {
    if (n.id == "k1") {
      EXPECT_EQ(n.message_id, kept->message.id);
      EXPECT_EQ(n.content, "kept, edited");
      ASSERT_TRUE(n.edited_at.has_value());
      EXPECT_EQ(*n.edited_at, 4242);
    } else if (n.id == "plain") {
      EXPECT_EQ(n.message_id, "");
      EXPECT_EQ(n.content, "");
    } else {
      EXPECT_EQ(n.content, "secret");
      EXPECT_FALSE(n.edited_at.has_value());
    }
  }
  ASSERT_TRUE(store_->retry_notification("k1", 1, 300).ok());
  ASSERT_TRUE(store_->retry_notification("g1", 1, 300).ok());
  ASSERT_TRUE(store_->dead_letter_notification("g2", 8).ok());
  ASSERT_TRUE(store_->retry_notification("plain", 1, 300).ok());
  EXPECT_EQ(ok(store_->dead_notification_count()), 1);

  ASSERT_TRUE(store_->delete_message(gone->message.id, "").ok());
  EXPECT_EQ(ok(store_->dead_notification_count()), 0);  // the dead letter went with it
  reopen();
  auto again = ok(store_->claim_notifications(400, 50000, 10));
  std::set<std::string> ids;
  for (const auto& n : again) ids.insert(n.id);
  EXPECT_EQ(ids, (std::set<std::string>{"k1", "plain"}));
}

// A notification whose message is deleted after it was queued (the intake
// was behind) is dropped at the claim, never sent.
TEST_P(StoreContract, OutboxDropsANotificationOfADeletedMessageAtClaim) {
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  auto m = send(t.id, a.id, "secret");
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(store_->delete_message(m->message.id, "").ok());
  Notification late = notification("late", 100);
  late.message_id = m->message.id;
  ASSERT_TRUE(enqueue_and_wait(*store_, {late}).ok());
  EXPECT_TRUE(ok(store_->claim_notifications(200, 10000, 10)).empty());
  EXPECT_FALSE(ok(store_->next_notification_due()).has_value());  // and it is gone
}

// A disabled account gets no more message text on its phones: its
// notifications, queued before or after the disable, are dropped at the claim.
TEST_P(StoreContract, OutboxDropsTheNotificationsOfADisabledRecipientAtClaim) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id, c.id});
  auto m = send(t.id, a.id, "for bob and carol");
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(enqueue_and_wait(*store_, {notification_of("to-bob", m->message, b), notification_of("to-carol", m->message, c)}).ok());
  ASSERT_TRUE(store_->set_user_disabled(b.id, true).ok());
  auto claimed = ok(store_->claim_notifications(200, 10000, 10));
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].id, "to-carol");
  ASSERT_TRUE(store_->set_user_disabled(b.id, false).ok());
  EXPECT_TRUE(ok(store_->claim_notifications(20000, 30000, 10)).size() == 1u);  // carol's again; bob's is gone
}

// A member removed from the thread gets no more of its text: their
// notifications, queued before the removal, are dropped at the claim.
TEST_P(StoreContract, OutboxDropsTheNotificationsOfARemovedMemberAtClaim) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id, c.id});
  auto m = send(t.id, a.id, "for members only");
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(enqueue_and_wait(*store_, {notification_of("to-bob", m->message, b), notification_of("to-carol", m->message, c)}).ok());
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, c.id, {}, {}}).ok());
  auto claimed = ok(store_->claim_notifications(200, 10000, 10));
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].id, "to-bob");
  EXPECT_TRUE(ok(store_->claim_notifications(20000, 30000, 10)).size() == 1u);  // bob's again; carol's is gone
}

// Disabling drops the account's queued pushes in its own commit: enabling
// it again before a retry is due brings none of them back.
TEST_P(StoreContract, OutboxForgetsADisabledRecipientsPushesForGood) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id, c.id});
  auto m = send(t.id, a.id, "for bob and carol");
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(enqueue_and_wait(*store_, {notification_of("to-bob", m->message, b), notification_of("to-carol", m->message, c)}).ok());
  ASSERT_TRUE(store_->set_user_disabled(b.id, true).ok());
  ASSERT_TRUE(store_->set_user_disabled(b.id, false).ok());
  auto claimed = ok(store_->claim_notifications(200, 10000, 10));
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].id, "to-carol");
}

// A member removed and added back is not pushed what was said before they
// joined again, though they are in the thread when the retry is due.
TEST_P(StoreContract, OutboxDropsAPushFromBeforeTheRecipientJoinedAgain) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id, c.id});
  auto m = send(t.id, a.id, "before carol left");
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(enqueue_and_wait(*store_, {notification_of("to-bob", m->message, b), notification_of("to-carol", m->message, c)}).ok());
  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, c.id, {}, {}}).ok());
  ASSERT_TRUE(store_->add_participants(t.id, {c.id}).ok());
  auto claimed = ok(store_->claim_notifications(200, 10000, 10));
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].id, "to-bob");
}

TEST_P(StoreContract, NextNotificationDueIsTheEarliestLiveOne) {
  EXPECT_FALSE(ok(store_->next_notification_due()).has_value());
  ASSERT_TRUE(enqueue_and_wait(*store_, {notification("a", 700), notification("b", 300)}).ok());
  EXPECT_EQ(ok(store_->next_notification_due()), std::optional<Micros>(300));
  ASSERT_EQ(ok(store_->claim_notifications(300, 5000, 1)).size(), 1u);  // b, leased until 5000
  EXPECT_EQ(ok(store_->next_notification_due()), std::optional<Micros>(700));
  ASSERT_TRUE(store_->dead_letter_notification("a", 8).ok());
  EXPECT_EQ(ok(store_->next_notification_due()), std::optional<Micros>(5000));
}

TEST_P(StoreContract, ThreadUnreadCountsOfEveryParticipant) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id, c.id});
  Thread other = make_group({a.id, b.id});
  ASSERT_TRUE(send(t.id, a.id, "1").ok());
  ASSERT_TRUE(send(t.id, a.id, "2").ok());
  ASSERT_TRUE(send(t.id, b.id, "3").ok());
  ASSERT_TRUE(send(other.id, a.id, "elsewhere").ok());
  ASSERT_TRUE(store_->mark_read(t.id, c.id, 1).ok());
  std::map<std::string, int64_t> got;
  for (const auto& u : ok(store_->thread_unread_counts(t.id))) got[u.user_id] = u.unread_count;
  // A sender has read up to their own message.
  EXPECT_EQ(got, (std::map<std::string, int64_t>{{a.id, 1}, {b.id, 0}, {c.id, 2}}));
  // The same numbers as each user's own unread_counts.
  for (const auto& [user, n] : got) {
    for (const auto& u : ok(store_->unread_counts(user))) {
      if (u.thread_id != t.id) continue;
      EXPECT_EQ(u.unread_count, n) << user;
    }
  }
  EXPECT_TRUE(ok(store_->thread_unread_counts("00000000-0000-0000-0000-000000000000")).empty());
}

// A member added to a group starts with what was said before as read: the
// history is theirs to scroll back through, not hundreds of unread messages
// (nor a read receipt going back for everyone else). What comes after is
// unread; someone removed and added again starts from their return.
TEST_P(StoreContract, AddedMembersStartWithTheHistoryRead) {
  User a = make_user("alice");
  User b = make_user("bob");
  User c = make_user("carol");
  Thread t = make_group({a.id, b.id});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(send(t.id, a.id, "before " + std::to_string(i)).ok());
  ASSERT_TRUE(ok(store_->add_participants(t.id, {c.id})) == std::vector<std::string>{c.id});
  auto unread_of = [&](const std::string& user) {
    std::map<std::string, int64_t> got;
    for (const auto& u : ok(store_->thread_unread_counts(t.id))) got[u.user_id] = u.unread_count;
    return got[user];
  };
  EXPECT_EQ(unread_of(c.id), 0);
  for (const auto& u : ok(store_->unread_counts(c.id))) EXPECT_EQ(u.unread_count, 0) << u.thread_id;
  ASSERT_TRUE(send(t.id, a.id, "after").ok());
  EXPECT_EQ(unread_of(c.id), 1);
  EXPECT_EQ(unread_of(b.id), 4);

  ASSERT_TRUE(store_->remove_participant_and_wait({t.id, c.id, {}, {}}).ok());
  ASSERT_TRUE(send(t.id, a.id, "while away").ok());
  ASSERT_TRUE(ok(store_->add_participants(t.id, {c.id})) == std::vector<std::string>{c.id});
  EXPECT_EQ(unread_of(c.id), 0);
  ASSERT_TRUE(send(t.id, b.id, "welcome back").ok());
  EXPECT_EQ(unread_of(c.id), 1);
}

// Several nodes claiming from one database never get the same notification.
TEST_P(StoreContract, ConcurrentClaimsNeverOverlap) {
  std::unique_ptr<Store> second;
  if (GetParam() == "postgres") {
    auto opened = open_store_with(options());
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    second = std::move(*opened);
  }
  constexpr int kItems = 200;
  std::vector<Notification> items;
  for (int i = 0; i < kItems; ++i) items.push_back(notification("c" + std::to_string(i), 1));
  ASSERT_TRUE(enqueue_and_wait(*store_, std::move(items)).ok());
  std::mutex mu;
  std::vector<std::string> claimed;
  std::vector<std::thread> claimers;
  for (int w = 0; w < 4; ++w) {
    claimers.emplace_back([&, w] {
      Store& s = (w % 2 && second) ? *second : *store_;
      for (int round = 0; round < 100; ++round) {
        auto got = s.claim_notifications(10, 1000000, 7);
        if (!got.ok() || got->empty()) break;
        std::lock_guard lock(mu);
        for (auto& n : *got) claimed.push_back(n.id);
      }
    });
  }
  for (auto& c : claimers) c.join();
  std::set<std::string> unique(claimed.begin(), claimed.end());
  EXPECT_EQ(unique.size(), claimed.size()) << "a notification was claimed twice";
  EXPECT_EQ(unique.size(), static_cast<size_t>(kItems));
  if (second) second->close();
}

// A node cut off from PostgreSQL without a FIN or RST must notice within
// seconds, not after TCP's retransmissions give up (15 minutes or more):
// every connection has keepalives and a user timeout; a URL may set its own.
TEST_P(StoreContract, PgConnectionsNoticeASilentPeer) {
  if (GetParam() != "postgres") GTEST_SKIP() << "PostgreSQL only";
  auto tcp_option = [](const PgConn& c, int level, int name) {
    int value = -1;
    socklen_t len = sizeof value;
    EXPECT_EQ(getsockopt(c.socket(), level, name, &value, &len), 0);
    return value;
  };
  auto conn = PgConn::open(database_url_);
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  EXPECT_EQ(tcp_option(**conn, SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(tcp_option(**conn, IPPROTO_TCP, TCP_KEEPIDLE), 10);
  EXPECT_EQ(tcp_option(**conn, IPPROTO_TCP, TCP_KEEPINTVL), 5);
  EXPECT_EQ(tcp_option(**conn, IPPROTO_TCP, TCP_KEEPCNT), 3);
  EXPECT_EQ(tcp_option(**conn, IPPROTO_TCP, TCP_USER_TIMEOUT), 30000);
  EXPECT_TRUE((*conn)->run("SELECT 1").ok());

  auto own = PgConn::open(database_url_ + "?keepalives_idle=60&tcp_user_timeout=0");
  ASSERT_TRUE(own.ok()) << own.error().message;
  EXPECT_EQ(tcp_option(**own, IPPROTO_TCP, TCP_KEEPIDLE), 60);
  EXPECT_EQ(tcp_option(**own, IPPROTO_TCP, TCP_USER_TIMEOUT), 0);
  EXPECT_EQ(tcp_option(**own, IPPROTO_TCP, TCP_KEEPCNT), 3);
}

// An append is one statement without a savepoint. When that statement
// fails (here a trigger refuses it; in life, a fault), PostgreSQL has
// aborted the transaction: the batch runs again with a savepoint around each
// op, so only that append fails, as it would have with one, and seq stays
// gapless.
TEST_P(StoreContract, PgAnAppendWhoseStatementFailsFailsAlone) {
  if (GetParam() != "postgres") GTEST_SKIP() << "PostgreSQL only";
  User a = make_user("alice");
  User b = make_user("bob");
  Thread t = make_group({a.id, b.id});
  auto admin = PgConn::open(database_url_);
  ASSERT_TRUE(admin.ok()) << admin.error().message;
  PgConn& c = **admin;
  ASSERT_TRUE(c.run("CREATE FUNCTION refuse_boom() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.content = 'boom'::bytea THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql")
                  .ok());
  ASSERT_TRUE(c.run("CREATE TRIGGER refuse_boom BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_boom()")
                  .ok());

  // Hold the commit clock so the appends after the first queue up as one batch.
  ASSERT_TRUE(c.run("BEGIN").ok());
  ASSERT_TRUE(c.run("SELECT 1 FROM commit_clock WHERE id = 1 FOR UPDATE").ok());
  std::mutex mu;
  std::map<std::string, Result<AppendResult>> results;
  Countdown pending(4);
  auto append = [&](const std::string& text) {
    store_->append(AppendRequest{t.id, a.id, text, "text", text + "-id"}, [&, text](Result<AppendResult> r) {
      std::lock_guard lock(mu);
      results.emplace(text, std::move(r));
      pending.done();
    });
  };
  const uint64_t commits_before = commit_count();
  append("first");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // its batch waits for the clock
  for (const char* text : {"one", "boom", "two"}) append(text);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(c.run("COMMIT").ok());
  pending.wait();

  ASSERT_TRUE(results.at("first").ok());
  EXPECT_EQ(results.at("first")->message.seq, 1);
  ASSERT_FALSE(results.at("boom").ok());
  ASSERT_TRUE(results.at("one").ok()) << results.at("one").error().message;
  ASSERT_TRUE(results.at("two").ok()) << results.at("two").error().message;
  EXPECT_EQ(results.at("one")->message.seq, 2);
  EXPECT_EQ(results.at("two")->message.seq, 3);
  EXPECT_EQ(commit_count() - commits_before, 2u) << "the three queued appends shared one batch";
  auto after = send(t.id, b.id, "after");
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(after->message.seq, 4) << "the failed append took no seq";
  std::vector<std::string> contents;
  for (const auto& m : ok(store_->messages_after(t.id, 0, 10))) contents.push_back(m.content);
  EXPECT_EQ(contents, (std::vector<std::string>{"first", "one", "two", "after"}));
}

// PgConn::exec_pipelined: answers in the order sent, across several rounds;
// a failed statement stops the rest and leaves the connection usable.
TEST_P(StoreContract, PgPipelinedStatementsAnswerInOrder) {
  if (GetParam() != "postgres") GTEST_SKIP() << "PostgreSQL only";
  auto conn = PgConn::open(database_url_);
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  PgConn& c = **conn;
  static const char* const kDivide = "SELECT 1000 / $1::int";
  std::vector<std::vector<PgParam>> lists;
  for (int i = 1; i <= 150; ++i) lists.push_back({i});
  auto all = c.exec_pipelined(kDivide, lists);
  ASSERT_EQ(all.size(), 150u);
  for (int i = 1; i <= 150; ++i) {
    ASSERT_TRUE(all[i - 1].ok()) << i;
    EXPECT_EQ(all[i - 1].i64(0, 0), 1000 / i);
  }

  ASSERT_TRUE(c.run("BEGIN").ok());
  lists[99] = {0};  // division by zero, in the second round
  auto stopped = c.exec_pipelined(kDivide, lists);
  ASSERT_EQ(stopped.size(), 150u);
  for (int i = 0; i < 99; ++i) EXPECT_TRUE(stopped[i].ok()) << i;
  for (int i = 99; i < 150; ++i) EXPECT_FALSE(stopped[i].ok()) << i;
  EXPECT_TRUE(c.transaction_failed());
  ASSERT_TRUE(c.run("ROLLBACK").ok());
  auto after = c.exec(kDivide, {4});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after.i64(0, 0), 250);
  EXPECT_TRUE(c.exec_pipelined(kDivide, {}).empty());
}

// A new session whose setup (the writer's timeouts) failed must not be used
// as it is: it is not healthy(), so its next use reconnects and tries again.
TEST_P(StoreContract, PgASessionWhoseSetupFailedIsNotHealthy) {
  if (GetParam() != "postgres") GTEST_SKIP() << "PostgreSQL only";
  auto admin = PgConn::open(database_url_);
  ASSERT_TRUE(admin.ok()) << admin.error().message;
  ASSERT_TRUE((*admin)->run("CREATE TABLE setup_gate (x int); INSERT INTO setup_gate VALUES (1)").ok());
  auto conn = PgConn::open(database_url_);
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  PgConn& c = **conn;
  // Fails (division by zero) while the gate is empty.
  ASSERT_TRUE(c.set_session_setup("SET statement_timeout = 4321; SELECT 1 / (SELECT count(*)::int FROM setup_gate)"));
  EXPECT_TRUE(c.healthy());

  ASSERT_TRUE((*admin)->run("DELETE FROM setup_gate").ok());
  EXPECT_FALSE(c.reconnect());
  EXPECT_FALSE(c.healthy()) << "a session without its setup";
  EXPECT_FALSE(c.reconnect([] { return false; }));
  EXPECT_FALSE(c.healthy());

  ASSERT_TRUE((*admin)->run("INSERT INTO setup_gate VALUES (1)").ok());
  EXPECT_TRUE(c.reconnect([] { return false; }));
  EXPECT_TRUE(c.healthy());
  auto timeout = c.run("SHOW statement_timeout");
  ASSERT_TRUE(timeout.ok()) << timeout.message();
  EXPECT_EQ(timeout.text(0, 0), "4321ms");
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreContract, ::testing::ValuesIn(backends()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace parley
