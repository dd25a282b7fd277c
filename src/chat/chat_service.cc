#include "chat/chat_service.h"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <mutex>

#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "common/utf8.h"
#include "common/wait.h"
#include "protocol/encode.h"

namespace parley {

namespace json = boost::json;

namespace {

Error unauthorized(std::string code, std::string msg) { return {ErrorKind::kUnauthorized, std::move(code), std::move(msg)}; }

constexpr size_t kMaxTitleBytes = 400;

// Read marks of one (thread, reader) are made one at a time (mark_read).
// Striped, as a lock per pair would need a map: two pairs that share a
// stripe only wait for each other's commit.
std::mutex& read_mark_lock(const std::string& thread_id, const std::string& user_id) {
  static std::mutex stripes[64];
  const size_t h = std::hash<std::string>{}(thread_id) * 31 + std::hash<std::string>{}(user_id);
  return stripes[h % 64];
}

}  // namespace

ChatService::ChatService(Store& store, Bus& bus, std::shared_ptr<const JwtVerifier> jwt, const Config& config)
    : store_(store),
      bus_(bus),
      config_(config),
      identity_(store, std::move(jwt), config),
      members_(store, bus),
      presence_(std::chrono::seconds(config.limits.presence_grace_seconds)),
      connection_limiter_(std::make_unique<LocalConnectionLimiter>(config.limits.max_connections_per_user)) {}

void ChatService::use_connection_limiter(std::unique_ptr<ConnectionLimiter> limiter) {
  connection_limiter_ = std::move(limiter);
}

Result<User> ChatService::user(const std::string& user_id) {
  auto u = store_.user_by_id(user_id);
  if (!u) return u.error();
  if (*u) return **u;
  return not_found("user_not_found", "no such user");
}

// A directory anyone signed in can search must not hand a stranger a
// parent's phone number, nor let them watch when a teacher goes offline.
// last_seen goes where presence goes (anyone sharing a thread). A phone
// number goes only to those in a thread its owner opened: anyone may open
// a thread with anyone, so sharing one would hand every number to whoever
// asks (a group of every user found by a search).
Status ChatService::hide_private(const User& viewer, std::vector<User>& users) {
  bool seen = false, phones = false;
  for (const auto& u : users) {
    if (u.id == viewer.id) continue;
    seen |= u.last_seen != 0;
    phones |= u.phone_number.has_value();
  }
  std::vector<std::string> contacts, openers;
  if (seen) {
    auto c = store_.contacts(viewer.id);
    if (!c) return c.error();
    contacts = std::move(*c);
    std::sort(contacts.begin(), contacts.end());
  }
  if (phones) {
    auto o = store_.openers(viewer.id);
    if (!o) return o.error();
    openers = std::move(*o);
    std::sort(openers.begin(), openers.end());
  }
  for (auto& u : users) {
    if (u.id == viewer.id) continue;
    if (!std::binary_search(contacts.begin(), contacts.end(), u.id)) u.last_seen = 0;
    if (!std::binary_search(openers.begin(), openers.end(), u.id)) u.phone_number.reset();
  }
  return Ok{};
}

Result<User> ChatService::user_as_seen_by(const User& viewer, const std::string& user_id) {
  auto u = user(user_id);
  if (!u) return u.error();
  std::vector<User> one{std::move(*u)};
  if (auto st = hide_private(viewer, one); !st) return st.error();
  return std::move(one.front());
}

Result<std::vector<User>> ChatService::search_users(const User& viewer, const std::string& query, int limit) {
  auto found = store_.search_users(query, limit);
  if (!found) return found.error();
  if (auto st = hide_private(viewer, *found); !st) return st.error();
  return found;
}

// ---------------------------------------------------------------- threads

Result<std::shared_ptr<const ThreadMembers>> ChatService::members(const std::string& thread_id) {
  return members_.get(thread_id);
}

void ChatService::members_changed(const std::string& thread_id) {
  members_.end_change(thread_id);
  auto ev = std::make_shared<BusEvent>();
  ev->thread_id = thread_id;
  ev->members_changed = true;
  bus_.publish(std::move(ev));
}

bool ChatService::on_bus_event(const BusEvent& event) {
  if (event.members_changed) {
    members_.forget(event.thread_id);
    return false;
  }
  if (event.resync) members_.forget_all();  // the changes it missed are unknown
  return true;
}

BusEventPtr ChatService::on_bus(const BusEventPtr& event) {
  if (!on_bus_event(*event)) return nullptr;
  if (event->change_no > 0) {
    changes_.received(event->change_no);
    if (!event->message_id.empty() && !newest_changes_.admit(event->message_id, event->change_no)) return nullptr;
  }
  // One reader's marks are announced in order by the node that writes them
  // (read_mark_lock), but two nodes' receipts reach Redis in the order they
  // are published: one below a mark already passed on is stale here.
  if (event->read_seq > 0 && !newest_receipts_.admit(event->thread_id + '/' + event->reader_id, event->read_seq))
    return nullptr;
  if (!event->resync) return event;
  auto resync = std::make_shared<BusEvent>();
  resync->resync = true;
  resync->changes_after = changes_.resync();
  return resync;
}

// How often connections keeping a change mark may be given a new one. A
// test may shorten it (PARLEY_TEST_CHANGE_MARK_MS).
static int64_t change_mark_every_ms() {
  static const int64_t ms = [] {
    const char* v = std::getenv("PARLEY_TEST_CHANGE_MARK_MS");
    return v && std::atoi(v) > 0 ? int64_t{std::atoi(v)} : int64_t{10000};
  }();
  return ms;
}

void ChatService::tick_change_marks() {
  if (!mark_fanout_) return;
  const int64_t now = now_micros() / 1000;
  int64_t due = next_mark_ms_.load(std::memory_order_relaxed);
  if (now < due || !next_mark_ms_.compare_exchange_strong(due, now + change_mark_every_ms())) return;
  std::lock_guard lock(change_order_);
  const int64_t through = changes_.through();
  if (through <= marked_through_) return;
  marked_through_ = through;
  auto mark = std::make_shared<BusEvent>();
  mark->changes_mark = true;
  mark->changes_after = through;
  mark_fanout_(mark);
}

Status ChatService::start_counting_changes() {
  auto last = store_.last_change();
  if (!last) return last.error();
  changes_.reset(*last);
  return Ok{};
}

bool ChatService::is_member(const ThreadMembers& m, const std::string& user_id) const {
  return MemberCache::contains(m, user_id);
}

Result<std::shared_ptr<const ThreadMembers>> ChatService::require_member(const std::string& user_id,
                                                                         const std::string& thread_id) {
  auto m = members(thread_id);
  if (!m) return m.error();  // an outage is not "not a participant"
  if (!*m || !is_member(**m, user_id)) return thread_not_found_or_forbidden();
  return m;
}

// Every member gets the whole member list with a new group (thread_created)
// and with each thread list: a bound on a group's size bounds what one
// request makes the server send.
Error ChatService::group_too_large() const {
  return parley::group_too_large(static_cast<size_t>(config_.limits.max_group_members));
}

Result<Store::CreatedThread> ChatService::create_thread(const User& actor, const CreateThreadRequest& req) {
  ThreadType type;
  if (req.type == "direct") type = ThreadType::kDirect;
  else if (req.type == "group") type = ThreadType::kGroup;
  else return bad_input("invalid_field", "type must be \"direct\" or \"group\"");

  std::vector<std::string> ids{actor.id};
  for (const auto& id : req.participant_ids) {
    if (!is_uuid(id)) return bad_input("invalid_field", "participant_ids must be user ids");
    std::string nid = normalize_uuid(id);
    auto found = store_.user_by_id(nid);
    if (!found) return found.error();
    if (!*found) return not_found("user_not_found", "no user with id " + nid);
    ids.push_back(nid);
  }
  for (const auto& name : req.usernames) {
    auto u = store_.user_by_username(ascii_lowercase(name));
    if (!u) return u.error();
    if (!*u) return not_found("user_not_found", "no user named " + std::string(utf8_prefix(name, 64)));
    ids.push_back((*u)->id);
  }
  std::sort(ids.begin() + 1, ids.end());
  ids.erase(std::unique(ids.begin() + 1, ids.end()), ids.end());
  ids.erase(std::remove(ids.begin() + 1, ids.end(), actor.id), ids.end());

  if (type == ThreadType::kDirect && ids.size() != 2)
    return bad_input("invalid_field", "a direct thread has exactly one other participant");
  if (ids.size() > static_cast<size_t>(config_.limits.max_group_members)) return group_too_large();
  // Every member's client shows a group's title: text, as registration wants
  // a full_name. "" (or none) is a group without a title. A direct thread
  // has none: one given is ignored, not checked (docs/protocol.md).
  if (type == ThreadType::kGroup) {
    if (!utf8_length(req.title) || req.title.size() > kMaxTitleBytes || has_control_chars(req.title))
      return bad_input("invalid_field", "title must be text of at most 400 bytes, without control characters");
    if (!req.title.empty() && !has_visible_text(req.title))
      return bad_input("invalid_field", "title is blank: leave it out for a group without a title");
  }

  Thread t;
  t.id = new_uuid();
  t.type = type;
  t.title = type == ThreadType::kGroup ? req.title : "";
  t.created_by = actor.id;
  t.created_at = t.last_activity = now_micros();
  for (const auto& id : ids) {
    Participant p;
    p.user_id = id;
    p.is_admin = type == ThreadType::kGroup && id == actor.id;
    t.participants.push_back(std::move(p));
  }
  auto created = store_.create_thread(t);
  if (created) annotate(created->thread, {});  // participants' presence, as every thread answer has
  if (created && created->created) {
    spdlog::info("event=thread_created thread_id={} type={} participants={}", created->thread.id,
                 thread_type_name(type), ids.size());
    // A group's members see it in their list at once, not at its first
    // message (adding a member later says so with a system message). A
    // direct thread shows up for the other person with its first message.
    if (type == ThreadType::kGroup)
      publish(created->thread.id, Audience::users(ids), "thread_created",
              json::serialize(json::object{{"thread", thread_json(created->thread)}}), "");
  }
  return created;
}

Result<Thread> ChatService::thread(const User& actor, const std::string& thread_id) {
  auto m = require_member(actor.id, thread_id);
  if (!m) return m.error();
  auto t = store_.thread(thread_id);
  if (!t) return t.error();
  if (!*t) return thread_not_found_or_forbidden();
  // The read has the last word: the check above may predate a removal.
  const auto& ps = (*t)->participants;
  if (std::none_of(ps.begin(), ps.end(), [&](const Participant& p) { return p.user_id == actor.id; }))
    return thread_not_found_or_forbidden();
  annotate(**t, {});
  return **t;
}

Result<std::vector<ThreadSummary>> ChatService::threads(const User& actor) {
  auto out = store_.threads_for_user(actor.id);
  if (!out) return out.error();
  for (auto& s : *out) {
    std::vector<Message*> last;
    if (s.last_message) last.push_back(&*s.last_message);
    annotate(s.thread, std::move(last));
  }
  return out;
}

// A message's status, as its sender sees it: `read` once any other
// participant has read up to it, else `delivered` once any other
// participant's client acknowledged it, else `sent`. Those who left count
// with the marks they left with, so a status never goes back. A member
// counts only for what was sent since they joined: joining sets their marks
// to the thread's end (nothing before is unread for them) without their
// having read or received any of it.
void ChatService::mark_online(Thread& thread) const {
  for (auto& p : thread.participants) p.online = presence_.online(p.user_id);
}

void ChatService::annotate(Thread& thread, std::vector<Message*> messages) const {
  mark_online(thread);
  for (Message* m : messages) {
    int64_t read = 0, delivered = 0;
    auto count = [&](const std::string& user_id, int64_t read_seq, int64_t delivered_seq) {
      if (user_id == m->sender_id) return;
      read = std::max(read, read_seq);
      delivered = std::max({delivered, delivered_seq, read_seq});
    };
    for (const auto& p : thread.participants)
      if (m->created_at >= p.joined_at) count(p.user_id, p.last_read_seq, p.last_delivered_seq);
    for (const auto& f : thread.former_marks)
      if (m->created_at >= f.joined_at) count(f.user_id, f.last_read_seq, f.last_delivered_seq);
    m->status = m->seq <= read ? "read" : m->seq <= delivered ? "delivered" : "sent";
  }
}

Result<Thread> ChatService::direct_thread(const User& actor, const std::string& username) {
  auto other = store_.user_by_username(ascii_lowercase(username));
  if (!other) return other.error();
  if (!*other) return not_found("user_not_found", "no user named " + std::string(utf8_prefix(username, 64)));
  if ((*other)->id == actor.id) return bad_input("invalid_recipient", "you cannot message yourself");
  CreateThreadRequest req;
  req.type = "direct";
  req.participant_ids = {(*other)->id};
  auto created = create_thread(actor, req);
  if (!created) return created.error();
  return created->thread;
}

Result<Thread> ChatService::add_participants(const User& actor, const std::string& thread_id,
                                             const std::vector<std::string>& user_ids,
                                             const std::vector<std::string>& usernames) {
  auto m = require_member(actor.id, thread_id);
  if (!m) return m.error();
  if ((*m)->type == ThreadType::kDirect) return bad_input("direct_thread", "the members of a direct thread cannot change");
  const auto& admins = (*m)->admin_ids;
  if (std::find(admins.begin(), admins.end(), actor.id) == admins.end())
    return forbidden("only thread admins may add participants");
  std::vector<std::string> ids;
  std::vector<std::string> names;
  for (const auto& id : user_ids) {
    if (!is_uuid(id)) return bad_input("invalid_field", "participant_ids must be user ids");
    if (std::find(ids.begin(), ids.end(), normalize_uuid(id)) != ids.end()) continue;  // named twice
    auto u = store_.user_by_id(normalize_uuid(id));
    if (!u) return u.error();
    if (!*u) return not_found("user_not_found", "no user with id " + normalize_uuid(id));
    ids.push_back((*u)->id);
    names.push_back((*u)->username);
  }
  for (const auto& name : usernames) {
    auto u = store_.user_by_username(ascii_lowercase(name));
    if (!u) return u.error();
    if (!*u) return not_found("user_not_found", "no user named " + std::string(utf8_prefix(name, 64)));
    if (std::find(ids.begin(), ids.end(), (*u)->id) != ids.end()) continue;  // named twice, or by id too
    ids.push_back((*u)->id);
    names.push_back((*u)->username);
  }
  // Those already in count once. A check against the cached list, to refuse
  // early; the store counts again as the addition commits (Addition::max_members).
  size_t after = (*m)->user_ids.size();
  for (const auto& id : ids) after += is_member(**m, id) ? 0 : 1;
  if (after > static_cast<size_t>(config_.limits.max_group_members)) return group_too_large();
  Addition addition{thread_id, ids, [&](const std::string& id) {
                      auto it = std::find(ids.begin(), ids.end(), id);
                      return AppendRequest{thread_id, actor.id, actor.username + " added " + names[it - ids.begin()],
                                           "system", ""};
                    },
                    actor.id, static_cast<size_t>(config_.limits.max_group_members)};
  members_.begin_change(thread_id);
  // Each notice is stored with the additions, in one step: an added member
  // is never in the thread without its record (a notice stored apart could
  // fail, or its node die, after the addition had committed).
  auto added = wait_for_callback<Result<Added>>([&](AdditionCallback done) {
    store_.add_participants(std::move(addition), [this, thread_id, checked = *m, done = std::move(done)](Result<Added> r) {
      // Before the notices, also on failure (a commit whose answer was lost
      // may have landed): a node that gets a notice for someone added must
      // not still hold the list without them (their gap fill would be
      // refused as a non-member's).
      members_changed(thread_id);
      if (r)
        for (const auto& notice : r->notices) deliver(notice, message_json_text(notice), members_at_commit(notice, checked), "");
      done(std::move(r));
    });
  });
  // The admin check above read the cache; the store's, as it commits, has the last word.
  if (!added && added.error().code == "not_admin") return forbidden("only thread admins may add participants");
  if (!added) return added.error();
  auto t = store_.thread(thread_id);
  if (!t) return t.error();
  if (!*t) return thread_not_found_or_forbidden();
  annotate(**t, {});
  return **t;
}

Status ChatService::remove_participant(const User& actor, const std::string& thread_id, const std::string& user_id) {
  auto m = require_member(actor.id, thread_id);
  if (!m) return m.error();
  if ((*m)->type == ThreadType::kDirect) return bad_input("direct_thread", "the members of a direct thread cannot change");
  bool self = user_id == actor.id;
  const auto& admins = (*m)->admin_ids;
  if (!self && std::find(admins.begin(), admins.end(), actor.id) == admins.end())
    return forbidden("only thread admins may remove others");
  if (!is_member(**m, user_id)) return not_found("not_a_participant", "that user is not in this thread");
  auto target = store_.user_by_id(user_id);
  if (!target) return target.error();
  Removal removal;
  removal.thread_id = thread_id;
  removal.user_id = user_id;
  removal.promotion_notice = [](const std::string& username) { return username + " is now an admin"; };
  removal.actor_id = actor.id;
  // Stored with the removal, in one step: the removed user's devices get
  // this notice, and nothing committed after it.
  removal.notice = AppendRequest{
      thread_id, actor.id,
      self ? actor.username + " left" : actor.username + " removed " + (*target ? (*target)->username : user_id),
      "system", ""};
  members_.begin_change(thread_id);
  begin_removal(thread_id, user_id);
  auto removed = wait_for_callback<Result<Removed>>([&](RemovalCallback done) {
    store_.remove_participant(std::move(removal), [this, thread_id, user_id, checked = *m,
                                                   done = std::move(done)](Result<Removed> r) {
      end_removal(thread_id, user_id);
      // Before the notices, also on failure (a commit whose answer was lost
      // may have landed): other nodes drop their list ahead of the notices
      // on the bus, which keeps one publisher's order.
      members_changed(thread_id);
      // Both stored just before the removal: the one leaving is told too.
      std::vector<std::pair<const Message*, std::shared_ptr<const ThreadMembers>>> notices;
      if (r)
        for (const auto* message : {&r->notice, &r->promotion})
          if (*message) notices.emplace_back(&**message, with_member(members_at_commit(**message, checked), user_id));
      {
        RelayStripe& stripe = relay_stripe(thread_id);
        std::lock_guard relays(stripe.mu);
        for (const auto& [message, audience] : notices) deliver(*message, message_json_text(*message), audience, "");
        if (r) {
          const uint64_t n = stripe.removals_done.load(std::memory_order_relaxed);
          stripe.recent[n % stripe.recent.size()] = {thread_id, user_id};
          // With release: a relay that sees this count sees the list forgotten.
          stripe.removals_done.store(n + 1, std::memory_order_release);
        }
      }
      done(std::move(r));
    });
  });
  if (!removed && removed.error().code == "not_admin") return forbidden("only thread admins may remove others");
  // The store's check, as it commits, has the last word here too: one who
  // left meanwhile (a second leave sent at once) is now a non-member, told
  // what any non-member is; another user is not in the thread, as above.
  if (!removed && removed.error().code == "not_a_participant")
    return self ? thread_not_found_or_forbidden() : not_found("not_a_participant", "that user is not in this thread");
  if (!removed) return removed.error();
  // The removed user may have been typing. Their own stop (its timer, their
  // close) is refused from now on, as any non-member's is, so it goes from
  // here; a member who saw no start ignores it.
  std::vector<std::string> others;
  for (const auto& id : (*m)->user_ids)
    if (id != user_id) others.push_back(id);
  json::object stop{{"from_user_id", user_id}, {"user_id", user_id}, {"is_typing", false}, {"thread_id", thread_id}};
  publish(thread_id, Audience::users(std::move(others)), "typing", json::serialize(stop), "");
  if (!removed->new_admin_id.empty())
    spdlog::info("event=admin_succeeded thread_id={} user_id={} left={}", thread_id, removed->new_admin_id, user_id);
  return Ok{};
}

// `members` and `user_id`, who may have just been removed.
std::shared_ptr<const ThreadMembers> ChatService::with_member(std::shared_ptr<const ThreadMembers> members,
                                                              const std::string& user_id) {
  if (is_member(*members, user_id)) return members;
  auto out = std::make_shared<ThreadMembers>(*members);
  out->user_ids.push_back(user_id);
  return out;
}

// ---------------------------------------------------------------- messages

std::optional<Error> ChatService::validate_content(const std::string& content, const std::string& type) const {
  if (type != "text" && type != "image" && type != "file")
    return bad_input("invalid_message_type", "message_type must be text, image or file");
  auto len = utf8_length(content);
  if (!len) return bad_input("invalid_utf8", "content is not valid UTF-8");
  if (!has_visible_text(content)) return bad_input("empty_content", "content is empty");
  if (*len > config_.limits.max_content_chars)
    return Error{ErrorKind::kBadInput, "content_too_long",
                 "content has more than " + std::to_string(config_.limits.max_content_chars) + " characters"};
  return std::nullopt;
}

void ChatService::send(SendRequest req, SendCallback done) {
  if (auto e = validate_content(req.content, req.message_type)) return done(*e);
  // Counted in characters, like content; the transports cap the bytes at 4 per character.
  if (req.client_msg_id.size() > 128 && utf8_length(req.client_msg_id).value_or(SIZE_MAX) > 128)
    return done(bad_input("invalid_field", "client_msg_id has more than 128 characters"));
  if (!req.thread_id.empty()) {
    auto m = require_member(req.sender_id, req.thread_id);
    if (!m) return done(m.error());
    return store_and_publish(std::move(req), std::move(*m), std::move(done));
  }
  auto actor = store_.user_by_id(req.sender_id);
  if (!actor) return done(actor.error());
  if (!*actor) return done(unauthorized("invalid_token", "unknown user"));
  auto t = direct_thread(**actor, req.username);
  if (!t) return done(t.error());
  req.thread_id = t->id;
  auto m = members(req.thread_id);
  if (!m) return done(m.error());
  if (!*m) return done(internal_error());
  store_and_publish(std::move(req), std::move(*m), std::move(done));
}

void ChatService::store_and_publish(SendRequest req, std::shared_ptr<const ThreadMembers> members, SendCallback done) {
  AppendRequest append{req.thread_id, req.sender_id, std::move(req.content), std::move(req.message_type),
                       std::move(req.client_msg_id)};
  append.owes_push = records_owed_pushes_ && append.message_type != "system";
  std::string origin = std::move(req.origin_session);
  store_.append(std::move(append), [this, origin = std::move(origin), members = std::move(members),
                                    done = std::move(done)](Result<AppendResult> r) {
    if (!r) return done(r.error());
    SendOutcome out;
    out.message = std::move(r->message);
    out.duplicate = r->duplicate;
    out.message_json = message_json_text(out.message);
    if (!out.duplicate)
      deliver(out.message, out.message_json, members_at_commit(out.message, members, r->member_version), origin);
    else if (out.message.created_at >= now_micros() - int64_t{config_.limits.redeliver_retry_seconds} * 1000000)
      redeliver(out.message, out.message_json, members_at_commit(out.message, members), origin);
    done(std::move(out));
  });
}

// A retry finds its original stored, but that original may never have been
// published: its node died between the commit and the publish, or a
// PostgreSQL COMMIT whose connection was lost reported a failure and had
// landed. Its participants would then see it only with the thread's next
// message. So it is published again, marked as such: the sender's session
// ignores it, a connection that opened after it was stored and was sent
// nothing of the thread takes it for history it has (Connection::deliver),
// and every other connection's DeliveryCursor sends it, drops it, or fills
// up to it, as for any live message. Only while recent, for the
// participants as they are now who were members when it was stored
// (members_at_commit): one removed and added back since must not get it
// through a cursor entry from before.
// Not counted as a message again, and no second push (the original's, if
// the dead node had not stored it, is still owed: WebhookNotifier's sweep).
void ChatService::redeliver(const Message& message, const std::string& message_json,
                            const std::shared_ptr<const ThreadMembers>& audience, const std::string& origin) {
  publish(message.thread_id, Audience::members(audience), "new_message", message_json, origin, message.seq,
          message.id, /*redelivery_of=*/message.created_at);
}

void ChatService::deliver(const Message& message, const std::string& message_json,
                          const std::shared_ptr<const ThreadMembers>& audience, const std::string& origin) {
  Metrics::get().messages_in.fetch_add(1, std::memory_order_relaxed);
  publish(message.thread_id, Audience::members(audience), "new_message", message_json, origin, message.seq,
          message.id);
  if (message_observer_) message_observer_(message, message_json, audience);
}

// Who a committed message goes to: the members as they are now, not as they
// were when the send was checked, less anyone who joined after the message
// was stored. A removal or an addition may have committed in between, or
// after the message and before this callback: the removed must not get it,
// one added before it must, and one added after it must not (what was said
// before someone joined is never sent or pushed to them: protocol.md).
// Where the store numbers memberships (`member_version` > 0), a checked list
// of the commit's version is exactly the members at the commit. Otherwise
// the cache answers at once unless a change was just made here (it then
// reads the store), or the store says one made through another node
// committed before the message and that node's members_changed has not
// arrived yet (it then reads the store too); `checked` serves when the
// store cannot answer.
std::shared_ptr<const ThreadMembers> ChatService::members_at_commit(const Message& message,
                                                                    std::shared_ptr<const ThreadMembers> checked,
                                                                    int64_t member_version) {
  if (member_version > 0 && checked && checked->version == member_version)
    return with_removals_in_flight(message.thread_id, joined_by(std::move(checked), message.created_at));
  auto now = members_.get_at_least(message.thread_id, member_version);
  return with_removals_in_flight(message.thread_id,
                                 joined_by(now && *now ? std::move(*now) : std::move(checked), message.created_at));
}

// The store may already hold a removal whose callback has not run: a write
// that committed before it (callbacks run in commit order) still goes to the
// member being removed, as the removal's notice does.
std::shared_ptr<const ThreadMembers> ChatService::with_removals_in_flight(const std::string& thread_id,
                                                                          std::shared_ptr<const ThreadMembers> members) {
  if (removals_in_flight_.load(std::memory_order_acquire) == 0) return members;
  std::lock_guard lock(removals_mu_);
  auto [from, to] = removals_.equal_range(thread_id);
  for (auto it = from; it != to; ++it) members = with_member(std::move(members), it->second);
  return members;
}

// Who an edit or deletion that just committed goes to: the members as it
// leaves them, not as they were when it was checked (a removal may have
// committed in between: the removed must not get the new text). Both are
// rare and run on a worker, so the members are read from the store once
// the change committed: a removal made through another node a moment
// before is in, which the cache would know only with its members_changed.
// The cache serves when the store cannot answer, then the checked list.
std::shared_ptr<const ThreadMembers> ChatService::members_after_change(const std::string& thread_id,
                                                                       std::shared_ptr<const ThreadMembers> checked) {
  std::shared_ptr<const ThreadMembers> now;
  if (auto stored = store_.thread_members(thread_id); stored && *stored) {
    now = std::make_shared<const ThreadMembers>(std::move(**stored));
  } else if (auto cached = members_.get(thread_id); cached && *cached) {
    now = std::move(*cached);
  }
  return with_removals_in_flight(thread_id, now ? std::move(now) : std::move(checked));
}

// `members` less those who joined after `created_at`: the line offline sync
// and gap fills draw too. Both stores take a join's time on the message
// clock (join_time), so the line is exact: nothing said before someone was
// (again) a member reaches them live. (A join made through a node of an
// older build, during a rolling upgrade, has that node's clock:
// docs/operations.md.)
std::shared_ptr<const ThreadMembers> ChatService::joined_by(std::shared_ptr<const ThreadMembers> members,
                                                            Micros created_at) const {
  if (!members) return members;
  const auto& joined = members->joined_at;
  const size_t dated = std::min(joined.size(), members->user_ids.size());
  auto late = [&](size_t i) { return i < dated && joined[i] > created_at; };
  size_t i = 0;
  while (i < dated && !late(i)) ++i;
  if (i == dated) return members;  // the common case: everyone was in before it
  auto out = std::make_shared<ThreadMembers>();
  out->type = members->type;
  out->admin_ids = members->admin_ids;
  for (size_t k = 0; k < members->user_ids.size(); ++k) {
    if (late(k)) continue;
    out->user_ids.push_back(members->user_ids[k]);
    if (k < dated) out->joined_at.push_back(joined[k]);
  }
  return out;
}

void ChatService::begin_removal(const std::string& thread_id, const std::string& user_id) {
  std::lock_guard lock(removals_mu_);
  removals_.emplace(thread_id, user_id);
  removals_in_flight_.fetch_add(1, std::memory_order_release);
}

void ChatService::end_removal(const std::string& thread_id, const std::string& user_id) {
  std::lock_guard lock(removals_mu_);
  auto [from, to] = removals_.equal_range(thread_id);
  for (auto it = from; it != to; ++it) {
    if (it->second != user_id) continue;
    removals_.erase(it);
    removals_in_flight_.fetch_sub(1, std::memory_order_release);
    return;
  }
}

Result<std::vector<Message>> ChatService::history(const User& actor, const std::string& thread_id,
                                                  const HistoryQuery& q) {
  auto m = require_member(actor.id, thread_id);
  if (!m) return m.error();
  if (q.limit < 1 || q.limit > 200) return bad_input("invalid_limit", "limit must be between 1 and 200");
  auto page = member_page(actor.id, PageQuery{thread_id, q.after_seq, q.before_seq, q.limit});
  if (!page) return page.error();
  auto t = store_.thread(thread_id);
  if (!t) return t.error();
  if (*t) {
    std::vector<Message*> ptrs;
    for (auto& m : page->messages) ptrs.push_back(&m);
    annotate(**t, std::move(ptrs));
  }
  return std::move(page->messages);
}

// The member check above answers from the cache; this one is the store's,
// from the page's own snapshot (a removal committed since the check, or
// during the read, lets nothing stored after it through: a gap fill of a
// busy thread reads up to a page of messages).
Result<MemberPage> ChatService::member_page(const std::string& user_id, const PageQuery& query) {
  auto page = store_.member_page(user_id, query);
  if (!page && page.error().code == "not_a_participant") return thread_not_found_or_forbidden();
  return page;
}

Result<MemberPage> ChatService::replay(const std::string& user_id, const std::string& thread_id, int64_t since_seq,
                                       int limit, ReplayFor purpose) {
  // The store decides, not the member cache: a former member's membership
  // ended in the store, and the page is read with it.
  auto page = member_page(user_id, PageQuery{thread_id, since_seq, kAllSeqs, limit, /*former_too=*/true});
  if (!page) return page.error();
  if (purpose == ReplayFor::kSubscriber)
    if (auto st = annotate_each_thread(page->messages, user_id); !st) return st.error();
  return page;
}

Result<std::vector<std::pair<std::string, int64_t>>> ChatService::catch_up_positions(const std::string& user_id) {
  auto actor = user(user_id);
  if (!actor) return actor.error();
  auto summaries = threads(*actor);
  if (!summaries) return summaries.error();
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& s : *summaries) {
    if (s.unread_count == 0) continue;
    for (const auto& p : s.thread.participants) {
      if (p.user_id != user_id) continue;
      int64_t seen = std::max(p.last_delivered_seq, p.last_read_seq);
      if (s.thread.last_seq > seen) out.emplace_back(s.thread.id, seen);
    }
  }
  // A replay from there reads the ended membership to its end, then is
  // refused: the user is not in the thread now. Best effort: what the
  // threads the user is in owe them goes out whatever this read does.
  auto left = store_.left_threads_owed(user_id);
  if (!left) {
    spdlog::warn("event=catch_up_left_threads_unread user_id={} code={}", user_id, left.error().code);
    return out;
  }
  for (auto& owed : *left) {
    // Removed since the thread list was read: one replay of it is enough.
    auto same = [&](const auto& p) { return p.first == owed.first; };
    if (std::none_of(out.begin(), out.end(), same)) out.push_back(std::move(owed));
  }
  return out;
}

