// ChatService: the rules of Parley, in one place. Who may read, send, join
// and manage a thread; validation of content; sequencing and idempotency (via
// the Store); who receives what (via the Bus). It knows nothing of sockets,
// HTTP or SQL.
//
// Thread-safety: every method may be called from any thread. Methods marked
// "blocking" may wait on storage or hash passwords: call them from worker
// threads, never from a network event loop. send() is asynchronous.
#pragma once

#include <boost/json/object.hpp>

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "auth/identity.h"
#include "auth/jwt.h"
#include "bus/bus.h"
#include "chat/change_watermark.h"
#include "chat/newest_change.h"
#include "chat/member_cache.h"
#include "chat/connection_limiter.h"
#include "chat/presence.h"
#include "chat/typing_board.h"
#include "common/config.h"
#include "common/error.h"
#include "model/model.h"
#include "store/store.h"

namespace parley {

struct SendRequest {
  std::string sender_id;
  std::string thread_id;  // either thread_id...
  std::string username;   // ...or a username: direct thread, created on first use
  std::string content;
  std::string message_type = "text";
  std::string client_msg_id;
  std::string origin_session;  // the sending connection, which gets message_sent instead of new_message
};

struct SendOutcome {
  Message message;
  std::string message_json;  // the message serialised once (CONTRACT section 3)
  bool duplicate = false;    // a retried client_msg_id: nothing new was stored or fanned out
};

using SendCallback = std::function<void(Result<SendOutcome>)>;

struct HistoryQuery {
  int64_t before_seq = kAllSeqs;  // no bound
  int64_t after_seq = -1;  // -1 = none
  int limit = 50;
};

// The event that tells of a message's last edit or deletion, as it is now:
// message_deleted {thread_id, message_id, seq} for a tombstone, else
// message_edited with the message as `data`; with the change's number. No
// recipients: the caller's.
std::shared_ptr<BusEvent> change_event(const Message& changed);

class ChatService {
 public:
  ChatService(Store& store, Bus& bus, std::shared_ptr<const JwtVerifier> jwt, const Config& config);

  // --- identity (blocking): see auth/identity.h; forwarded for the transports ---
  Identity& identity() { return identity_; }
  Result<AuthResult> register_user(const RegisterRequest& request, const std::string& address = "") {
    return identity_.register_user(request, address);
  }
  Result<AuthResult> login(const std::string& login, const std::string& password, const std::string& address) {
    return identity_.login(login, password, address);
  }
  AuthResult issue_token(const User& user) const { return identity_.issue_token(user); }
  Result<Authenticated> authenticate(const std::string& token) { return identity_.authenticate(token); }

  // --- users (blocking) ---
  Result<User> user(const std::string& user_id);
  // As `viewer` may see them: a phone number and last_seen only for the
  // viewer themselves and those who share a thread with them (as presence).
  Result<User> user_as_seen_by(const User& viewer, const std::string& user_id);
  Result<std::vector<User>> search_users(const User& viewer, const std::string& query, int limit);

  // --- threads (blocking) ---
  struct CreateThreadRequest {
    std::string type;  // "direct" | "group"
    std::vector<std::string> participant_ids;
    std::vector<std::string> usernames;
    std::string title;
  };
  Result<Store::CreatedThread> create_thread(const User& actor, const CreateThreadRequest& request);
  Result<Thread> thread(const User& actor, const std::string& thread_id);
  Result<std::vector<ThreadSummary>> threads(const User& actor);
  // Adds the users named by id or by username (as create_thread takes them).
  Result<Thread> add_participants(const User& actor, const std::string& thread_id,
                                  const std::vector<std::string>& user_ids,
                                  const std::vector<std::string>& usernames = {});
  Status remove_participant(const User& actor, const std::string& thread_id, const std::string& user_id);
  // The direct thread with `username`, created on first use. Only actor.id is read.
  Result<Thread> direct_thread(const User& actor, const std::string& username);

