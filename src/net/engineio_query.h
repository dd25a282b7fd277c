// The Engine.IO part of a request target (?EIO=4&transport=…&sid=…): a pure
// parser, any thread. Apart from engineio.h so it needs no Beast or Asio
// (the fuzz target in fuzz/engineio_fuzz.cc links it alone).
#pragma once

#include <string>
#include <string_view>

namespace parley::net {

struct EioQuery {
  std::string eio;        // protocol revision: "4"
  std::string transport;  // "polling" | "websocket"
  std::string sid;        // empty on a handshake
};
EioQuery parse_eio_query(std::string_view target);

}  // namespace parley::net