// An answer is held whole in memory until its client has read it (an HTTP
// body is not streamed), and 500 messages of 4,000 characters are 8 MB: a
// client that asks on many connections and reads nothing would hold that
// much per connection. A page stops once past this much content; the rest
// comes with the next call (has_more), whose cursor the last message kept
// gives, as at the store's own limit (created_at is unique and increasing).
constexpr size_t kOfflinePageContentBytes = size_t{1} << 20;

Result<OfflinePage> ChatService::offline_messages(const User& actor, Micros since) {
  auto page = store_.messages_since(actor.id, since, 500);
  if (!page) return page;
  size_t bytes = 0;
  for (size_t i = 0; i < page->messages.size(); ++i) {
    bytes += page->messages[i].content.size();
    if (i == 0 || bytes <= kOfflinePageContentBytes) continue;
    page->messages.resize(i);
    page->has_more = true;
    page->cursor = page->messages.back().created_at;
    break;
  }
  if (auto st = annotate_each_thread(page->messages, actor.id); !st) return st.error();
  return page;
}

// Each thread read once.
Status ChatService::annotate_each_thread(std::vector<Message>& messages, const std::string& reader_id) const {
  std::unordered_map<std::string, std::vector<Message*>> by_thread;
  for (auto& m : messages) by_thread[m.thread_id].push_back(&m);
  for (auto& [thread_id, ms] : by_thread) {
    auto t = store_.thread(thread_id);
    if (!t) return t.error();
    if (!*t) continue;
    const auto& ps = (*t)->participants;
    const bool left = !reader_id.empty() && std::none_of(ps.begin(), ps.end(), [&](const Participant& p) {
      return p.user_id == reader_id;
    });
    if (!left) annotate(**t, std::move(ms));
  }
  return Ok{};
}

