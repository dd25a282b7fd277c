// Hub: the sessions of one event loop, indexed by user, and the fan-out of
// bus events to them. Each event loop owns one Hub and is the only thread
// that touches it, so delivery takes no locks. Sessions are not owned: a
// session removes itself before it dies.
//
// Fanout: the bus receiver; it hands every event to every loop's Hub through
// that loop's post function. Built once at start, then read-only.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "bus/bus.h"
#include "chat/arrival_log.h"
#include "chat/session.h"

namespace parley {

class Hub {
 public:
  void add(ClientSession* session);
  void remove(ClientSession* session);
  // Delivers to every local session of the event's recipients. Sessions must
  // not add or remove themselves from inside deliver().
  void dispatch(const BusEvent& event);
  // Every session re-checks its threads against the store (the bus reconnected).
  void resync(int64_t changes_after);
  void changes_marked(int64_t through);
  // Tells the user's sessions on this loop (they may close, so they are copied first).
  void account_changed(const AccountState& state);
  size_t session_count() const { return count_; }
  // Several nodes: keep the log of messages handed to this loop (ArrivalLog),
  // for connections' first fills. Before the first event.
  void log_arrivals(Micros keep);
  const ArrivalLog* arrivals() const { return arrivals_.get(); }
  bool has_user(const std::string& user_id) const { return by_user_.count(user_id) != 0; }

 private:
  // The local sessions of a shared member list, resolved once and reused for
  // every message of the thread until a session comes or goes on this loop.
  struct Resolved {
    std::shared_ptr<const std::vector<std::string>> members;  // pins the key's address
    uint64_t generation = 0;
    std::vector<ClientSession*> sessions;
  };
  const std::vector<ClientSession*>& resolve(const BusEvent& event);

  // Most users have one or two sessions: a small vector beats a set.
  std::unordered_map<std::string, std::vector<ClientSession*>> by_user_;
  std::unordered_map<const void*, Resolved> resolved_;
  std::vector<ClientSession*> scratch_;
  uint64_t generation_ = 1;
  size_t count_ = 0;
  std::unique_ptr<ArrivalLog> arrivals_;
};

using PostFn = std::function<void(std::function<void()>)>;

// Events for one loop gather in an inbox and are dispatched together by one
// posted task: while a loop is busy, the events of a whole group commit pile
// up and go out as one burst, which the network layer then writes to each
// socket in one call.
class Fanout {
 public:
  void add_loop(Hub* hub, PostFn post);
  void operator()(const BusEventPtr& event) const;
  // Runs fn on every loop, with that loop's Hub (from any thread).
  void each_loop(const std::function<void(Hub&)>& fn) const;

 private:
  struct Inbox {
    Hub* hub;
    PostFn post;
    std::mutex mu;
    std::vector<BusEventPtr> events;
    bool posted = false;
  };
  std::vector<std::unique_ptr<Inbox>> loops_;
};

}  // namespace parley
