// Client frames: parsing and shape-checking of what a client sends over a
// WebSocket (docs/protocol.md). Only syntax and JSON types are checked
// here; what a frame may do is the chat service's business. Pure functions,
// any thread.
#pragma once

#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace parley {

enum class ClientType {
  kAuth,
  kPing,
  kSendMessage,
  kSubscribeThread,
  kUnsubscribeThread,
  kJoinChat,
  kMarkAsRead,
  kMessageReceived,
  kTyping,
  kCallOffer,
  kCallAnswer,
  kIceCandidate,
  kCallEnd,
  kDeleteMessage,
  kEditMessage,
};

struct ClientFrame {
  ClientType type = ClientType::kPing;
  boost::json::value request_id;  // null when absent; echoed on replies as given
  std::string token;              // auth
  std::string thread_id;          // lowercase UUID, when given
  std::string username;           // send_message / join_chat
  std::string content;            // send_message (alias `text`), edit_message
  std::string message_type = "text";
  std::string client_msg_id;
  std::optional<int64_t> since_seq;
  std::optional<int64_t> up_to_seq;
  std::string message_id;         // message_received, delete_message, edit_message
  bool is_typing = false;
  boost::json::value payload;     // call signalling, relayed as is
  // auth: subscribe_thread frames to begin as the connection is established,
  // before any live message reaches it (parse_subscribe_list).
  std::vector<ClientFrame> subscribes;
  // auth: the client's change mark (parse_changes_after); nullopt when not given.
  std::optional<int64_t> changes_after;
};

// The most entries an `auth` frame's (or a Socket.IO CONNECT's) `subscribe`
// list may have: half the default burst of the frame rate limit, whose
// tokens they take.
constexpr size_t kMaxSubscribesAtAuth = 500;

// Reads a `subscribe` list (null or absent: none): an array of up to
// kMaxSubscribesAtAuth objects, each the fields of a subscribe_thread frame
// (`thread_id`, `since_seq`) with its own `request_id` when
// keep_request_ids (a Socket.IO CONNECT has no way to echo one), each thread
// once. Errors: invalid_field, or an entry's missing_field / invalid_field,
// whose message names it ("subscribe[2]: ...").
Result<std::vector<ClientFrame>> parse_subscribe_list(const boost::json::value* list, bool keep_request_ids);

// Reads an `auth` frame's (or a Socket.IO CONNECT's) `changes_after`: absent
// gives nullopt (no sync asked for); null gives kNoChangeMark (a client with
// no mark yet, which is sent one); else an integer from 0 to kMaxSeq, the
// `change_mark` of the client's last `changes_synced`. Error: invalid_field.
constexpr int64_t kNoChangeMark = -1;
Result<std::optional<int64_t>> parse_changes_after(const boost::json::object& o);
// The same as a WebSocket upgrade's `?changes_after=` (its token in the URL
// or a header, with no `auth` frame): `null` for no mark yet, else digits.
Result<int64_t> parse_changes_after_param(std::string_view text);

struct ParsedFrame {
  ClientFrame frame;           // request_id is filled even when error is set (unless it is the error)
  std::optional<Error> error;  // codes: invalid_json, invalid_utf8, unknown_type, missing_field, invalid_field
};

// A WebSocket JSON frame: the envelope (type, request_id), then its fields.
ParsedFrame parse_client_frame(std::string_view text);

// The `type` names parse_client_frame accepts (docs/protocol.md lists each).
std::vector<std::string_view> client_frame_types();
// The frame type called `name` (`send_message`…); nullopt when there is none.
std::optional<ClientType> client_type(std::string_view name);
// Reads and checks the fields of a frame of `type` from `fields`, for any
// envelope (a WebSocket JSON frame, a Socket.IO event). request_id is left null.
ParsedFrame parse_client_fields(ClientType type, const boost::json::object& fields);

// The error a client gets for `text` that Boost.JSON refused with `ec`:
// invalid_utf8 (bad bytes, a surrogate escape that does not pair up) or
// invalid_json ("<what> is not valid JSON: …").
Error json_parse_error(const boost::system::error_code& ec, std::string_view text, std::string_view what);

// Parses a JSON object; errors invalid_json ("<what> is not valid JSON: …",
// or a number beyond a double's range) / invalid_utf8.
Result<boost::json::object> parse_json_object(std::string_view text, std::string_view what = "body");

// Whether `v` holds a number beyond a double's range (1e400). Boost.JSON
// reads one as infinity, and serialising that writes `Infinity`, which is
// not JSON: relayed as is (a call's payload), it would break every client
// that receives it.
bool has_infinite_number(const boost::json::value& v);

}  // namespace parley
