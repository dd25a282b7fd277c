// Encoder: how one wire format writes the server's frames. A Connection
// builds every reply and event through the Encoder its transport chose, so
// the chat protocol's dispatch is written once for every wire format.
// Implementations are process-wide and stateless or internally locked: any
// thread may call them.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <string_view>
#include <vector>

#include "bus/bus.h"
#include "common/error.h"

namespace parley {

using Frames = std::vector<FramePtr>;

// The message a `new_message` frame carries, as a delivery receipt names it.
struct MessageRef {
  std::string_view id;
  std::string_view thread_id;
  int64_t seq = 0;
};

class Encoder {
 public:
  virtual ~Encoder() = default;
  virtual WireFormat format() const = 0;

  // A fan-out event; made once per event for every recipient of this format.
  virtual FramePtr event(const BusEvent& event) const = 0;
  // A message one connection is sent on its own (a replay) as `new_message`.
  virtual FramePtr replayed_message(const MessageRef& message, std::string_view message_json) const = 0;
  // A reply to a client frame. `request` identifies the request (the
  // client's request_id, a Socket.IO ack id); null for frames nobody asked for.
  virtual Frames reply(std::string_view type, boost::json::object fields, const boost::json::value& request) const = 0;
  // A reply whose payload is a message (`message_sent`), already JSON text.
  virtual Frames data_reply(std::string_view type, std::string_view data_json,
                            const boost::json::value& request) const = 0;
  virtual Frames error(const Error& error, const boost::json::value& request) const = 0;
  // A request that succeeded with no reply of its own (typing, relays,
  // message_received): nothing natively; an empty success where the wire
  // promises an answer to every request that asks (a Socket.IO ack).
  virtual Frames done(const boost::json::value& request) const = 0;
};

// The WebSocket JSON protocol (CONTRACT.md section 4).
const Encoder& json_encoder();

}  // namespace parley