Result<std::vector<UnreadCount>> ChatService::unread_counts(const User& actor) {
  return store_.unread_counts(actor.id);
}

Result<int64_t> ChatService::mark_read(const std::string& user_id, const std::string& thread_id, int64_t up_to_seq,
                                       const std::string& origin_session) {
  auto m = require_member(user_id, thread_id);
  if (!m) return m.error();
  // One mark of a (thread, reader) at a time, written and announced before
  // the next: two devices marking at once must not announce the lower mark
  // last (the store never moves a mark back; the receipts must not either).
  std::lock_guard one_at_a_time(read_mark_lock(thread_id, user_id));
  auto mark = store_.mark_read(thread_id, user_id, up_to_seq);
  // Removed between the check above and the write: a non-member now.
  if (!mark && mark.error().code == "not_a_participant") return thread_not_found_or_forbidden();
  if (!mark) return mark.error();
  // A mark that moved nothing tells the others nothing new (an app that marks
  // the whole thread each time it is opened, in a class of 500, would send
  // 499 frames each time). A receipt a networked bus lost is announced again
  // by the resync that follows the loss (Connection::resend_read_marks).
  if (!mark->moved) return mark->seq;
  // To the members as the mark committed, not as they were when it was
  // asked: a removal that committed meanwhile (the wait for the lock, the
  // write) must not hear how far someone read after it left. Callbacks run
  // in commit order, so this process's removals are in the cache by now; the
  // mark's member version says whether one made through another node is
  // still on its way (then the store is read, as for a message:
  // members_at_commit). The cached list itself, never a copy per receipt:
  // each loop keeps whom a shared list resolves to.
  auto now = members_.get_at_least(thread_id, mark->member_version);
  auto ev = event_for(thread_id, Audience::members(now && *now ? std::move(*now) : std::move(*m)), "read_receipt",
                      json::serialize(json::object{{"thread_id", thread_id}, {"user_id", user_id}, {"seq", mark->seq}}),
                      origin_session);
  ev->reader_id = user_id;
  ev->read_seq = mark->seq;
  bus_.publish(std::move(ev));
  return mark->seq;
}

