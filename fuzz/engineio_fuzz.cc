// Fuzz target: the Engine.IO v4 parsers (src/net/engineio_query,
// src/protocol/socketio): a request target's query, then a polling body
// split into packets, each packet's type, and a message packet's Socket.IO
// packet. The input is "TARGET\nBODY".
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "net/engineio_query.h"
#include "protocol/socketio.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t newline = input.find('\n');
  std::string_view target = input.substr(0, newline);
  std::string_view body = newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1);

  parley::net::EioQuery query = parley::net::parse_eio_query(target);
  if (target.find('?') == std::string_view::npos && (!query.eio.empty() || !query.sid.empty())) std::abort();

  auto packets = parley::sio::split_payload(body);
  if (!packets) return 0;
  size_t total = packets->size() - 1;  // the separators
  for (std::string_view p : *packets) {
    if (p.empty() || p.find(parley::sio::kRecordSeparator) != std::string_view::npos) std::abort();
    total += p.size();
    if (p[0] == parley::sio::kMessage) (void)parley::sio::decode_packet(p.substr(1));
  }
  if (total != body.size()) std::abort();  // nothing lost, nothing added
  return 0;
}
