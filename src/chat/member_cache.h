// MemberCache: the participants of each thread, as every send and relay
// needs them, loaded from the Store on first use and kept until forgotten.
// Entries are immutable and shared: a BusEvent's recipient list points into
// one, so a group's list is never copied per message.
//
// Staleness: this process's membership changes are bracketed by
// begin_change() and end_change(): while one is being written, the thread's
// list is read from the store every time and cached nowhere, so a list
// asked for after the change committed never predates it (a send's fan-out
// asks again once its message is committed: ChatService::store_and_publish).
// Another
// process's reach it as a `members_changed` bus event (ChatService::on_bus_event),
// and a bus `resync` (events may have been lost) calls forget_all(). The
// cache is trusted only while the bus is healthy: while it is not, cached()
// misses and get() reads the store every time, so a change made on another
// node during a Redis outage is never hidden behind an old entry. And no
// entry is used after max_age (10 s): the backstop for an event that never
// came (a node that died cut off from Redis, with its change unpublished).
// Entries past max_age are dropped whenever the table has doubled since it
// was last swept (from `sweep_from` entries on), so it holds about the
// threads used within max_age, not every thread ever used.
//
// Thread-safety: any thread. get() may block on the Store on a miss; cached()
// never blocks (event loops use it and go to a worker only on a miss), and a
// thread that asks for a list it asked for before takes no lock: each thread
// keeps the entries it used until the next forget anywhere (membership
// changes are rare; sends and typing are not). The Store and the Bus must
// outlive the cache.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "bus/bus.h"
#include "store/store.h"

namespace parley {

class MemberCache {
 public:
  MemberCache(Store& store, const Bus& bus, std::chrono::milliseconds max_age = std::chrono::seconds(10),
              size_t sweep_from = 1024);

  // The thread's members, loaded on a miss (blocking); nullptr when the
  // thread does not exist; an Error when the store could not answer.
  Result<std::shared_ptr<const ThreadMembers>> get(const std::string& thread_id);
  // As get(), but a cached list of a lower ThreadMembers::version than
  // `version` (the store has committed a change this process has not heard
  // of yet) is dropped and the members read again; if that read fails, the
  // old list is the answer (logged).
  Result<std::shared_ptr<const ThreadMembers>> get_at_least(const std::string& thread_id, int64_t version);
  // The cached members, or nullptr on a miss. Never blocks on storage.
  std::shared_ptr<const ThreadMembers> cached(const std::string& thread_id) const;
  void forget(const std::string& thread_id);
  void forget_all();
  // A change of the thread's members is about to be written (begin_change)
  // or is done, committed or failed (end_change, which forgets the list).
  // In between, get() reads the store every time and cached() misses.
  void begin_change(const std::string& thread_id);
  void end_change(const std::string& thread_id);

  static bool contains(const ThreadMembers& members, const std::string& user_id);
  // Lists held in the shared table (tests).
  size_t size() const;

 private:
  Store& store_;
  const Bus& bus_;
  mutable std::shared_mutex mu_;
  struct Entry {
    std::shared_ptr<const ThreadMembers> members;
    int64_t loaded_ms = 0;  // a coarse monotonic clock
  };
  bool fresh(int64_t loaded_ms, int64_t now_ms) const { return now_ms - loaded_ms < max_age_ms_; }
  void sweep(int64_t now_ms);  // under mu_, exclusive

  const int64_t max_age_ms_;
  const size_t sweep_from_;
  size_t sweep_at_;  // the next sweep, by members_.size(); under mu_
  std::unordered_map<std::string, Entry> members_;
  // Threads with a membership change being written, and how many.
  std::unordered_map<std::string, int> changing_;
  // Bumped by every forget, under mu_: a list read from the store before a
  // forget is not cached after it (it may predate the change that caused the
  // forget), and every thread's own copies are dropped.
  std::atomic<uint64_t> version_{0};
  // Tells one cache's per-thread copies from another's (tests run several).
  const uint64_t id_;
};

}  // namespace parley
