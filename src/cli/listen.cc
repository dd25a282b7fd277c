// listen: print every event of the user's WebSocket connection, forever.
//
// The connection is only a window: what matters is each thread's position
// (the last seq printed). Positions come from the saved config, else from
// the thread list at start ("from now on"). They are saved durably (write,
// fsync, rename) as messages are printed, batched: at most one save per
// kSaveEvery, the last one kSaveEvery after a burst ends, and on exit
// (SIGINT, SIGTERM, SIGHUP). So a crash or kill -9 repeats at most the
// messages printed in the last kSaveEvery before it. After
// every (re)connect each known thread is subscribed with since_seq = its
// position, so the server replays what was missed; SeqTracker keeps the
// output gapless, ordered and free of repeats.
//
// Tokens expire (after 7 days by default): listen renews its own when 80% of
// the remaining life is gone (POST /api/auth/refresh), sends the new one as
// an `auth` frame on the open connection and uses it to reconnect, and saves
// it when it was the saved login's. So it runs for as long as it is left
// running, until the account is disabled or its tokens revoked.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <vector>

#include "cli/commands.h"
#include "cli/errors.h"
#include "cli/output.h"
#include "cli/pretty.h"
#include "cli/seq_tracker.h"
#include "cli/ws_client.h"
#include "common/clock.h"

