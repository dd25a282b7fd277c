// MemberCache: the participants of each thread, as every send and relay
// needs them, loaded from the Store on first use and kept until forgotten
// (membership changes call forget()). Entries are immutable and shared: a
// BusEvent's recipient list points into one, so a group's list is never
// copied per message.
//
// Thread-safety: any thread. get() may block on the Store on a miss; cached()
// never blocks (event loops use it and go to a worker only on a miss). The
// Store must outlive the cache. Per process: another process's membership
// changes are not seen here.
#pragma once

#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "store/store.h"

namespace parley {

class MemberCache {
 public:
  explicit MemberCache(Store& store) : store_(store) {}

  // The thread's members, loaded on a miss (blocking); nullptr when the
  // thread does not exist; an Error when the store could not answer.
  Result<std::shared_ptr<const ThreadMembers>> get(const std::string& thread_id);
  // The cached members, or nullptr on a miss. Never blocks on storage.
  std::shared_ptr<const ThreadMembers> cached(const std::string& thread_id) const;
  void forget(const std::string& thread_id);

  static bool contains(const ThreadMembers& members, const std::string& user_id);

 private:
  Store& store_;
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const ThreadMembers>> members_;
};

}  // namespace parley
