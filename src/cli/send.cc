// send: one message over the WebSocket, answered by message_sent or error.
// The client_msg_id is fixed before the first attempt, so when a connection
// breaks before the answer, sending again cannot store the message twice.
#include <chrono>

#include "cli/commands.h"
#include "cli/errors.h"
#include "cli/output.h"
#include "cli/pretty.h"
#include "cli/terminal.h"
#include "cli/thread_ref.h"
#include "cli/ws_client.h"
#include "common/ids.h"

namespace parley::cli {

namespace {

using namespace std::chrono_literals;

// A server restarting answers shutting_down for a few seconds: the waits
// between attempts add up to 5 s.
constexpr int kAttempts = 5;
constexpr std::chrono::seconds kConnectTimeout{10};
constexpr std::chrono::seconds kReplyTimeout{15};

std::string message_text(const SendOptions& o) {
  if (o.text.size() == 1 && o.text[0] == "-") return read_all_stdin();
  std::string text;
  for (const std::string& word : o.text) text += (text.empty() ? "" : " ") + word;
  return text;
}

json::object send_frame(const SendOptions& o, std::string content) {
  json::object f;
  f["type"] = "send_message";
  f["request_id"] = "cli-" + random_hex(8);
  if (!o.thread_id.empty()) {
    f["thread_id"] = o.thread_id;
  } else {
    f["username"] = o.to;
  }
  f["content"] = std::move(content);
  f["client_msg_id"] = o.client_msg_id.empty() ? "cli-" + new_uuid() : o.client_msg_id;
  if (!o.message_type.empty()) f["message_type"] = o.message_type;
  return f;
}

// The reply that echoes our request_id; everything else (presence, other
// threads' messages) is not for us.
json::object reply_message(const json::object& reply) {
  std::string type = get_string(reply, "type");
  if (type == "error") throw server_error(get_string(reply, "code"), get_string(reply, "message"));
  const json::object* data = get_object(reply, "data");
  if (type != "message_sent" || !data) throw server_error("bad_response", "send_message answered " + type);
  return *data;
}

awaitable<json::object> send_once(Context& ctx, const json::object& frame) {
  WsClient ws(ctx.executor);
  co_await ws.connect(ctx.endpoint, ctx.token, kConnectTimeout);
  ws.deadline(std::chrono::steady_clock::now() + kReplyTimeout);
  co_await ws.write(frame);
  std::string request_id = get_string(frame, "request_id");
  for (;;) {
    json::object reply = co_await ws.read();
    if (get_string(reply, "request_id") != request_id) continue;
    json::object message = reply_message(reply);
    co_await ws.close();
    co_return message;
  }
}

awaitable<void> sleep_for(asio::any_io_executor executor, std::chrono::milliseconds delay) {
  asio::steady_timer timer(executor, delay);
  co_await timer.async_wait(asio::use_awaitable);
}

// Worth sending again with the same client_msg_id: no answer came (the
// connection failed or was closed before it), or the server is restarting.
bool retryable(const CliError& e) {
  const std::string& code = e.code();
  return code == "connection_failed" || code == "connection_closed" || code == "shutting_down" ||
         code == "store_closed";
}

// The thread's full id; "" when the server could not answer now.
awaitable<std::string> thread_if_reachable(Context& ctx, const std::string& given) {
  std::string id;
  try {
    HttpClient http = ctx.http();
    id = co_await resolve_thread(http, given);
  } catch (const CliError& e) {
    if (!retryable(e)) throw;
  }
  co_return id;
}

}  // namespace

awaitable<int> send(Context& ctx, SendOptions options) {
  ctx.require_token();
  // A thread named by a prefix is looked up before the text is read (a
  // wrong one is said before a message typed on stdin is lost), and again
  // inside the loop if the server was restarting: waited for there as for
  // the send itself.
  bool resolved = options.thread_id.empty();
  if (!resolved) {
    std::string id = co_await thread_if_reachable(ctx, options.thread_id);
    if (!id.empty()) {
      options.thread_id = id;
      resolved = true;
    }
  }
  json::object frame = send_frame(options, message_text(options));
  const std::string client_msg_id = get_string(frame, "client_msg_id");
  for (int attempt = 1;; ++attempt) {
    std::string failure;
    try {
      if (!resolved) {
        HttpClient http = ctx.http();
        frame["thread_id"] = co_await resolve_thread(http, options.thread_id);
        resolved = true;
      }
      json::object message = co_await send_once(ctx, frame);
      // The server answers a client_msg_id it has already stored with that
      // message: a retry's answer, or another message's if the id was reused
      // (an edit since, or a deletion, also changes the text: not a reuse).
      const json::value* edited = message.if_contains("edited_at");
      const json::value* deleted = message.if_contains("deleted");
      const bool changed_since = (edited && !edited->is_null()) || (deleted && deleted->is_bool() && deleted->get_bool());
      if (!changed_since && get_string(message, "content") != get_string(frame, "content"))
        throw server_error("client_msg_id_reused", "client_msg_id " + client_msg_id +
                                                       " already names a stored message with other text (seq " +
                                                       std::to_string(get_int(message, "seq").value_or(0)) +
                                                       "); nothing new was stored");
      ctx.pretty ? print_line(pretty_message(message)) : print_json_line(message);
      co_return 0;
    } catch (const CliError& e) {
      if (!retryable(e)) throw;
      if (attempt == kAttempts) {
        // Before its thread was found, nothing was sent.
        if (resolved) {
          note("the message may have been stored: send it again with --client-msg-id " + client_msg_id +
               " (it is then stored once)");
        }
        throw;
      }
      failure = e.what();
    }
    note(failure + "; trying again with the same client_msg_id " + client_msg_id);
    co_await sleep_for(ctx.executor, attempt * 500ms);
  }
}

}  // namespace parley::cli
