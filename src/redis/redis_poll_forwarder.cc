#include "redis/redis_poll_forwarder.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <future>
#include <vector>

namespace parley {

namespace {

constexpr std::chrono::milliseconds kTick{1000};
// Requests waiting for an answer at once; past it a request is refused at
// once rather than piling up in memory (each holds an HTTP connection too).
constexpr size_t kMaxPending = 10000;

std::string channel_of(std::string_view node) { return "parley:sio:" + std::string(node); }

// Deadlines are durations on this node: a steady clock, so a step of the
// wall clock neither expires every forward at once nor holds one longer.
int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Splits off the text up to the next space (or the end).
std::string_view take_word(std::string_view& s) {
  size_t sp = s.find(' ');
  std::string_view word = s.substr(0, sp);
  s = sp == std::string_view::npos ? std::string_view() : s.substr(sp + 1);
  return word;
}

template <class Int>
bool parse_int(std::string_view s, Int& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

}  // namespace

RedisPollForwarder::RedisPollForwarder(Reactor& reactor, RedisEndpoint endpoint, std::string node_id)
    : reactor_(reactor),
      node_id_(std::move(node_id)),
      channel_(channel_of(node_id_)),
      publish_(reactor, endpoint, "sio-forward", [] {}, [] {}),
      subscription_(reactor, endpoint, "sio-forward-subscribe", [this] { on_subscription_up(); },
                    [this] {
                      // Answers published meanwhile would never arrive.
                      subscribed_ = false;
                      healthy_ = false;
                      give_up_all("subscription_lost");
                    }) {}

RedisPollForwarder::~RedisPollForwarder() { close(); }

void RedisPollForwarder::start() {
  reactor_.post([this] {
    publish_.start();
    subscription_.start();
    tick();
  });
}

void RedisPollForwarder::close() {
  if (closed_.exchange(true)) return;
  std::promise<void> done;
  reactor_.post([&] {
    *alive_ = false;
    healthy_ = false;
    give_up_all("closing");
    publish_.stop();
    subscription_.stop();
    done.set_value();
  });
  done.get_future().wait();
}

void RedisPollForwarder::forward(const std::string& node, PollRequest request, std::chrono::milliseconds deadline,
                                 DoneFn done) {
  std::weak_ptr<bool> alive = alive_;
  reactor_.post([this, alive, node, request = std::move(request), deadline, done = std::move(done)]() mutable {
    auto a = alive.lock();
    if (!a || !*a) return done(std::nullopt);
    if (!subscribed_ || !publish_.up()) {
      spdlog::info("event=sio_forward_failed node={} reason=redis_down", node);
      return done(std::nullopt);
    }
    if (pending_.size() >= kMaxPending) {
      spdlog::warn("event=sio_forward_failed node={} reason=too_many_waiting waiting={}", node, pending_.size());
      return done(std::nullopt);
    }
    uint64_t id = next_id_++;
    std::string message = "Q" + std::to_string(id) + " " + node_id_ + " " + (request.post ? "P " : "G ") + request.sid +
                          "\n" + request.body;
    pending_.emplace(id, Pending{node, now_ms() + deadline.count(), std::move(done)});
    std::weak_ptr<bool> still = alive_;
    bool sent = publish_.command({"PUBLISH", channel_of(node), message}, [this, still, id](const redisReply* r) {
      auto s = still.lock();
      if (!s || !*s) return;
      if (!r) return give_up(id, "redis_down");
      // The number of subscribers that got it: none means no node by that name is listening.
      if (r->type != REDIS_REPLY_INTEGER || r->integer < 1) give_up(id, "no_such_node");
    });
    if (!sent) give_up(id, "redis_down");
  });
}

void RedisPollForwarder::on_subscription_up() {
  subscription_.subscribe(channel_, [this](const redisReply* r) { on_message(r); });
}

void RedisPollForwarder::on_message(const redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
  std::string_view kind(r->element[0]->str, r->element[0]->len);
  if (kind == "subscribe") {
    subscribed_ = healthy_ = true;
    spdlog::info("event=sio_forward_subscribed channel={}", channel_);
    return;
  }
  if (kind != "message" || r->element[2]->type != REDIS_REPLY_STRING) return;
  std::string_view message(r->element[2]->str, r->element[2]->len);
  if (!message.empty() && message[0] == 'Q') return on_request(message);
  if (!message.empty() && message[0] == 'A') return on_answer(message);
  spdlog::warn("event=sio_forward_bad_message bytes={}", message.size());
}

void RedisPollForwarder::on_request(std::string_view message) {
  size_t nl = message.find('\n');
  std::string_view header = message.substr(1, nl == std::string_view::npos ? std::string_view::npos : nl - 1);
  std::string_view body = nl == std::string_view::npos ? std::string_view() : message.substr(nl + 1);
  uint64_t id = 0;
  bool id_ok = parse_int(take_word(header), id);
  std::string from(take_word(header));
  std::string_view method = take_word(header);
  std::string sid(take_word(header));
  if (!id_ok || from.empty() || (method != "G" && method != "P") || sid.empty() || !header.empty()) {
    spdlog::warn("event=sio_forward_bad_message kind=request bytes={}", message.size());
    return;
  }
  if (!serve_) return;  // not serving yet: the requester's deadline answers for us
  // The answer may come from any thread, and after this forwarder is gone.
  Reactor* reactor = &reactor_;
  std::weak_ptr<bool> alive = alive_;
  serve_(PollRequest{method == "P", std::move(sid), std::string(body)},
         [this, reactor, alive, from = std::move(from), id](PollAnswer answer) {
           reactor->post([this, alive, from, id, answer = std::move(answer)] {
             if (auto a = alive.lock(); a && *a) send_answer(from, id, answer);
           });
         });
}

void RedisPollForwarder::send_answer(const std::string& node, uint64_t id, const PollAnswer& answer) {
  std::string message = "A" + std::to_string(id) + " " + std::to_string(answer.status) + " " + answer.content_type +
                        "\n" + answer.body;
  // Lost with the connection, the requester gives up at its deadline or
  // sooner, and its client reconnects (the Socket.IO session replays what
  // was not acknowledged).
  if (!publish_.command({"PUBLISH", channel_of(node), message}))
    spdlog::warn("event=sio_forward_answer_lost node={} reason=redis_down", node);
}

void RedisPollForwarder::on_answer(std::string_view message) {
  size_t nl = message.find('\n');
  if (nl == std::string_view::npos) return;
  std::string_view header = message.substr(1, nl - 1);
  uint64_t id = 0;
  int status = 0;
  if (!parse_int(take_word(header), id) || !parse_int(take_word(header), status)) {
    spdlog::warn("event=sio_forward_bad_message kind=answer bytes={}", message.size());
    return;
  }
  auto it = pending_.find(id);
  if (it == pending_.end()) return;  // given up already
  DoneFn done = std::move(it->second.done);
  pending_.erase(it);
  done(PollAnswer{status, std::string(header), std::string(message.substr(nl + 1))});
}

void RedisPollForwarder::give_up(uint64_t id, const char* why) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  spdlog::info("event=sio_forward_failed node={} reason={}", it->second.node, why);
  DoneFn done = std::move(it->second.done);
  pending_.erase(it);
  done(std::nullopt);
}

void RedisPollForwarder::give_up_all(const char* why) {
  std::vector<uint64_t> ids;
  ids.reserve(pending_.size());
  for (const auto& [id, p] : pending_) ids.push_back(id);
  for (uint64_t id : ids) give_up(id, why);
}

// Once a second: deadlines, and whether each node we wait for still listens.
void RedisPollForwarder::tick() {
  std::weak_ptr<bool> alive = alive_;
  reactor_.schedule(kTick, [this, alive] {
    auto a = alive.lock();
    if (!a || !*a) return;
    int64_t now = now_ms();
    std::vector<uint64_t> expired;
    std::vector<std::string> nodes;
    for (const auto& [id, p] : pending_) {
      if (now > p.deadline_ms) expired.push_back(id);
      else if (std::find(nodes.begin(), nodes.end(), p.node) == nodes.end()) nodes.push_back(p.node);
    }
    for (uint64_t id : expired) give_up(id, "timeout");
    if (!nodes.empty() && publish_.up()) {
      std::vector<std::string> args = {"PUBSUB", "NUMSUB"};
      for (const auto& n : nodes) args.push_back(channel_of(n));
      std::vector<std::string_view> argv(args.begin(), args.end());
      std::weak_ptr<bool> still = alive_;
      publish_.command(argv, [this, still, nodes](const redisReply* r) {
        auto s = still.lock();
        if (!s || !*s || !r || r->type != REDIS_REPLY_ARRAY) return;
        for (size_t i = 0; i + 1 < r->elements && i / 2 < nodes.size(); i += 2) {
          if (r->element[i + 1]->type != REDIS_REPLY_INTEGER || r->element[i + 1]->integer > 0) continue;
          const std::string& gone = nodes[i / 2];
          std::vector<uint64_t> ids;
          for (const auto& [id, p] : pending_)
            if (p.node == gone) ids.push_back(id);
          for (uint64_t id : ids) give_up(id, "node_gone");
        }
      });
    }
    tick();
  });
}

}  // namespace parley
