// Fuzz target: the Socket.IO v5 packet parser (src/protocol/socketio), then
// what a session does with an event: its name to a frame type and its
// argument through the client frame validator.
#include <boost/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/client_frame.h"
#include "protocol/socketio.h"

namespace json = boost::json;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto packet = parley::sio::decode_packet(text);
  if (!packet) return 0;
  // The shape decode_packet promises for each type.
  if (packet->id && *packet->id > 999999999999999ULL) std::abort();  // at most 15 digits
  if (packet->data_error) {
    // Sound framing, refused data (not UTF-8, an unpaired surrogate, too deep): nothing to act on.
    if (!packet->data.is_null()) std::abort();
    return 0;
  }
  if (packet->type == parley::sio::SioType::kEvent || packet->type == parley::sio::SioType::kBinaryEvent) {
    if (!packet->data.is_array() || packet->data.get_array().empty()) std::abort();
    const json::array& args = packet->data.get_array();
    if (!args[0].is_string()) return 0;
    auto type = parley::client_type(args[0].get_string());
    if (!type) return 0;
    static const json::object kNoFields;
    const json::object* fields = &kNoFields;
    if (args.size() > 1 && args[1].is_object()) fields = &args[1].get_object();
    (void)parley::parse_client_fields(*type, *fields);
    // An event the server sends back with the same name and id parses again.
    auto again = parley::sio::decode_packet(
        parley::sio::encode_event(args[0].get_string(), "{}", packet->id).substr(1));
    if (!again || again->id != packet->id) std::abort();
  }
  if (packet->type == parley::sio::SioType::kConnect) {
    (void)parley::sio::encode_connect_error(packet->nsp, "Invalid namespace");
  }
  return 0;
}