namespace parley::cli {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kFirstDelay = 500ms;
constexpr std::chrono::milliseconds kMaxDelay = 30s;
constexpr std::chrono::seconds kConnectTimeout{10};
constexpr std::chrono::seconds kIdleTimeout{40};
constexpr std::chrono::milliseconds kSaveEvery = 200ms;
constexpr std::string_view kFillPrefix = "fill:";  // request_id of our subscribe_thread frames
constexpr std::string_view kAckPrefix = "ack:";    // request_id of our message_received frames
constexpr std::chrono::seconds kRenewRetryMax{15};  // after a renewal that failed

// Errors worth reconnecting after; any other server answer (a bad token, a
// forbidden origin) would only repeat, so it ends listen with exit 1.
bool transient(const CliError& e) {
  if (e.exit_code() == kExitUnreachable) return true;
  // shutting_down and store_closed: a server restarting (its drain answers 503 "connect again").
  static const std::set<std::string> kRetry = {"rate_limited", "internal_error", "bad_response",
                                               "http_502",     "http_503",       "http_504",
                                               "shutting_down", "store_closed",  "too_many_connections",
                                               "storage_unavailable"};
  return kRetry.contains(e.code());
}

// The thread objects of a GET /api/chat/threads answer.
std::vector<const json::object*> threads_in(const json::value& listing) {
  std::vector<const json::object*> out;
  const json::array* threads = listing.is_object() ? get_array(listing.as_object(), "threads") : nullptr;
  for (size_t i = 0; threads && i < threads->size(); ++i) {
    if (const json::object* t = (*threads)[i].if_object()) out.push_back(t);
  }
  return out;
}

// What a `system` message says of user `me` (usernames have no spaces, so
// the server's "alice added bob", "alice removed bob", "bob left" read
// back whole): added to the group, gone from it, or neither.
enum class Membership { kNone, kAdded, kGone };
Membership membership_change(const json::object& message, const std::string& me) {
  if (me.empty() || get_string(message, "message_type") != "system") return Membership::kNone;
  std::istringstream text(get_string(message, "content"));
  std::vector<std::string> words;
  for (std::string w; words.size() < 4 && text >> w;) words.push_back(std::move(w));
  if (words.size() == 2 && words[0] == me && words[1] == "left") return Membership::kGone;
  if (words.size() != 3 || words[2] != me) return Membership::kNone;
  if (words[1] == "added") return Membership::kAdded;
  return words[1] == "removed" ? Membership::kGone : Membership::kNone;
}

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(Context& ctx, ListenOptions options)
      : ctx_(ctx),
        options_(options),
        http_(ctx.executor, ctx.endpoint, ctx.token),
        backoff_timer_(ctx.executor),
        timeout_timer_(ctx.executor),
        save_timer_(ctx.executor),
        renew_timer_(ctx.executor),
        signals_(ctx.executor),
        rng_(std::random_device{}()) {
    // A signal ignored by whoever started us (nohup's SIGHUP, a script's
    // background job's SIGINT) stays ignored, as the password prompt does.
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction before{};
      if (::sigaction(sig, nullptr, &before) != 0 || before.sa_handler != SIG_IGN) signals_.add(sig);
    }
  }

  awaitable<int> run();

 private:
  awaitable<void> start();
  awaitable<void> session();
  awaitable<void> handle(json::object frame);
  awaitable<void> on_connected();
  awaitable<void> discover_threads();
  awaitable<void> learn_thread(const std::string& thread, std::int64_t seq);
  awaitable<std::int64_t> start_of(const json::object& thread);
  awaitable<void> on_store(std::string store_id);
  awaitable<void> on_message(json::object frame);
  awaitable<void> on_fill_error(const json::object& frame);
  awaitable<void> deliver(json::object frame);
  awaitable<void> drain(const std::string& thread, bool force);
  awaitable<void> request_fill(const std::string& thread);
  awaitable<void> backoff();
  awaitable<void> send_frame(json::object frame);
  void renew_token_at(Clock::time_point when);
  void renew_again_soon(const std::string& why);
  // A coroutine of its own beside the session's, which keeps the listener alive.
  static awaitable<void> renew_token(std::shared_ptr<Listener> self);
  void print_event(const json::object& frame);
  void on_change(const json::object& frame);
  void release_changes(const std::string& thread, std::int64_t seq, const json::object* printed);
  void note_change_printed(std::string key);
  void note_message_state(const json::object& message);
  static std::string change_key(const json::object& m, bool deleted, bool numbered = true);
  void arm_signals();
  void arm_timeout();
  void request_stop(int exit_code);
  void abort(int exit_code);
  void finish();
  void schedule_save();
  void save_positions();

  Context& ctx_;
  ListenOptions options_;
  HttpClient http_;
  // The connection in use. Shared with a renewal's write in flight, which
  // may outlast the session that opened it.
  struct Link {
    explicit Link(asio::any_io_executor executor) : ws(std::move(executor)) {}
    WsClient ws;
    bool open = false;                // connected: frames may be written
    bool writing = false;             // a write is in flight
    std::deque<json::object> unsent;  // frames waiting for it
  };
  std::shared_ptr<Link> ws_;
  asio::steady_timer backoff_timer_;
  asio::steady_timer timeout_timer_;
  asio::steady_timer save_timer_;
  asio::steady_timer renew_timer_;
  asio::signal_set signals_;
  std::mt19937 rng_;

  SeqTracker seqs_;
  std::set<std::string> filling_;  // threads with a subscribe_thread in flight on this connection
  std::set<std::string> away_;     // groups we were removed from (or left) and not yet added back to: what comes is not printed (saved)
  Names names_;
  std::string user_id_, username_;
  std::string store_id_;  // of the server's store the positions count in (connection_established)
  // The server's last changes_synced, and the changes printed since (saved):
  // edits and deletions up to the mark were printed. Sent as
  // ?changes_after= on each connection, so those made while listen was not
  // running are printed when it comes back; a change printed since the mark
  // comes again then, and is skipped (on_change).
  std::optional<SavedChanges> changes_;
  bool syncing_ = false;  // this connection's first changes_synced has not come
  // Edits and deletions of messages of known threads not printed yet (held
  // behind a gap, or on their way in a catch-up), oldest first: each waits
  // for its message (release_changes).
  struct WaitingChange {
    std::string thread;
    std::int64_t seq;
    json::object frame;
  };
  std::vector<WaitingChange> waiting_changes_;
  bool dropped_waiting_ = false;  // said once
  std::chrono::milliseconds delay_ = kFirstDelay;
  int printed_ = 0;
  bool stopping_ = false;
  int exit_code_ = 0;
  bool dirty_ = false;
  bool save_pending_ = false;  // save_timer_ is armed
  std::optional<Micros> expires_;  // the token's expiry, when known
  Clock::time_point last_save_{};
};

awaitable<int> Listener::run() {
  arm_signals();
  arm_timeout();
  // The saved login's expiry when that is the token in use; else the token's
  // life is unknown, and the first renewal comes at once.
  std::optional<Micros> expires = ctx_.token == ctx_.config.token ? parse_iso8601(ctx_.config.expires_at) : std::nullopt;
  expires_ = expires;
  Clock::time_point renew_at = Clock::now();
  if (expires) renew_at += std::chrono::microseconds((*expires - now_micros()) * 4 / 5);
  renew_token_at(renew_at);
  std::optional<CliError> failure;
  try {
    co_await start();
  } catch (const CliError& e) {
    failure = e;
  }
  while (!failure && !stopping_) {
    try {
      co_await session();
    } catch (const CliError& e) {
      failure = e;
    }
    if (stopping_) break;
    if (failure && !transient(*failure)) break;
    note(failure ? std::string(failure->what()) : "connection ended");
    failure.reset();
    co_await backoff();
  }
  finish();
  if (failure && !stopping_) throw *failure;
  co_return exit_code_;
}