  // --- messages ---
  // Validates, stores and fans out. `done` runs exactly once: on the calling
  // thread when the request is refused before storage, else on the store's
  // completion thread after the commit. Blocking only when request.username is set
  // (the direct thread may have to be created) or the thread is not cached.
  void send(SendRequest request, SendCallback done);
  Result<std::vector<Message>> history(const User& actor, const std::string& thread_id, const HistoryQuery& query);
  // What a replay stands for. Both read what the user was owed as a
  // member: to one removed since, what came up to their removal's notice
  // (as it reached their connections live), then refused as to a
  // non-member. A subscribe_thread replay gives each message its current
  // status, as history does (`sent` in a thread the user has left); a gap
  // fill stands in for the live frames a connection missed: each `sent`.
  enum class ReplayFor { kSubscriber, kGapFill };
  // Messages after since_seq, oldest first, at most limit, with the
  // membership they were read as. Read with it, from one snapshot
  // (Store::member_page): never a message stored after the user's removal,
  // however long the read waited for a worker. Blocking.
  Result<MemberPage> replay(const std::string& user_id, const std::string& thread_id, int64_t since_seq, int limit,
                            ReplayFor purpose = ReplayFor::kSubscriber);
  Result<OfflinePage> offline_messages(const User& actor, Micros since);
  // Where a connect's catch-up (Socket.IO) starts each thread the user has
  // messages from others to get in: past the user's delivered or read mark
  // in each thread with unread messages, and past the marks of each ended
  // membership whose end never reached them (Store::left_threads_owed).
  // Blocking.
  Result<std::vector<std::pair<std::string, int64_t>>> catch_up_positions(const std::string& user_id);
  Result<std::vector<UnreadCount>> unread_counts(const User& actor);
  // Marks read and tells the thread's participants (read_receipt); the
  // session `origin_session` is left out of the broadcast (it gets a reply).
  Result<int64_t> mark_read(const std::string& user_id, const std::string& thread_id, int64_t up_to_seq,
                            const std::string& origin_session = "");

  // --- receipts and presence ---
  // A recipient's client acknowledged a message: records it and tells the
  // sender's connections (message_delivered). `at`, if given, is set to the
  // message's place when it exists, even when the receipt is refused.
  // Blocking.
  Status acknowledge_delivery(const std::string& user_id, const std::string& message_id,
                              std::pair<std::string, int64_t>* at = nullptr);
  // The same for the message at `seq` in `thread_id`.
  Status acknowledge_delivery_at(const std::string& user_id, const std::string& thread_id, int64_t seq);
  // Tells everyone who shares a thread with each user that the user came
  // online or went offline (presence), in the order given, `last_seen` being
  // the change's own time; an offline change also stores it as the user's
  // last_seen. The contacts of the whole burst are read in one go. Blocking.
  using PresenceChange = parley::PresenceChange;
  void announce_presence(const std::vector<PresenceChange>& changes);
  struct PresenceInfo {
    bool online = false;
    Micros last_seen = 0;
  };
  // Of the actor or of someone who shares a thread with them (else forbidden).
  Result<PresenceInfo> presence_of(const User& actor, const std::string& user_id);
  Presence& presence() { return presence_; }
  // Which of this node's sessions type where (implicit stops: chat/typing_board.h).
  TypingBoard& typing_board() { return typing_board_; }
  // The per-user connection limit: in this process unless replaced (several
  // nodes: Redis) at start, before the first connection.
  ConnectionLimiter& connection_limiter() { return *connection_limiter_; }
  void use_connection_limiter(std::unique_ptr<ConnectionLimiter> limiter);

  // --- moderation (blocking; CONTRACT section 8, chat/moderation.cc) ---
  // Tombstones a message (content emptied, seq kept) and tells every
  // participant (message_deleted). The sender or a thread admin; anyone else
  // gets forbidden. Writes one audit log line. `origin_session` (the
  // asking connection, which gets a reply instead) is left out.
  Result<Message> delete_message(const std::string& actor_id, const std::string& message_id,
                                 const std::string& origin_session = "");
  // New content, edited_at set, every participant told (message_edited). The
  // sender only, within limits.edit_window_seconds (else forbidden
  // "edit_window_passed"); a deleted message: conflict "message_deleted".
  Result<Message> edit_message(const std::string& actor_id, const std::string& message_id, const std::string& content,
                               const std::string& origin_session = "");

  // Called on the store's completion thread after each new message is
  // stored (never for a retried duplicate), with its members: must be quick
  // and must not block (the webhook notifier only queues it). Set once,
  // before serving.
  using MessageObserver =
      std::function<void(const Message& message, const std::string& message_json,
                         const std::shared_ptr<const ThreadMembers>& members)>;
  void set_message_observer(MessageObserver observer) { message_observer_ = std::move(observer); }
  // Each new message other than a system line is stored with a record that
  // its push is owed (AppendRequest::owes_push), which the webhook notifier
  // settles. Set once, before serving.
  void set_records_owed_pushes(bool on) { records_owed_pushes_ = on; }

