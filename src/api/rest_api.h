// RestApi: the HTTP API of CONTRACT.md section 2 on top of the chat service.
// handle() blocks (storage, password hashing): the network layer calls it on
// worker threads. Any number of threads may call it at once.
#pragma once

#include <functional>
#include <string>

#include "api/http.h"
#include "api/rest_write_limiter.h"
#include "chat/chat_service.h"

namespace parley {

struct HealthInfo {
  std::function<size_t()> connections;
  std::function<size_t()> users_online;
  std::string bus;
  std::function<bool()> bus_ok;  // false while a networked bus is disconnected
  std::function<bool()> draining;  // true once a graceful shutdown has begun
};

class RestApi {
 public:
  RestApi(ChatService& chat, HealthInfo health);
  HttpResponse handle(const HttpRequest& request);
  // True for the requests that hash a password (register, login): the network
  // layer runs those on their own pool.
  static bool hashes_passwords(const HttpRequest& request);
  // The account a login asks for ("" for anything else, or a body that names
  // none): the network layer bounds how many of one account's logins wait
  // for a hash at once, so one account cannot fill the queue for everyone.
  static std::string login_account(const HttpRequest& request);
  // The methods the route table serves at `path` (percent-decoded, no query),
  // as an Allow header value ("GET, HEAD, OPTIONS"); empty when no route has
  // that path. HEAD goes wherever GET does. Any thread.
  static std::string allowed_methods(const std::string& path);

 private:
  ChatService& chat_;
  HealthInfo health_;
  int64_t started_at_;
  RestWriteLimiter writes_;
};

}  // namespace parley