// Who we are (positions are per user) and where each thread stands.
awaitable<void> Listener::start() {
  json::value me = co_await http_.get("/api/users/me");
  if (const json::object* o = me.if_object()) {
    user_id_ = get_string(*o, "id");
    username_ = get_string(*o, "username");
    names_.learn_user(*o);
  }
  std::optional<Positions> saved = saved_positions(ctx_.config, user_id_);
  store_id_ = saved_store_id(ctx_.config, user_id_);
  changes_ = saved_changes(ctx_.config, user_id_);
  for (const auto& [thread, seq] : saved.value_or(Positions{})) seqs_.set(thread, seq);
  for (const std::string& thread : saved_away(ctx_.config, user_id_))
    if (seqs_.known(thread)) away_.insert(thread);
  json::value listing = co_await http_.get("/api/chat/threads");
  for (const json::object* t : threads_in(listing)) {
    names_.learn_thread(*t);
    std::string id = get_string(*t, "id");
    // First run: start from now. Later runs: a thread we never saw is new
    // since then, so all of it from when we were let in.
    if (seqs_.known(id)) continue;
    std::int64_t start = get_int(*t, "last_seq").value_or(0);
    if (saved) start = co_await start_of(*t);
    seqs_.set(id, start);
  }
  dirty_ = true;  // so the seeded positions are saved even if nothing arrives
  schedule_save();
}

awaitable<void> Listener::session() {
  auto link = std::make_shared<Link>(ctx_.executor);
  ws_ = link;
  struct Detach {
    std::shared_ptr<Link>& slot;
    ~Detach() { slot.reset(); }
  } detach{ws_};
  filling_.clear();
  WsClient& ws = link->ws;
  // Named, not a temporary in the co_await's full expression: GCC 12
  // destroyed that one twice (the listener crashed).
  std::string query = "changes_after=" + (changes_ ? std::to_string(changes_->mark) : std::string("null"));
  syncing_ = true;
  co_await ws.connect(ctx_.endpoint, ctx_.token, kConnectTimeout, query);
  ws.keep_alive(kIdleTimeout);
  link->open = true;
  while (!stopping_) {
    json::object frame = co_await ws.read();
    co_await handle(std::move(frame));
  }
  link->open = false;  // nothing more is written; a write in flight ends before the close goes
  for (int i = 0; link->writing && i < 200; ++i) {  // at most a second
    asio::steady_timer pause(ctx_.executor, std::chrono::milliseconds(5));
    co_await pause.async_wait(asio::use_awaitable);
  }
  co_await ws.close();
}

// One write at a time on a connection (Beast allows no more): a frame sent
// while another is in flight waits for it, and its writer sends the waiting
// ones after its own. Each connection has its own queue: what waited for a
// connection that ended is dropped with it (its fills are asked again).
awaitable<void> Listener::send_frame(json::object frame) {
  std::shared_ptr<Link> link = ws_;
  if (!link || !link->open) co_return;
  if (link->writing) {
    link->unsent.push_back(std::move(frame));
    co_return;
  }
  link->writing = true;
  struct Done {
    bool& writing;
    ~Done() { writing = false; }
  } done{link->writing};
  co_await link->ws.write(frame);
  while (!link->unsent.empty() && link->open) {
    json::object next = std::move(link->unsent.front());
    link->unsent.pop_front();
    co_await link->ws.write(next);
  }
}

void Listener::renew_token_at(Clock::time_point when) {
  renew_timer_.expires_at(when);
  renew_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    std::shared_ptr<Listener> self = weak.lock();
    if (ec || !self || self->stopping_) return;
    asio::co_spawn(self->ctx_.executor, renew_token(self), [](std::exception_ptr) {});
  });
}

