#include "api/connection.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <thread>
#include <utility>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "api/connection_reads.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "protocol/encode.h"  // message_json
#include "protocol/json_fields.h"  // invalid_field

namespace parley {

namespace json = boost::json;

namespace {
// Several nodes: how far back the fill for a thread's first live message
// looks (how much older than the connection a message found there may be:
// kFirstFillMarginUs).
constexpr int64_t kFirstFillWindow = 32;
constexpr size_t kMaxDeferredFrames = 64;

// The threads a connection is typing in: a short list, searched in place.
using TypingList = std::vector<std::pair<std::string, uint64_t>>;

TypingList::iterator find_typing(TypingList& list, const std::string& thread_id) {
  return std::find_if(list.begin(), list.end(), [&](const auto& e) { return e.first == thread_id; });
}

// The thread's timer generation, added as 0 when it is not in the list.
uint64_t& typing_entry(TypingList& list, const std::string& thread_id) {
  auto it = find_typing(list, thread_id);
  if (it != list.end()) return it->second;
  return list.emplace_back(thread_id, 0).second;
}

void erase_typing(TypingList& list, const std::string& thread_id) {
  auto it = find_typing(list, thread_id);
  if (it != list.end()) list.erase(it);
}
}  // namespace

struct Connection::AnswerWait {
  struct Pending {
    std::string thread_id;
    std::string message_id;
    int64_t seq;
  };
  struct Waiting {
    std::string thread_id;
    int64_t seq;  // kAnySeq: a change to a message, or a frame of unknown seq
    FramePtr frame;
  };
  std::vector<Pending> pending;
  std::vector<Waiting> frames;  // in arrival order

