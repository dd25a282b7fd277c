// login, register and whoami.
#include "cli/commands.h"
#include "cli/errors.h"
#include "cli/output.h"
#include "cli/pretty.h"
#include "cli/terminal.h"

namespace parley::cli {

namespace {

void print_user(const Context& ctx, const json::value& user) {
  const json::object* o = user.if_object();
  if (ctx.pretty && o) {
    print_line(pretty_user(*o));
  } else {
    print_json_line(user);
  }
}

// An empty line at the prompt (or an empty stdin) is no password: said
// here, where the server would answer "wrong username or password".
std::string password_of(const std::optional<std::string>& given) {
  std::string password = given ? *given : read_password("Password: ");
  if (password.empty())
    throw usage_error("missing_password", given ? "--password is empty"
                                                : "no password given (type it at the prompt, pipe one line, or pass --password)");
  return password;
}

json::object login_body(const LoginOptions& options) {
  json::object body;
  if (!options.phone.empty()) {
    body["phone_number"] = options.phone;
  } else {
    body["username"] = options.username;
  }
  body["password"] = password_of(options.password);
  return body;
}

// Keeps the positions of earlier listens: they are per user, so they stay
// right whoever logs in.
void remember_login(Context& ctx, const json::object& data) {
  CliConfig config = load_config(ctx.config_path);
  config.server = ctx.server_url;
  config.token = get_string(data, "token");
  config.expires_at = get_string(data, "expires_at");
  const json::object* user = get_object(data, "user");
  config.user = user ? *user : json::object();
  save_config(ctx.config_path, config);
}

}  // namespace

awaitable<int> login(Context& ctx, LoginOptions options) {
  json::object body = login_body(options);
  HttpClient anonymous(ctx.executor, ctx.endpoint, "");
  json::value data = co_await anonymous.post("/api/auth/login", std::move(body));
  const json::object* o = data.if_object();
  if (!o || get_string(*o, "token").empty()) throw server_error("bad_response", "login answered no token");
  remember_login(ctx, *o);
  const json::value* user = o->if_contains("user");
  print_user(ctx, user ? *user : json::value(nullptr));
  co_return 0;
}

awaitable<int> register_user(Context& ctx, RegisterOptions options) {
  json::object body;
  body["username"] = options.username;
  body["password"] = password_of(options.password);
  body["full_name"] = options.full_name;
  if (!options.phone.empty()) body["phone_number"] = options.phone;
  if (!options.role.empty()) body["role"] = options.role;
  HttpClient anonymous(ctx.executor, ctx.endpoint, "");
  json::value data = co_await anonymous.post("/api/auth/register", std::move(body));
  const json::object* o = data.if_object();
  if (!o || get_string(*o, "token").empty()) throw server_error("bad_response", "register answered no token");
  remember_login(ctx, *o);  // registered is logged in, as with the web client
  const json::value* user = o->if_contains("user");
  print_user(ctx, user ? *user : json::value(nullptr));
  co_return 0;
}

awaitable<int> whoami(Context& ctx) {
  ctx.require_token();
  HttpClient http = ctx.http();
  json::value me = co_await http.get("/api/users/me");
  print_user(ctx, me);
  co_return 0;
}

}  // namespace parley::cli