// A renewal that failed for want of the server is tried again while the
// token still lives: after a third of what is left of it, 1 to 15 s (a server
// back after a restart is found before the token runs out). Past its expiry
// (by this machine's clock, which may run ahead), every 15 s.
void Listener::renew_again_soon(const std::string& why) {
  Micros wait = std::chrono::duration_cast<std::chrono::microseconds>(kRenewRetryMax).count();
  const Micros left = expires_ ? *expires_ - now_micros() : 0;
  if (left > 0) wait = std::clamp<Micros>(left / 3, 1'000'000, wait);
  note("cannot renew the token (retrying in " + std::to_string((wait + 500'000) / 1'000'000) + " s): " + why);
  renew_token_at(Clock::now() + std::chrono::microseconds(wait));
}

awaitable<void> Listener::renew_token(std::shared_ptr<Listener> self) {
  Context& ctx = self->ctx_;
  // A client of its own: http_ may have a call of the session's in flight.
  HttpClient http(ctx.executor, ctx.endpoint, ctx.token);
  json::value answer;
  try {
    answer = co_await http.post("/api/auth/refresh", json::object{});
  } catch (const CliError& e) {
    if (self->stopping_) co_return;
    // A refusal (the token expired or revoked, the account disabled) would
    // only repeat; the connection ends listen with the reason.
    if (!transient(e)) {
      note(std::string("cannot renew the token: ") + e.what());
      co_return;
    }
    self->renew_again_soon(e.what());
    co_return;
  }
  if (self->stopping_) co_return;
  const json::object* o = answer.if_object();
  std::string token = o ? get_string(*o, "token") : "";
  std::optional<Micros> expires = o ? parse_iso8601(get_string(*o, "expires_at")) : std::nullopt;
  if (token.empty() || !expires) {
    self->renew_again_soon("unexpected answer");
    co_return;
  }
  if (ctx.token == ctx.config.token) {
    try {
      // Re-read: a login done meanwhile by another process is kept.
      CliConfig saved = load_config(ctx.config_path);
      if (saved.token == ctx.token) {
        saved.token = token;
        saved.expires_at = get_string(*o, "expires_at");
        save_config(ctx.config_path, saved);
        ctx.config = saved;
      }
    } catch (const CliError& e) {
      note(std::string("cannot save the renewed token: ") + e.what());
    }
  }
  ctx.token = token;
  self->expires_ = expires;
  self->http_.set_token(token);
  // At least a second apart: a clock running ahead of the server's must not make it renew back to back.
  const Micros wait = std::max<Micros>(1'000'000, (*expires - now_micros()) * 4 / 5);
  self->renew_token_at(Clock::now() + std::chrono::microseconds(wait));
  json::object auth;
  auth["type"] = "auth";
  auth["token"] = token;
  try {
    co_await self->send_frame(std::move(auth));  // the connection's own expiry moves too
  } catch (const CliError&) {
    // The connection broke meanwhile: the session reconnects with the new token.
  }
}

awaitable<void> Listener::handle(json::object frame) {
  std::string type = get_string(frame, "type");
  if (type == "connection_established") {
    co_await on_store(get_string(frame, "store_id"));
    co_await on_connected();
  } else if (type == "new_message") {
    co_await on_message(std::move(frame));
  } else if (type == "changes_synced") {
    // The changes up to it were printed before it came (as message_edited
    // and message_deleted, live or caught up).
    std::optional<std::int64_t> mark = get_int(frame, "change_mark");
    if (mark) {
      // The changes printed stay noted: one that came live before the mark
      // is not always covered by it (the mark is where the node stood when
      // the connection or its last mark began), and the next sync sends it.
      if (!changes_) changes_ = SavedChanges{};
      changes_->mark = *mark;
      syncing_ = false;
      dirty_ = true;
      schedule_save();
    }
  } else if (type == "message_edited" || type == "message_deleted") {
    on_change(frame);
  } else if (type == "thread_subscribed") {
    std::string thread = get_string(frame, "thread_id");
    filling_.erase(thread);
    co_await drain(thread, true);
  } else if (type == "error" && get_string(frame, "request_id").starts_with(kFillPrefix)) {
    co_await on_fill_error(frame);
  } else if (type == "error" && get_string(frame, "request_id").starts_with(kAckPrefix)) {
    // A receipt the server did not take: most often that of the notice of our
    // own removal from a group (no longer a member, we may not acknowledge
    // it). The message was printed; nothing to tell.
  } else if (type == "presence" && !options_.presence) {
    // Hidden by default: every one-shot command (send, history...) of a
    // contact opens and closes a connection, which would read as a flood of
    // "online" / "went offline" lines.
  } else if (type != "pong" && type != "thread_unsubscribed" && type != "auth_renewed") {
    print_event(frame);
  }
}

// A server whose store is not the one the positions were saved against was
// restored from a backup: seqs past the backup's end were given again to
// new messages, so positions there would skip them. Each thread starts
// again from the user's delivery mark in the restored store (listen
// acknowledges what it prints): what came after the backup is printed,
// with perhaps a few messages again.
// The new store id is taken (and saved) only with the positions reset: had
// it been saved first, a reset cut short (the listing failing, listen
// stopped) would leave the old positions under the new id, never to be
// reset, and the messages given their seqs again never printed.
awaitable<void> Listener::on_store(std::string store_id) {
  if (store_id.empty() || store_id == store_id_) co_return;
  if (store_id_.empty()) {  // first seen: the positions count in this one
    store_id_ = std::move(store_id);
    dirty_ = true;
    schedule_save();
    co_return;
  }
  note("the server's store was restored from a backup: printing each thread again from its delivery mark");
  json::value listing = co_await http_.get("/api/chat/threads");
  SeqTracker reset;
  for (const json::object* t : threads_in(listing)) {
    std::int64_t mark = 0;
    if (const json::array* people = get_array(*t, "participants"))
      for (const json::value& p : *people)
        if (const json::object* o = p.if_object(); o && get_string(*o, "user_id") == user_id_)
          mark = get_int(*o, "last_delivered_seq").value_or(0);
    reset.set(get_string(*t, "id"), mark);
  }
  seqs_ = std::move(reset);
  away_.clear();  // as of the old store: the replays from the marks say it again
  waiting_changes_.clear();  // their seqs name other messages in this store
  store_id_ = std::move(store_id);
  dirty_ = true;
  schedule_save();
}

// Every known thread replays what it missed; then threads created meanwhile are found.
awaitable<void> Listener::on_connected() {
  delay_ = kFirstDelay;
  std::vector<std::string> known;
  for (const auto& [thread, seq] : seqs_.positions()) known.push_back(thread);
  for (const std::string& thread : known) co_await request_fill(thread);
  co_await discover_threads();
  note("listening as " + username_ + " (" + std::to_string(seqs_.positions().size()) + " threads)");
}

awaitable<void> Listener::discover_threads() {
  json::value listing = co_await http_.get("/api/chat/threads");
  for (const json::object* t : threads_in(listing)) {
    names_.learn_thread(*t);
    std::string id = get_string(*t, "id");
    if (seqs_.known(id)) continue;
    const std::int64_t start = co_await start_of(*t);  // created, or joined, while we were away
    seqs_.set(id, start);
    dirty_ = true;
    schedule_save();
    if (get_int(*t, "last_seq").value_or(0) > seqs_.last(id)) co_await request_fill(id);
  }
}

// Where a thread we have not seen starts for us. A member from its start
// (every direct thread, a group made with us in it): at 0, all of it. One
// we were added to: after the last message from before we joined, which is
// its history (for `history`), not news: a replay from 0 would print all
// of it as new messages and acknowledge them. Found by paging back from
// what the server has delivered to us, which is that point when we join
// (another device of ours may have taken it further since).
awaitable<std::int64_t> Listener::start_of(const json::object& thread) {
  const json::object* me = nullptr;
  const json::array* people = get_array(thread, "participants");
  for (size_t i = 0; people && i < people->size() && !me; ++i)
    if (const json::object* p = (*people)[i].if_object(); p && get_string(*p, "user_id") == user_id_) me = p;
  if (!me) co_return 0;
  // Both ISO 8601 UTC in one format: in time order as text. (The members
  // of a new thread are stored a moment after its time is taken: they page
  // back below, to the start or at most 2,000 messages.)
  const std::string joined = get_string(*me, "joined_at");
  if (joined.empty() || joined <= get_string(thread, "created_at")) co_return 0;
  const std::string path = "/api/chat/threads/" + url_encode(get_string(thread, "id")) + "/messages?limit=200&before_seq=";
  const std::int64_t delivered = get_int(*me, "last_delivered_seq").value_or(0);
  std::int64_t start = delivered;
  try {
    for (int page = 0; page < 10 && start > 0; ++page) {
      json::value got = co_await http_.get(path + std::to_string(start + 1));
      const json::array* messages = got.is_object() ? get_array(got.as_object(), "messages") : nullptr;
      if (!messages || messages->empty()) co_return start;
      for (size_t i = messages->size(); i-- > 0;) {  // newest first
        const json::object* m = (*messages)[i].if_object();
        if (!m || get_string(*m, "created_at") < joined) co_return start;
        start = get_int(*m, "seq").value_or(1) - 1;
      }
    }
  } catch (const std::exception& e) {
    // Left the thread meanwhile, say: what the server had delivered will do.
    note("cannot read thread " + get_string(thread, "id") + ": " + e.what());
    co_return delivered;
  }
  co_return start;
}

// A live message `seq` of a thread we have not seen: one just made, or one we
// were just added to. It starts at the message, or earlier where the server
// had delivered less to us (a new thread's first messages); at the message
// when the thread cannot be read.
awaitable<void> Listener::learn_thread(const std::string& thread, std::int64_t seq) {
  std::int64_t start = seq - 1;
  try {
    json::value t = co_await http_.get("/api/chat/threads/" + url_encode(thread));
    if (const json::object* o = t.if_object()) {
      names_.learn_thread(*o);
      start = std::min(start, co_await start_of(*o));
    }
  } catch (const std::exception& e) {
    note("cannot read thread " + thread + ": " + e.what());
  }
  if (seqs_.known(thread)) co_return;
  seqs_.set(thread, std::max<std::int64_t>(start, 0));
  dirty_ = true;
  schedule_save();
}

awaitable<void> Listener::on_message(json::object frame) {
  const json::object* message = get_object(frame, "data");
  std::string thread = message ? get_string(*message, "thread_id") : "";
  std::optional<std::int64_t> seq = message ? get_int(*message, "seq") : std::nullopt;
  if (thread.empty() || !seq) {  // not a message we can place: show it as is
    print_event(frame);
    co_return;
  }
  names_.learn_message(*message);
  if (!seqs_.known(thread)) co_await learn_thread(thread, *seq);
  SeqTracker::Offer offer = seqs_.offer(thread, *seq, frame);
  if (offer == SeqTracker::Offer::kHeld) co_await request_fill(thread);
  if (offer != SeqTracker::Offer::kNext) co_return;
  co_await deliver(std::move(frame));
  co_await drain(thread, false);
}

// Our subscribe_thread was refused (say, we left the thread): stop waiting for it.
awaitable<void> Listener::on_fill_error(const json::object& frame) {
  std::string thread = get_string(frame, "request_id").substr(kFillPrefix.size());
  filling_.erase(thread);
  co_await drain(thread, true);
  if (get_string(frame, "code") != "forbidden") {
    note("cannot catch up on thread " + thread + ": " + get_string(frame, "code") + ": " + get_string(frame, "message"));
    co_return;
  }
  // Removed (or left) while this was not listening: the replay sent what
  // came up to the removal's notice, which was printed. The position goes,
  // so a later run does not ask again.
  note("no longer a participant of thread " + thread);
  seqs_.forget(thread);
  std::erase_if(waiting_changes_, [&](const WaitingChange& w) { return w.thread == thread; });
  away_.erase(thread);
  dirty_ = true;
  schedule_save();
}

awaitable<void> Listener::deliver(json::object frame) {
  if (stopping_) co_return;
  const json::object& message = frame.at("data").as_object();
  const std::string thread = get_string(message, "thread_id");
  const Membership change = membership_change(message, username_);
  // The one notice of ours that follows our leaving: the admin we made
  // when we left as the group's only one ("carol is now an admin").
  const bool ours = get_string(message, "message_type") == "system" && get_string(message, "sender_id") == user_id_;
  if (away_.contains(thread) && change != Membership::kAdded && !ours) {
    // Said while we were out of the group, sent now because we are back
    // (a replay gives a member the thread's history): history, not news.
    seqs_.printed(thread, *get_int(message, "seq"));
    release_changes(thread, *get_int(message, "seq"), nullptr);
    dirty_ = true;
    schedule_save();
    co_return;
  }
  if (change == Membership::kGone) away_.insert(thread);
  if (change == Membership::kAdded) away_.erase(thread);
  print_event(frame);
  seqs_.printed(thread, *get_int(message, "seq"));
  note_message_state(message);
  release_changes(thread, *get_int(message, "seq"), &message);
  dirty_ = true;
  schedule_save();
  ++printed_;
  bool done = options_.exit_after > 0 && printed_ >= options_.exit_after;
  if (done) request_stop(0);
  json::object ack;
  ack["type"] = "message_received";
  ack["message_id"] = get_string(message, "id");
  ack["request_id"] = std::string(kAckPrefix) + get_string(message, "id");
  co_await send_frame(std::move(ack));
}

awaitable<void> Listener::drain(const std::string& thread, bool force) {
  while (!stopping_) {
    std::optional<json::object> next = seqs_.take_next(thread, force);
    if (!next) break;
    co_await deliver(std::move(*next));
  }
}

awaitable<void> Listener::request_fill(const std::string& thread) {
  if (!ws_ || filling_.contains(thread)) co_return;
  filling_.insert(thread);
  json::object frame;
  frame["type"] = "subscribe_thread";
  frame["request_id"] = std::string(kFillPrefix) + thread;
  frame["thread_id"] = thread;
  frame["since_seq"] = seqs_.last(thread);
  co_await send_frame(std::move(frame));
}

// 0.5 s doubling to 30 s, each wait jittered by +-25% so that many clients
// dropped at once do not all come back in the same instant.
awaitable<void> Listener::backoff() {
  std::uniform_real_distribution<double> jitter(0.75, 1.25);
  auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(delay_ * jitter(rng_));
  delay_ = std::min(delay_ * 2, kMaxDelay);
  note("reconnecting in " + std::to_string(wait.count()) + " ms");
  backoff_timer_.expires_after(wait);
  boost::system::error_code ignored;  // cancelled by abort()
  co_await backoff_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
}

// Changes printed, at most (the latest): past it the oldest are forgotten,
// and one the mark does not cover yet may be printed again by the next sync.
constexpr size_t kPrintedChangesKept = 128;

// Changes waiting for their messages, at most (the oldest go first).
constexpr size_t kWaitingChangesKept = 256;

// An edit or a deletion, printed once, and never before its message: the
// server sends a message's frames in the order of its changes, and listen
// prints messages in seq order, so one it holds behind a gap (or that a
// catch-up is still to send) would otherwise be printed after its own edit,
// as it was before it. Such a change waits for the message
// (release_changes). The sync of a new connection sends every change since
// the mark: those printed since are skipped, and so are those in threads
// not known yet, whose catch-up prints the messages as they are now.
void Listener::on_change(const json::object& frame) {
  const bool deleted = get_string(frame, "type") == "message_deleted";
  const json::object* m = deleted ? &frame : get_object(frame, "data");
  if (!m) return print_event(frame);
  std::string thread = get_string(*m, "thread_id");
  std::int64_t seq = get_int(*m, "seq").value_or(0);
  if (seqs_.known(thread) && seq > seqs_.last(thread)) {
    if (waiting_changes_.size() >= kWaitingChangesKept) {
      if (!dropped_waiting_) note("too many edits and deletions of messages not printed yet: the oldest are dropped");
      dropped_waiting_ = true;
      waiting_changes_.erase(waiting_changes_.begin());
    }
    waiting_changes_.push_back({thread, seq, frame});
    return;
  }
  if (syncing_ && !seqs_.known(thread)) return;
  std::string key = change_key(*m, deleted);
  if (changes_) {
    const auto& printed = changes_->printed;
    if (std::find(printed.begin(), printed.end(), key) != printed.end()) return;
    // Also by the key a listen before change numbers noted ("id|edited_at"),
    // unless a numbered one of the message is there: two edits within one
    // millisecond share that key, and the newer must not pass for the older.
    const std::string id = get_string(*m, deleted ? "message_id" : "id");
    const bool numbered_there = std::any_of(printed.begin(), printed.end(), [&](const std::string& k) {
      return k.size() > id.size() && k.compare(0, id.size(), id) == 0 && k[id.size()] == '#';
    });
    const std::string without_number = change_key(*m, deleted, /*numbered=*/false);
    if (!numbered_there && std::find(printed.begin(), printed.end(), without_number) != printed.end()) return;
  }
  note_change_printed(std::move(key));
  print_event(frame);
}

// True when `message`, as printed, shows `change` or something newer. By
// their change numbers; from a server without them, by `edited_at`, a
// node's clock (ISO 8601 in one format: in time order as text).
static bool shows_change(const json::object& message, const json::object& change) {
  const json::value* gone = message.if_contains("deleted");
  if (gone && gone->is_bool() && gone->get_bool()) return true;
  const bool deleted = get_string(change, "type") == "message_deleted";
  const json::object* changed = deleted ? &change : get_object(change, "data");
  if (!changed) return false;
  std::optional<std::int64_t> shown_no = get_int(message, "change_no");
  std::optional<std::int64_t> change_no = get_int(*changed, "change_no");
  if (shown_no && change_no) return *change_no <= *shown_no;
  if (deleted) return false;
  const std::string shown = get_string(message, "edited_at");
  return !shown.empty() && get_string(*changed, "edited_at") <= shown;
}

// Message `seq` of `thread` was printed (`printed`: it, as printed; null:
// passed over unprinted, said while we were out of the group). The changes
// waiting for it, and for earlier ones passed over (a gap given up on), go
// through on_change now, but for those the message printed shows already.
void Listener::release_changes(const std::string& thread, std::int64_t seq, const json::object* printed) {
  if (waiting_changes_.empty()) return;
  auto kept = std::stable_partition(waiting_changes_.begin(), waiting_changes_.end(),
                                    [&](const WaitingChange& w) { return w.thread != thread || w.seq > seq; });
  std::vector<WaitingChange> due(std::make_move_iterator(kept), std::make_move_iterator(waiting_changes_.end()));
  waiting_changes_.erase(kept, waiting_changes_.end());
  if (!printed) return;
  for (const WaitingChange& w : due)
    if (w.seq != seq || !shows_change(*printed, w.frame)) on_change(w.frame);
}

// A message printed as it is now, edited or deleted: the sync may send that
// change too. (Not inline in deliver: a coroutine, where GCC 12 mishandles
// some temporaries.)
void Listener::note_message_state(const json::object& message) {
  const json::value* deleted = message.if_contains("deleted");
  const bool gone = deleted && deleted->is_bool() && deleted->get_bool();
  if (gone || !get_string(message, "edited_at").empty()) note_change_printed(change_key(message, gone));
}

// What names a change in the printed record: its message and its number
// ("id#N"); from a server without change numbers (or with `numbered`
// false), "id|deleted" or "id|<edited_at>". `m`: the message, or the
// message_deleted frame.
std::string Listener::change_key(const json::object& m, bool deleted, bool numbered) {
  std::string key = get_string(m, deleted && !m.contains("id") ? "message_id" : "id");
  std::optional<std::int64_t> no = get_int(m, "change_no");
  if (numbered && no) return key + "#" + std::to_string(*no);
  return key + "|" + (deleted ? std::string("deleted") : get_string(m, "edited_at"));
}

// A change shown (its event, or its message as it is now): kept until the
// next mark covers it.
void Listener::note_change_printed(std::string key) {
  if (!changes_) return;
  auto& printed = changes_->printed;
  if (std::find(printed.begin(), printed.end(), key) != printed.end()) return;
  if (printed.size() >= kPrintedChangesKept) printed.erase(printed.begin());
  printed.push_back(std::move(key));
  dirty_ = true;
  schedule_save();
}

void Listener::print_event(const json::object& frame) {
  if (!ctx_.pretty) {
    print_json_line(frame);
    return;
  }
  std::string line = pretty_event(frame, names_);
  if (!line.empty()) print_line(line);
}

void Listener::arm_signals() {
  signals_.async_wait([this](boost::system::error_code ec, int) {
    if (!ec) abort(0);
  });
}

void Listener::arm_timeout() {
  if (options_.timeout_seconds <= 0) return;
  timeout_timer_.expires_after(
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.timeout_seconds)));
  timeout_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    std::ostringstream text;
    text << "timeout: " << options_.timeout_seconds << " s passed";
    note(text.str());
    abort(kExitTimeout);
  });
}

