// Bus: carries chat events to every server process sharing the same store,
// this one included. publish() may be called from any thread. Where the
// receiver runs depends on the implementation: LocalBus calls it inline, on
// the publishing thread (the store's completion thread for new messages, a
// worker for receipts and presence, an event loop for relays); a networked bus
// calls it on its own thread. Either way, in publish order for events
// published by one thread, so the receiver must be quick and thread-safe.
// Events are immutable once published and shared.
//
// Implementations: LocalBus (one process, the embedded default) and, for
// scale-out, a Redis pub/sub one.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace parley {

using Frame = std::string;
using FramePtr = std::shared_ptr<const Frame>;

struct BusEvent {
  std::string thread_id;
  // User ids to deliver to; every connection of each of them receives `frame`.
  // Shared with the membership cache: a group's list is not copied per message.
  std::shared_ptr<const std::vector<std::string>> recipients;
  // True when recipients is a thread's shared member list (immutable, reused
  // for every message of the thread): each loop may cache whom it resolves to.
  bool shared_recipients = false;
  FramePtr frame;                // an encoded server frame, sent as is, encoded once
  std::string exclude_session;   // a session that must not get it (the sender's own); empty = none
  int64_t seq = 0;               // > 0 for new_message events: used to deliver each message once
};

using BusEventPtr = std::shared_ptr<const BusEvent>;
using BusReceiver = std::function<void(const BusEventPtr&)>;

class Bus {
 public:
  virtual ~Bus() = default;
  // Must be called once, before the first publish.
  virtual void set_receiver(BusReceiver receiver) = 0;
  virtual void publish(BusEventPtr event) = 0;
  virtual std::string describe() const = 0;  // "local", "redis://…"
  virtual bool healthy() const = 0;
};

std::unique_ptr<Bus> make_local_bus();

}  // namespace parley