ChatService::RelayStripe& ChatService::relay_stripe(const std::string& thread_id) {
  return relay_stripes_[std::hash<std::string>{}(thread_id) % relay_stripes_.size()];
}

Status ChatService::relay(const std::string& user_id, const std::string& thread_id, const std::string& type,
                          json::object fields, const std::string& origin_session) {
  fields["thread_id"] = thread_id;
  std::string payload = json::serialize(fields);
  RelayStripe& stripe = relay_stripe(thread_id);
  // The member list is read without the stripe's lock (it may block on the
  // store); the removals done meanwhile are left out under it. More than the
  // stripe keeps (a burst of removals in its threads) means reading again.
  for (int attempt = 1;; ++attempt) {
    const uint64_t removals_seen = stripe.removals_done.load(std::memory_order_acquire);
    auto m = require_member(user_id, thread_id);
    if (!m) return m.error();
    std::vector<std::string> others;
    others.reserve((*m)->user_ids.size());
    for (const auto& id : (*m)->user_ids)
      if (id != user_id) others.push_back(id);
    // Only a call asks who is online (a lock per member): typing, the frequent
    // relay, takes none.
    if (type == "call_offer" &&
        std::none_of(others.begin(), others.end(), [&](const std::string& id) { return presence_.connected(id); }))
      return Error{ErrorKind::kNotFound, "callee_offline",
                   "nobody else in this thread has a connection open to take the call"};
    std::lock_guard relays(stripe.mu);
    const uint64_t done = stripe.removals_done.load(std::memory_order_relaxed);
    if (done - removals_seen > stripe.recent.size()) {
      if (attempt < 3) continue;
      return Error{ErrorKind::kUnavailable, "try_again", "members were being removed as this was relayed; send it again"};
    }
    std::vector<std::string> gone;  // removed from this thread since the list was read
    for (uint64_t k = removals_seen; k < done; ++k)
      if (const auto& [thread, user] = stripe.recent[k % stripe.recent.size()]; thread == thread_id) gone.push_back(user);
    auto removed = [&](const std::string& id) { return std::find(gone.begin(), gone.end(), id) != gone.end(); };
    if (removed(user_id)) return thread_not_found_or_forbidden();  // the sender was removed meanwhile
    // An answer or a hang-up also reaches the sender's other devices (never the
    // sending connection), so a phone that answered stops the tablet ringing.
    if (type == "call_answer" || type == "call_end") {
      if (gone.empty()) {
        publish(thread_id, Audience::members(*m), type, std::move(payload), origin_session);
        return Ok{};
      }
      others.push_back(user_id);
    }
    std::erase_if(others, removed);
    publish(thread_id, Audience::users(std::move(others)), type, std::move(payload), origin_session);
    return Ok{};
  }
}