// Finish what is in hand (an ack, the close handshake), then leave.
void Listener::request_stop(int exit_code) {
  if (stopping_) return;
  stopping_ = true;
  exit_code_ = exit_code;
}

// Leave now: cancel whatever the coroutine waits on.
void Listener::abort(int exit_code) {
  request_stop(exit_code);
  if (ws_) ws_->ws.cancel();
  http_.cancel();
  backoff_timer_.cancel();
}

void Listener::finish() {
  boost::system::error_code ignored;
  signals_.cancel(ignored);
  timeout_timer_.cancel();
  save_timer_.cancel();
  renew_timer_.cancel();
  save_positions();
}

// A lone message is saved at once; in a burst, the first is saved at once and
// the rest together kSaveEvery later, so a burst costs a few fsyncs, not one
// per message, and nothing printed stays unsaved for longer than kSaveEvery.
void Listener::schedule_save() {
  if (save_pending_ || stopping_) return;
  Clock::time_point due = last_save_ + kSaveEvery;
  if (Clock::now() >= due) {
    save_positions();
    return;
  }
  save_pending_ = true;
  save_timer_.expires_at(due);
  save_timer_.async_wait([this](boost::system::error_code ec) {
    save_pending_ = false;
    if (!ec) save_positions();
  });
}

void Listener::save_positions() {
  if (!dirty_ || user_id_.empty()) return;
  try {
    store_positions(ctx_.config_path, user_id_, seqs_.positions(), store_id_, away_, changes_);
    dirty_ = false;
    last_save_ = Clock::now();
  } catch (const CliError& e) {
    note(std::string("cannot save positions: ") + e.what());
  }
}

}  // namespace

awaitable<int> listen(Context& ctx, ListenOptions options) {
  ctx.require_token();
  auto listener = std::make_shared<Listener>(ctx, options);
  co_return co_await listener->run();
}

}  // namespace parley::cli
