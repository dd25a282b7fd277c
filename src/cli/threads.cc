// threads, history and mark-read: REST listings printed one item per line.
#include "cli/commands.h"
#include "cli/errors.h"
#include "cli/output.h"
#include "cli/pretty.h"
#include "cli/thread_ref.h"

namespace parley::cli {

namespace {

const json::array& listed(const json::value& data, std::string_view key) {
  static const json::array kEmpty;
  const json::object* o = data.if_object();
  const json::array* items = o ? get_array(*o, key) : nullptr;
  return items ? *items : kEmpty;
}

std::string history_path(const HistoryOptions& options) {
  std::string path = "/api/chat/threads/" + url_encode(options.thread_id) + "/messages";
  char sep = '?';
  if (options.limit) {
    path += sep + std::string("limit=") + std::to_string(*options.limit);
    sep = '&';
  }
  if (options.before_seq) path += sep + std::string("before_seq=") + std::to_string(*options.before_seq);
  return path;
}

// The pretty table names direct threads by the other participant.
awaitable<std::string> own_id(Context& ctx, HttpClient& http) {
  if (!ctx.pretty) co_return "";
  json::value me = co_await http.get("/api/users/me");
  co_return me.is_object() ? get_string(me.as_object(), "id") : "";
}

}  // namespace

awaitable<int> threads(Context& ctx) {
  ctx.require_token();
  HttpClient http = ctx.http();
  std::string self = co_await own_id(ctx, http);
  json::value data = co_await http.get("/api/chat/threads");
  for (const json::value& t : listed(data, "threads")) {
    if (ctx.pretty && t.is_object()) {
      print_line(pretty_thread(t.as_object(), self));
    } else {
      print_json_line(t);
    }
  }
  co_return 0;
}

awaitable<int> history(Context& ctx, HistoryOptions options) {
  ctx.require_token();
  HttpClient http = ctx.http();
  options.thread_id = co_await resolve_thread(http, options.thread_id);
  json::value data = co_await http.get(history_path(options));
  for (const json::value& m : listed(data, "messages")) {  // the server answers oldest first
    if (ctx.pretty && m.is_object()) {
      print_line(pretty_message(m.as_object(), true));
    } else {
      print_json_line(m);
    }
  }
  co_return 0;
}

// Prints {thread_id, last_read_seq}: the position the server now holds.
awaitable<int> mark_read(Context& ctx, MarkReadOptions options) {
  ctx.require_token();
  HttpClient http = ctx.http();
  std::string thread = co_await resolve_thread(http, options.thread_id);
  std::string path = "/api/chat/mark-read/" + url_encode(thread);
  if (options.up_to_seq) path += "?up_to_seq=" + std::to_string(*options.up_to_seq);
  json::value data = co_await http.post(path, json::object());
  const json::object* o = data.if_object();
  if (ctx.pretty && o) {
    auto seq = get_int(*o, "last_read_seq");
    print_line("#" + thread.substr(0, 8) + " read up to #" + (seq ? std::to_string(*seq) : std::string("?")));
  } else {
    print_json_line(data);
  }
  co_return 0;
}

}  // namespace parley::cli
