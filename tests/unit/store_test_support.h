// Shared pieces of the store tests: a fixture that builds users, threads and
// messages through any Store, and a callback countdown. The contract test
// (store_contract_test.cc) runs one body against every backend; the SQLite
// tests (sqlite_store_test.cc) add what only the embedded store has.
#pragma once

#include <gtest/gtest.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "store/store.h"

namespace parley {

// Waits for a known number of async callbacks.
class Countdown {
 public:
  explicit Countdown(int n) : n_(n) {}
  void done() {
    std::lock_guard lock(mu_);
    if (--n_ == 0) cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return n_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
};

// The value of a read that must succeed; a failed read fails the test.
template <typename T>
T ok(Result<T> r) {
  if (!r.ok()) {
    ADD_FAILURE() << "store read failed: " << r.error().code << ": " << r.error().message;
    return T{};
  }
  return std::move(*r);
}

inline Participant member(const std::string& user_id, bool is_admin = false) {
  Participant p;
  p.user_id = user_id;
  p.is_admin = is_admin;
  return p;
}

class StoreFixture : public ::testing::Test {
 protected:
  // Opens the store under test on the same data each time.
  virtual Result<std::unique_ptr<Store>> open_store() = 0;
  // Group commits made so far by the open store.
  virtual uint64_t commit_count() = 0;

  void TearDown() override { store_.reset(); }

  void reopen() {
    store_.reset();
    auto opened = open_store();
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    store_ = std::move(*opened);
  }

  User make_user(const std::string& username, std::optional<std::string> phone = std::nullopt) {
    User u;
    u.username = username;
    u.full_name = "Full " + username;
    u.phone_number = std::move(phone);
    u.role = "member";
    auto r = store_->create_user(u);
    EXPECT_TRUE(r.ok()) << r.error().code;
    return r.ok() ? *r : User{};
  }

  Thread make_group(const std::vector<std::string>& user_ids, const std::string& title = "group") {
    Thread t;
    t.type = ThreadType::kGroup;
    t.title = title;
    t.created_by = user_ids.front();
    for (const auto& id : user_ids) t.participants.push_back(member(id, id == user_ids[0]));
    auto r = store_->create_thread(t);
    EXPECT_TRUE(r.ok());
    return r.ok() ? r->thread : Thread{};
  }

  Result<Store::CreatedThread> make_direct(const std::string& a, const std::string& b) {
    Thread t;
    t.type = ThreadType::kDirect;
    t.created_by = a;
    t.participants = {member(a), member(b)};
    return store_->create_thread(t);
  }

  Result<AppendResult> send(const std::string& thread_id, const std::string& sender, const std::string& content,
                            const std::string& client_msg_id = "") {
    return store_->append_and_wait(AppendRequest{thread_id, sender, content, "text", client_msg_id});
  }

  std::unique_ptr<Store> store_;
};

}  // namespace parley
