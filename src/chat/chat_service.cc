#include "chat/chat_service.h"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>
#include <mutex>

#include "auth/password.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "common/utf8.h"
#include "protocol/encode.h"

namespace parley {

namespace json = boost::json;

namespace {

int64_t now_seconds() { return now_micros() / 1000000; }

bool valid_username(const std::string& u) {
  if (u.size() < 3 || u.size() > 32) return false;
  return std::all_of(u.begin(), u.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'; });
}

bool valid_phone(const std::string& p) {
  if (p.size() < 3 || p.size() > 32) return false;
  return std::all_of(p.begin(), p.end(), [](char c) { return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == ' '; });
}

std::string lowercase(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

Error unauthorized(std::string code, std::string msg) { return {ErrorKind::kUnauthorized, std::move(code), std::move(msg)}; }

// What a non-participant hears about any thread, existing or not.
Error not_yours() { return forbidden("thread not found or you are not a participant"); }

}  // namespace

ChatService::ChatService(Store& store, Bus& bus, std::shared_ptr<const JwtVerifier> jwt, const Config& config)
    : store_(store),
      bus_(bus),
      jwt_(std::move(jwt)),
      config_(config),
      login_limiter_(config.limits.login_failures_per_account, config.limits.login_failures_per_address,
                     config.limits.login_window_seconds),
      presence_(config.limits.max_connections_per_user, std::chrono::seconds(config.limits.presence_grace_seconds)) {}

// ---------------------------------------------------------------- identity

AuthResult ChatService::issue_token(const User& user) const {
  int64_t now = now_seconds();
  AuthResult r;
  r.user = user;
  r.token = jwt_->sign(user.id, now, config_.token_ttl_seconds, json::object{{"username", user.username}});
  r.expires_at = (now + config_.token_ttl_seconds) * 1000000;
  return r;
}

Result<AuthResult> ChatService::register_user(const RegisterRequest& req) {
  std::string username = lowercase(req.username);
  if (!valid_username(username))
    return bad_input("invalid_username", "username must be 3-32 characters of a-z, 0-9, _ and .");
  if (req.password.size() < 8) return bad_input("weak_password", "password must have at least 8 characters");
  if (req.password.size() > 1024) return bad_input("invalid_field", "password is too long");
  if (!utf8_length(req.full_name) || !has_visible_text(req.full_name) || req.full_name.size() > 200)
    return bad_input("invalid_field", "full_name must be 1-200 characters of text");
  if (req.phone_number && !valid_phone(*req.phone_number))
    return bad_input("invalid_field", "phone_number must be digits, spaces, + and -");
  if (!utf8_length(req.role) || req.role.size() > 64) return bad_input("invalid_field", "role is too long");
  User u;
  u.id = new_uuid();
  u.username = username;
  u.full_name = req.full_name;
  u.phone_number = req.phone_number;
  u.role = req.role.empty() ? "member" : req.role;
  u.password_hash = hash_password(req.password);
  u.created_at = now_micros();
  auto created = store_.create_user(u);
  if (!created) return created.error();
  spdlog::info("event=user_registered user_id={}", u.id);
  return issue_token(*created);
}

Result<AuthResult> ChatService::login(const std::string& login, const std::string& password,
                                      const std::string& address) {
  std::optional<User> u = store_.user_by_username(lowercase(login));
  if (!u) u = store_.user_by_phone(login);
  // Failures count per account (whichever name it was reached by), or per
  // login text when no account matches.
  const std::string key = u ? u->id : "login:" + lowercase(login);
  int64_t now = now_seconds();
  if (!login_limiter_.allowed(key, address, now)) {
    Metrics::get().count_error("rate_limited");
    return Error{ErrorKind::kRateLimited, "rate_limited", "too many failed logins; try again later"};
  }
  // Hash even for an unknown account, so timing does not tell which exist.
  static const std::string kDummy = hash_password("parley-dummy-password");
  bool has_password = u && !u->password_hash.empty();
  bool ok = verify_password(password, has_password ? u->password_hash : kDummy) && has_password;
  if (!ok) {
    login_limiter_.record_failure(key, address, now);
    spdlog::info("event=login_failed address={}", address);
    return unauthorized("invalid_credentials", "wrong username, phone number or password");
  }
  login_limiter_.record_success(key);
  return issue_token(*u);
}

Result<User> ChatService::authenticate(const std::string& token) {
  auto claims = jwt_->verify(token, now_seconds());
  if (!claims) return claims.error();
  if (!is_uuid(claims->sub)) return unauthorized("invalid_token", "token subject is not a user id");
  if (auto u = store_.user_by_id(normalize_uuid(claims->sub))) return *u;
  return provision(*claims);
}

Result<int64_t> ChatService::token_expiry(const std::string& token) const {
  auto claims = jwt_->verify(token, now_seconds());
  if (!claims) return claims.error();
  return claims->exp;
}

// A provider's token (Supabase-style) for a user we have not seen: create the
// user from the profile it carries. A token without a profile is refused, so a
// deleted user's old token does not bring the account back.
Result<User> ChatService::provision(const JwtClaims& claims) {
  const json::object& all = claims.all;
  const json::object* meta = all.contains("user_metadata") && all.at("user_metadata").is_object()
                                 ? &all.at("user_metadata").as_object()
                                 : nullptr;
  const json::value* email = all.if_contains("email");
  if (!meta && !(email && email->is_string())) return unauthorized("invalid_token", "unknown user");
  auto str = [](const json::object* o, const char* key) -> std::string {
    if (!o) return "";
    const json::value* v = o->if_contains(key);
    return v && v->is_string() ? std::string(v->get_string()) : "";
  };
  std::string base = lowercase(str(meta, "username"));
  if (base.empty() && email && email->is_string()) {
    std::string e(email->get_string());
    base = lowercase(e.substr(0, e.find('@')));
  }
  std::string clean;
  for (char c : base)
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.') clean.push_back(c);
  if (clean.size() < 3) clean = "user" + clean;
  clean = clean.substr(0, 24);
  User u;
  u.id = normalize_uuid(claims.sub);
  u.full_name = str(meta, "full_name");
  if (u.full_name.empty()) u.full_name = clean;
  u.role = str(meta, "role");
  if (u.role.empty()) u.role = "member";
  u.created_at = now_micros();
  for (int attempt = 0; attempt < 5; ++attempt) {
    u.username = attempt == 0 ? clean : clean + "_" + random_hex(3);
    auto created = store_.create_user(u);
    if (created) {
      spdlog::info("event=user_provisioned user_id={}", u.id);
      return *created;
    }
    if (created.error().code != "username_taken") return created.error();
    if (auto existing = store_.user_by_id(u.id)) return *existing;  // a concurrent first login
  }
  return internal_error("could not choose a username");
}

Result<User> ChatService::user(const std::string& user_id) {
  if (auto u = store_.user_by_id(user_id)) return *u;
  return not_found("user_not_found", "no such user");
}

std::vector<User> ChatService::search_users(const std::string& query, int limit) {
  return store_.search_users(query, limit);
}

// ---------------------------------------------------------------- threads

std::shared_ptr<const ThreadMembers> ChatService::members(const std::string& thread_id) {
  {
    std::shared_lock lock(members_mu_);
    auto it = members_.find(thread_id);
    if (it != members_.end()) return it->second;
  }
  auto loaded = store_.thread_members(thread_id);
  if (!loaded) return nullptr;
  auto ptr = std::make_shared<const ThreadMembers>(std::move(*loaded));
  std::unique_lock lock(members_mu_);
  members_[thread_id] = ptr;
  return ptr;
}

void ChatService::forget_members(const std::string& thread_id) {
  std::unique_lock lock(members_mu_);
  members_.erase(thread_id);
}

bool ChatService::is_member(const ThreadMembers& m, const std::string& user_id) const {
  return std::find(m.user_ids.begin(), m.user_ids.end(), user_id) != m.user_ids.end();
}

Result<std::shared_ptr<const ThreadMembers>> ChatService::require_member(const std::string& user_id,
                                                                         const std::string& thread_id) {
  auto m = members(thread_id);
  if (!m || !is_member(*m, user_id)) return not_yours();
  return m;
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
    if (!store_.user_by_id(nid)) return not_found("user_not_found", "no user with id " + nid);
    ids.push_back(nid);
  }
  for (const auto& name : req.usernames) {
    auto u = store_.user_by_username(lowercase(name));
    if (!u) return not_found("user_not_found", "no user named " + name.substr(0, 64));
    ids.push_back(u->id);
  }
  std::sort(ids.begin() + 1, ids.end());
  ids.erase(std::unique(ids.begin() + 1, ids.end()), ids.end());
  ids.erase(std::remove(ids.begin() + 1, ids.end(), actor.id), ids.end());

  if (type == ThreadType::kDirect && ids.size() != 2)
    return bad_input("invalid_field", "a direct thread has exactly one other participant");
  if (!utf8_length(req.title) || req.title.size() > 400) return bad_input("invalid_field", "title is not valid text");

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
  if (created && created->created)
    spdlog::info("event=thread_created thread_id={} type={} participants={}", created->thread.id,
                 thread_type_name(type), ids.size());
  return created;
}

Result<Thread> ChatService::thread(const User& actor, const std::string& thread_id) {
  auto m = require_member(actor.id, thread_id);
  if (!m) return m.error();
  auto t = store_.thread(thread_id);
  if (!t) return not_yours();
  annotate(*t, {});
  return *t;
}

std::vector<ThreadSummary> ChatService::threads(const User& actor) {
  auto out = store_.threads_for_user(actor.id);
  for (auto& s : out) {
    std::vector<Message*> last;
    if (s.last_message) last.push_back(&*s.last_message);
    annotate(s.thread, std::move(last));
  }
  return out;
}

// A message's status, as its sender sees it: `read` once any other
// participant has read up to it, else `delivered` once any other
// participant's client acknowledged it, else `sent`.
void ChatService::annotate(Thread& thread, std::vector<Message*> messages) const {
  for (auto& p : thread.participants) p.online = presence_.online(p.user_id);
  for (Message* m : messages) {
    int64_t read = 0, delivered = 0;
    for (const auto& p : thread.participants) {
      if (p.user_id == m->sender_id) continue;
      read = std::max(read, p.last_read_seq);
      delivered = std::max({delivered, p.last_delivered_seq, p.last_read_seq});
    }
    m->status = m->seq <= read ? "read" : m->seq <= delivered ? "delivered" : "sent";
  }
}

Result<Thread> ChatService::direct_thread(const User& actor, const std::string& username) {
  std::string name = lowercase(username);
  if (name == actor.username) return bad_input("invalid_recipient", "you cannot message yourself");
  auto other = store_.user_by_username(name);
  if (!other) return not_found("user_not_found", "no user named " + username.substr(0, 64));
  CreateThreadRequest req;
  req.type = "direct";
  req.participant_ids = {other->id};
  auto created = create_thread(actor, req);
  if (!created) return created.error();
  return created->thread;
}

Result<Thread> ChatService::add_participants(const User& actor, const std::string& thread_id,
                                             const std::vector<std::string>& user_ids) {
  auto m = require_member(actor.id, thread_id);
  if (!m) return m.error();
  if ((*m)->type == ThreadType::kDirect) return bad_input("invalid_field", "direct threads have two participants");
  const auto& admins = (*m)->admin_ids;
  if (std::find(admins.begin(), admins.end(), actor.id) == admins.end())
    return forbidden("only thread admins may add participants");
  std::vector<std::string> ids;
  std::vector<std::string> names;
  for (const auto& id : user_ids) {
    if (!is_uuid(id)) return bad_input("invalid_field", "participant_ids must be user ids");
    auto u = store_.user_by_id(normalize_uuid(id));
    if (!u) return not_found("user_not_found", "no user with id " + normalize_uuid(id));
    ids.push_back(u->id);
    names.push_back(u->username);
  }
  auto added = store_.add_participants(thread_id, ids);
  if (!added) return added.error();
  forget_members(thread_id);
  for (const auto& id : *added) {
    auto it = std::find(ids.begin(), ids.end(), id);
    post_system_message(actor, thread_id, actor.username + " added " + names[it - ids.begin()]);
  }
  auto t = store_.thread(thread_id);
  if (!t) return not_yours();
  return *t;
}

Status ChatService::remove_participant(const User& actor, const std::string& thread_id, const std::string& user_id) {
  auto m = require_member(actor.id, thread_id);
  if (!m) return m.error();
  if ((*m)->type == ThreadType::kDirect) return bad_input("invalid_field", "direct threads have two participants");
  bool self = user_id == actor.id;
  const auto& admins = (*m)->admin_ids;
  if (!self && std::find(admins.begin(), admins.end(), actor.id) == admins.end())
    return forbidden("only thread admins may remove others");
  if (!is_member(**m, user_id)) return not_found("not_a_participant", "that user is not in this thread");
  auto target = store_.user_by_id(user_id);
  // The system message goes first, so the leaving user's devices see it too.
  post_system_message(actor, thread_id,
                      self ? actor.username + " left" : actor.username + " removed " + (target ? target->username : user_id));
  auto st = store_.remove_participant(thread_id, user_id);
  forget_members(thread_id);
  return st;
}

void ChatService::post_system_message(const User& actor, const std::string& thread_id, const std::string& text) {
  auto m = members(thread_id);
  if (!m) return;
  SendRequest req;
  req.sender_id = actor.id;
  req.thread_id = thread_id;
  req.content = text;
  req.message_type = "system";
  std::promise<void> done;
  store_and_publish(std::move(req), m, [&done](Result<SendOutcome> r) {
    if (!r) spdlog::warn("event=system_message_failed code={}", r.error().code);
    done.set_value();
  });
  done.get_future().wait();
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
  if (!req.thread_id.empty()) {
    auto m = require_member(req.sender_id, req.thread_id);
    if (!m) return done(m.error());
    return store_and_publish(std::move(req), std::move(*m), std::move(done));
  }
  auto actor = store_.user_by_id(req.sender_id);
  if (!actor) return done(unauthorized("invalid_token", "unknown user"));
  auto t = direct_thread(*actor, req.username);
  if (!t) return done(t.error());
  req.thread_id = t->id;
  auto m = members(req.thread_id);
  if (!m) return done(internal_error());
  store_and_publish(std::move(req), std::move(m), std::move(done));
}

void ChatService::store_and_publish(SendRequest req, std::shared_ptr<const ThreadMembers> members, SendCallback done) {
  AppendRequest append{req.thread_id, req.sender_id, std::move(req.content), std::move(req.message_type),
                       std::move(req.client_msg_id)};
  std::string origin = std::move(req.origin_session);
  auto recipients = std::shared_ptr<const std::vector<std::string>>(members, &members->user_ids);
  store_.append(std::move(append), [this, origin = std::move(origin), recipients = std::move(recipients),
                                    done = std::move(done)](Result<AppendResult> r) {
    if (!r) return done(r.error());
    SendOutcome out;
    out.message = std::move(r->message);
    out.duplicate = r->duplicate;
    out.message_json = json::serialize(message_json(out.message));
    if (!out.duplicate) {
      Metrics::get().messages_in.fetch_add(1, std::memory_order_relaxed);
      auto ev = std::make_shared<BusEvent>();
      ev->thread_id = out.message.thread_id;
      ev->recipients = recipients;
      ev->shared_recipients = true;
      ev->type = "new_message";
      ev->payload = out.message_json;
      ev->payload_is_data = true;
      ev->message_id = out.message.id;
      ev->exclude_session = origin;
      ev->seq = out.message.seq;
      bus_.publish(std::move(ev));
    }
    done(std::move(out));
  });
}

Result<std::vector<Message>> ChatService::history(const User& actor, const std::string& thread_id,
                                                  const HistoryQuery& q) {
  auto m = require_member(actor.id, thread_id);
  if (!m) return m.error();
  if (q.limit < 1 || q.limit > 200) return bad_input("invalid_limit", "limit must be between 1 and 200");
  auto ms = q.after_seq >= 0 ? store_.messages_after(thread_id, q.after_seq, q.limit)
                             : store_.messages_before(thread_id, q.before_seq, q.limit);
  if (auto t = store_.thread(thread_id)) {
    std::vector<Message*> ptrs;
    for (auto& m : ms) ptrs.push_back(&m);
    annotate(*t, std::move(ptrs));
  }
  return ms;
}

Result<std::vector<Message>> ChatService::replay(const std::string& user_id, const std::string& thread_id,
                                                 int64_t since_seq, int limit) {
  auto m = require_member(user_id, thread_id);
  if (!m) return m.error();
  return store_.messages_after(thread_id, since_seq, limit);
}

Result<OfflinePage> ChatService::offline_messages(const User& actor, Micros since) {
  return store_.messages_since(actor.id, since, 500);
}

std::vector<UnreadCount> ChatService::unread_counts(const User& actor) { return store_.unread_counts(actor.id); }

Result<int64_t> ChatService::mark_read(const std::string& user_id, const std::string& thread_id, int64_t up_to_seq,
                                       const std::string& origin_session) {
  auto m = require_member(user_id, thread_id);
  if (!m) return m.error();
  auto seq = store_.mark_read(thread_id, user_id, up_to_seq);
  if (!seq) return seq;
  auto ev = std::make_shared<BusEvent>();
  ev->thread_id = thread_id;
  ev->recipients = std::shared_ptr<const std::vector<std::string>>(*m, &(*m)->user_ids);
  ev->shared_recipients = true;
  ev->type = "read_receipt";
  ev->payload = json::serialize(json::object{{"thread_id", thread_id}, {"user_id", user_id}, {"seq", *seq}});
  ev->exclude_session = origin_session;
  bus_.publish(std::move(ev));
  return seq;
}

Status ChatService::relay(const std::string& user_id, const std::string& thread_id, const std::string& type,
                          json::object fields, const std::string& origin_session) {
  auto m = require_member(user_id, thread_id);
  if (!m) return m.error();
  auto others = std::make_shared<std::vector<std::string>>();
  bool anyone_online = false;
  for (const auto& id : (*m)->user_ids) {
    if (id == user_id) continue;
    others->push_back(id);
    anyone_online = anyone_online || presence_.online(id);
  }
  if (type == "call_offer" && !anyone_online)
    return Error{ErrorKind::kNotFound, "callee_offline", "nobody else in this thread is online to take the call"};
  fields["thread_id"] = thread_id;
  auto ev = std::make_shared<BusEvent>();
  ev->thread_id = thread_id;
  ev->recipients = std::move(others);
  ev->type = type;
  ev->payload = json::serialize(fields);
  ev->exclude_session = origin_session;
  bus_.publish(std::move(ev));
  return Ok{};
}

// ---------------------------------------------------------------- receipts and presence

Status ChatService::acknowledge_delivery(const std::string& user_id, const std::string& message_id) {
  auto msg = store_.message(message_id);
  // An unknown message and one in someone else's thread get the same answer.
  if (!msg) return not_yours();
  auto m = require_member(user_id, msg->thread_id);
  if (!m) return m.error();
  if (msg->sender_id == user_id) return Ok{};  // one's own message: nothing to tell
  auto before = store_.mark_delivered(msg->thread_id, user_id, msg->seq);
  if (!before) return before.error();
  auto ev = std::make_shared<BusEvent>();
  ev->thread_id = msg->thread_id;
  ev->recipients = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{msg->sender_id});
  ev->type = "message_delivered";
  ev->payload = json::serialize(
      json::object{{"message_id", msg->id}, {"thread_id", msg->thread_id}, {"user_id", user_id}, {"seq", msg->seq}});
  bus_.publish(std::move(ev));
  return Ok{};
}

void ChatService::announce_presence(const std::string& user_id, bool online) {
  Micros seen = now_micros();
  if (!online) store_.set_last_seen(user_id, seen);
  auto contacts = store_.contacts(user_id);
  if (contacts.empty()) return;
  auto ev = std::make_shared<BusEvent>();
  ev->recipients = std::make_shared<const std::vector<std::string>>(std::move(contacts));
  ev->type = "presence";
  ev->payload =
      json::serialize(json::object{{"user_id", user_id}, {"online", online}, {"last_seen", iso8601_millis(seen)}});
  bus_.publish(std::move(ev));
  spdlog::debug("event=presence user_id={} online={}", user_id, online);
}

Result<ChatService::PresenceInfo> ChatService::presence_of(const std::string& user_id) {
  auto u = store_.user_by_id(user_id);
  if (!u) return not_found("user_not_found", "no such user");
  return PresenceInfo{presence_.online(user_id), u->last_seen};
}

}  // namespace parley
