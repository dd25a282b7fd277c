// Bus: carries chat events to every server process sharing the same store,
// this one included. It is a fast path, not the record: the store is.
//
// Ordering promise: each receiver gets each thread's events in seq order, and
// gets every event, as long as the bus stays connected and the events come
// from one process. LocalBus keeps it always (the store publishes new
// messages from its completion thread in commit order, and publish() calls
// the receiver inline). A networked bus keeps it per publishing process, but
// may reorder the events of two processes writing one thread, and loses what
// is published while it is disconnected; it then says so with a `resync`
// event once it is back. Receivers must therefore treat a seq gap on a thread
// as "read the store" (DeliveryCursor does) and drop duplicates.
//
// Threading: publish() may be called from any thread, at any time after
// set_receiver(). The receiver is called inline on the publishing thread for
// events of this process (the store's completion thread for new messages, a
// worker for receipts and presence, an event loop for relays) and on the
// bus's own I/O thread for events of other processes; it must be quick and
// thread-safe and only hand work on (Fanout posts to the loops). Events are
// immutable once published (their encodings are made once, on first use) and
// shared.
//
// Implementations: LocalBus (one process, the embedded default) and RedisBus
// (redis/redis_bus.h, several processes on one Redis).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/frame.h"

namespace parley {

// The wire formats a server frame is written in: the WebSocket JSON protocol
// and Socket.IO. An index into BusEvent::encoded.
enum class WireFormat : uint8_t { kJson = 0, kSocketIo = 1 };
constexpr size_t kWireFormats = 2;

// A frame made at most once, on first use, by whichever thread needs it first.
// Not std::call_once: glibc's pthread_once under it makes a futex wake-up
// system call every time it completes, one per event and wire format on the
// delivery path; this costs an atomic load once made. A thread that finds
// another making the frame yields until it is there (making one takes
// microseconds); a make() that throws leaves it unmade for the next caller.
class OnceFrame {
 public:
  template <class Make>
  const FramePtr& get(Make&& make) const {
    for (;;) {
      uint8_t state = state_.load(std::memory_order_acquire);
      if (state == kMade) return frame_;
      if (state == kEmpty && state_.compare_exchange_strong(state, kMaking, std::memory_order_acquire)) {
        try {
          frame_ = make();
        } catch (...) {
          state_.store(kEmpty, std::memory_order_release);
          throw;
        }
        state_.store(kMade, std::memory_order_release);
        return frame_;
      }
      std::this_thread::yield();
    }
  }

 private:
  static constexpr uint8_t kEmpty = 0, kMaking = 1, kMade = 2;
  mutable std::atomic<uint8_t> state_{kEmpty};
  mutable FramePtr frame_;
};

struct BusEvent {
  std::string thread_id;
  // User ids to deliver to; every connection of each of them receives `frame`.
  // Shared with the membership cache: a group's list is not copied per message.
  std::shared_ptr<const std::vector<std::string>> recipients;
  // True when recipients is a thread's shared member list (immutable, reused
  // for every message of the thread): each loop may cache whom it resolves to.
  bool shared_recipients = false;
  // The server frame, independent of the wire: its `type` and its payload,
  // the text of a JSON object. With payload_is_data the payload is the
  // frame's `data` (a message); otherwise its fields are the frame's own.
  std::string type;
  std::string payload;
  bool payload_is_data = false;
  std::string message_id;        // new_message (delivery receipts), message_edited/_deleted: the message's id
  std::string exclude_session;   // a session that must not get it (the sender's own); empty = none
  int64_t seq = 0;               // > 0 for new_message events: used to deliver each message once
  // A new_message published again for a retried send (ChatService::redeliver):
  // not for the sender's session, nor for a connection that opened after the
  // message was stored and was sent nothing of the thread; not counted again.
  // created_at: the message's (redeliveries only).
  bool redelivery = false;
  int64_t created_at = 0;
  // message_edited / message_deleted: the store's number of the change
  // (Message::change_no), which tells a node what it may have missed.
  int64_t change_no = 0;
  // read_receipt: whose mark it is and how far it reaches (the payload says
  // so too), so that a node drops one that comes after a higher mark.
  std::string reader_id;
  int64_t read_seq = 0;
  // A control event with no frame: events may have been lost, so every
  // session re-checks its threads against the store.
  bool resync = false;
  // A control event with no frame, from this process only: every edit and
  // deletion numbered up to changes_after reached this process and was handed
  // to the loops before it (ChatService::tick_change_marks).
  bool changes_mark = false;
  // On a resync handed to the sessions (ChatService::on_bus): they re-read
  // the edits and deletions numbered above this in their threads (-1: none).
  int64_t changes_after = -1;
  // A control event with no frame: thread_id's participants changed, so every
  // process forgets its cached list of them (chat/member_cache.h).
  bool members_changed = false;
  // The frame in each wire format, encoded once for all recipients of that
  // format, on first use (see Delivery in chat/session.h).
  std::array<OnceFrame, kWireFormats> encoded;
};

using BusEventPtr = std::shared_ptr<const BusEvent>;
using BusReceiver = std::function<void(const BusEventPtr&)>;

class Bus {
 public:
  virtual ~Bus() = default;
  // Must be called once, before the first publish. A networked bus starts
  // receiving other processes' events only then.
  virtual void set_receiver(BusReceiver receiver) = 0;
  virtual void publish(BusEventPtr event) = 0;
  virtual std::string describe() const = 0;  // "local", "redis://…"
  // False while a networked bus is disconnected (local delivery goes on).
  virtual bool healthy() const = 0;
  // Stops receiving other processes' events and disconnects (publish() then
  // reaches this process only). Call before the receiver's target goes away.
  virtual void close() {}
};

std::unique_ptr<Bus> make_local_bus();

}  // namespace parley