// ---------------------------------------------------------------- receipts and presence

ChatService::Audience ChatService::Audience::members(const std::shared_ptr<const ThreadMembers>& m) {
  return {std::shared_ptr<const std::vector<std::string>>(m, &m->user_ids), true};
}

ChatService::Audience ChatService::Audience::users(std::vector<std::string> user_ids) {
  return {std::make_shared<const std::vector<std::string>>(std::move(user_ids)), false};
}

std::shared_ptr<BusEvent> ChatService::event_for(std::string thread_id, Audience to, std::string type,
                                                 std::string payload, std::string exclude_session) {
  auto ev = std::make_shared<BusEvent>();
  ev->thread_id = std::move(thread_id);
  ev->recipients = std::move(to.user_ids);
  ev->shared_recipients = to.shared;
  ev->type = std::move(type);
  ev->payload = std::move(payload);
  ev->exclude_session = std::move(exclude_session);
  return ev;
}

void ChatService::publish(std::string thread_id, Audience to, std::string type, std::string payload,
                          std::string exclude_session, int64_t seq, std::string message_id, Micros redelivery_of) {
  auto ev = event_for(std::move(thread_id), std::move(to), std::move(type), std::move(payload),
                      std::move(exclude_session));
  ev->payload_is_data = !message_id.empty();
  ev->message_id = std::move(message_id);
  ev->seq = seq;
  ev->redelivery = redelivery_of > 0;
  ev->created_at = redelivery_of;
  bus_.publish(std::move(ev));
}

