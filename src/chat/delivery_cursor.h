// DeliveryCursor: for one connection, which messages of each thread it has
// been sent, so that live delivery and a replay (subscribe_thread with
// since_seq) together send every message once, and a replay in seq order.
//
// Model: live delivery on a connection is in seq order, so the seqs a
// connection was sent form one range [lo, hi] per thread. While a replay of a
// thread runs, live messages of that thread are held; when the replay ends
// they go out after it, skipping what the replay already sent.
// Not thread-safe: one connection, one loop thread.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "bus/bus.h"

namespace parley {

class DeliveryCursor {
 public:
  // A live message. True: send it now. False: it was sent already or is held.
  bool live(const std::string& thread_id, int64_t seq, const FramePtr& frame);
  // Starts a replay of messages with seq > since_seq.
  void begin_replay(const std::string& thread_id, int64_t since_seq);
  // A replayed message (ascending seq). True: send it.
  bool replayed(const std::string& thread_id, int64_t seq);
  // Ends the replay begun with since_seq; replayed_up_to is the highest seq it
  // read (sent or skipped), or since_seq when it read nothing. Returns the
  // held frames to send now, in order (none while another replay still runs).
  std::vector<FramePtr> end_replay(const std::string& thread_id, int64_t since_seq, int64_t replayed_up_to);
  // Highest seq sent on this connection for the thread (0 = none).
  int64_t last_sent(const std::string& thread_id) const;

 private:
  struct State {
    int64_t lo = 0, hi = 0;  // sent range; hi == 0: nothing sent yet
    int replays = 0;         // replays running (a client may overlap them)
    std::vector<std::pair<int64_t, FramePtr>> held;
  };
  State& state(const std::string& thread_id);

  std::unordered_map<std::string, State> threads_;
  // The last thread looked up: a burst of fan-out hits one thread many times
  // in a row. Map nodes never move, so the pointers stay valid.
  const std::string* last_id_ = nullptr;
  State* last_ = nullptr;
};

}  // namespace parley
