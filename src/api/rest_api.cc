#include "api/rest_api.h"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

#include "common/bearer.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "common/utf8.h"
#include "common/wait.h"
#include "protocol/client_frame.h"
#include "protocol/json_fields.h"
#include "protocol/encode.h"
#include "api/web_app.h"
#include "auth/identity.h"

namespace parley {

namespace json = boost::json;

// ---------------------------------------------------------------- query strings

static std::string decode(const std::string& s, bool plus_is_space, bool keep_slashes) {
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
      const char c = static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      if (c == '/' && keep_slashes) out.append(s, i, 3);
      else out.push_back(c);
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string percent_decode(const std::string& s, bool plus_is_space) { return decode(s, plus_is_space, false); }
std::string decode_path(const std::string& path) { return decode(path, false, true); }

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

static bool query_is_utf8(const std::map<std::string, std::string>& query) {
  for (const auto& [key, value] : query)
    if (!utf8_length(key) || !utf8_length(value)) return false;
  return true;
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
  HttpResponse r;
  r.status = http_status(e.kind);
  r.body = encode_error_body(e);
  return r;
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

// A request body: a JSON object (or, with allow_empty, nothing at all).
Result<json::object> body_object(const std::string& text, bool allow_empty = false) {
  if (allow_empty && text.find_first_not_of(" \t\r\n") == std::string::npos) return json::object{};
  return parse_json_object(text);
}

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

// ---------------------------------------------------------------- routes

// One request being handled: what the route functions get.
struct Call {
  ChatService& chat;
  const HealthInfo& health;
  int64_t started_at;
  const HttpRequest& req;
  const std::vector<std::string>& parts;  // the path's segments
  const User* user = nullptr;              // the caller; null on public routes
  std::string thread_id{};                 // /api/chat/threads/:id/…: the normalised id
};

HttpResponse root(Call&) {
  HttpResponse r;
  r.content_type = "text/plain; charset=utf-8";
  r.body = "Parley chat server running";
  return r;
}

HttpResponse health(Call& c) {
  // A node whose bus is down still serves its own clients: it stays "ok"
  // for load balancers, and says the bus is degraded. A store that cannot
  // write or answer makes it 503 (a load balancer stops sending traffic here).
  bool bus_ok = !c.health.bus_ok || c.health.bus_ok();
  const Store::WriteState writes = c.chat.store().write_state();
  auto users = c.chat.store().user_count();
  const bool storage_ok = writes.ok && users.ok();
  json::object storage{{"kind", c.chat.store().describe()}, {"ok", storage_ok}};
  if (!writes.ok) storage["error"] = writes.error;
  else if (!users.ok()) storage["error"] = users.error().message;
  json::object o{{"status", storage_ok ? "ok" : "degraded"},
                 {"version", PARLEY_VERSION},
                 {"uptime_seconds", (now_micros() - c.started_at) / 1000000},
                 {"connections", c.health.connections ? c.health.connections() : 0},
                 {"users_online", c.health.users_online ? c.health.users_online() : 0},
                 {"users", users ? json::value(*users) : json::value(nullptr)},
                 // The web app offers "Create an account" only where it can work.
                 {"registration", c.chat.config().registration == "closed" ? "closed" : "open"},
                 {"storage", std::move(storage)},
                 {"bus", json::object{{"kind", c.health.bus}, {"ok", bus_ok}, {"state", bus_ok ? "ok" : "degraded"}}}};
  // The roles registration takes, when the server restricts them (--roles):
  // the web app's sign-up offers them as a choice.
  if (!c.chat.config().roles.empty()) {
    json::array roles;
    for (const std::string& r : c.chat.config().roles) roles.emplace_back(r);
    o["roles"] = std::move(roles);
  }
  // A draining server (graceful shutdown) answers 503 whatever else holds, so
  // a load balancer stops sending it new clients while it finishes.
  if (c.health.draining && c.health.draining()) {
    o["status"] = "draining";
    return json_response(503, o);
  }
  return json_response(storage_ok ? 200 : 503, o);
}

HttpResponse metrics(Call& c) {
  if (!c.chat.config().metrics_enabled) return failure(not_found("not_found", "metrics are disabled"));
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = Metrics::get().render();
  return r;
}

HttpResponse register_user(Call& c) {
  if (c.chat.config().registration == "closed")
    return failure(Error{ErrorKind::kForbidden, "registration_closed",
                         "registration is closed on this server; ask its administrator for an account"});
  auto body = body_object(c.req.body);
  if (!body) return failure(body.error());
  JsonFields b(*body);
  RegisterRequest r;
  r.username = b.string("username", Need::kRequired);
  r.password = b.string("password", Need::kRequired);
  r.full_name = b.string("full_name", Need::kRequired);
  r.role = b.string("role", Need::kOptional);
  // "" is a form's empty optional field: no number, as null is.
  if (auto phone = b.string("phone_number", Need::kOptional); !phone.empty()) r.phone_number = std::move(phone);
  if (b.error()) return failure(*b.error());
  auto a = c.chat.register_user(r, c.req.remote_address);
  if (!a) return failure(a.error());
  return success(201, auth_json(*a));
}

HttpResponse login(Call& c) {
  auto body = body_object(c.req.body);
  if (!body) return failure(body.error());
  JsonFields b(*body);
  std::string login = b.has("username") ? b.string("username", Need::kRequired) : b.string("phone_number", Need::kOptional);
  std::string password = b.string("password", Need::kRequired);
  if (!b.error() && login.empty()) return failure(bad_input("missing_field", "missing field: username or phone_number"));
  if (b.error()) return failure(*b.error());
  auto a = c.chat.login(login, password, c.req.remote_address);
  if (!a && a.error().code == "rate_limited" && a.error().kind == ErrorKind::kRateLimited) {
    // The failures count over a sliding window: past it, the oldest have
    // left it for sure (maybe sooner). A client can show when to try again.
    HttpResponse r = failure(a.error());
    r.headers.emplace_back("Retry-After", std::to_string(c.chat.config().limits.login_window_seconds));
    return r;
  }
  if (!a) return failure(a.error());
  return success(200, auth_json(*a));
}

HttpResponse refresh(Call& c) {
  auto issued = c.chat.issue_token(*c.user);
  // The account is read again once the new token is signed: a revocation (or
  // a disabling) that committed after this request's token was checked would
  // otherwise be outlived by a token signed in the second it made valid.
  if (auto unchanged = c.chat.identity().unchanged_since(*c.user); !unchanged) return failure(unchanged.error());
  return success(200, auth_json(issued));
}

HttpResponse me(Call& c) { return success(200, user_json(*c.user)); }

HttpResponse search_users(Call& c) {
  auto it = c.req.query.find("search");
  std::string q = it == c.req.query.end() ? "" : it->second;
  // A NUL would end SQLite's LIKE pattern early (and match everyone); no name has a control character.
  if (has_control_chars(q)) return failure(bad_input("invalid_field", "search must not contain control characters"));
  auto found = c.chat.search_users(*c.user, q, 50);
  if (!found) return failure(found.error());
  json::array arr;
  for (const auto& u : *found) arr.push_back(user_json(u));
  return success(200, json::object{{"users", std::move(arr)}});
}

HttpResponse presence(Call& c) {
  if (!is_uuid(c.parts[2])) return failure(not_found("user_not_found", "no such user"));
  std::string id = normalize_uuid(c.parts[2]);
  auto p = c.chat.presence_of(*c.user, id);
  if (!p) return failure(p.error());
  return success(200, json::object{{"user_id", id},
                                   {"online", p->online},
                                   {"last_seen", p->last_seen ? json::value(iso8601_millis(p->last_seen))
                                                              : json::value(nullptr)}});
}

HttpResponse user_by_id(Call& c) {
  if (!is_uuid(c.parts[2])) return failure(not_found("user_not_found", "no such user"));
  auto u = c.chat.user_as_seen_by(*c.user, normalize_uuid(c.parts[2]));
  if (!u) return failure(u.error());
  return success(200, user_json(*u));
}

HttpResponse create_thread(Call& c) {
  auto body = body_object(c.req.body);
  if (!body) return failure(body.error());
  JsonFields b(*body);
  ChatService::CreateThreadRequest r;
  r.type = b.string("type", Need::kRequired);
  r.participant_ids = b.strings("participant_ids");
  r.usernames = b.strings("usernames");
  r.title = b.string("title", Need::kOptional);
  if (b.error()) return failure(*b.error());
  auto t = c.chat.create_thread(*c.user, r);
  if (!t) return failure(t.error());
  return success(t->created ? 201 : 200, thread_json(t->thread));
}

HttpResponse list_threads(Call& c) {
  auto threads = c.chat.threads(*c.user);
  if (!threads) return failure(threads.error());
  json::array arr;
  for (const auto& s : *threads) arr.push_back(summary_json(s));
  return success(200, json::object{{"threads", std::move(arr)}});
}

HttpResponse get_thread(Call& c) {
  auto t = c.chat.thread(*c.user, c.thread_id);
  if (!t) return failure(t.error());
  return success(200, thread_json(*t));
}

HttpResponse add_participants(Call& c) {
  auto body = body_object(c.req.body);
  if (!body) return failure(body.error());
  JsonFields b(*body);
  auto ids = b.strings("participant_ids");
  auto names = b.strings("usernames");
  if (!b.error() && ids.empty() && names.empty())
    return failure(bad_input("missing_field", "missing field: participant_ids (or usernames)"));
  if (b.error()) return failure(*b.error());
  auto t = c.chat.add_participants(*c.user, c.thread_id, ids, names);
  if (!t) return failure(t.error());
  return success(200, thread_json(*t));
}

HttpResponse remove_participant(Call& c) {
  // One that is no id is no member, found so by the service after its
  // checks of the caller: a non-member gets 403 whatever the path names.
  std::string user_id = is_uuid(c.parts[5]) ? normalize_uuid(c.parts[5]) : std::string(c.parts[5]);
  auto st = c.chat.remove_participant(*c.user, c.thread_id, user_id);
  if (!st) return failure(st.error());
  return success(200, json::object{{"thread_id", c.thread_id}, {"user_id", user_id}});
}

HttpResponse history(Call& c) {
  HistoryQuery q;
  for (auto [key, target] : {std::pair{"before_seq", &q.before_seq}, std::pair{"after_seq", &q.after_seq}}) {
    auto it = c.req.query.find(key);
    if (it == c.req.query.end() || it->second.empty()) continue;
    auto v = parse_int(it->second);
    if (!v || *v < 0 || *v > kMaxSeq) return failure(bad_input("invalid_field", std::string(key) + " " + seq_range_text()));
    *target = *v;
  }
  // Empty, as the cursors: an app filling the template ?before_seq=&after_seq=&limit= gets the default.
  if (auto it = c.req.query.find("limit"); it != c.req.query.end() && !it->second.empty()) {
    auto v = parse_int(it->second);
    if (!v) return failure(bad_input("invalid_limit", "limit must be between 1 and 200"));
    q.limit = static_cast<int>(std::clamp<int64_t>(*v, -1, 1000));
  }
  auto ms = c.chat.history(*c.user, c.thread_id, q);
  if (!ms) return failure(ms.error());
  return success(200, messages_json(*ms));
}

HttpResponse send_message(Call& c) {
  auto body = body_object(c.req.body);
  if (!body) return failure(body.error());
  JsonFields b(*body);
  SendRequest s;
  s.sender_id = c.user->id;
  s.thread_id = c.thread_id;
  s.content = b.has("content") ? b.string("content", Need::kRequired) : b.string("text", Need::kOptional);
  if (!b.error() && !b.has("content") && !b.has("text")) return failure(bad_input("missing_field", "missing field: content"));
  if (b.has("message_type")) s.message_type = b.string("message_type", Need::kOptional);
  s.client_msg_id = b.string("client_msg_id", Need::kOptional);
  if (b.error()) return failure(*b.error());
  auto r = wait_for_callback<Result<SendOutcome>>([&](SendCallback done) { c.chat.send(std::move(s), std::move(done)); });
  if (!r) return failure(r.error());
  return success(r->duplicate ? 200 : 201, json::parse(r->message_json));
}

// A time with an offset put into a URL unencoded (`?last_check_time=${t}`
// with Python's isoformat(), as apps do) arrives with its "+" read as a
// space (form encoding): a space before the offset is taken as the "+" it was.
std::optional<Micros> parse_query_time(std::string text) {
  if (auto t = parse_iso8601(text)) return t;
  size_t space = text.rfind(' ');
  if (space == std::string::npos || space <= 10) return std::nullopt;  // past the date: the offset's
  text[space] = '+';
  return parse_iso8601(text);
}

HttpResponse offline_messages(Call& c) {
  Micros since = 0;
  if (auto it = c.req.query.find("last_check_time"); it != c.req.query.end() && !it->second.empty()) {
    auto t = parse_query_time(it->second);
    if (!t) return failure(bad_input("invalid_field", "last_check_time must be an ISO 8601 time"));
    since = *t;
  }
  auto page = c.chat.offline_messages(*c.user, since);
  if (!page) return failure(page.error());
  json::object data = messages_json(page->messages);
  data["count"] = page->messages.size();
  data["last_check_time"] = iso8601_micros(page->cursor);
  data["has_more"] = page->has_more;
  return success(200, std::move(data));
}

HttpResponse unread_count(Call& c) {
  auto counts = c.chat.unread_counts(*c.user);
  if (!counts) return failure(counts.error());
  int64_t total = 0;
  json::array arr;
  for (const auto& u : *counts) {
    total += u.unread_count;
    arr.push_back(json::object{{"thread_id", u.thread_id}, {"unread_count", u.unread_count}});
  }
  return success(200, json::object{{"unread_count", total}, {"threads", std::move(arr)}});
}

HttpResponse mark_read(Call& c) {
  if (!is_uuid(c.parts[3])) return failure(thread_not_found_or_forbidden());
  std::string thread_id = normalize_uuid(c.parts[3]);
  int64_t up_to = kAllSeqs;
  // Or in the body, as the WebSocket's mark_as_read carries it: ignoring it
  // would mark the whole thread read. A bad body is refused even when the
  // query gives the mark, which then wins.
  auto body = body_object(c.req.body, true);
  if (!body) return failure(body.error());
  JsonFields b(*body);
  if (auto v = b.seq("up_to_seq")) up_to = *v;
  if (b.error()) return failure(*b.error());
  if (auto it = c.req.query.find("up_to_seq"); it != c.req.query.end()) {
    auto v = parse_int(it->second);
    if (!v || *v < 0 || *v > kMaxSeq) return failure(bad_input("invalid_field", "up_to_seq " + seq_range_text()));
    up_to = *v;
  }
  auto seq = c.chat.mark_read(c.user->id, thread_id, up_to);
  if (!seq) return failure(seq.error());
  // data is the read state; the top-level thread_id and user_id are the contract's (section 2), nothing more.
  return success(200, json::object{{"thread_id", thread_id}, {"user_id", c.user->id}, {"last_read_seq", *seq}},
                 json::object{{"thread_id", thread_id}, {"user_id", c.user->id}});
}

// CONTRACT section 8. An id that is not a UUID gets the same answer as a
// message the caller may not change.
HttpResponse delete_message(Call& c) {
  if (!is_uuid(c.parts[3])) return failure(forbidden("message not found or you may not change it"));
  auto m = c.chat.delete_message(c.user->id, normalize_uuid(c.parts[3]));
  if (!m) return failure(m.error());
  return success(200, message_json(*m));
}

HttpResponse edit_message(Call& c) {
  auto body = body_object(c.req.body);
  if (!body) return failure(body.error());
  JsonFields b(*body);
  std::string content = b.string("content", Need::kRequired);
  if (b.error()) return failure(*b.error());
  if (!is_uuid(c.parts[3])) return failure(forbidden("message not found or you may not change it"));
  auto m = c.chat.edit_message(c.user->id, normalize_uuid(c.parts[3]), content);
  if (!m) return failure(m.error());
  return success(200, message_json(*m));
}

// A WebSocket path asked for without an upgrade (a browser, curl): say what it is.
HttpResponse upgrade_required(Call&) {
  HttpResponse r;
  r.status = 426;
  r.headers.emplace_back("Upgrade", "websocket");  // RFC 9110 15.5.22: 426 names the protocol to switch to
  r.body = encode_error_body(bad_input(
      "upgrade_required", "this is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)"));
  return r;
}

// Delivery needs no subscription in Parley; these answer old clients.
HttpResponse subscribe(Call& c) {
  return success(200, json::object{{"user_id", c.user->id}},
                 json::object{{"message", "Subscribed to real-time messages"}, {"user_id", c.user->id}});
}

HttpResponse unsubscribe(Call& c) {
  return success(200, json::object{{"user_id", c.user->id}},
                 json::object{{"message", "Unsubscribed"}, {"user_id", c.user->id}});
}

// The route table (CONTRACT section 2): the first row whose method and
// pattern match handles the request; "*" matches any one segment.
struct Route {
  std::string_view method;
  std::vector<std::string_view> pattern;
  bool is_public;
  HttpResponse (*handler)(Call&);
};

const std::vector<Route>& routes() {
  static const std::vector<Route> table{
      {"GET", {}, true, root},
      {"GET", {"health"}, true, health},
      {"GET", {"metrics"}, true, metrics},
      {"GET", {"ws"}, true, upgrade_required},
      {"GET", {"api", "v1", "ws", "chat"}, true, upgrade_required},
      {"POST", {"api", "auth", "register"}, true, register_user},
      {"POST", {"api", "auth", "login"}, true, login},
      {"POST", {"api", "auth", "refresh"}, false, refresh},
      {"GET", {"api", "users", "me"}, false, me},
      {"GET", {"api", "users"}, false, search_users},
      {"GET", {"api", "users", "*", "presence"}, false, presence},
      {"GET", {"api", "users", "*"}, false, user_by_id},
      {"POST", {"api", "chat", "threads"}, false, create_thread},
      {"GET", {"api", "chat", "threads"}, false, list_threads},
      {"GET", {"api", "chat", "threads", "*"}, false, get_thread},
      {"POST", {"api", "chat", "threads", "*", "participants"}, false, add_participants},
      {"DELETE", {"api", "chat", "threads", "*", "participants", "*"}, false, remove_participant},
      {"GET", {"api", "chat", "threads", "*", "messages"}, false, history},
      {"POST", {"api", "chat", "threads", "*", "messages"}, false, send_message},
      {"GET", {"api", "chat", "offline-messages"}, false, offline_messages},
      {"GET", {"api", "chat", "unread-count"}, false, unread_count},
      {"POST", {"api", "chat", "mark-read", "*"}, false, mark_read},
      {"DELETE", {"api", "chat", "messages", "*"}, false, delete_message},
      {"PATCH", {"api", "chat", "messages", "*"}, false, edit_message},
      {"POST", {"api", "chat", "subscribe"}, false, subscribe},
      {"POST", {"api", "chat", "unsubscribe"}, false, unsubscribe},
  };
  return table;
}

bool path_matches(const Route& r, const std::vector<std::string>& parts) {
  if (r.pattern.size() != parts.size()) return false;
  for (size_t i = 0; i < parts.size(); ++i)
    if (r.pattern[i] != "*" && r.pattern[i] != parts[i]) return false;
  return true;
}

// HEAD is served by the GET route, without the body (the network layer drops it).
const Route* find_route(const std::string& method, const std::vector<std::string>& parts) {
  std::string_view wanted = method == "HEAD" ? std::string_view("GET") : std::string_view(method);
  for (const Route& r : routes()) {
    if (r.method == wanted && path_matches(r, parts)) return &r;
  }
  return nullptr;
}

std::string allowed_for(const std::vector<std::string>& parts) {
  // The web app's pages and files (api/web_app.h) are read, never written.
  if (!parts.empty() && parts[0] == "app") return "GET, HEAD, OPTIONS";
  std::vector<std::string_view> methods;
  for (const Route& r : routes()) {
    if (!path_matches(r, parts) || std::find(methods.begin(), methods.end(), r.method) != methods.end()) continue;
    methods.push_back(r.method);
    if (r.method == "GET") methods.push_back("HEAD");
  }
  if (methods.empty()) return "";
  std::string allow;
  for (std::string_view m : methods) allow.append(m).append(", ");
  return allow + "OPTIONS";
}

}  // namespace

// By the router's own split of the path, so every spelling that reaches
// register or login (`/api//auth/login`, a trailing slash) is counted.
bool RestApi::hashes_passwords(const HttpRequest& req) {
  if (req.method != "POST") return false;
  const auto parts = split_path(req.path);
  return parts.size() == 3 && parts[0] == "api" && parts[1] == "auth" &&
         (parts[2] == "register" || parts[2] == "login");
}

std::string RestApi::login_account(const HttpRequest& req) {
  if (req.method != "POST" || split_path(req.path) != std::vector<std::string>{"api", "auth", "login"}) return "";
  boost::system::error_code ec;
  auto body = json::parse(req.body, ec);
  if (ec || !body.is_object()) return "";
  for (const char* field : {"username", "phone_number"})
    if (const auto* v = body.as_object().if_contains(field); v && v->is_string())
      return login_text_key(std::string(v->as_string()));
  return "";
}

std::string RestApi::allowed_methods(const std::string& path) { return allowed_for(split_path(path)); }

RestApi::RestApi(ChatService& chat, HealthInfo health)
    : chat_(chat),
      health_(std::move(health)),
      started_at_(now_micros()),
      writes_(chat.config().limits.rest_writes_per_second, chat.config().limits.rest_write_burst) {}

HttpResponse RestApi::handle(const HttpRequest& req) {
  Metrics::get().http_requests.fetch_add(1, std::memory_order_relaxed);
  if (auto web = serve_web_app(req)) return std::move(*web);
  const auto parts = split_path(req.path);
  const Route* route = find_route(req.method, parts);
  Call call{chat_, health_, started_at_, req, parts, nullptr, {}};
  if (route && !utf8_length(req.path))
    return failure(bad_input("invalid_utf8", "the path is not valid UTF-8 once decoded"));
  if (route && !query_is_utf8(req.query))
    return failure(bad_input("invalid_utf8", "the query string is not valid UTF-8 once decoded"));
  if (route && route->is_public) return route->handler(call);
  // A known path with a method it does not serve: 405 before any
  // authentication, so a client learns its mistake, not that it needs a token.
  if (!route) {
    if (std::string allow = allowed_for(parts); !allow.empty()) {
      HttpResponse r = failure({ErrorKind::kBadInput, "method_not_allowed", req.method + " is not allowed here; use " + allow});
      r.status = 405;
      r.headers.emplace_back("Allow", std::move(allow));
      return r;
    }
  }

  // Before the token: checking one may provision its user (an external
  // issuer's token), which a request for nothing must not do.
  if (!route) return failure(not_found("not_found", "no such endpoint"));
  auto bearer = bearer_token(req.authorization);
  if (!bearer) return failure({ErrorKind::kUnauthorized, "unauthorized", "missing Authorization: Bearer token"});
  auto me = chat_.authenticate(std::string(*bearer));
  if (!me) return failure(me.error());
  call.user = &me->user;
  if (req.method != "GET" && req.method != "HEAD" && !writes_.admit(me->user.id, now_micros())) {
    HttpResponse r = failure({ErrorKind::kRateLimited, "rate_limited", "too many requests that change something; slow down"});
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }

  // Everything under /api/chat/threads/:id needs a well-formed id; a malformed
  // one gets the same answer as a thread the caller is not in.
  if (parts.size() >= 4 && parts[0] == "api" && parts[1] == "chat" && parts[2] == "threads") {
    if (!is_uuid(parts[3])) return failure(thread_not_found_or_forbidden());
    call.thread_id = normalize_uuid(parts[3]);
  }
  return route->handler(call);
}

}  // namespace parley