std::shared_ptr<BusEvent> change_event(const Message& changed) {
  auto ev = std::make_shared<BusEvent>();
  ev->thread_id = changed.thread_id;
  ev->message_id = changed.id;
  ev->change_no = changed.change_no;
  if (changed.deleted) {
    ev->type = "message_deleted";
    ev->payload = json::serialize(deletion_json(changed));
  } else {
    // The frame's `data` is the message (seq stays 0: this is not a new
    // message in the thread's order).
    ev->type = "message_edited";
    ev->payload = message_json_text(changed);
    ev->payload_is_data = true;
  }
  return ev;
}

void ChatService::publish_change(const Message& changed, Audience to, const std::string& exclude_session) {
  auto ev = change_event(changed);
  ev->recipients = std::move(to.user_ids);
  ev->shared_recipients = to.shared;
  ev->exclude_session = exclude_session;
  bus_.publish(std::move(ev));
}

Status ChatService::acknowledge_delivery(const std::string& user_id, const std::string& message_id,
                                         std::pair<std::string, int64_t>* at) {
  auto found = store_.message(message_id);
  if (!found) return found.error();
  // An unknown message and one in someone else's thread get the same answer.
  if (!*found) return thread_not_found_or_forbidden();
  if (at) *at = {(*found)->thread_id, (*found)->seq};
  return acknowledge(user_id, **found);
}

