// ClientSession: one authenticated client connection as the chat layer sees
// it, whatever the transport (WebSocket today, Engine.IO later). A session
// belongs to one event loop; deliver() is called only on that loop's thread.
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
};

}  // namespace parley
