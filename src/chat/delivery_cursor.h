// DeliveryCursor: for one connection, which messages of each thread it has
// been sent, so that live delivery, a replay (subscribe_thread with
// since_seq) and a gap fill together send every message once, in seq order.
//
// Model: the seqs a connection was sent form one range [lo, hi] per thread.
// While a replay of a thread runs, live messages of that thread are held;
// when the replay ends they go out after it, skipping what the replay already
// sent. The bus is only a fast path (it may lose or reorder events across
// nodes): a live message beyond hi + 1 means the bus missed some, so the
// cursor holds it and asks the caller to fill the gap from the store, which
// runs as a replay from hi. The first message a connection gets on a thread
// sets the start: a gap before it is the client's to fill with since_seq.
// Except with fill_before_first(): on several nodes events may come out of
// commit order, so the first one to arrive need not be the first committed
// since the connection began; it is held and a fill reads what came before.
// Replays of one thread may overlap (a client that subscribes twice): what
// one has sent, the others skip, from the moment it is sent. A replay the
// server began on its own (a fill, a Socket.IO catch-up) gives way to one the
// client asks for: see subscribes().
// The connection's own message counts as sent without being sent (it gets
// message_sent); that answer is held like a live message when it comes
// during a replay of its thread, so that it too goes out in seq order.
// Changes to a message already stored (an edit, a deletion) are held while a
// replay runs too, and go out after everything it held: a replay page read,
// or a live message encoded, before the change must not arrive after it.
// Not thread-safe: one connection, one loop thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bus/bus.h"

namespace parley {

class DeliveryCursor {
 public:
  struct Decision {
    bool send = false;       // send this frame now
    int64_t fill_from = -1;  // >= 0: a gap fill began; read the store after this seq (see replayed/end_replay)
    bool first = false;      // the fill is for the thread's first message: skip what predates the connection
  };
  // From now on, the first live message of a thread with seq > 1 is held and
  // a fill begins `window` seqs before it (Decision::first).
  void fill_before_first(int64_t window) { first_window_ = window; }
  // While a resync's read of the user's threads runs (from this call to
  // end_unseen_read), a first live message fills from `window` seqs before
  // it instead, as that read's unseen fill would have: the message gives the
  // thread an entry first, and begin_unseen_fill then leaves it alone.
  void begin_unseen_read(int64_t window);
  void end_unseen_read();
  // A live message. `frame` null: the connection's own message (it gets
  // message_sent instead), which counts as sent and is never sent.
  Decision live(const std::string& thread_id, int64_t seq, const FramePtr& frame);
  // The answer (message_sent) to the connection's own message `seq`, whose
  // commit event may not have come yet. True: held, it goes out in seq order
  // with what the thread's replays hold (or by take_answer), and `frames` is
  // moved from; false: send it now.
  bool hold_answer(const std::string& thread_id, int64_t seq, std::vector<FramePtr>& frames);
  // The held answer to own message `seq`, for a replay that reached it in
  // the store (empty: none held).
  std::vector<FramePtr> take_answer(const std::string& thread_id, int64_t seq);
  // Starts a replay of messages with seq > since_seq, asked by the client
  // (subscribe_thread); it counts in subscribes().
  void begin_replay(const std::string& thread_id, int64_t since_seq);
  // Starts a replay the server begins for a client that expects what it
  // missed without asking (a Socket.IO catch-up), ended by end_replay. It
  // does not count in subscribes(): like a fill, it stops when the client
  // asks for a replay of its own.
  void begin_catch_up(const std::string& thread_id);
  // How many replays the client has asked for on the thread. A fill or a
  // catch-up begun before the latest one stops (Connection::replay_send):
  // that replay sends everything after the client's since_seq in order, and
  // one still sending meanwhile would put its seqs out of order around it
  // (on several nodes, a first fill's second of messages, below or above
  // since_seq; a catch-up's newer messages before the client's older ones).
  uint32_t subscribes(const std::string& thread_id) const;
  // A fill that gave way to the client's replay stopped after seq `at`, its
  // messages created before `created_floor` not for sending. Should that
  // replay fail, resume_fill() begins it again from there (nothing else
  // would send what it had still to send); a replay that ends well drops it
  // (drop_gave_way).
  void gave_way(const std::string& thread_id, int64_t at, int64_t created_floor);
  struct Resume {
    int64_t from = -1;  // < 0: no fill to resume
    int64_t created_floor = 0;
  };
  // Begins (ended by end_replay) the fill that gave way, if any.
  Resume resume_fill(const std::string& thread_id);
  void drop_gave_way(const std::string& thread_id);
  // A replayed message (ascending seq). True: send it.
  bool replayed(const std::string& thread_id, int64_t seq);
  // During a replay that found nothing after the client's since_seq: the
  // client has every message up to `seq` (since_seq, at most the thread's
  // last). A later message past seq + 1 then shows a gap, where without an
  // entry it would count as the thread's first, and what the bus lost before
  // it would never be sent.
  void caught_up(const std::string& thread_id, int64_t seq);
  // A change to a stored message of the thread (message_edited,
  // message_deleted). True: send it now; false: held until the replays end.
  bool changed(const std::string& thread_id, FramePtr frame);
  struct ReplayEnd {
    std::vector<FramePtr> frames;  // held frames to send now, in order
    int64_t fill_from = -1;        // >= 0: the held frames still have a gap; a fill from here began
  };
  // Ends a replay (or a fill) begun from since_seq; replayed_up_to is the
  // highest seq it read (sent or skipped), or since_seq when it read nothing.
  // No frames while another replay of the thread still runs.
  // The held changes come last, once no gap is left.
  ReplayEnd end_replay(const std::string& thread_id, int64_t since_seq, int64_t replayed_up_to);
  // Gives up a fill that cannot find the missing seqs (the store does not
  // have them): ends it and returns the held frames past hi, in order,
  // accepting the gap, then the held changes.
  std::vector<FramePtr> skip_gap(const std::string& thread_id);
  // Ends a fill the store refused because the user is no longer in the
  // thread (or it is gone). Once no replay of it runs, returns what the
  // thread held, in seq order: live messages, which their publisher
  // addressed to this user as a member (on several nodes the events of the
  // last messages before a removal, and its notice, come out of order, and
  // the store no longer lets the gap be read), the answers to the
  // connection's own messages, and held changes. From then on the thread is
  // passed through: each live message is sent as it comes, once, with no
  // gap fill (the store would refuse it), until forget_left.
  struct Abandoned {
    std::vector<std::pair<FramePtr, bool>> frames;  // in seq order; true: an answer (message_sent)
    uint32_t epoch = 0;                              // for forget_left; 0: still filling (no frames)
  };
  Abandoned abandon(const std::string& thread_id);
  // Ends the pass-through that abandon began with `epoch`, if it still runs.
  // When it sent nothing newer than what abandon released (the stray events
  // of the user's last moments as a member), the entry goes: a later message
  // starts the thread anew, as a thread's first does; returns -1. When it
  // did, the user is a member again (added back while this node was cut off
  // from the others, say), and the pass-through filled no gaps: a fill
  // begins (returns the seq to read after; end it with end_replay) that
  // sends what the pass-through missed and skips what it sent. Forgotten,
  // the next message would start the thread anew and a first fill send
  // those messages a second time.
  int64_t forget_left(const std::string& thread_id, uint32_t epoch);
  // After the bus may have lost events (it reconnected): begins a fill from
  // hi on every thread that has one and no replay running; returns them. A
  // thread whose replay runs may have read its last page already: its last
  // replay's end begins that fill instead (ReplayEnd::fill_from).
  std::vector<std::pair<std::string, int64_t>> begin_resync();
  // After a resync, for a thread the connection has no entry for (nothing
  // sent, held or running): the bus may have lost its first messages, and no
  // later gap would show it. Begins a fill (ended by end_replay) and returns
  // true; false when the thread has an entry (begin_resync or a live message
  // takes care of it).
  bool begin_unseen_fill(const std::string& thread_id);
  // Appends every change held (changed() returned false), of every thread.
  void held_changes(std::vector<FramePtr>& out) const;
  // Highest seq sent on this connection for the thread (0 = none).
  int64_t last_sent(const std::string& thread_id) const;
  // Whether seq went out on this connection for the thread: in the range
  // sent, or sent by a replay still running (the range grows only as it
  // ends, and its client acknowledges each message as it comes).
  bool was_sent(const std::string& thread_id, int64_t seq) const;
  // Threads with an entry: one with nothing sent, held or running has none.
  size_t threads() const { return threads_.size(); }