Status ChatService::acknowledge_delivery_at(const std::string& user_id, const std::string& thread_id, int64_t seq) {
  if (seq < 1) return thread_not_found_or_forbidden();
  auto found = store_.messages_after(thread_id, seq - 1, 1);
  if (!found) return found.error();
  if (found->empty() || found->front().seq != seq) return thread_not_found_or_forbidden();
  return acknowledge(user_id, found->front());
}

// The receipt of `msg`, which user_id's client has: their delivery mark
// moves up to it, and its sender hears of it.
Status ChatService::acknowledge(const std::string& user_id, const Message& message) {
  const Message* msg = &message;
  // A removed member's receipt of what their membership owed them (a
  // catch-up replays it): their former mark moves, so that no later
  // catch-up sends it again. Its sender is not told: the receipt is late
  // news of a member who has left.
  auto former_receipt = [&]() -> Status {
    auto former = store_.mark_former_delivered(msg->thread_id, user_id, msg->seq, msg->created_at);
    if (!former) return former.error();
    if (!*former) return thread_not_found_or_forbidden();
    return Ok{};
  };
  auto m = require_member(user_id, msg->thread_id);
  if (!m && m.error().kind != ErrorKind::kForbidden) return m.error();
  if (msg->sender_id == user_id) return m ? Status{Ok{}} : Status{m.error()};  // one's own: nothing to tell
  // The store decides, not this node's member list: another node's removal
  // or re-addition may not have reached it yet, and a receipt refused here
  // would be answered quietly by a connection that was sent the message.
  auto before = store_.mark_delivered(msg->thread_id, user_id, msg->seq);
  if (!before && before.error().code == "not_a_participant") return former_receipt();
  if (!before) return before.error();
  std::shared_ptr<const ThreadMembers> members;
  if (m) {
    members = *m;
  } else {  // a member the list here has not heard of: the store's list
    members_.forget(msg->thread_id);  // behind the store: read again at the next use
    auto read = store_.thread_members(msg->thread_id);
    if (!read) return read.error();
    if (*read) members = std::make_shared<const ThreadMembers>(std::move(**read));
  }
  // A sender who has left the thread is told nothing more of it.
  if (!members || !is_member(*members, msg->sender_id)) return Ok{};
  // Nor of a receipt of what was said before the member joined (a replay
  // from since_seq 0 sends it): it never counts for the message's status
  // (annotate), so a tick for it would be one the history never shows.
  if (msg->created_at < joined_at(*members, user_id)) return Ok{};
  publish(msg->thread_id, Audience::users({msg->sender_id}), "message_delivered",
          json::serialize(json::object{
              {"message_id", msg->id}, {"thread_id", msg->thread_id}, {"user_id", user_id}, {"seq", msg->seq}}));
  return Ok{};
}

