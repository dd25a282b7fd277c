// Server frames and JSON views of the model (CONTRACT.md sections 2-4).
// Pure functions, any thread. A message is serialised once; the frames that
// carry it (new_message to every recipient, message_sent to the sender) are
// built around that one text.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <string>
#include <string_view>

#include "bus/bus.h"
#include "common/error.h"
#include "model/model.h"

namespace parley {

boost::json::object user_json(const User& user);           // public profile, never the password hash
boost::json::object message_json(const Message& message);  // CONTRACT section 3
// json::serialize(message_json(message)), byte for byte, but faster: for the
// paths that serialise every message.
std::string message_json_text(const Message& message);
// message_deleted's fields: thread_id, message_id, seq, and change_no when
// the deletion has one (one made before the store numbered changes has none).
boost::json::object deletion_json(const Message& deleted);
boost::json::object thread_json(const Thread& thread);
boost::json::object summary_json(const ThreadSummary& summary);
std::string_view thread_type_name(ThreadType type);

// {"type":T, ...fields, "request_id":R?}
std::string encode_frame(std::string_view type, boost::json::object fields,
                         const boost::json::value& request_id = nullptr);
// {"type":T,"request_id":R?,"data":<data_json>} where data_json is already JSON text.
std::string encode_data_frame(std::string_view type, std::string_view data_json,
                              const boost::json::value& request_id = nullptr);
std::string encode_error(const Error& error, const boost::json::value& request_id = nullptr);
// A fan-out event as a WebSocket JSON frame: {"type":T,"data":payload} or
// {"type":T,...payload's fields}.
std::string encode_event(const BusEvent& event);
// The HTTP error body of CONTRACT section 2: {"status":"error","code":…,"message":…}.
std::string encode_error_body(const Error& error);

}  // namespace parley