  // Every bus event, this process's and other processes', before it is
  // fanned out (the bus receiver calls it, on the publishing or the bus's
  // thread): keeps the member cache in step with membership changes made
  // anywhere. False: a control event for this service only, not to be fanned
  // out.
  bool on_bus_event(const BusEvent& event);
  // The bus receiver of a serving process: on_bus_event, and what the
  // sessions get (null: nothing). Counts the edits and deletions received;
  // a resync goes on as a new event that tells the sessions from which
  // change number to re-read them (BusEvent::changes_after).
  BusEventPtr on_bus(const BusEventPtr& event);
  // Before the bus receiver is set: the store's last change number, from
  // which this process counts those it receives.
  Status start_counting_changes();
  // Every edit and deletion numbered up to this has reached this process on
  // the bus (ChangeWatermark::through), so was committed before this call.
  int64_t changes_through() const { return changes_.through(); }
  // The bus receiver's lock (commands.cc): an event's count in on_bus and its
  // hand-over to the loops are one step under it, so a change mark handed
  // over under it too comes after every change it counts, on every loop.
  std::mutex& change_order() { return change_order_; }
  // Set once, before serving: how change marks reach the loops (the Fanout).
  void set_change_marks(std::function<void(const BusEventPtr&)> fanout) { mark_fanout_ = std::move(fanout); }
  // Any loop, about once a second while one of its connections keeps a
  // client's change mark: at most every few seconds, when changes came since
  // the last, hands every loop a change mark (BusEvent::changes_mark).
  void tick_change_marks();

  // --- relays (not stored) ---
  // typing and call signalling to the thread's other participants
  // (call_answer and call_end also to the sender's other connections). A
  // call_offer with no other participant online fails with callee_offline.
  Status relay(const std::string& user_id, const std::string& thread_id, const std::string& type,
               boost::json::object fields, const std::string& origin_session);

  // Thread members from the cache (loaded on a miss: may block). nullptr when
  // the thread does not exist; an Error when the store could not answer.
  Result<std::shared_ptr<const ThreadMembers>> members(const std::string& thread_id);
  // The cached members, or nullptr on a miss; never blocks. An event loop
  // checks this before send() or relay() and goes to a worker on a miss.
  std::shared_ptr<const ThreadMembers> cached_members(const std::string& thread_id) const {
    return members_.cached(thread_id);
  }
  bool is_member(const ThreadMembers& members, const std::string& user_id) const;

  const Config& config() const { return config_; }
  Store& store() { return store_; }
  // Marks each participant online or not, as every thread answer shows them.
  void mark_online(Thread& thread) const;

