#include "api/rest_api.h"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <future>
#include <vector>

#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "protocol/client_frame.h"
#include "protocol/encode.h"

namespace parley {

namespace json = boost::json;

// ---------------------------------------------------------------- query strings

std::string percent_decode(const std::string& s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(const std::string& q) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos <= q.size()) {
    size_t amp = q.find('&', pos);
    if (amp == std::string::npos) amp = q.size();
    std::string part = q.substr(pos, amp - pos);
    if (!part.empty()) {
      size_t eq = part.find('=');
      std::string k = percent_decode(part.substr(0, eq), true);
      std::string v = eq == std::string::npos ? "" : percent_decode(part.substr(eq + 1), true);
      out.emplace(std::move(k), std::move(v));
    }
    pos = amp + 1;
  }
  return out;
}

// ---------------------------------------------------------------- responses

namespace {

HttpResponse json_response(int status, const json::object& o) {
  HttpResponse r;
  r.status = status;
  r.body = json::serialize(o);
  return r;
}

HttpResponse success(int status, json::value data, json::object extra = {}) {
  json::object o;
  o["status"] = "success";
  o["data"] = std::move(data);
  for (auto& kv : extra) o.emplace(kv.key(), std::move(kv.value()));
  return json_response(status, o);
}

HttpResponse failure(const Error& e) {
  Metrics::get().count_error(e.code);
  return json_response(http_status(e.kind), json::object{{"status", "error"}, {"code", e.code}, {"message", e.message}});
}

json::object auth_json(const AuthResult& a) {
  return json::object{{"token", a.token}, {"user", user_json(a.user)}, {"expires_at", iso8601_millis(a.expires_at)}};
}

json::object messages_json(const std::vector<Message>& ms) {
  json::array arr;
  arr.reserve(ms.size());
  for (const auto& m : ms) arr.push_back(message_json(m));
  return json::object{{"messages", std::move(arr)}};
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    if (slash > pos) parts.push_back(path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  return parts;
}

// Reads a JSON request body field by field, remembering the first error.
class Body {
 public:
  explicit Body(const std::string& text, bool allow_empty = false) {
    if (allow_empty && text.find_first_not_of(" \t\r\n") == std::string::npos) return;
    auto parsed = parse_json_object(text);
    if (parsed) obj_ = std::move(*parsed);
    else error_ = parsed.error();
  }
  const std::optional<Error>& error() const { return error_; }
  bool has(std::string_view key) const { return obj_.if_contains(key) && !obj_.at(key).is_null(); }

  std::string str(std::string_view key, bool required) {
    const json::value* v = obj_.if_contains(key);
    if (!v || v->is_null()) {
      if (required) fail(bad_input("missing_field", "missing field: " + std::string(key)));
      return "";
    }
    if (!v->is_string()) {
      fail(bad_input("invalid_field", "field " + std::string(key) + " must be a string"));
      return "";
    }
    return std::string(v->get_string());
  }

  std::vector<std::string> strings(std::string_view key) {
    std::vector<std::string> out;
    const json::value* v = obj_.if_contains(key);
    if (!v || v->is_null()) return out;
    if (!v->is_array()) {
      fail(bad_input("invalid_field", "field " + std::string(key) + " must be an array of strings"));
      return out;
    }
    for (const auto& e : v->get_array()) {
      if (!e.is_string()) {
        fail(bad_input("invalid_field", "field " + std::string(key) + " must be an array of strings"));
        return {};
      }
      out.emplace_back(e.get_string());
    }
    return out;
  }

 private:
  void fail(Error e) {
    if (!error_) error_ = std::move(e);
  }
  json::object obj_;
  std::optional<Error> error_;
};

std::optional<int64_t> parse_int(const std::string& s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  int64_t v = 0;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    v = v * 10 + (s[i] - '0');
  }
  return s[0] == '-' ? -v : v;
}

}  // namespace

// ---------------------------------------------------------------- routes

