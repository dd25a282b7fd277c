// ClientSession: one authenticated client connection as the chat layer sees
// it, whatever the transport (the WebSocket JSON protocol, Socket.IO). A
// session belongs to one event loop; its methods are called only on that
// loop's thread.
//
// Delivery: one fan-out event as one loop hands it to its sessions. It gives
// each session the event in that session's wire format: encoded once per
// format for the whole process (BusEvent::encoded), and copied once per loop
// when several sessions of the loop share it, so that queued frames of
// different loops never count references on one shared block.
#pragma once

#include <array>
#include <string>

#include "bus/bus.h"
#include "store/store.h"  // AccountState

namespace parley {

class Delivery {
 public:
  Delivery(const BusEvent& event, bool several_sessions) : event_(event), copy_(several_sessions) {}
  const BusEvent& event() const { return event_; }

  // The event in `format`; `encode()` makes it when no loop has yet.
  template <class Encode>
  const FramePtr& frame(WireFormat format, Encode&& encode) {
    FramePtr& local = local_[static_cast<size_t>(format)];
    if (!local) {
      const FramePtr& shared = event_.encoded[static_cast<size_t>(format)].get(encode);
      local = copy_ && shared ? std::make_shared<const Frame>(*shared) : shared;
    }
    return local;
  }

 private:
  const BusEvent& event_;
  bool copy_;
  std::array<FramePtr, kWireFormats> local_;
};

class ClientSession {
 public:
  virtual ~ClientSession() = default;
  virtual const std::string& session_id() const = 0;
  virtual const std::string& user_id() const = 0;
  // A fan-out event for this session's user. Loop thread only.
  virtual void deliver(Delivery& delivery) = 0;
  // An event this session must not get (event.exclude_session is its own: it
  // sent the message). Still told, so that its own seq is not taken for a gap.
  virtual void excluded(const BusEvent& event) = 0;
  // The bus may have lost events (it reconnected): re-check every thread
  // against the store, and the edits and deletions numbered above
  // changes_after (-1: not those) in the user's threads.
  virtual void resync(int64_t changes_after) = 0;
  // Every edit and deletion numbered up to `through` has been handed to this
  // loop before this call (BusEvent::changes_mark). A session that keeps a
  // client's change mark may give it this one once they are sent; others
  // ignore it.
  virtual void changes_marked(int64_t through) { (void)through; }
  // The user's account state changed (disabled, tokens revoked): the session
  // closes itself when it may no longer be open.
  virtual void account_changed(const AccountState& state) = 0;
};

}  // namespace parley