 private:
  struct State {
    int64_t lo = 0, hi = 0;  // sent range; hi == 0: nothing sent yet
    int replays = 0;         // replays and fills running (a client may overlap them)
    uint32_t subscribes = 0;  // replays the client asked for (begin_replay)
    int64_t gave_way_at = -1;     // see gave_way()
    int64_t gave_way_floor = 0;
    bool resync_pending = false;  // a resync came while they ran: fill from hi once they end
    bool left = false;            // passed through, unfilled (abandon)
    uint32_t left_epoch = 0;      // which abandon began it
    int64_t left_upto = 0;        // the newest seq sent when it began
    std::vector<std::pair<int64_t, FramePtr>> held;  // a null frame: the connection's own message
    std::vector<FramePtr> held_changes;              // in arrival order
    // Answers to own messages held in `held` (as their null frame), by seq.
    std::vector<std::pair<int64_t, std::vector<FramePtr>>> answers;
    // Seqs the running replays sent outside [lo, hi], as sorted disjoint
    // ranges; merged into [lo, hi] as each replay ends, dropped with the last.
    // While the thread is passed through (left), every seq sent.
    std::unique_ptr<std::vector<std::pair<int64_t, int64_t>>> replay_sent;
  };
  static bool sent_by_replay(State& s, int64_t seq);
  static bool sent_before(State& s, int64_t seq);
  State& state(const std::string& thread_id);
  static void release_changes(State& s, std::vector<FramePtr>& out);
  static void release_answer(State& s, int64_t seq, std::vector<FramePtr>& out);
  static bool holds_own(const State& s, int64_t seq);
  static int64_t newest_sent(const State& s);
  void forget(const std::string& thread_id);

  std::unordered_map<std::string, State> threads_;
  int64_t first_window_ = 0;
  int64_t unseen_window_ = 0;
  int unseen_reads_ = 0;  // resync reads of the thread list running
  uint32_t epochs_ = 0;   // abandons so far (beside unseen_reads_: no bigger a Connection)
  // The last thread looked up: a burst of fan-out hits one thread many times
  // in a row. Map nodes never move, so the pointers stay valid.
  const std::string* last_id_ = nullptr;
  State* last_ = nullptr;
};

}  // namespace parley