RestApi::RestApi(ChatService& chat, HealthInfo health)
    : chat_(chat), health_(std::move(health)), started_at_(now_micros()) {}

HttpResponse RestApi::handle(const HttpRequest& req) {
  Metrics::get().http_requests.fetch_add(1, std::memory_order_relaxed);
  const auto parts = split_path(req.path);
  const std::string& m = req.method;
  auto route = [&](std::string_view method, std::initializer_list<std::string_view> pattern) {
    if (m != method || parts.size() != pattern.size()) return false;
    size_t i = 0;
    for (auto p : pattern) {
      if (p != "*" && p != parts[i]) return false;
      ++i;
    }
    return true;
  };

  // ---- public
  if (route("GET", {})) {
    HttpResponse r;
    r.content_type = "text/plain; charset=utf-8";
    r.body = "Parley chat server running";
    return r;
  }
  if (route("GET", {"health"})) {
    // A store that cannot answer makes /health say so (503), not count 0 users.
    auto users = chat_.store().user_count();
    json::object o{{"status", users ? "ok" : "degraded"},
                   {"version", PARLEY_VERSION},
                   {"uptime_seconds", (now_micros() - started_at_) / 1000000},
                   {"connections", health_.connections ? health_.connections() : 0},
                   {"users_online", health_.users_online ? health_.users_online() : 0},
                   {"users", users ? json::value(*users) : json::value(nullptr)},
                   {"storage", json::object{{"kind", chat_.store().describe()}, {"ok", users.ok()}}},
                   {"bus", json::object{{"kind", health_.bus}, {"ok", true}}}};
    return json_response(users ? 200 : 503, o);
  }
  if (route("GET", {"metrics"})) {
    if (!chat_.config().metrics_enabled) return failure(not_found("not_found", "metrics are disabled"));
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = Metrics::get().render();
    return r;
  }
  if (route("POST", {"api", "auth", "register"})) {
    Body b(req.body);
    RegisterRequest r;
    r.username = b.str("username", true);
    r.password = b.str("password", true);
    r.full_name = b.str("full_name", true);
    r.role = b.str("role", false);
    if (b.has("phone_number")) r.phone_number = b.str("phone_number", false);
    if (b.error()) return failure(*b.error());
    auto a = chat_.register_user(r);
    if (!a) return failure(a.error());
    return success(201, auth_json(*a));
  }
  if (route("POST", {"api", "auth", "login"})) {
    Body b(req.body);
    std::string login = b.has("username") ? b.str("username", true) : b.str("phone_number", false);
    std::string password = b.str("password", true);
    if (!b.error() && login.empty()) return failure(bad_input("missing_field", "missing field: username or phone_number"));
    if (b.error()) return failure(*b.error());
    auto a = chat_.login(login, password, req.remote_address);
    if (!a) return failure(a.error());
    return success(200, auth_json(*a));
  }

  // ---- authenticated
  const std::string prefix = "Bearer ";
  if (req.authorization.size() <= prefix.size() ||
      strncasecmp(req.authorization.c_str(), prefix.c_str(), prefix.size()) != 0) {
    bool known = parts.size() >= 1 && parts[0] == "api";
    if (!known) return failure(not_found("not_found", "no such endpoint"));
    return failure({ErrorKind::kUnauthorized, "unauthorized", "missing Authorization: Bearer token"});
  }
  auto me = chat_.authenticate(req.authorization.substr(prefix.size()));
  if (!me) return failure(me.error());
  const User& user = *me;

  if (route("POST", {"api", "auth", "refresh"})) return success(200, auth_json(chat_.issue_token(user)));
  if (route("GET", {"api", "users", "me"})) return success(200, user_json(user));
  if (route("GET", {"api", "users"})) {
    auto it = req.query.find("search");
    std::string q = it == req.query.end() ? "" : it->second;
    auto found = chat_.search_users(q, 50);
    if (!found) return failure(found.error());
    json::array arr;
    for (const auto& u : *found) arr.push_back(user_json(u));
    return success(200, json::object{{"users", std::move(arr)}});
  }
  if (route("GET", {"api", "users", "*", "presence"})) {
    if (!is_uuid(parts[2])) return failure(not_found("user_not_found", "no such user"));
    std::string id = normalize_uuid(parts[2]);
    auto p = chat_.presence_of(id);
    if (!p) return failure(p.error());
    return success(200, json::object{{"user_id", id},
                                     {"online", p->online},
                                     {"last_seen", p->last_seen ? json::value(iso8601_millis(p->last_seen))
                                                                : json::value(nullptr)}});
  }
  if (route("GET", {"api", "users", "*"})) {
    if (!is_uuid(parts[2])) return failure(not_found("user_not_found", "no such user"));
    auto u = chat_.user(normalize_uuid(parts[2]));
    if (!u) return failure(u.error());
    return success(200, user_json(*u));
  }
  if (route("POST", {"api", "chat", "threads"})) {
    Body b(req.body);
    ChatService::CreateThreadRequest r;
    r.type = b.str("type", true);
    r.participant_ids = b.strings("participant_ids");
    r.usernames = b.strings("usernames");
    r.title = b.str("title", false);
    if (b.error()) return failure(*b.error());
    auto t = chat_.create_thread(user, r);
    if (!t) return failure(t.error());
    return success(t->created ? 201 : 200, thread_json(t->thread));
  }
  if (route("GET", {"api", "chat", "threads"})) {
    auto threads = chat_.threads(user);
    if (!threads) return failure(threads.error());
    json::array arr;
    for (const auto& s : *threads) arr.push_back(summary_json(s));
    return success(200, json::object{{"threads", std::move(arr)}});
  }
  // Everything under /api/chat/threads/:id needs a well-formed id; a malformed
  // one gets the same answer as a thread the caller is not in.
  if (parts.size() >= 4 && parts[0] == "api" && parts[1] == "chat" && parts[2] == "threads" && !is_uuid(parts[3]))
    return failure(forbidden("thread not found or you are not a participant"));
  const std::string tid = parts.size() >= 4 ? normalize_uuid(parts[3]) : "";

  if (route("GET", {"api", "chat", "threads", "*"})) {
    auto t = chat_.thread(user, tid);
    if (!t) return failure(t.error());
    return success(200, thread_json(*t));
  }
  if (route("POST", {"api", "chat", "threads", "*", "participants"})) {
    Body b(req.body);
    auto ids = b.strings("participant_ids");
    if (!b.error() && ids.empty()) return failure(bad_input("missing_field", "missing field: participant_ids"));
    if (b.error()) return failure(*b.error());
    auto t = chat_.add_participants(user, tid, ids);
    if (!t) return failure(t.error());
    return success(200, thread_json(*t));
  }
  if (route("DELETE", {"api", "chat", "threads", "*", "participants", "*"})) {
    if (!is_uuid(parts[5])) return failure(not_found("not_a_participant", "that user is not in this thread"));
    auto st = chat_.remove_participant(user, tid, normalize_uuid(parts[5]));
    if (!st) return failure(st.error());
    return success(200, json::object{{"thread_id", tid}, {"user_id", normalize_uuid(parts[5])}});
  }
  if (route("GET", {"api", "chat", "threads", "*", "messages"})) {
    HistoryQuery q;
    for (auto [key, target] : {std::pair{"before_seq", &q.before_seq}, std::pair{"after_seq", &q.after_seq}}) {
      auto it = req.query.find(key);
      if (it == req.query.end() || it->second.empty()) continue;
      auto v = parse_int(it->second);
      if (!v || *v < 0) return failure(bad_input("invalid_field", std::string(key) + " must be a non-negative integer"));
      *target = *v;
    }
    if (auto it = req.query.find("limit"); it != req.query.end()) {
      auto v = parse_int(it->second);
      if (!v) return failure(bad_input("invalid_limit", "limit must be between 1 and 200"));
      q.limit = static_cast<int>(std::clamp<int64_t>(*v, -1, 1000));
    }
    auto ms = chat_.history(user, tid, q);
    if (!ms) return failure(ms.error());
    return success(200, messages_json(*ms));
  }
  if (route("POST", {"api", "chat", "threads", "*", "messages"})) {
    Body b(req.body);
    SendRequest s;
    s.sender_id = user.id;
    s.thread_id = tid;
    s.content = b.has("content") ? b.str("content", true) : b.str("text", false);
    if (!b.error() && !b.has("content") && !b.has("text"))
      return failure(bad_input("missing_field", "missing field: content"));
    if (b.has("message_type")) s.message_type = b.str("message_type", false);
    s.client_msg_id = b.str("client_msg_id", false);
    if (b.error()) return failure(*b.error());
    if (s.client_msg_id.size() > 128) return failure(bad_input("invalid_field", "client_msg_id is too long"));
    std::promise<Result<SendOutcome>> p;
    auto f = p.get_future();
    chat_.send(std::move(s), [&p](Result<SendOutcome> r) { p.set_value(std::move(r)); });
    auto r = f.get();
    if (!r) return failure(r.error());
    return success(r->duplicate ? 200 : 201, json::parse(r->message_json));
  }
  if (route("GET", {"api", "chat", "offline-messages"})) {
    Micros since = 0;
    if (auto it = req.query.find("last_check_time"); it != req.query.end() && !it->second.empty()) {
      auto t = parse_iso8601(it->second);
      if (!t) return failure(bad_input("invalid_field", "last_check_time must be an ISO 8601 time"));
      since = *t;
    }
    auto page = chat_.offline_messages(user, since);
    if (!page) return failure(page.error());
    json::object data = messages_json(page->messages);
    data["count"] = page->messages.size();
    data["last_check_time"] = iso8601_micros(page->cursor);
    data["has_more"] = page->has_more;
    return success(200, std::move(data));
  }
  if (route("GET", {"api", "chat", "unread-count"})) {
    auto counts = chat_.unread_counts(user);
    if (!counts) return failure(counts.error());
    int64_t total = 0;
    json::array arr;
    for (const auto& u : *counts) {
      total += u.unread_count;
      arr.push_back(json::object{{"thread_id", u.thread_id}, {"unread_count", u.unread_count}});
    }
    return success(200, json::object{{"unread_count", total}, {"threads", std::move(arr)}});
  }
  if (route("POST", {"api", "chat", "mark-read", "*"})) {
    if (!is_uuid(parts[3])) return failure(forbidden("thread not found or you are not a participant"));
    std::string thread_id = normalize_uuid(parts[3]);
    int64_t up_to = 0;
    if (auto it = req.query.find("up_to_seq"); it != req.query.end()) {
      auto v = parse_int(it->second);
      if (!v || *v < 0) return failure(bad_input("invalid_field", "up_to_seq must be a non-negative integer"));
      up_to = *v;
    }
    auto seq = chat_.mark_read(user.id, thread_id, up_to);
    if (!seq) return failure(seq.error());
    return success(200, json::object{{"thread_id", thread_id}, {"last_read_seq", *seq}},
                   json::object{{"message", "Messages marked as read"}, {"thread_id", thread_id}, {"user_id", user.id}});
  }
  if (route("POST", {"api", "chat", "subscribe"}) || route("POST", {"api", "chat", "unsubscribe"})) {
    bool sub = parts[2] == "subscribe";
    // Delivery needs no subscription in Parley; these answer old clients.
    return success(200, json::object{{"user_id", user.id}},
                   json::object{{"message", sub ? "Subscribed to real-time messages" : "Unsubscribed"},
                                {"user_id", user.id}});
  }
  return failure(not_found("not_found", "no such endpoint"));
}

}  // namespace parley
