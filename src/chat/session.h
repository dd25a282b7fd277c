// ClientSession: one authenticated client connection as the chat layer sees
// it, whatever the transport (WebSocket today, Engine.IO later). A session
// belongs to one event loop; its methods are called only on that loop's thread.
#pragma once

#include <string>

#include "bus/bus.h"

namespace parley {

class ClientSession {
 public:
  virtual ~ClientSession() = default;
  virtual const std::string& session_id() const = 0;
  virtual const std::string& user_id() const = 0;
  // A fan-out event for this session's user. Loop thread only.
  virtual void deliver(const BusEvent& event) = 0;
  // An event this session must not get (event.exclude_session is its own: it
  // sent the message). Still told, so that its own seq is not taken for a gap.
  virtual void excluded(const BusEvent& event) = 0;
  // The bus may have lost events (it reconnected): re-check every thread
  // against the store.
  virtual void resync() = 0;
};

}  // namespace parley