// When user_id joined the thread (the last time); 0 when the list does not say.
Micros ChatService::joined_at(const ThreadMembers& members, const std::string& user_id) {
  const size_t dated = std::min(members.joined_at.size(), members.user_ids.size());
  for (size_t i = 0; i < dated; ++i)
    if (members.user_ids[i] == user_id) return members.joined_at[i];
  return 0;
}

void ChatService::announce_presence(const std::vector<PresenceChange>& changes) {
  // In chunks: a storm of connects must neither hold one read transaction
  // (and the WAL) for the whole storm nor keep its first users' contacts
  // waiting until every later user's contacts are read.
  constexpr size_t kChunk = 256;
  for (size_t from = 0; from < changes.size(); from += kChunk) {
    const size_t to = std::min(changes.size(), from + kChunk);
    const Micros now = now_micros();
    auto when = [now](const PresenceChange& c) { return c.at ? c.at : now; };
    std::vector<std::string> users;
    users.reserve(to - from);
    for (size_t i = from; i < to; ++i) {
      if (!changes[i].online) store_.set_last_seen(changes[i].user_id, when(changes[i]));
      users.push_back(changes[i].user_id);
    }
    auto contacts = store_.contacts_of_each(users);
    if (!contacts) {
      spdlog::warn("event=presence_not_announced users={} code={}", users.size(), contacts.error().code);
      continue;
    }
    for (size_t i = from; i < to; ++i) {
      auto& audience = (*contacts)[i - from];
      if (audience.empty()) continue;
      const auto& change = changes[i];
      publish("", Audience::users(std::move(audience)), "presence",
              json::serialize(json::object{
                  {"user_id", change.user_id}, {"online", change.online}, {"last_seen", iso8601_millis(when(change))}}));
      spdlog::debug("event=presence user_id={} online={}", change.user_id, change.online);
    }
  }
}

// As the `presence` events: told to those who share a thread with the user
// (and the user), not to anyone who knows an id, so a stranger cannot watch
// when a teacher is online.
Result<ChatService::PresenceInfo> ChatService::presence_of(const User& actor, const std::string& user_id) {
  auto u = store_.user_by_id(user_id);
  if (!u) return u.error();
  if (!*u) return not_found("user_not_found", "no such user");
  if (actor.id != user_id) {
    auto contacts = store_.contacts(actor.id);
    if (!contacts) return contacts.error();
    if (std::find(contacts->begin(), contacts->end(), user_id) == contacts->end())
      return forbidden("you share no thread with this user");
  }
  return PresenceInfo{presence_.online(user_id), (*u)->last_seen};
}

}  // namespace parley