  // Whether a frame must wait: an own message before it is not answered yet,
  // or an earlier frame of its thread still waits.
  bool waits(const std::string& thread_id, int64_t seq) const {
    for (const auto& p : pending)
      if (p.thread_id == thread_id && p.seq < seq) return true;
    for (const auto& f : frames)
      if (f.thread_id == thread_id) return true;
    return false;
  }
};

// Every idle connection carries one Connection, made by make_shared (16 bytes
// of counts in front of it). Up to 496 bytes the pair is one 512-byte
// jemalloc block; at 497 it is a 640-byte one (docs/benchmarks.md, "Idle
// memory, again"). Growing past this is a choice to make with the idle
// benchmark in hand, not by accident.
static_assert(sizeof(Connection) <= 496, "Connection outgrew its 512-byte allocation class");

// ---------------------------------------------------------------- lifecycle

Connection::Connection(ConnectionContext ctx, std::weak_ptr<Transport> transport, const Encoder& encoder)
    : encoder_(&encoder),
      ctx_(ctx),
      transport_(std::move(transport)),
      session_id_(new_uuid()),
      tokens_(ctx.chat.config().limits.message_burst),
      refilled_at_us_(now_micros()) {
  if (!ctx.chat.config().redis_url.empty()) cursor_.fill_before_first(kFirstFillWindow);
}

Connection::~Connection() = default;

void Connection::on_open(std::optional<Authenticated> user, std::vector<ClientFrame> subscribes,
                         std::optional<int64_t> changes_after) {
  Metrics::get().connections.fetch_add(1, std::memory_order_relaxed);
  Metrics::get().connections_total.fetch_add(1, std::memory_order_relaxed);
  if (user) return authenticated(std::move(*user), nullptr, std::move(subscribes), changes_after);
  auth_deadline_ms_ = now_micros() / 1000 + int64_t{ctx_.chat.config().limits.auth_timeout_seconds} * 1000;
}

void Connection::on_tick(int64_t now_ms) {
  if (closed_) return;
  if (!authed_) {
    if (auth_deadline_ms_ && now_ms > auth_deadline_ms_) close(CloseReason::kAuthTimeout, "authentication timeout");
    return;
  }
  // A renewal may be among the frames waiting for the account's recheck.
  if (admission_) return;
  if (changes_sent_ && changes_sent_->mark_given >= 0) ctx_.chat.tick_change_marks();
  // A second of grace past exp, so a client renewing right at exp is not cut.
  if (token_exp_ > 0 && now_ms > token_exp_ * 1000 + 1000) {
    token_exp_ = 0;
    // How to renew in time: a frame natively; on Socket.IO the client comes
    // back by itself, with a fresh token only when `auth` is a function.
    const bool sio = encoder_->format() == WireFormat::kSocketIo;
    send_error({ErrorKind::kUnauthorized, "token_expired",
                sio ? "token expired; reconnect with a fresh token (auth: (cb) => cb({token}))"
                    : "token expired; reconnect with a fresh token (renew with an `auth` frame before it expires)"},
               nullptr);
    close(CloseReason::kTokenExpired, "token expired");
  }
}

void Connection::authenticated(Authenticated user, const json::value& request_id, std::vector<ClientFrame> subscribes,
                               std::optional<int64_t> changes_after) {
  // on_frame refuses a list (or changes_after) on any `auth` frame but the
  // one that authenticates the connection, so a renewal carries none.
  if (authed_ || admission_) return renew(std::move(user), request_id);
  admit(std::move(user), request_id, std::move(subscribes), changes_after);
}

void Connection::renew(Authenticated user, const json::value& request_id) {
  if (admission_) {
    // An `auth` frame answered while the first one's admission is pending:
    // a renewal once admitted.
    admission_->deferred.push_back(
        [this, user = std::move(user), request_id]() mutable { renew(std::move(user), request_id); });
    return;
  }
  if (user.user.id != user_id_) {
    send_error({ErrorKind::kUnauthorized, "invalid_token", "token is for another user"}, request_id);
    return close(CloseReason::kUnauthorized, "token is for another user");
  }
  // Close when the token expires, unless an `auth` frame renews it first.
  token_exp_ = user.expires_at;
  token_iat_ = user.issued_at;
  send(encoder_->reply("auth_renewed", json::object{{"user_id", user_id_},
                                                    {"expires_at", iso8601_millis(token_exp_ * 1000000)}},
                       request_id));
}

void Connection::subscribe_all(std::vector<ClientFrame> subscribes) {
  for (auto& f : subscribes) {
    if (closed_) return;
    // The rest would be refused too (no token comes back within this loop),
    // each a strike and, past the flood bound, another close: the entry
    // refused answers for the list, and the rest is not run.
    if (!take_token_or_refuse(f.request_id)) return;
    on_subscribe(std::move(f));
  }
}

namespace {

// The limiter's answer, raced between acquire() returning and the answer
// arriving: whichever comes second goes on (inline answers keep the whole
// admission on the loop, as one process always does).
struct AdmissionAnswer {
  std::atomic<int> state{0};  // 0 = waiting, 1 = answered before acquire() returned, 2 = the caller returned first
  bool admitted = false;
};

}  // namespace

// A count the limiter granted, on its way to the loop: released unless the
// connection takes it over (it may have closed, or its transport be gone).
struct HeldCount {
  HeldCount(ConnectionLimiter& l, std::string u) : limiter(l), user_id(std::move(u)) {}
  HeldCount(const HeldCount&) = delete;
  HeldCount& operator=(const HeldCount&) = delete;
  ~HeldCount() {
    if (held) limiter.release(user_id);
  }
  ConnectionLimiter& limiter;
  std::string user_id;
  bool held = true;
};

// The per-user connection limit (ConnectionLimiter): answered inline in one
// process; across nodes the answer comes from Redis, and frames that arrive
// meanwhile wait for it.
void Connection::admit(Authenticated user, const json::value& request_id, std::vector<ClientFrame> subscribes,
                       std::optional<int64_t> changes_after) {
  std::string user_id = user.user.id;
  admission_ =
      std::make_unique<Admission>(Admission{std::move(user), request_id, {}, std::move(subscribes), changes_after});
  auto answer = std::make_shared<AdmissionAnswer>();
  auto self = shared_from_this();
  std::weak_ptr<Transport> transport = transport_;
  ConnectionLimiter& limiter = ctx_.chat.connection_limiter();
  limiter.acquire(user_id, [answer, self, transport, &limiter, user_id](bool ok) {
    answer->admitted = ok;
    int expected = 0;
    if (answer->state.compare_exchange_strong(expected, 1)) return;
    auto count = ok ? std::make_shared<HeldCount>(limiter, user_id) : nullptr;
    if (auto t = transport.lock()) t->post([self, ok, count] { self->admitted(ok, count.get()); });
  });
  int expected = 0;
  if (!answer->state.compare_exchange_strong(expected, 2)) admitted(answer->admitted, nullptr);
}

void Connection::admitted(bool ok, HeldCount* count) {
  auto admission = std::move(admission_);
  if (closed_ || !admission) return;  // the count, if any, goes back with `count`
  User& user = admission->user.user;
  if (on_admission_) {
    if (!ok) return std::exchange(on_admission_, nullptr)(AdmissionStep::kRefused);
    on_admission_(AdmissionStep::kAdmitted);
    if (closed_) return;
  }
  if (!ok) {
    send_error({ErrorKind::kRateLimited, "too_many_connections", "too many connections for this user"},
               admission->request_id);
    return close(CloseReason::kTooManyConnections, "too many connections for this user");
  }
  if (count) count->held = false;  // released in on_close from now on
  registered_ = true;
  connected_at_us_ = now_micros();
  ctx_.chat.presence().connect(user.id);
  user_id_ = std::move(user.id);
  authed_ = true;
  // Before the hub's add: every change numbered up to it was committed
  // before anything could be read or sent for this connection (sync_changes).
  const int64_t changes_through = admission->changes_after ? ctx_.chat.changes_through() : 0;
  ctx_.hub.add(this);
  spdlog::debug("event=ws_authenticated session_id={} user_id={}", session_id_, user_id_);
  json::object established{{"user_id", user_id_}, {"session_id", session_id_}, {"timestamp", iso8601_millis(now_micros())}};
  if (std::string store_id = ctx_.chat.store().store_id(); !store_id.empty()) established["store_id"] = std::move(store_id);
  send(encoder_->reply("connection_established", std::move(established), admission->request_id));
  // Close when the token expires, unless an `auth` frame renews it first.
  token_exp_ = admission->user.expires_at;
  token_iat_ = admission->user.issued_at;
  // An account change polled after this one was authenticated and before it
  // registered closed the user's connections without it: the store is asked
  // again. Until it answers, replays (the list's, a Socket.IO catch-up) are
  // begun, their threads' live messages waiting behind them, but read
  // nothing, and the client's frames wait: a disabled account is closed
  // before it is sent any history or may send anything.
  const bool recheck = ctx_.chat.identity().generation() != admission->user.generation;
  if (recheck) hold_replay_reads();
  // In this same task as the hub's add: the fan-out reaches this connection
  // through tasks posted to its loop, so each of these replays begins before
  // any live message of its thread can come, and the live ones wait behind
  // it. A subscribe_thread sent after connection_established cannot promise
  // that: a busy thread's next message may come first.
  subscribe_all(std::move(admission->subscribes));
  if (auto hook = std::exchange(on_admission_, nullptr)) hook(AdmissionStep::kEstablished);
  // Ahead of the client's frames, and, like the replays, not before a
  // recheck lets the account have history.
  if (auto after = admission->changes_after)
    admission->deferred.insert(admission->deferred.begin(),
                               [this, after = *after, changes_through] { sync_changes(after, changes_through); });
  admission_ = std::move(admission);  // route() holds frames while it is set
  if (recheck) return recheck_account();
  run_deferred();
}

// The frames (and renewals) that waited for the admission, in order.
void Connection::run_deferred() {
  auto admission = std::move(admission_);
  if (!admission) return;
  for (auto& step : admission->deferred) {
    if (closed_) break;
    step();
  }
}

void Connection::on_close() {
  if (closed_) return;
  closed_ = true;
  Metrics::get().connections.fetch_sub(1, std::memory_order_relaxed);
  if (authed_) ctx_.hub.remove(this);
  if (authed_) {
    auto typing = std::move(typing_);
    for (const auto& [thread_id, gen] : typing) {
      if (!ctx_.chat.typing_board().stop(user_id_, thread_id, session_id_)) continue;  // another device types there
      json::object fields{{"from_user_id", user_id_}, {"user_id", user_id_}, {"is_typing", false}};
      relay(thread_id, "typing", std::move(fields), nullptr);
    }
  }
  if (registered_) {
    ctx_.chat.presence().disconnect(user_id_);
    ctx_.chat.connection_limiter().release(user_id_);
  }
}

// ---------------------------------------------------------------- inbound

bool Connection::take_token(bool clears_strikes) {
  const auto& lim = ctx_.chat.config().limits;
  int64_t now = now_micros();
  tokens_ = std::min(lim.message_burst, tokens_ + (now - refilled_at_us_) * lim.messages_per_second / 1e6);
  refilled_at_us_ = now;
  if (tokens_ >= 1) {
    tokens_ -= 1;
    if (clears_strikes) strikes_ = 0;
    return true;
  }
  return false;
}

void Connection::on_binary(std::string_view) {
  send_error(bad_input("binary_not_supported", "binary frames are not supported; send JSON text"), nullptr);
}

void Connection::on_text(std::string_view text) {
  if (closed_) return;
  ParsedFrame parsed = parse_client_frame(text);
  if (parsed.error) {
    const bool bad_auth = parsed.frame.type == ClientType::kAuth;
    on_bad_frame(*parsed.error, parsed.frame.request_id);
    // A bad `auth` frame (no token, not a string, too long) ends the connection
    // like a bad token does (docs/protocol.md, close codes).
    if (bad_auth && !closed_) close(CloseReason::kUnauthorized, "bad auth frame");
    return;
  }
  on_frame(std::move(parsed.frame));
}

void Connection::on_bad_frame(const Error& error, const json::value& request_id) {
  if (closed_ || !take_token_or_refuse(request_id)) return;
  send_error(error, request_id);
}

void Connection::on_frame(ClientFrame f) {
  if (closed_) return;
  // A client may acknowledge every message of a replay longer than the burst:
  // a receipt past the limit is dropped (a later one of its thread covers it),
  // with no strike, never closing the connection for flooding. One that
  // waits for an answer (a request_id, a Socket.IO ack) is told so.
  if (f.type == ClientType::kMessageReceived && authed_) {
    bool taken = take_token(/*clears_strikes=*/false);
    if (taken && admission_) {
      // Registered, its account read again (admitted): in line with the frames waiting for that.
      taken = admission_->deferred.size() < kMaxDeferredFrames;
      if (taken) admission_->deferred.push_back([this, f = std::move(f)]() mutable { dispatch(std::move(f)); });
    } else if (taken) {
      dispatch(std::move(f));
    }
    if (!taken && !f.request_id.is_null())
      send_error({ErrorKind::kRateLimited, "rate_limited", "too many frames; slow down"}, f.request_id);
    return;
  }
  if (!take_token_or_refuse(f.request_id)) return;
  if (f.type == ClientType::kAuth && !f.subscribes.empty() && (authed_ || awaiting_auth_ || admission_)) {
    // Only the frame that authenticates the connection begins replays ahead
    // of live delivery; later, subscribe_thread frames do the same work.
    // Taken from renewals, a list would begin up to 500 replays for one
    // token of the rate limit, and be held, parsed, by each renewal waiting
    // for its token check.
    return send_error(invalid_field("subscribe", "is taken only by the auth frame that authenticates the "
                                                 "connection; send subscribe_thread frames"),
                      f.request_id);
  }
  if (f.type == ClientType::kAuth && f.changes_after && (authed_ || awaiting_auth_ || admission_)) {
    // The sync's mark is read as the connection registers (sync_changes).
    return send_error(invalid_field("changes_after", "is taken only by the auth frame that authenticates the "
                                                     "connection"),
                      f.request_id);
  }
  if (awaiting_auth_) {
    // Frames sent right after the `auth` frame wait for its token check (on
    // a worker), then go in order; refused as not authenticated they were lost.
    if (awaiting_auth_->size() >= kMaxDeferredFrames)
      return send_error({ErrorKind::kRateLimited, "rate_limited", "too many frames before the connection was established"},
                        f.request_id);
    awaiting_auth_->push_back(std::move(f));
    return;
  }
  route(std::move(f));
}

// A frame that has its token: held while the admission runs, refused before
// authentication, else handled.
void Connection::route(ClientFrame f) {
  if (admission_) {
    // Frames sent right after the open wait for the limiter's answer (a
    // Redis round trip), as they would have waited for the loop, and for
    // the account's recheck if it changed meanwhile (admitted).
    if (admission_->deferred.size() >= kMaxDeferredFrames)
      return send_error({ErrorKind::kRateLimited, "rate_limited", "too many frames before the connection was established"},
                        f.request_id);
    admission_->deferred.push_back([this, f = std::move(f)]() mutable { dispatch(std::move(f)); });
    return;
  }
  if (!authed_ && f.type != ClientType::kAuth)
    return send_error({ErrorKind::kUnauthorized, "not_authenticated", "send an `auth` frame first"}, f.request_id);
  dispatch(std::move(f));
}

bool Connection::on_requested_receipt(ClientFrame f) {
  if (closed_ || !authed_) return true;  // nothing to try again
  if (admission_) return false;          // registered, its account read again (admitted): later
  if (!take_token(/*clears_strikes=*/false)) return false;
  dispatch(std::move(f));
  return true;
}

// A frame the token bucket refuses gets `rate_limited`; sustained flooding closes.
bool Connection::take_token_or_refuse(const json::value& request_id) {
  if (take_token()) return true;
  if (++strikes_ >= ctx_.chat.config().limits.flood_strikes) {
    close(CloseReason::kPolicy, "rate limit exceeded");
  } else {
    send_error({ErrorKind::kRateLimited, "rate_limited", "too many frames; slow down"}, request_id);
  }
  return false;
}

void Connection::dispatch(ClientFrame f) {
  switch (f.type) {
    case ClientType::kAuth: return on_auth_frame(std::move(f));
    case ClientType::kPing: return send(encoder_->reply("pong", {}, f.request_id));
    case ClientType::kSendMessage: return on_send(std::move(f));
    case ClientType::kSubscribeThread: return on_subscribe(std::move(f));
    case ClientType::kUnsubscribeThread:
      // Delivery never depends on subscriptions (CONTRACT section 4): this is
      // a reply for clients that expect one, and mutes nothing.
      return reply_thread_state("thread_unsubscribed", std::move(f));
    case ClientType::kJoinChat: return on_join_chat(std::move(f));
    case ClientType::kMarkAsRead: return on_mark_read(std::move(f));
    case ClientType::kMessageReceived: return on_delivered(std::move(f));
    case ClientType::kTyping: return on_typing(std::move(f));
    case ClientType::kCallOffer: return on_relay(std::move(f), "call_offer");
    case ClientType::kCallAnswer: return on_relay(std::move(f), "call_answer");
    case ClientType::kIceCandidate: return on_relay(std::move(f), "ice_candidate");
    case ClientType::kCallEnd: return on_relay(std::move(f), "call_end");
    case ClientType::kDeleteMessage: return on_moderate(std::move(f));
    case ClientType::kEditMessage: return on_moderate(std::move(f));
  }
}

void Connection::on_auth_frame(ClientFrame f) {
  if (!authed_ && !admission_ && !awaiting_auth_) awaiting_auth_ = std::make_unique<std::vector<ClientFrame>>();
  auto self = shared_from_this();
  off_loop([self, f = std::move(f)]() -> std::function<void()> {
    auto user = self->ctx_.chat.authenticate(f.token);
    return [self, user = std::move(user), f]() mutable {
      if (self->closed_) return;
      auto waiting = std::move(self->awaiting_auth_);
      if (!user) {
        self->send_error(user.error(), f.request_id);
        if (!is_outage(user.error())) return self->close(CloseReason::kUnauthorized, "authentication failed");
        // The token may be good: a renewal leaves the connection on the token
        // it has (its expiry still closes it); a first `auth` closes with
        // "try again later", which a client retries, not 4401 (sign in again).
        if (self->authed_) return;
        return self->close(CloseReason::kUnavailable, "storage unavailable; reconnect later");
      }
      self->authenticated(std::move(*user), f.request_id, std::move(f.subscribes), f.changes_after);
      if (!waiting) return;
      for (auto& next : *waiting) {
        if (self->closed_) return;
        self->route(std::move(next));
      }
    };
  });
}

void Connection::on_send(ClientFrame f) {
  SendRequest req;
  req.sender_id = user_id_;
  req.thread_id = std::move(f.thread_id);
  req.username = std::move(f.username);
  req.content = std::move(f.content);
  req.message_type = std::move(f.message_type);
  req.client_msg_id = std::move(f.client_msg_id);
  req.origin_session = session_id_;
  std::weak_ptr<Transport> transport = transport_;
  auto self = shared_from_this();
  uint64_t number = ++sends_begun_;
  unanswered_sends_.push_back(number);
  // Runs on the store's completion thread after the commit, or right here when refused.
  // Typing started after this frame is the next message's: the answer leaves it.
  const uint64_t typing_before = typing_generation_;
  auto done = [self, transport, number, typing_before, request_id = f.request_id](Result<SendOutcome> r) {
    Frames frames = r ? self->encoder_->data_reply("message_sent", r->message_json, request_id)
                      : self->encoder_->error(r.error(), request_id);
    if (!r) Metrics::get().count_error(r.error().code);
    std::string id = r ? r->message.id : std::string();
    // A duplicate's answer (a retry of a message stored before) is held too:
    // a reconnected client that subscribes with since_seq and retries its
    // unanswered send at once must not get that old seq's message_sent ahead
    // of the older messages its replay is still sending (a client that keeps
    // the highest seq seen would resume past them).
    const bool stored = static_cast<bool>(r);
    const bool fresh = r && !r->duplicate;
    std::string thread_id = stored ? r->message.thread_id : std::string();
    int64_t seq = stored ? r->message.seq : 0;
    if (auto t = transport.lock())
      t->post([self, frames = std::move(frames), id = std::move(id), thread_id = std::move(thread_id), seq, stored,
               fresh, number, typing_before]() mutable {
        auto& u = self->unanswered_sends_;
        if (auto it = std::find(u.begin(), u.end(), number); it != u.end()) u.erase(it);
        if (self->closed_ || !stored) {
          self->send(std::move(frames));
        } else if (fresh) {
          // During a replay of its thread the answer takes its seq's place
          // (DeliveryCursor::hold_answer). Before a Socket.IO catch-up has
          // begun its replays, it waits with the live messages (catch_up),
          // unless a replay the client asked for of the thread runs.
          if (self->holding_) {
            if (self->cursor_.subscribes(thread_id) == 0 || !self->cursor_.hold_answer(thread_id, seq, frames))
              self->held_.push_back({thread_id, seq, nullptr, std::move(frames), true});
          } else if (!self->cursor_.hold_answer(thread_id, seq, frames)) {
            self->send(std::move(frames));
          }
        } else {
          // A retry's original may be far behind what the replay sends (or
          // not sent by it at all): its answer waits until the thread's
          // replays end, as a change of a message does.
          for (auto& frame : frames) {
            if (self->holding_) self->held_.push_back({thread_id, 0, std::move(frame), {}, false});
            else if (self->cursor_.changed(thread_id, frame)) self->send(std::move(frame));
          }
        }
        self->answered(id);
        if (!id.empty()) self->remember_own_send(std::move(id));
        // The message the typist was typing is sent: their typing stops for
        // the others now, not after the silence timeout (unless another of
        // their devices types there, or this one began the next message).
        if (fresh && !self->closed_) {
          auto typing = find_typing(self->typing_, thread_id);
          if (typing != self->typing_.end() && typing->second <= typing_before) self->stop_typing(thread_id);
        }
      });
  };
  // A copy: the step's capture moves req, and C++ leaves the order of the two
  // arguments open (GCC moved first, so every send went to a worker).
  const std::string thread_id = req.thread_id;
  in_order(thread_id, [&chat = ctx_.chat, req = std::move(req), done = std::move(done)]() mutable {
    chat.send(std::move(req), std::move(done));  // returns once the write is queued
  });
}

// The chat service gets a connection's sends, relays, edits, deletions and
// read marks in the order the client sent them. A step runs here on the loop when its thread's members are
// cached (send() and relay() then do not block); otherwise it goes to a
// worker, and every later step follows it through the same serial queue until
// the queue is idle again, so none overtakes it. Steps capture what they need
// by value: they may run after the connection is gone (on_close relays).
void Connection::in_order(const std::string& thread_id, std::function<void()> step) {
  if (chain_ && !chain_->busy()) chain_.reset();
  auto& metrics = Metrics::get();
  if (!chain_ && !thread_id.empty() && ctx_.chat.cached_members(thread_id)) {
    metrics.steps_on_loop.fetch_add(1, std::memory_order_relaxed);
    return step();
  }
  metrics.steps_on_worker.fetch_add(1, std::memory_order_relaxed);
  if (!chain_) chain_ = SerialQueue::create(ctx_.workers);
  chain_->submit(std::move(step));
}

// A store read of a thread after a seq, sent in pages: for subscribe_thread
// (answered with thread_subscribed) or to fill a gap the bus left (silent).
struct Connection::Replay {
  std::string thread_id;
  int64_t since = 0;  // the client's since_seq, or the last seq sent before the gap
  int64_t from = 0;   // this page reads after this seq
  bool gap_fill = false;
  // The server's own replay of what a Socket.IO client missed (catch_up):
  // like a fill, it gives way to the client's subscribe_thread of the thread.
  bool catch_up = false;
  int fill_attempts = 0;  // reads that found nothing new while the gap stayed
  uint64_t sends_begun = 0;  // the connection's sends begun when this page was read
  Micros created_floor = 0;  // messages created before this are not sent (older than the connection)
  // > 0: the fill of a thread the connection has no position in, up to this
  // seq. It starts no later than the newest message before created_floor.
  int64_t first_seq = 0;
  int64_t history_to = 0;  // a first fill: the seq up to which the thread is history (ArrivalLog)
  bool past_floor = false;  // a message at or above created_floor was read (see replay_send)
  uint32_t subscribes_at = 0;  // a fill or catch-up: the cursor's subscribes() when it began
  int64_t thread_last = -1;  // >= 0: the thread's last seq, read when since_seq found nothing
  // > 0: a page read as a former member (MemberPage::ended_at_seq): the
  // replay reads on past it, into a later membership or a refusal.
  int64_t ended_at_seq = 0;
  json::value request_id;
  std::vector<Message> page;
  size_t next = 0;
  std::chrono::steady_clock::time_point stalled_since{};  // paused for the outbound budget since ({}: not paused)
};

// How long a thread whose fill the store refused (the user left it) passes
// its live messages through (DeliveryCursor::abandon): events of one moment
// from several nodes arrive within milliseconds of each other.
constexpr auto kLeftPassThrough = std::chrono::seconds(5);

// A refused read, not a failed one: the user was removed from the thread, or
// it is gone.
static bool left_thread(const Error& e) {
  return e.kind == ErrorKind::kForbidden || e.kind == ErrorKind::kNotFound;
}

void Connection::fill_gap(const std::string& thread_id, int64_t from, Micros created_floor, int64_t first_seq,
                          int64_t history_to) {
  Metrics::get().gap_fills.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("event=gap_fill session_id={} thread_id={} after_seq={}", session_id_, thread_id, from);
  auto r = std::make_shared<Replay>();
  r->thread_id = thread_id;
  r->since = r->from = from;
  r->gap_fill = true;
  r->subscribes_at = cursor_.subscribes(thread_id);
  r->created_floor = created_floor;
  r->first_seq = created_floor > 0 ? first_seq : 0;
  r->history_to = history_to;
  replay_read(std::move(r));
}

// A first fill's window (the cursor's) may end after messages created since
// the connection began: a node cut off from Redis may have stored many before
// its events came. It starts instead after the newest message older than
// the connection, looking back at most this far.
constexpr int64_t kFirstFillMaxBack = 10000;

void Connection::on_subscribe(ClientFrame f) {
  if (!f.since_seq) return reply_thread_state("thread_subscribed", std::move(f));
  cursor_.begin_replay(f.thread_id, *f.since_seq);
  if (holding_) hold_answers_in_replay(f.thread_id, *f.since_seq);
  auto r = std::make_shared<Replay>();
  r->thread_id = f.thread_id;
  r->since = r->from = *f.since_seq;
  r->request_id = f.request_id;
  replay_read(std::move(r));
}

// A Socket.IO client's own replay of a thread, begun while its catch-up
// holds live delivery: the answers held for that thread take their seqs'
// places in it (as on a native connection), not after whatever it sends.
void Connection::hold_answers_in_replay(const std::string& thread_id, int64_t since_seq) {
  for (Held& h : held_)
    if (h.is_answer && h.thread_id == thread_id) release_held_answer(h, since_seq);
}

// A held answer, once: in its seq's place when a replay of its thread runs,
// else now. One at or below where that replay starts (`replay_from`: a send
// stored before the catch-up read the positions marks the thread read up to
// it) goes now: the replay will send nothing older, and holding it would
// put it after the replay's newer messages.
void Connection::release_held_answer(Held& h, int64_t replay_from) {
  if (h.answer.empty()) return;
  if (h.seq <= replay_from || !cursor_.hold_answer(h.thread_id, h.seq, h.answer)) send(std::move(h.answer));
  h.answer.clear();
}

void Connection::catch_up(const std::vector<std::pair<std::string, int64_t>>& threads) {
  if (closed_ || !authed_) return;
  std::vector<std::pair<std::string, int64_t>> begun;  // the catch-up's replays: thread, since
  for (const auto& [thread_id, since] : threads) {
    // A client that subscribed to the thread already (on connect, before
    // this list was read) said where it stands: its since_seq wins, and a
    // second replay from the server's guess would send its range first.
    if (cursor_.subscribes(thread_id) > 0) continue;
    cursor_.begin_catch_up(thread_id);
    begun.emplace_back(thread_id, since);
    auto r = std::make_shared<Replay>();
    r->thread_id = thread_id;
    r->since = r->from = since;
    r->catch_up = true;
    replay_read(std::move(r));
  }
  holding_ = false;
  auto held = std::move(held_);
  held_.clear();
  // An answer goes before the live messages of its thread with higher seqs,
  // whatever order they came in (a commit's answer can come after the next
  // message's event): the answers are few, looked through for each message.
  std::vector<Held*> answers;
  for (auto& h : held)
    if (h.is_answer) answers.push_back(&h);
  auto release = [&](Held& a) {
    auto it = std::find_if(begun.begin(), begun.end(), [&](const auto& b) { return b.first == a.thread_id; });
    release_held_answer(a, it == begun.end() ? -1 : it->second);
  };
  for (auto& h : held) {
    if (h.is_answer) {
      release(h);  // none left if released already
      continue;
    }
    if (h.seq > 0)
      for (Held* a : answers)
        if (!a->answer.empty() && a->thread_id == h.thread_id && a->seq < h.seq) release(*a);
    bool now = h.seq > 0 ? admit_live(h.thread_id, h.seq, h.frame) : cursor_.changed(h.thread_id, h.frame);
    if (now && h.frame) send_in_thread(h.thread_id, h.seq > 0 ? h.seq : kAnySeq, std::move(h.frame));
  }
}

// thread_subscribed / thread_unsubscribed without a replay: membership and last_seq.
void Connection::reply_thread_state(std::string_view type, ClientFrame f) {
  auto self = shared_from_this();
  off_loop([self, f, type = std::string(type)]() -> std::function<void()> {
    auto m = self->ctx_.chat.members(f.thread_id);
    std::optional<Error> failed;  // the store could not answer, or not a participant
    int64_t last_seq = 0;
    if (!m) {
      failed = m.error();
    } else if (!*m || !self->ctx_.chat.is_member(**m, self->user_id_)) {
      failed = thread_not_found_or_forbidden();
    } else if (auto t = self->ctx_.chat.store().thread(f.thread_id); !t) {
      failed = t.error();
    } else if (*t) {
      last_seq = (*t)->last_seq;
    }
    return [self, failed, f, type, last_seq] {
      if (failed) return self->send_error(*failed, f.request_id);
      int64_t last = std::max(last_seq, self->cursor_.last_sent(f.thread_id));
      self->send(self->encoder_->reply(type, json::object{{"thread_id", f.thread_id}, {"last_seq", last}}, f.request_id));
    };
  });
}

// One connection's replay reads on the workers at once; the rest wait on the
// connection, in order. Hundreds of replays begun together (an auth frame's
// list, a burst of subscribe_thread) then take their turns with everyone
// else's work (token checks, sends), instead of filling the pool's queue for
// seconds ahead of it. Each page goes back in line behind the waiting ones.
// Past the bound, a read may still go to a worker that is free (up to one
// per worker): a many-core server's idle workers are used, and whoever
// submits next still finds a worker or waits behind running reads only.
constexpr int kReplayReadsAtOnce = 2;

struct Connection::ReplayReads {
  int running = 0;
  bool held = false;  // until the account's recheck answers (admitted)
  std::deque<std::shared_ptr<Replay>> waiting;
};

void Connection::hold_replay_reads() {
  if (!replay_reads_) replay_reads_ = std::make_unique<ReplayReads>();
  replay_reads_->held = true;
}

void Connection::release_replay_reads() {
  if (!replay_reads_ || !replay_reads_->held) return;
  replay_reads_->held = false;
  start_waiting_replay_reads();
}

bool Connection::replay_read_may_start() const {
  if (replay_reads_->held) return false;
  const int running = replay_reads_->running;
  if (running < kReplayReadsAtOnce) return true;
  return running < static_cast<int>(ctx_.workers.threads()) && ctx_.workers.has_free_worker();
}

void Connection::replay_read(std::shared_ptr<Replay> r) {
  if (!replay_reads_) replay_reads_ = std::make_unique<ReplayReads>();
  if (replay_reads_->waiting.empty() && replay_read_may_start()) return start_replay_read(std::move(r));
  // Behind the ones already waiting, which a free worker may let go now.
  replay_reads_->waiting.push_back(std::move(r));
  start_waiting_replay_reads();
}

void Connection::start_replay_read(std::shared_ptr<Replay> r) {
  ++replay_reads_->running;
  auto self = shared_from_this();
  off_loop([self, r]() -> std::function<void()> {
    int64_t from = r->from;
    const auto purpose = r->gap_fill ? ChatService::ReplayFor::kGapFill : ChatService::ReplayFor::kSubscriber;
    // A read that throws (memory exhausted) fails as a storage error does:
    // the replay goes on to its end, and its read slot comes back.
    auto read_page = [&](int64_t after) -> Result<MemberPage> {
      try {
        return self->ctx_.chat.replay(self->user_id_, r->thread_id, after, kReplayPage, purpose);
      } catch (const std::exception& e) {
        spdlog::error("event=replay_read_failed session_id={} thread_id={} what=\"{}\"", self->session_id_,
                      r->thread_id, e.what());
        return internal_error("the thread could not be read");
      }
    };
    auto page = read_page(from);
    if (page && r->first_seq > 0) {
      // Not before the member joined: what came earlier is not theirs to get live.
      Micros floor = r->created_floor;
      // joined_at is on the store's commit clock, as created_at is: no margin.
      if (page->joined_at > 0) floor = std::max(floor, page->joined_at);
      auto start = self->ctx_.chat.store().last_seq_created_before(
          r->thread_id, r->first_seq, floor, std::max<int64_t>(0, r->first_seq - 1 - kFirstFillMaxBack));
      int64_t want = from;
      if (start && *start < from) want = *start;  // a failed read keeps the window
      // What reached this loop before the connection opened was committed
      // before it, and so was every lower seq: history (ArrivalLog).
      want = std::max(want, std::min(r->history_to, r->first_seq - 1));
      if (want != from) {
        from = want;
        page = read_page(from);
      }
    }
    // A since_seq at or past the thread's end: thread_subscribed tells the
    // thread's last seq, not the client's number back. Read after the page:
    // a message committed in between is past since_seq only if this is too
    // (then since_seq stands).
    int64_t thread_last = -1;
    if (page && page->messages.empty() && !r->gap_fill && r->from == r->since)
      if (auto t = self->ctx_.chat.store().thread(r->thread_id); t && *t) thread_last = (*t)->last_seq;
    return [self, r, page = std::move(page), thread_last, from]() mutable {
      if (self->closed_) return;
      self->replay_read_done();
      if (page && r->first_seq > 0) {
        r->since = r->from = from;
        r->first_seq = 0;
      }
      // A gap fill stands in for live frames, which a member gets only from
      // when they joined: a member removed and added again while connected
      // is not sent what was said while they were out. joined_at and
      // created_at are both on the store's commit clock, on every node.
      if (r->gap_fill && page && page->joined_at > 0) r->created_floor = std::max(r->created_floor, page->joined_at);
      if (!page) {
        if (r->gap_fill && left_thread(page.error())) {
          // Retrying cannot help: nothing of this thread is for this user any more.
          spdlog::info("event=gap_fill_stopped session_id={} thread_id={} code={}", self->session_id_, r->thread_id,
                       page.error().code);
          auto abandoned = self->cursor_.abandon(r->thread_id);
          for (auto& [frame, answer] : abandoned.frames) {
            // An answer goes at once; a message waits, as a live one, behind
            // the answer to an earlier send of this connection (AnswerWait).
            if (answer) self->send(std::move(frame));
            else self->send_in_thread(r->thread_id, kAnySeq, std::move(frame));
          }
          // The last events addressed to the user as a member may still be on
          // their way from other nodes; past this, a stray one starts anew.
          auto t = abandoned.epoch ? self->transport_.lock() : nullptr;
          if (t) {
            std::weak_ptr<Connection> weak = self;
            t->schedule(kLeftPassThrough, [weak, thread_id = r->thread_id, epoch = abandoned.epoch] {
              auto again = weak.lock();
              if (!again || again->closed_) return;
              // Added back meanwhile: what the pass-through missed is filled.
              if (int64_t from = again->cursor_.forget_left(thread_id, epoch); from >= 0) again->fill_gap(thread_id, from);
            });
          }
          return;
        }
        if (r->gap_fill) {
          // The gap stays open (its live messages held) until the store answers.
          spdlog::warn("event=gap_fill_failed session_id={} thread_id={} code={}", self->session_id_, r->thread_id,
                       page.error().code);
          auto t = self->transport_.lock();
          if (!t) return;
          std::weak_ptr<Connection> weak = self;
          t->schedule(kGapFillRetry, [weak, r] {
            if (auto again = weak.lock()) again->replay_read(r);
          });
          return;
        }
        // The catch-up of a thread the user has left ends here, after what
        // the ended membership owed them: nobody asked, nobody is told.
        if (!(r->catch_up && left_thread(page.error()))) self->send_error(page.error(), r->request_id);
        // A fill that gave way to this replay goes on from where it stopped:
        // nothing else would send what it had still to send.
        if (auto resume = self->cursor_.resume_fill(r->thread_id); resume.from >= 0)
          self->fill_gap(r->thread_id, resume.from, resume.created_floor);
        // What the pages before this one sent counts as sent (r->from is the last seq they read).
        int64_t read_up_to = r->from;
        return self->replay_end(std::move(r), read_up_to);
      }
      r->page = std::move(page->messages);
      r->ended_at_seq = page->ended_at_seq;
      r->next = 0;
      r->sends_begun = self->sends_begun_;
      r->thread_last = thread_last;
      self->replay_send(std::move(r));
    };
  });
}

void Connection::replay_read_done() {
  --replay_reads_->running;
  start_waiting_replay_reads();
}

void Connection::start_waiting_replay_reads() {
  // In order, as far as the bound (or free workers) allow.
  while (!replay_reads_->waiting.empty() && replay_read_may_start()) {
    auto next = std::move(replay_reads_->waiting.front());
    replay_reads_->waiting.pop_front();
    start_replay_read(std::move(next));
  }
}

void Connection::replay_send(std::shared_ptr<Replay> r) {
  auto t = transport_.lock();
  if (!t || closed_) return;
  const size_t budget = ctx_.chat.config().limits.max_outbound_bytes / 2;
  while (r->next < r->page.size()) {
    if ((r->gap_fill || r->catch_up) && cursor_.subscribes(r->thread_id) != r->subscribes_at) {
      // The client asked for a replay of the thread since this fill (or
      // catch-up) began: that replay sends every message after its
      // since_seq, in order. This one ends here, claiming only what it went
      // through.
      r->subscribes_at = cursor_.subscribes(r->thread_id);
      const int64_t done = r->next > 0 ? r->page[r->next - 1].seq : r->from;
      cursor_.gave_way(r->thread_id, done, r->past_floor ? 0 : r->created_floor);
      return replay_end(r, done);
    }
    if (t->queued_bytes() > budget) {
      // A client that reads nothing for half the idle timeout while its
      // thread goes on is dropped as a slow consumer (it resumes with
      // since_seq): the thread's live messages are held behind this replay,
      // outside the outbound queue's bound.
      const auto now = std::chrono::steady_clock::now();
      if (r->stalled_since == std::chrono::steady_clock::time_point{}) r->stalled_since = now;
      const auto stall_limit = std::chrono::milliseconds(int64_t{ctx_.chat.config().limits.idle_timeout_seconds} * 500);
      if (now - r->stalled_since > stall_limit) {
        Metrics::get().slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
        spdlog::warn("event=slow_consumer_disconnect session_id={} reason=replay_stalled thread_id={}", session_id_,
                     r->thread_id);
        return close(CloseReason::kPolicy, "slow consumer");
      }
      std::weak_ptr<Connection> weak = weak_from_this();
      t->schedule(kReplayPause, [weak, r] {
        if (auto self = weak.lock()) self->replay_send(r);
      });
      return;
    }
    r->stalled_since = {};
    if (maybe_unanswered_send(r->page[r->next], r->sends_begun)) {
      std::weak_ptr<Connection> weak = weak_from_this();
      t->schedule(kReplayPause, [weak, r] {
        if (auto self = weak.lock()) self->replay_send(r);
      });
      return;
    }
    const Message& m = r->page[r->next++];
    // The fill of a thread's first message skips what predates the
    // connection: none of that counts as sent (a subscribe_thread may still
    // ask for it), so the range this fill merges starts after it.
    if (!r->past_floor && r->gap_fill && m.created_at < r->created_floor && cursor_.last_sent(r->thread_id) == 0) {
      r->since = m.seq;
      continue;
    }
    r->past_floor = true;
    if (auto answer = cursor_.take_answer(r->thread_id, m.seq); !answer.empty()) {
      for (auto& frame : answer) send_in_thread(r->thread_id, m.seq, std::move(frame));
      continue;
    }
    // The cursor last: it counts what it lets through as sent (other replays of the thread skip it).
    // Behind this connection's own unanswered message like a live one (AnswerWait):
    // a fill must not put seq 7 before the message_sent of its seq 6.
    if (!own_send(m) && m.created_at >= r->created_floor && cursor_.replayed(r->thread_id, m.seq))
      send_in_thread(r->thread_id, m.seq, encoder_->replayed_message({m.id, m.thread_id, m.seq}, message_json_text(m)));
  }
  int64_t last = r->page.empty() ? r->from : r->page.back().seq;
  if (static_cast<int>(r->page.size()) == kReplayPage) {
    r->from = last;
    return replay_read(std::move(r));
  }
  if (r->ended_at_seq > 0) {
    // A former membership read to its end (seqs past the last message
    // stored are none of theirs): what follows is a later membership's, or
    // the refusal that ends the fill (the thread is left, as above).
    r->from = std::max(last, r->ended_at_seq);
    r->ended_at_seq = 0;
    return replay_read(std::move(r));
  }
  // A since_seq past the thread's end claims messages that do not exist yet
  // (one committed since the page was read would be taken as had): no position.
  if (!r->gap_fill && r->thread_last >= 0 && r->since <= r->thread_last) cursor_.caught_up(r->thread_id, r->since);
  replay_end(r, last);
  if (r->gap_fill) return;
  cursor_.drop_gave_way(r->thread_id);  // this replay sent what a fill that gave way to it would have
  if (r->thread_last >= 0) last = std::min(last, r->thread_last);
  int64_t last_seq = std::max(last, cursor_.last_sent(r->thread_id));
  send(encoder_->reply("thread_subscribed", json::object{{"thread_id", r->thread_id}, {"last_seq", last_seq}},
                    r->request_id));
}

// Enough for the sends a gap can span: a gap lasts until the missing events
// arrive or the store is read, a few round trips.
constexpr size_t kOwnSendsKept = 256;

void Connection::remember_own_send(std::string message_id) {
  if (own_sends_.size() < kOwnSendsKept) return own_sends_.push_back(std::move(message_id));
  own_sends_[own_sends_next_] = std::move(message_id);
  own_sends_next_ = (own_sends_next_ + 1) % kOwnSendsKept;
}

bool Connection::own_send(const Message& m) const {
  return m.sender_id == user_id_ && std::find(own_sends_.begin(), own_sends_.end(), m.id) != own_sends_.end();
}

// This user's message that may be one of this connection's sends begun
// before the page was read and not answered yet (message_sent comes after the
// commit that made it readable): its answer tells whether to skip it.
bool Connection::maybe_unanswered_send(const Message& m, uint64_t sends_begun_before_read) const {
  return m.sender_id == user_id_ && !unanswered_sends_.empty() &&
         unanswered_sends_.front() <= sends_begun_before_read && !own_send(m);
}

void Connection::replay_end(std::shared_ptr<Replay> r, int64_t replayed_up_to) {
  auto end = cursor_.end_replay(r->thread_id, r->since, replayed_up_to);
  for (auto& frame : end.frames) send_in_thread(r->thread_id, kAnySeq, std::move(frame));
  if (end.fill_from < 0) return;
  if (!r->gap_fill || end.fill_from > r->since) return fill_gap(r->thread_id, end.fill_from);
  // This fill found nothing past where it began.
  if (++r->fill_attempts >= kGapFillAttempts) {
    spdlog::warn("event=gap_skipped session_id={} thread_id={} after_seq={}", session_id_, r->thread_id, r->since);
    for (auto& frame : cursor_.skip_gap(r->thread_id)) send_in_thread(r->thread_id, kAnySeq, std::move(frame));
    return;
  }
  auto t = transport_.lock();
  if (!t) return;
  r->from = r->since;
  std::weak_ptr<Connection> weak = weak_from_this();
  t->schedule(kGapFillRetry, [weak, r] {
    if (auto self = weak.lock()) self->replay_read(r);
  });
}

void Connection::on_mark_read(ClientFrame f) {
  auto self = shared_from_this();
  off_loop_in_order([self, f]() -> std::function<void()> {
    auto seq = self->ctx_.chat.mark_read(self->user_id_, f.thread_id, f.up_to_seq.value_or(kAllSeqs), self->session_id_);
    return [self, f, seq] {
      if (!seq) return self->send_error(seq.error(), f.request_id);
      self->send(self->encoder_->reply("read_receipt",
                              json::object{{"thread_id", f.thread_id}, {"user_id", self->user_id_}, {"seq", *seq}},
                              f.request_id));
    };
  });
}

void Connection::on_join_chat(ClientFrame f) {
  auto self = shared_from_this();
  off_loop([self, f]() -> std::function<void()> {
    User actor;  // the connection keeps only the id, which is all direct_thread needs
    actor.id = self->user_id_;
    auto t = self->ctx_.chat.direct_thread(actor, f.username);
    return [self, f, t] {
      if (!t) return self->send_error(t.error(), f.request_id);
      self->send(
          self->encoder_->reply("chat_joined", json::object{{"thread_id", t->id}, {"chatId", t->id}}, f.request_id));
    };
  });
}

void Connection::relay(const std::string& thread_id, std::string type, json::object fields,
                       std::function<void(const Status&)> then) {
  std::weak_ptr<Connection> weak = weak_from_this();
  std::weak_ptr<Transport> transport = transport_;
  in_order(thread_id, [&chat = ctx_.chat, weak, transport, user_id = user_id_, session_id = session_id_, thread_id,
                       type = std::move(type), fields = std::move(fields), then = std::move(then),
                       loop_thread = std::this_thread::get_id()]() mutable {
    auto st = chat.relay(user_id, thread_id, type, std::move(fields), session_id);
    if (!then) return;
    if (std::this_thread::get_id() == loop_thread) return then(st);  // ran inline on the loop
    if (auto t = transport.lock())
      t->post([weak, st, then = std::move(then)] {
        auto self = weak.lock();
        if (self && !self->closed_) then(st);
      });
  });
}

// A relay is queued whole at each connection of every other member, whose
// unsent bytes are bounded (--max-outbound-bytes, 8 MiB), and is not stored:
// a burst of 1,000 large payloads (64 MB) would drop readers at a normal
// pace as slow consumers. So beyond the frame's token a relay costs one per
// 4 KiB of payload: a burst then carries at most about 4 MiB, and a sender
// keeps up 800 KiB/s at the default rate.
constexpr size_t kRelayBytesPerToken = 4096;

void Connection::on_relay(ClientFrame f, std::string_view type) {
  // At most what the bucket can hold after the frame's own token: a payload
  // near the frame limit under a small --rate-burst still passes once full.
  const double extra = std::min(static_cast<double>(json::serialize(f.payload).size() / kRelayBytesPerToken),
                                ctx_.chat.config().limits.message_burst - 1);
  if (extra > 0) {
    if (tokens_ < extra)
      return send_error({ErrorKind::kRateLimited, "rate_limited", "too much call signalling: slow down"}, f.request_id);
    tokens_ -= extra;
  }
  json::object fields{{"from_user_id", user_id_}, {"payload", f.payload}};
  relay(f.thread_id, std::string(type), std::move(fields), [this, request_id = f.request_id](const Status& st) {
    if (!st) return send_error(st.error(), request_id);
    send(encoder_->done(request_id));
  });
}

// Typing relays as it comes; a client that goes quiet (or away) without
// saying is_typing:false is stopped for it after typing_timeout_seconds, and
// that stop, like the one of a close, waits for the user's other sessions
// here typing in the thread (chat/typing_board.h).
//
// typing_ and the board change together, when a frame comes (not when its
// relay returns: it may be on a worker, and a close meanwhile must still send
// the stop, which in_order puts after this start). Each start is numbered; a
// relay's outcome or a timeout acts only for the latest start of its thread,
// so no entry outlives its session and a newer start is never stopped by an
// older one's timer.
void Connection::on_typing(ClientFrame f) {
  json::object fields{{"from_user_id", user_id_}, {"user_id", user_id_}, {"is_typing", f.is_typing}};
  uint64_t gen = 0;
  if (f.is_typing) {
    gen = ++typing_generation_;
    typing_entry(typing_, f.thread_id) = gen;
    ctx_.chat.typing_board().start(user_id_, f.thread_id, session_id_);
  } else {
    erase_typing(typing_, f.thread_id);
    ctx_.chat.typing_board().stop(user_id_, f.thread_id, session_id_);  // said: relayed whoever else types
  }
  auto self = shared_from_this();
  relay(f.thread_id, "typing", std::move(fields),
        [self, f, gen](const Status& st) { self->typing_relayed(f, gen, st); });
}

bool Connection::typing_is(const std::string& thread_id, uint64_t gen) {
  auto it = find_typing(typing_, thread_id);
  return it != typing_.end() && it->second == gen;
}

void Connection::typing_relayed(const ClientFrame& f, uint64_t gen, const Status& st) {
  if (!st) {
    if (f.is_typing && typing_is(f.thread_id, gen)) {
      erase_typing(typing_, f.thread_id);
      ctx_.chat.typing_board().stop(user_id_, f.thread_id, session_id_);
    }
    return send_error(st.error(), f.request_id);
  }
  send(encoder_->done(f.request_id));
  if (!f.is_typing || !typing_is(f.thread_id, gen)) return;  // stopped, or started again, since
  auto t = transport_.lock();
  if (!t) return;
  std::weak_ptr<Connection> weak = weak_from_this();
  t->schedule(std::chrono::seconds(ctx_.chat.config().limits.typing_timeout_seconds),
              [weak, thread_id = f.thread_id, gen] {
                auto self = weak.lock();
                if (!self || self->closed_ || !self->typing_is(thread_id, gen)) return;
                self->stop_typing(thread_id);
              });
}

void Connection::stop_typing(const std::string& thread_id) {
  erase_typing(typing_, thread_id);
  if (!ctx_.chat.typing_board().stop(user_id_, thread_id, session_id_)) return;  // another device types there
  json::object fields{{"from_user_id", user_id_}, {"user_id", user_id_}, {"is_typing", false}};
  relay(thread_id, "typing", std::move(fields), nullptr);
}

void Connection::on_delivered(ClientFrame f) {
  auto self = shared_from_this();
  off_loop([self, f]() -> std::function<void()> {
    // Socket.IO's ack of a message names it by thread and seq (protocol/socketio_encoder.h).
    const bool by_id = !f.message_id.empty() || !f.up_to_seq;
    std::pair<std::string, int64_t> at{f.thread_id, f.up_to_seq.value_or(0)};
    auto st = by_id ? self->ctx_.chat.acknowledge_delivery(self->user_id_, f.message_id, &at)
                    : self->ctx_.chat.acknowledge_delivery_at(self->user_id_, f.thread_id, *f.up_to_seq);
    return [self, f, st, at] {
      // The receipt of a message this connection was sent in a thread its
      // user has left since (the notice of their removal, say, which every
      // client that acknowledges what it gets acknowledges), that the chat
      // service refused (a membership whose end the store does not know):
      // nothing to record, nor to complain of.
      const bool left_since = !st && st.error().kind == ErrorKind::kForbidden && at.second > 0 &&
                              self->was_sent(at.first, at.second);
      if (!st && !left_since) return self->send_error(st.error(), f.request_id);
      self->send(self->encoder_->done(f.request_id));
    };
  });
}

// delete_message / edit_message: the other connections of every participant
// get the event from the chat service; this one gets it as the reply.
void Connection::on_moderate(ClientFrame f) {
  if (!changes_sent_) changes_sent_ = std::make_unique<ChangesSent>();
  ++changes_sent_->awaited;
  // Tests only: holds the reply back after the change is published, so that
  // another change's event can overtake it.
  static const int reply_pause_ms = [] {
    const char* pause = std::getenv("PARLEY_TEST_MODERATION_REPLY_PAUSE_MS");
    return pause ? std::atoi(pause) : 0;
  }();
  auto self = shared_from_this();
  off_loop_in_order([self, f]() -> std::function<void()> {
    const bool del = f.type == ClientType::kDeleteMessage;
    auto m = del ? self->ctx_.chat.delete_message(self->user_id_, f.message_id, self->session_id_)
                 : self->ctx_.chat.edit_message(self->user_id_, f.message_id, f.content, self->session_id_);
    if (reply_pause_ms > 0 && m) std::this_thread::sleep_for(std::chrono::milliseconds(reply_pause_ms));
    return [self, f, del, m = std::move(m)] {
      self->answer_moderation(f, del, m);
      // This one is no longer awaited; with none left, the frames kept for a
      // reply go (the change numbers stay).
      if (--self->changes_sent_->awaited == 0) {
        for (auto& told : self->changes_sent_->told) told.frame = nullptr;
        self->give_declined_mark();
      }
    };
  });
}

void Connection::answer_moderation(const ClientFrame& f, bool del, const Result<Message>& m) {
  if (!m) return send_error(m.error(), f.request_id);
  if (del)
    send(encoder_->reply("message_deleted", deletion_json(*m), f.request_id));
  else
    send(encoder_->data_reply("message_edited", message_json_text(*m), f.request_id));
  // A change made before the store numbered changes has no number.
  if (m->change_no <= 0) return;
  if (auto* told = change_told(m->id); told && told->change_no > m->change_no) {
    if (told->frame) send(told->frame);  // the newer change came first: it again, last
    return;
  }
  note_change_told(m->id, m->change_no, nullptr);
}

bool Connection::tell_change(const std::string& message_id, int64_t change_no, const FramePtr& frame) {
  if (!changes_sent_ || change_no <= 0) return true;
  if (auto* told = change_told(message_id); told && told->change_no >= change_no) return false;
  note_change_told(message_id, change_no, changes_sent_->awaited > 0 ? frame : nullptr);
  return true;
}

Connection::ChangesSent::Told* Connection::change_told(const std::string& message_id) {
  for (auto& c : changes_sent_->told)
    if (c.message_id == message_id) return &c;
  return nullptr;
}

void Connection::note_change_told(const std::string& message_id, int64_t change_no, FramePtr frame) {
  // A few: a reply and the events that may overtake it come within moments.
  constexpr size_t kChangesTold = 8;
  if (auto* told = change_told(message_id)) {
    told->change_no = change_no;
    told->frame = std::move(frame);
    return;
  }
  auto& told = changes_sent_->told;
  if (told.size() == kChangesTold) {
    // The oldest with no frame goes first: one with a frame may be what an
    // awaited reply must be followed by (a resync resends many changes).
    auto victim = std::find_if(told.begin(), told.end(), [](const auto& t) { return !t.frame; });
    told.erase(victim != told.end() ? victim : told.begin());
  }
  told.push_back({message_id, change_no, std::move(frame)});
}

// The account was disabled or its tokens revoked (AccountWatcher, on every
// node): a disabled account, or a connection authenticated with a token
// issued before the revocation, is closed.
void Connection::recheck_account() {
  auto self = shared_from_this();
  off_loop([self, user_id = user_id_]() -> std::function<void()> {
    std::optional<Result<AccountState>> state;
    try {
      state = self->ctx_.chat.identity().account_state(user_id);
    } catch (const std::exception& e) {  // memory exhausted: the replays must not wait for good
      spdlog::error("event=account_recheck_failed session_id={} what=\"{}\"", self->session_id_, e.what());
    }
    return [self, state = std::move(state)] {
      // A store that cannot answer leaves the account as its token check
      // found it, as everywhere else (AccountWatcher polls again). A closed
      // one's reads stay held: its close is under way, nothing more is sent.
      if (state && *state && self->close_if_barred(**state)) return;
      self->release_replay_reads();
      self->run_deferred();
    };
  });
}

void Connection::account_changed(const AccountState& state) { close_if_barred(state); }

bool Connection::close_if_barred(const AccountState& state) {
  if (closed_ || !authed_ || state.user_id != user_id_) return false;
  const bool revoked = token_iat_ < state.tokens_valid_after;
  if (!state.disabled && !revoked) return false;
  const char* why = state.disabled ? "account disabled" : "token revoked";
  send_error({ErrorKind::kForbidden, state.disabled ? "account_disabled" : "token_revoked", why}, nullptr);
  close(CloseReason::kForbidden, why);
  return true;
}

// ---------------------------------------------------------------- outbound

Micros Connection::first_fill_margin() const {
  return ctx_.chat.config().redis_url.empty() ? 0 : kFirstFillMarginUs;
}

void Connection::deliver(Delivery& d) {
  if (closed_) return;
  const BusEvent& event = d.event();
  // A retried send's original (ChatService::redeliver). A connection sent
  // nothing of the thread that opened after it was stored has it as history
  // (the margin: other nodes' clocks). Otherwise the cursor decides, as for
  // any live message: it drops it where it went out, sends it in its place,
  // or fills up to it.
  if (event.redelivery && cursor_.last_sent(event.thread_id) == 0 && event.created_at < connected_at_us_ - first_fill_margin())
    return;
  const FramePtr& frame = d.frame(encoder_->format(), [&] { return encoder_->event(event); });
  deliver_live(event, frame);
}

void Connection::excluded(const BusEvent& event) {
  if (event.seq <= 0) return;
  deliver_live(event, nullptr);
  // Its message_sent may still be on its way: what follows in the thread waits for it.
  if (closed_ || unanswered_sends_.empty() || event.message_id.empty()) return;
  if (std::find(own_sends_.begin(), own_sends_.end(), event.message_id) != own_sends_.end()) return;
  if (!answer_wait_) answer_wait_ = std::make_unique<AnswerWait>();
  answer_wait_->pending.push_back({event.thread_id, event.message_id, event.seq});
}

void Connection::send_in_thread(const std::string& thread_id, int64_t seq, FramePtr frame, bool counted_by_hub) {
  if (!counted_by_hub) Metrics::get().messages_out.fetch_add(1, std::memory_order_relaxed);
  if (answer_wait_ && answer_wait_->waits(thread_id, seq)) {
    answer_wait_->frames.push_back({thread_id, seq, std::move(frame)});
    return;
  }
  if (auto t = transport_.lock()) t->send_text(std::move(frame));
}

void Connection::answered(const std::string& message_id) {
  if (!answer_wait_) return;
  auto& pending = answer_wait_->pending;
  if (unanswered_sends_.empty()) {
    pending.clear();  // every send is answered: nothing is left to wait for
  } else if (!message_id.empty()) {
    pending.erase(std::remove_if(pending.begin(), pending.end(), [&](const auto& p) { return p.message_id == message_id; }),
                  pending.end());
  }
  auto frames = std::move(answer_wait_->frames);
  answer_wait_->frames.clear();
  for (auto& f : frames) {
    if (answer_wait_->waits(f.thread_id, f.seq)) {
      answer_wait_->frames.push_back(std::move(f));
    } else if (auto t = transport_.lock()) {
      t->send_text(std::move(f.frame));
    }
  }
  if (pending.empty() && answer_wait_->frames.empty()) answer_wait_.reset();
}

bool Connection::admit_live(const std::string& thread_id, int64_t seq, const FramePtr& frame) {
  auto d = cursor_.live(thread_id, seq, frame);
  if (d.fill_from >= 0) {
    int64_t history_to = 0;
    if (const ArrivalLog* log = ctx_.hub.arrivals(); d.first && log)
      history_to = log->arrived_before(thread_id, connected_at_us_);
    fill_gap(thread_id, d.fill_from, d.first ? connected_at_us_ - kFirstFillMarginUs : 0, seq, history_to);
  }
  return d.send;
}

// An edit or a deletion of a stored message: ordered after the replays
// running on its thread (DeliveryCursor::changed).
static bool changes_a_message(const BusEvent& event) {
  return event.type == "message_deleted" || event.type == "message_edited";
}

void Connection::deliver_live(const BusEvent& event, const FramePtr& frame) {
  if (closed_) return;
  if (event.seq > 0) {
    // Catch-up on connect (Socket.IO): live messages wait for their thread's replay.
    if (holding_) return held_.push_back({event.thread_id, event.seq, frame, {}, false});
    if (!admit_live(event.thread_id, event.seq, frame)) return;
  } else if (frame && changes_a_message(event)) {
    if (!admit_change(event.message_id, event.change_no)) return;
    if (!tell_change(event.message_id, event.change_no, frame)) return;
    if (holding_) return held_.push_back({event.thread_id, 0, frame, {}, false});
    if (!cursor_.changed(event.thread_id, frame)) return;
  }
  if (!frame) return;  // an excluded session's own message: the cursor only
  if (changes_sent_ && changes_sent_->receipt_reads > 0 && event.type == "read_receipt") note_receipt(event);
  if (event.seq == 0 && event.type == "thread_created" && !note_group(event.thread_id)) return;  // a resync sent it
  send_in_thread(event.thread_id, event.seq > 0 ? event.seq : kAnySeq, frame, /*counted_by_hub=*/!event.redelivery);
}

// Every change frame held now: behind a thread's fills, an own send's
// answer (AnswerWait), or a Socket.IO catch-up (held_).
std::vector<FramePtr> Connection::held_change_frames() const {
  std::vector<FramePtr> out;
  cursor_.held_changes(out);
  if (answer_wait_)
    for (const auto& f : answer_wait_->frames)
      if (f.seq == kAnySeq) out.push_back(f.frame);
  for (const auto& h : held_)
    if (h.seq == 0 && h.frame) out.push_back(h.frame);
  return out;
}

void Connection::send(Frames frames) {
  for (auto& f : frames) send(std::move(f));
}

void Connection::send(FramePtr frame) {
  if (closed_) return;
  if (auto t = transport_.lock()) {
    Metrics::get().messages_out.fetch_add(1, std::memory_order_relaxed);
    t->send_text(std::move(frame));
  }
}

void Connection::send_error(const Error& error, const json::value& request_id) {
  Metrics::get().count_error(error.code);
  send(encoder_->error(error, request_id));
}

void Connection::close(CloseReason reason, std::string text) {
  spdlog::info("event=session_close session_id={} user_id={} reason=\"{}\"", session_id_, user_id_, text);
  if (auto t = transport_.lock()) t->close(reason, std::move(text));
}

void Connection::off_loop(std::function<std::function<void()>()> work) {
  ctx_.workers.submit(then_on_loop(std::move(work)));
}

// Two edits of one message sent back to back must be stored, and answered,
// in that order, or the older text wins; likewise read marks and their
// receipts. So these go through the connection's serial queue, behind its
// earlier sends, relays and changes.
void Connection::off_loop_in_order(std::function<std::function<void()>()> work) {
  in_order({}, then_on_loop(std::move(work)));
}

std::function<void()> Connection::then_on_loop(std::function<std::function<void()>()> work) {
  std::weak_ptr<Transport> transport = transport_;
  return [self = shared_from_this(), transport, work = std::move(work)] {
    auto then = work();
    if (auto t = transport.lock())
      t->post([self, then = std::move(then)] {
        if (!self->closed_) then();
      });
  };
}

}  // namespace parley
