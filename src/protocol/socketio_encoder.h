// SocketIoEncoder: the server's frames as Socket.IO v5 packets inside
// Engine.IO message packets (CONTRACT.md section 7). An event is an EVENT
// named by the frame's type, the rest of the frame its argument. A reply goes
// in the ack of the client's event when the client asked for one (the
// request is then the ack id): {success:true,…} or {success:false,error,code};
// otherwise it is an event too. new_message asks the client for an ack,
// which the session turns into a delivery receipt: the ack id is made once
// per message, shared by every recipient, and says which message it is: its
// thread (a number given here to each thread id, for the process's life)
// and its seq, so an ack is understood however late it comes. A message
// whose numbers do not fit gets a plain id, remembered in a table of the
// last kRemembered. Numbers start at a random place in each process, so that
// an ack a client keeps across a restart (socket.io-client sends it on the
// new connection) seldom names a thread there; the session also takes an ack
// only for a message it was sent (SocketIoSession::on_ack).
// Any thread: the tables are locked.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "protocol/encoder.h"

namespace parley {

class SocketIoEncoder final : public Encoder {
 public:
  SocketIoEncoder();
  WireFormat format() const override { return WireFormat::kSocketIo; }
  FramePtr event(const BusEvent& event) const override;
  FramePtr replayed_message(const MessageRef& message, std::string_view message_json) const override;
  Frames reply(std::string_view type, boost::json::object fields, const boost::json::value& request) const override;
  Frames data_reply(std::string_view type, std::string_view data_json,
                    const boost::json::value& request) const override;
  Frames error(const Error& error, const boost::json::value& request) const override;
  Frames done(const boost::json::value& request) const override;

  // A fresh ack id for a server event that asks for an ack (not a message).
  uint64_t next_ack_id() const { return next_id_.fetch_add(1, std::memory_order_relaxed); }
  // The message whose new_message carried `ack_id`; nullopt otherwise (a
  // ping's ack, a forged id, a plain id no longer among the last kRemembered).
  // message_id is empty when the id carries only the thread and seq.
  struct Acked {
    std::string message_id;
    std::string thread_id;
    int64_t seq = 0;
  };
  std::optional<Acked> message_for_ack(uint64_t ack_id) const;

 private:
  uint64_t remember(const MessageRef& message) const;

  // An ack id that names its message: kNamed | thread number << kSeqBits |
  // seq. Below 10^15, the longest ack id a Socket.IO decoder here reads
  // (socketio.h), and exact in a JavaScript number; plain ids stay below kNamed.
  static constexpr int kSeqBits = 27;
  static constexpr int kThreadBits = 21;
  static constexpr uint64_t kNamed = uint64_t{1} << (kSeqBits + kThreadBits);
  static constexpr uint64_t kNumbers = (uint64_t{1} << kThreadBits) - 1;  // 1 .. kNumbers
  // Threads numbered at most (about 100 bytes each); later ones get plain ids.
  static constexpr size_t kMaxNumbered = size_t{1} << 17;
  uint64_t number_of(size_t index) const { return 1 + (first_number_ + index) % kNumbers; }
  static constexpr size_t kRemembered = 1 << 16;
  struct Slot {
    uint64_t id = 0;
    Acked message;  // its strings keep their capacity when the slot is reused
  };
  mutable std::atomic<uint64_t> next_id_{1};
  mutable std::mutex mu_;
  mutable std::array<Slot, kRemembered> slots_;
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  const uint64_t first_number_;  // random, below kNumbers
  mutable std::unordered_map<std::string, uint64_t, Hash, std::equal_to<>> thread_numbers_;
  mutable std::vector<std::string> threads_;  // in the order numbered: number_of(index)
};

const SocketIoEncoder& socketio_encoder();

}  // namespace parley
