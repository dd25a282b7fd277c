// Connection: the chat protocol of CONTRACT.md section 4 for one client,
// independent of transport and wire format. It authenticates, rate-limits,
// dispatches client frames to the chat service and sends replies; as a
// ClientSession it receives fan-out from its loop's Hub and keeps per-thread
// delivery cursors so each message reaches it once and replays stay in order.
// Frames come in through on_frame (on_text is the WebSocket JSON adapter);
// replies and events go out through the Encoder the transport chose.
//
// Threading: created, fed and closed on its transport's loop thread. Blocking
// chat calls run on the worker pool and come back to the loop via the
// transport's post(). Lifetime: shared_ptr, kept alive by the transport and by
// in-flight work; it holds its transport weakly.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "api/transport.h"
#include "chat/chat_service.h"
#include "chat/delivery_cursor.h"
#include "chat/hub.h"
#include "chat/session.h"
#include "common/serial_queue.h"
#include "common/thread_pool.h"
#include "protocol/client_frame.h"
#include "protocol/encoder.h"

namespace parley {

struct HeldCount;

struct ConnectionContext {
  ChatService& chat;
  ThreadPool& workers;
  Hub& hub;
};

class Connection final : public ClientSession,
                         public TransportListener,
                         public std::enable_shared_from_this<Connection> {
 public:
  // `encoder` outlives the connection (encoders are process-wide).
  Connection(ConnectionContext ctx, std::weak_ptr<Transport> transport, const Encoder& encoder);
  ~Connection() override;

  // The transport is open. `user` is set when it came with a valid token;
  // `subscribes` (subscribe_thread frames, with it) begin as the connection
  // is established, before any live message can reach it; `changes_after`
  // (parse_changes_after) asks for the sync of edits and deletions.
  void on_open(std::optional<Authenticated> user, std::vector<ClientFrame> subscribes = {},
               std::optional<int64_t> changes_after = std::nullopt);
  // A client frame, whatever its envelope. Rate-limited, then dispatched.
  void on_frame(ClientFrame frame);
  // The client's receipt of a message the server asked it to acknowledge
  // (Socket.IO's ack of new_message). It takes a token of the rate limit but
  // is never refused with an error nor counted as flooding: a client acks
  // every message of a catch-up, which may be more than the burst, and would
  // otherwise be closed (1008) on every reconnection. False when no token was
  // left: the caller may keep it and try again later (a later receipt of a
  // thread covers the earlier ones).
  bool on_requested_receipt(ClientFrame frame);
  // A client frame that could not be read: an `error` reply (rate-limited too).
  void on_bad_frame(const Error& error, const boost::json::value& request_id);
  // For a client that expects what it missed without asking (Socket.IO):
  // hold_live() holds live messages, and the answers to this connection's
  // sends, from now on; catch_up() replays each
  // thread's messages after its since_seq (as subscribe_thread does, but
  // giving way to the client's own subscribe_thread of the thread), then
  // lets the held messages through, after their thread's replay, each once
  // (an answer takes its seq's place among them).
  void hold_live() { holding_ = true; }
  void catch_up(const std::vector<std::pair<std::string, int64_t>>& threads);
  bool authenticated() const { return authed_; }
  // Set before on_open: runs on the loop at the steps of the admission by the
  // per-user limit, once the connection is authenticated (inline within
  // on_open or the auth frame's answer in one process; a moment later across
  // nodes): kAdmitted before anything is sent for it (a transport's own
  // handshake answer goes first), then kEstablished once
  // `connection_established` is sent; or kRefused alone, which is then the
  // hook's to answer: the connection sends nothing and does not close.
  enum class AdmissionStep { kRefused, kAdmitted, kEstablished };
  void on_admission(std::function<void(AdmissionStep)> fn) { on_admission_ = std::move(fn); }
  bool closed() const { return closed_; }
  // Whether this connection was sent the thread's message at `seq`.
  bool was_sent(const std::string& thread_id, int64_t seq) const { return cursor_.was_sent(thread_id, seq); }

  // TransportListener: the WebSocket JSON adapter.
  void on_text(std::string_view text) override;
  void on_binary(std::string_view data) override;
  void on_close() override;
  // About once a second, from the loop: the auth deadline and token expiry.
  void on_tick(int64_t now_ms) override;

  // ClientSession
  const std::string& session_id() const override { return session_id_; }
  const std::string& user_id() const override { return user_id_; }
  void deliver(Delivery& delivery) override;
  void excluded(const BusEvent& event) override;
  void resync(int64_t changes_after) override;
  void changes_marked(int64_t through) override;
  void account_changed(const AccountState& state) override;

 private:
  void authenticated(Authenticated user, const boost::json::value& request_id, std::vector<ClientFrame> subscribes,
                     std::optional<int64_t> changes_after);
  void renew(Authenticated user, const boost::json::value& request_id);
  void admit(Authenticated user, const boost::json::value& request_id, std::vector<ClientFrame> subscribes,
             std::optional<int64_t> changes_after);
  // Runs the subscribe_thread frames an `auth` frame carried, each taking
  // its token of the rate limit.
  void subscribe_all(std::vector<ClientFrame> subscribes);
  void admitted(bool ok, HeldCount* count);
  void run_deferred();
  void recheck_account();
  // Closes the connection if `state` bars its user or its token (4403); whether it did.
  bool close_if_barred(const AccountState& state);
  void route(ClientFrame frame);
  void dispatch(ClientFrame frame);
  void on_auth_frame(ClientFrame frame);
  void on_send(ClientFrame frame);
  void on_subscribe(ClientFrame frame);
  struct Held;
  void hold_answers_in_replay(const std::string& thread_id, int64_t since_seq);
  void release_held_answer(Held& h, int64_t replay_from);
  void reply_thread_state(std::string_view type, ClientFrame frame);
  struct Replay;
  void replay_read(std::shared_ptr<Replay> replay);
  void replay_read_done();
  bool replay_read_may_start() const;
  void start_replay_read(std::shared_ptr<Replay> r);
  void start_waiting_replay_reads();
  void hold_replay_reads();
  void release_replay_reads();
  void replay_send(std::shared_ptr<Replay> replay);
  void replay_end(std::shared_ptr<Replay> replay, int64_t replayed_up_to);
  void remember_own_send(std::string message_id);
  bool own_send(const Message& m) const;
  bool maybe_unanswered_send(const Message& m, uint64_t sends_begun_before_read) const;
  // Sends a frame of a thread's message stream (a live message of that seq,
  // a change to one), unless it must wait behind an own message's message_sent.
  void send_in_thread(const std::string& thread_id, int64_t seq, FramePtr frame, bool counted_by_hub = false);
  // A send's answer went out (message_id empty: it was refused or a
  // duplicate): frames waiting behind it follow.
  void answered(const std::string& message_id);
  // Reads the thread's messages after `from` from the store to fill a gap the
  // bus left (DeliveryCursor began it).
  // With created_floor (a thread the connection has no position in), it
  // starts no later than the newest message before the floor, below first_seq.
  void fill_gap(const std::string& thread_id, int64_t from, Micros created_floor = 0, int64_t first_seq = 0,
                int64_t history_to = 0);
  // What is sent again after a resync and at connect (connection_sync.cc).
  // After a resync: fills the user's threads that had news since the
  // connection began and that the cursor has no entry for, and announces
  // every member's read mark in them again.
  void resync_unseen_threads(int attempt);
  // thread_created for groups made since the connection opened that it was
  // not sent (`created`: each group's id and its frame's payload).
  void announce_unseen_groups(const std::vector<std::pair<std::string, std::string>>& created);
  bool note_group(const std::string& thread_id);
  void resend_read_marks(const std::vector<ThreadSummary>& threads);
  void note_receipt(const BusEvent& event);
  void end_receipt_read();
  void retry_unseen_resync(int attempt, const Error& error);
  // After a resync: reads the edits and deletions numbered above `after` in
  // the user's threads and sends each message's last one.
  void resend_changes(int64_t after, int attempt);
  void resend_change(const Message& changed);
  void end_change_read();
  // The client's `changes_after` (kNoChangeMark: none yet): sends each
  // message of the user's threads changed since as it is now, then
  // `changes_synced` with the mark to give next time. `through`: the node's
  // ChangeWatermark as the connection registered.
  void sync_changes(int64_t after, int64_t through);
  void sync_changes_page(int64_t after, int64_t mark, int attempt);
  std::vector<FramePtr> held_change_frames() const;
  size_t sync_waiting_bytes() const;
  // Sends changes_synced once the change frames held when it was first
  // called (first = true) have all gone out.
  void send_change_mark(int64_t mark, std::vector<FramePtr> waiting, bool first, std::chrono::milliseconds wait);
  void give_declined_mark();
  // False for a change older than (or the same as) one this connection was
  // sent about that message since the last resync: a frame must not undo a newer one.
  bool admit_change(const std::string& message_id, int64_t change_no);
  void in_order(const std::string& thread_id, std::function<void()> step);
  void deliver_live(const BusEvent& event, const FramePtr& frame);
  // The cursor's verdict on a live message (seq order, once, gaps filled): true = send it now.
  bool admit_live(const std::string& thread_id, int64_t seq, const FramePtr& frame);
  void on_mark_read(ClientFrame frame);
  void on_join_chat(ClientFrame frame);
  void on_relay(ClientFrame frame, std::string_view type);
  void on_typing(ClientFrame frame);
  void typing_relayed(const ClientFrame& frame, uint64_t generation, const Status& outcome);
  bool typing_is(const std::string& thread_id, uint64_t generation);
  // Relays typing or call signalling without blocking the loop: inline when the
  // thread's members are cached, else from a worker. `then` (may be empty) runs
  // on the loop with the outcome.
  void relay(const std::string& thread_id, std::string type, boost::json::object fields,
             std::function<void(const Status&)> then);
  void stop_typing(const std::string& thread_id);
  void on_delivered(ClientFrame frame);
  void on_moderate(ClientFrame frame);
  void answer_moderation(const ClientFrame& frame, bool del, const Result<Message>& changed);
  bool take_token(bool clears_strikes = true);
  bool take_token_or_refuse(const boost::json::value& request_id);

  void send(FramePtr frame);
  void send(Frames frames);
  void send_error(const Error& error, const boost::json::value& request_id);
  void close(CloseReason reason, std::string text);
  // Work on a worker, reply on the loop: runs `work` on the worker pool, then
  // the function it returns on this connection's loop, unless the connection
  // closed meanwhile.
  void off_loop(std::function<std::function<void()>()> work);
  // The same, in the order of the connection's other steps (in_order).
  void off_loop_in_order(std::function<std::function<void()>()> work);
  std::function<void()> then_on_loop(std::function<std::function<void()>()> work);

  // Members are ordered to leave no padding: every idle connection carries
  // this object, and its size decides its allocation class (at most 496
  // bytes keeps it, with make_shared's counts, in jemalloc's 512-byte class;
  // docs/benchmarks.md, "Idle memory, again").
  const Encoder* encoder_;
  ConnectionContext ctx_;
  std::weak_ptr<Transport> transport_;
  std::string session_id_;
  std::string user_id_;  // set once admitted; the rest of the account is not kept
  // Only while the per-user limit is being asked, and then while an account
  // changed meanwhile is read again (on the heap, so an idle connection does
  // not carry it): the user to admit, and the steps (frames, a renewal) that
  // wait for the answer.
  struct Admission {
    Authenticated user;
    boost::json::value request_id;  // of the `auth` frame, if it came in one: echoed by the answer
    std::vector<std::function<void()>> deferred;
    std::vector<ClientFrame> subscribes;  // begun once registered, before any live message
    std::optional<int64_t> changes_after;  // the client's change mark, if it asked for the sync
  };
  std::unique_ptr<Admission> admission_;
  // While the first `auth` frame's token is checked: the frames that came
  // after it, handled in order once it is answered.
  std::unique_ptr<std::vector<ClientFrame>> awaiting_auth_;
  // Own messages the Hub passed by (excluded) before their message_sent went
  // out, and the frames of their threads that came behind them, which wait
  // for it: the client gets a thread in seq order, its own messages as
  // message_sent. (The store's completion thread posts that answer after the
  // fan-out, and one fan-out task can carry several commits.) On the heap
  // and only for that moment: idle connections do not carry it.
  struct AnswerWait;
  std::unique_ptr<AnswerWait> answer_wait_;
  std::function<void(AdmissionStep)> on_admission_;
  int64_t token_exp_ = 0;     // seconds since epoch; 0 = none
  int64_t token_iat_ = 0;     // the token's iat, for revoke-tokens
  int64_t auth_deadline_ms_ = 0;
  DeliveryCursor cursor_;
  // Ids of this connection's latest sends, answered with message_sent. The bus
  // marks a sender's own event so it is never delivered back; a replay or gap
  // fill reads the store, which cannot, so it skips these (several nodes: a
  // later seq from another node can open a gap before the own event arrives).
  // A ring (own_sends_next_ is the oldest once full) in a vector: an empty
  // std::deque allocates about 600 bytes, which every idle connection paid.
  std::vector<std::string> own_sends_;
  uint32_t own_sends_next_ = 0;
  uint32_t typing_generation_ = 0;  // see typing_ (beside the other 4 bytes, for the size)
  // Sends not answered yet, by number (1, 2, ...), and the last number given:
  // a store read may hold such a send's message before its message_sent
  // comes (the commit is visible first), so a replay waits for those answers
  // before it sends this user's messages. Numbers are added in increasing
  // order, so the vector stays sorted and front() is the oldest.
  std::vector<uint64_t> unanswered_sends_;
  uint64_t sends_begun_ = 0;
  // How much older than the connection a message from another node may look
  // and still be new to it (other nodes' clocks): none with one node.
  Micros first_fill_margin() const;
  Micros connected_at_us_ = 0;  // admitted (authenticated and registered) at
  // Set while a send or relay of this connection is on a worker; later ones follow it there.
  std::shared_ptr<SerialQueue> chain_;
  struct Held {
    std::string thread_id;
    int64_t seq;  // 0: a change to a stored message (DeliveryCursor::changed)
    FramePtr frame;
    std::vector<FramePtr> answer;  // the answer to this connection's send of `seq` (emptied once released)
    bool is_answer;
  };
  std::vector<Held> held_;
  // Since the first resync: the change number each message was last sent
  // with, by its id (a message's first is noted only while the store is
  // read; later ones always). Made by the first resync (or the first
  // thread_created); none before.
  struct ChangesSent {
    std::unordered_map<std::string, int64_t> last;
    int reads = 0;  // reads of changes running: the resync's and the sync's
    // A resync's reads, one of each kind at a time (Connection::resync):
    // whether one runs, and what to read again once it is done.
    bool rereading = false;  // resend_changes
    int64_t reread_again = -1;  // >= 0: from this change number
    bool unseen_reading = false;  // resync_unseen_threads
    bool unseen_again = false;
    // While resync_unseen_threads reads the read marks: the highest live
    // receipt sent since, per "thread/reader" (resend_read_marks skips a
    // mark at or below it).
    std::unordered_map<std::string, int64_t> receipts;
    int receipt_reads = 0;
    // The groups this connection was sent thread_created for, live or by a
    // resync (which announces those the bus lost: announce_unseen_groups);
    // each is sent once (note_group). A live one makes the record too.
    std::unordered_set<std::string> groups;
    // The last few messages this connection was told of a change of (by
    // event, or as the reply to its own edit or deletion), with the change's
    // number and its event's frame (null for a reply). The reply is posted
    // from the worker that wrote the change, the events of later changes come
    // through the bus: one can overtake the other. An event older than a
    // reply is dropped; a reply older than an event sent is followed by that
    // event again, so the client ends on the message as it is. (The record
    // is made by the connection's first edit or deletion, if not before.)
    // Frames are kept only while a reply is awaited (`awaited`), so an idle
    // connection holds none.
    struct Told {
      std::string message_id;
      int64_t change_no;
      FramePtr frame;
    };
    std::vector<Told> told;
    int awaited = 0;  // this connection's edits and deletions not answered yet
    // The client's change mark (sync_changes): the last one given it (-1:
    // none, or the sync failed: none is given on this connection), and
    // whether one is on its way (send_change_mark).
    int64_t mark_given = -1;
    bool mark_pending = false;
    int64_t mark_declined = -1;  // the latest mark changes_marked had to put off
  };
  std::unique_ptr<ChangesSent> changes_sent_;
  // Replay reads running and waiting (replay_read); made by the first replay.
  struct ReplayReads;
  std::unique_ptr<ReplayReads> replay_reads_;
  ChangesSent::Told* change_told(const std::string& message_id);
  // False for a change of a message older than (or the same as) the last this
  // connection was told of (ChangesSent::told); else notes it.
  bool tell_change(const std::string& message_id, int64_t change_no, const FramePtr& frame);
  void note_change_told(const std::string& message_id, int64_t change_no, FramePtr frame);
  // Threads this connection is typing in (as on the TypingBoard), each with
  // the number of its latest start: only that start's relay outcome and
  // timeout act on it. Seldom more than one.
  std::vector<std::pair<std::string, uint64_t>> typing_;
  // Token bucket for client frames.
  double tokens_;
  int64_t refilled_at_us_;
  int strikes_ = 0;
  bool authed_ = false;
  bool registered_ = false;
  bool closed_ = false;
  bool holding_ = false;
};

}  // namespace parley
