// The wire format of a bus event between Parley processes (RedisBus), one
// Redis pub/sub message per event:
//
//   {"v":1,"node":"<publisher>","type":"new_message","thread_id":"…","seq":42,
//    "recipients":["<user id>",…],"shared":true,"exclude":"<session id>",
//    "data":true,"message_id":"…"}\n<payload>
//
// a JSON header on one line (Boost.JSON never writes a raw newline), then the
// event's payload (BusEvent::payload, a JSON object's text: the message for
// "data":true, else the frame's own fields) as is, so it is neither escaped
// nor parsed again; each node encodes it per wire format as for its own
// events. message_edited / message_deleted also carry "change":N (the
// store's change number) and "message_id". Absent fields take BusEvent's defaults. A control
// event is the header alone: {"v":1,"node":"…","resync":true}. Receivers
// ignore their own node's events (they were delivered locally on publish)
// and refuse other versions. Thread-safe (pure functions).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "bus/bus.h"

namespace parley {

std::string encode_bus_event(const BusEvent& event, const std::string& node_id);

struct DecodedBusEvent {
  std::string node_id;
  std::shared_ptr<BusEvent> event;
};
// nullopt: not a Parley bus event of this version.
std::optional<DecodedBusEvent> decode_bus_event(std::string_view payload);

}  // namespace parley
