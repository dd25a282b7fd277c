// group create and group add: group threads over REST, members named by
// username (looked up) or by user id.
#include <algorithm>
#include <cctype>

#include "cli/commands.h"
#include "cli/errors.h"
#include "cli/output.h"
#include "cli/pretty.h"
#include "cli/thread_ref.h"
#include "common/utf8.h"

namespace parley::cli {

namespace {

bool looks_like_uuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The user id of a username (exact match of GET /api/users?search=), or the
// id itself. Throws user_not_found.
awaitable<std::string> user_id_of(HttpClient& http, const std::string& who) {
  if (looks_like_uuid(who)) co_return lowercase(who);
  std::string name = lowercase(who);
  json::value found = co_await http.get("/api/users?search=" + url_encode(name));
  const json::array* users = found.is_object() ? get_array(found.as_object(), "users") : nullptr;
  for (size_t i = 0; users && i < users->size(); ++i) {
    const json::object* u = (*users)[i].if_object();
    if (u && get_string(*u, "username") == name) co_return get_string(*u, "id");
  }
  throw server_error("user_not_found", "no user named \"" + who + "\"");
}

void print_thread(const Context& ctx, const json::value& thread, const std::string& self) {
  if (ctx.pretty && thread.is_object()) {
    print_line(pretty_thread(thread.as_object(), self));
  } else {
    print_json_line(thread);
  }
}

awaitable<std::string> own_id(HttpClient& http) {
  json::value me = co_await http.get("/api/users/me");
  co_return me.is_object() ? get_string(me.as_object(), "id") : "";
}

}  // namespace

awaitable<int> group_create(Context& ctx, GroupCreateOptions options) {
  // The server would say "leave it out" of a title with nothing visible in
  // it, which --title (required) cannot; "" is the way to no title.
  if (!options.title.empty() && !has_visible_text(options.title))
    throw usage_error("invalid_title", "--title is blank: give the group a name, or --title \"\" for none");
  ctx.require_token();
  HttpClient http = ctx.http();
  json::array usernames, ids;
  for (const std::string& m : options.members) {
    if (m.empty()) continue;
    (looks_like_uuid(m) ? ids : usernames).emplace_back(lowercase(m));
  }
  json::object body;
  body["type"] = "group";
  body["title"] = options.title;
  body["usernames"] = std::move(usernames);
  body["participant_ids"] = std::move(ids);
  json::value thread = co_await http.post("/api/chat/threads", std::move(body));
  std::string self;
  if (ctx.pretty) self = co_await own_id(http);
  print_thread(ctx, thread, self);
  co_return 0;
}

awaitable<int> group_add(Context& ctx, GroupAddOptions options) {
  ctx.require_token();
  HttpClient http = ctx.http();
  if (std::all_of(options.members.begin(), options.members.end(), [](const std::string& m) { return m.empty(); }))
    throw usage_error("missing_field", "name at least one user to add");
  std::string thread = co_await resolve_thread(http, options.thread_id);
  json::array ids;
  for (const std::string& m : options.members) {
    if (m.empty()) continue;
    std::string id = co_await user_id_of(http, m);
    ids.emplace_back(id);
  }
  json::object body;
  body["participant_ids"] = std::move(ids);
  json::value updated = co_await http.post("/api/chat/threads/" + url_encode(thread) + "/participants", std::move(body));
  std::string self;
  if (ctx.pretty) self = co_await own_id(http);
  print_thread(ctx, updated, self);
  co_return 0;
}

}  // namespace parley::cli