 private:
  Status hide_private(const User& viewer, std::vector<User>& users);
  Status acknowledge(const std::string& user_id, const Message& message);
  Error group_too_large() const;
  Result<std::shared_ptr<const ThreadMembers>> require_member(const std::string& user_id,
                                                              const std::string& thread_id);
  // Store::member_page, its refusal told as require_member tells it.
  Result<MemberPage> member_page(const std::string& user_id, const PageQuery& query);
  // After a membership change was written (MemberCache::begin_change before
  // it): forgets the cached members here and tells every other process to.
  void members_changed(const std::string& thread_id);
  std::optional<Error> validate_content(const std::string& content, const std::string& message_type) const;
  void store_and_publish(SendRequest request, std::shared_ptr<const ThreadMembers> members, SendCallback done);
  // A committed message to `audience` (new_message) and the message
  // observer; on the store's completion thread, in commit order.
  void deliver(const Message& message, const std::string& message_json,
               const std::shared_ptr<const ThreadMembers>& audience, const std::string& origin);
  // A retried send's recent original, published again (new_message only).
  void redeliver(const Message& message, const std::string& message_json,
                 const std::shared_ptr<const ThreadMembers>& audience, const std::string& origin);
  std::shared_ptr<const ThreadMembers> with_member(std::shared_ptr<const ThreadMembers> members,
                                                   const std::string& user_id);
  // A removal queued in the store and not yet called back (its notice not
  // yet fanned out): members_at_commit counts the user in until then.
  void begin_removal(const std::string& thread_id, const std::string& user_id);
  void end_removal(const std::string& thread_id, const std::string& user_id);
  // Who `message`, just committed, goes to (see the definition).
  std::shared_ptr<const ThreadMembers> members_at_commit(const Message& message,
                                                         std::shared_ptr<const ThreadMembers> checked,
                                                         int64_t member_version = 0);
  std::shared_ptr<const ThreadMembers> joined_by(std::shared_ptr<const ThreadMembers> members, Micros created_at) const;
  static Micros joined_at(const ThreadMembers& members, const std::string& user_id);
  std::shared_ptr<const ThreadMembers> with_removals_in_flight(const std::string& thread_id,
                                                               std::shared_ptr<const ThreadMembers> members);
  // Who an edit or deletion just committed goes to (see the definition).
  std::shared_ptr<const ThreadMembers> members_after_change(const std::string& thread_id,
                                                            std::shared_ptr<const ThreadMembers> checked);
  // Who an event goes to: a thread's cached member list (shared, never
  // copied per event: each loop may cache whom it resolves to) or a one-off list.
  struct Audience {
    std::shared_ptr<const std::vector<std::string>> user_ids;
    bool shared = false;
    static Audience members(const std::shared_ptr<const ThreadMembers>& members);
    static Audience users(std::vector<std::string> user_ids);
  };
  // Every event the chat service emits goes through here: the frame `type`
  // with `payload` (a JSON object's text: its fields) to every connection of
  // `to` except `exclude_session`. A new_message has seq > 0 and its
  // message_id, and `payload` is the message (the frame's `data`).
  void publish(std::string thread_id, Audience to, std::string type, std::string payload,
               std::string exclude_session = {}, int64_t seq = 0, std::string message_id = {},
               Micros redelivery_of = 0);
  // The event publish() sends, before its message fields (a receipt adds its own).
  std::shared_ptr<BusEvent> event_for(std::string thread_id, Audience to, std::string type, std::string payload,
                                      std::string exclude_session);
  // change_event(changed) to `to`, but not to exclude_session.
  void publish_change(const Message& changed, Audience to, const std::string& exclude_session);
  // Fills the sender-relative status of each message and who is online.
  void annotate(Thread& thread, std::vector<Message*> messages) const;
  // annotate() for messages of any threads. Given a reader, a thread they
  // are no longer in keeps its messages `sent`: how far its members read
  // after the reader left is not theirs to learn (offline messages).
  Status annotate_each_thread(std::vector<Message>& messages, const std::string& reader_id = "") const;
  // One message with its current status (moderation.cc).
  Message with_status(Message m) const;

  Store& store_;
  Bus& bus_;
  const Config& config_;
  Identity identity_;
  MemberCache members_;
  ChangeWatermark changes_;
  std::mutex change_order_;
  std::function<void(const BusEventPtr&)> mark_fanout_;
  std::atomic<int64_t> next_mark_ms_{0};
  int64_t marked_through_ = 0;  // under change_order_
  NewestChange newest_changes_;
  NewestChange newest_receipts_;  // by "thread_id/reader_id": the highest read_seq passed on
  Presence presence_;
  TypingBoard typing_board_;
  std::unique_ptr<ConnectionLimiter> connection_limiter_;
  MessageObserver message_observer_;
  bool records_owed_pushes_ = false;
  std::mutex removals_mu_;
  std::unordered_multimap<std::string, std::string> removals_;  // thread -> user being removed
  std::atomic<int> removals_in_flight_{0};
  // A relay (typing, call signalling) and a removal's notices are published
  // under their thread's stripe lock, and each removal done is noted there
  // after its notice: a relay whose member list was read before a removal
  // done meanwhile leaves the one removed out, so nothing relayed reaches
  // them after the notice of their removal. This process's removals: another
  // node's reach it with the bus's delay, and a relay made here in that
  // delay may come after its notice.
  struct alignas(64) RelayStripe {
    std::mutex mu;
    std::atomic<uint64_t> removals_done{0};  // written under mu
    // The latest removals done, thread and user, at removals_done % size (under mu).
    std::array<std::pair<std::string, std::string>, 16> recent;
  };
  std::array<RelayStripe, 64> relay_stripes_;
  RelayStripe& relay_stripe(const std::string& thread_id);
};

}  // namespace parley
