// Fuzz target: the WebSocket frame decoder (src/net/ws_reader, ws_frame):
// headers and lengths, masking, fragmentation, control frames, the size
// limit. The first input byte picks a chunk size; the rest is the byte
// stream from a client. The stream is decoded twice, whole and in chunks,
// and both must report the same events (a frame split across reads must
// decode as if it came in one), and every event must keep RFC 6455's rules.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/utf8.h"
#include "net/ws_frame.h"
#include "net/ws_reader.h"

namespace {

constexpr uint64_t kMaxMessage = 4096;  // small, so the size limit is reachable

struct Recorder : parley::ws::WsReader::Handler {
  std::vector<std::string> events;
  bool stopped = false;

  bool on_message(parley::ws::Opcode opcode, std::string_view message) override {
    if (stopped) std::abort();  // nothing after a violation
    if (opcode != parley::ws::kText && opcode != parley::ws::kBinary) std::abort();
    if (message.size() > kMaxMessage) std::abort();
    // What the session does with a text message (RFC 6455 8.1).
    if (opcode == parley::ws::kText) (void)parley::utf8_length(message);
    events.push_back("m" + std::to_string(opcode) + ":" + std::string(message));
    return true;
  }
  bool on_control(parley::ws::Opcode opcode, std::string_view payload) override {
    if (stopped) std::abort();
    if (opcode != parley::ws::kPing && opcode != parley::ws::kPong && opcode != parley::ws::kClose) std::abort();
    if (payload.size() > 125) std::abort();  // RFC 6455 5.5
    events.push_back("c" + std::to_string(opcode) + ":" + std::string(payload));
    return opcode != parley::ws::kClose;  // as the session: a close stops reading
  }
  void on_violation(uint16_t code, std::string_view) override {
    if (stopped) std::abort();
    if (code != parley::ws::kCloseProtocolError && code != parley::ws::kCloseTooBig) std::abort();
    stopped = true;
    events.push_back("v" + std::to_string(code));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t chunk = 1 + data[0] % 32;
  const std::string stream(reinterpret_cast<const char*>(data + 1), size - 1);

  Recorder whole;
  {
    parley::ws::WsReader reader(kMaxMessage);
    std::string bytes = stream;  // consume() unmasks in place
    reader.consume(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size(), whole);
  }

  Recorder pieces;
  {
    parley::ws::WsReader reader(kMaxMessage);
    for (size_t pos = 0; pos < stream.size(); pos += chunk) {
      std::string bytes = stream.substr(pos, chunk);
      if (!reader.consume(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size(), pieces)) break;
    }
  }
  if (whole.events != pieces.events) std::abort();

  // The server's own frames must parse back (any payload length, as a client would see them, unmasked).
  const std::string_view payload(stream.data(), std::min<size_t>(stream.size(), 300));
  uint8_t header[parley::ws::kMaxHeaderLen];
  size_t n = parley::ws::encode_header(parley::ws::kBinary, stream.size(), header);
  if (n != parley::ws::header_size(stream.size())) std::abort();
  std::string close = parley::ws::close_payload(1000, payload);
  if (close.size() > 125) std::abort();
  return 0;
}
