// Fuzz target: an HTTP request as the server reads it. Beast's request
// parser with the server's limits, then the plain request the network layer
// builds (path and query percent-decoded), then the REST route table and
// handlers (src/api/rest_api) on a real chat service over SQLite in a
// temporary directory, without a network. The text @TOKEN@, @USER@ and
// @THREAD@ in an input stands for a valid token, its user's id and a thread
// it is in, so the authenticated routes are reached. Register and login
// (Argon2 hashing, ~100 ms each) are parsed but not run.
#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <memory>
#include <string>

#include "api/rest_api.h"
#include "auth/jwt.h"
#include "auth/password.h"
#include "bus/bus.h"
#include "chat/chat_service.h"
#include "common/config.h"
#include "store/store.h"

namespace http = boost::beast::http;

namespace {

// Limits as in src/net/http_session.cc.
constexpr size_t kHeaderLimit = 16 * 1024;
constexpr size_t kBodyLimit = 1000000;

struct World {
  std::string dir;
  parley::Config config;
  std::unique_ptr<parley::Store> store;
  std::unique_ptr<parley::Bus> bus;
  std::unique_ptr<parley::ChatService> chat;
  std::unique_ptr<parley::RestApi> api;
  std::string token, user_id, thread_id;

  World() {
    spdlog::set_level(spdlog::level::off);
    if (!parley::init_crypto()) std::abort();
    char tmpl[] = "/tmp/parley_http_fuzz_XXXXXX";
    if (!mkdtemp(tmpl)) std::abort();
    dir = tmpl;
    parley::StoreOptions options;
    options.data_dir = dir + "/data";
    auto opened = parley::open_sqlite_store(options);
    if (!opened) std::abort();
    store = std::move(*opened);
    bus = parley::make_local_bus();
    bus->set_receiver([](const parley::BusEventPtr&) {});
    auto jwt = parley::JwtVerifier::create("fuzz-secret");
    if (!jwt) std::abort();
    chat = std::make_unique<parley::ChatService>(*store, *bus, *jwt, config);
    parley::HealthInfo health;
    health.connections = [] { return size_t{0}; };
    health.users_online = [] { return size_t{0}; };
    health.bus = "local";
    health.bus_ok = [] { return true; };
    health.draining = [] { return false; };
    api = std::make_unique<parley::RestApi>(*chat, health);

    parley::User alice, bob;
    alice.username = "alice";
    bob.username = "bob";
    for (parley::User* u : {&alice, &bob}) {
      u->id = "";
      u->full_name = u->username;
      u->role = "member";
    }
    alice.id = "8f2c5b1e-0000-4000-8000-000000000001";
    bob.id = "8f2c5b1e-0000-4000-8000-000000000002";
    auto a = store->create_user(alice);
    auto b = store->create_user(bob);
    if (!a || !b) std::abort();
    token = chat->issue_token(*a).token;
    user_id = a->id;
    auto thread = chat->create_thread(*a, {"group", {b->id}, {}, "fuzz"});
    if (!thread) std::abort();
    thread_id = thread->thread.id;
  }
  ~World() {
    chat.reset();
    if (store) store->close();
    std::filesystem::remove_all(dir);
  }
};

World& world() {
  static World w;
  return w;
}

void replace_all(std::string& s, std::string_view from, const std::string& to) {
  for (size_t i = s.find(from); i != std::string::npos; i = s.find(from, i + to.size())) s.replace(i, from.size(), to);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  std::string input(reinterpret_cast<const char*>(data), size);
  replace_all(input, "@TOKEN@", w.token);
  replace_all(input, "@USER@", w.user_id);
  replace_all(input, "@THREAD@", w.thread_id);

  http::request_parser<http::string_body> parser;
  parser.header_limit(kHeaderLimit);
  parser.body_limit(kBodyLimit);
  parser.eager(true);
  boost::beast::error_code ec;
  size_t pos = 0;
  while (!parser.is_done() && pos < input.size()) {
    size_t used = parser.put(boost::asio::buffer(input.data() + pos, input.size() - pos), ec);
    pos += used;
    if (ec || used == 0) break;
  }
  if (ec == http::error::need_more) ec = {};
  // put_eof's precondition is some input (Beast asserts it; as the server's
  // async_read, which never calls it before the first byte).
  if (!ec && !parser.is_done() && parser.got_some()) parser.put_eof(ec);
  if (ec || !parser.is_done()) return 0;
  http::request<http::string_body> req = parser.release();

  // As HttpSession::to_plain.
  parley::HttpRequest r;
  r.method = std::string(req.method_string());
  std::string_view target = req.target();
  size_t q = target.find('?');
  r.path = parley::percent_decode(std::string(target.substr(0, q)), false);
  if (q != std::string_view::npos) r.query = parley::parse_query(std::string(target.substr(q + 1)));
  r.authorization = std::string(req[http::field::authorization]);
  r.accept = std::string(req[http::field::accept]);
  r.body = req.body();
  r.remote_address = "127.0.0.1";
  if (parley::RestApi::hashes_passwords(r)) return 0;

  parley::HttpResponse out = w.api->handle(r);
  // PARLEY_FUZZ_DEBUG=1: what each input reached, to check a seed does what it should.
  static const bool debug = getenv("PARLEY_FUZZ_DEBUG") != nullptr;
  if (debug) fprintf(stderr, "%s %s -> %d %.200s\n", r.method.c_str(), r.path.c_str(), out.status, out.body.c_str());
  if (out.status < 100 || out.status > 599) std::abort();
  if (out.content_type == "application/json") {
    boost::system::error_code jec;
    (void)boost::json::parse(out.body, jec);
    if (jec) std::abort();  // every JSON answer is JSON
  }
  return 0;
}
