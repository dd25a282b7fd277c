// RedisPollForwarder: the PollForwarder (bus/poll_forwarder.h) of several
// nodes on one Redis. Each node subscribes to its own channel,
// parley:sio:<node id>, which carries the requests forwarded to it and the
// answers to its own forwarded requests, one pub/sub message each:
//
//   Q<request id> <from node> <G|P> <sid>\n<POST body>
//   A<request id> <status> <content type>\n<answer body>
//
// A request id is unique per requesting node (a counter). The requester
// keeps each request until its answer comes, and gives it up (done with
// nullopt) when: the PUBLISH reached no subscriber (no such node, or it has
// lost Redis); a once-a-second PUBSUB NUMSUB finds the owner's channel
// without a subscriber (the owner died: a killed process's connection is
// closed at once, so this takes about a second); its own subscription
// drops (the answer could no longer arrive); the deadline passes; or too
// many are waiting. An answer that comes after that is dropped.
//
// Threading: as PollForwarder. Both Redis connections, the pending
// requests, the serve hook and the done callbacks live on the reactor's loop
// thread. start() and close() from any thread but the loop's.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "bus/poll_forwarder.h"
#include "common/reactor.h"
#include "redis/redis_link.h"

namespace parley {

class RedisPollForwarder final : public PollForwarder {
 public:
  RedisPollForwarder(Reactor& reactor, RedisEndpoint endpoint, std::string node_id);
  ~RedisPollForwarder() override;  // closes; not from the loop

  const std::string& node_id() const override { return node_id_; }
  void serve_with(ServeFn serve) override { serve_ = std::move(serve); }
  void forward(const std::string& node, PollRequest request, std::chrono::milliseconds deadline,
               DoneFn done) override;

  // Connects and subscribes.
  void start();
  // Gives up every waiting request, stops serving, disconnects.
  void close();
  // Subscribed to its channel: it can forward and be forwarded to.
  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }

 private:
  struct Pending {
    std::string node;
    int64_t deadline_ms = 0;
    DoneFn done;
  };

  void on_subscription_up();
  void on_message(const struct redisReply* reply);
  void on_request(std::string_view message);
  void on_answer(std::string_view message);
  void send_answer(const std::string& node, uint64_t id, const PollAnswer& answer);
  void give_up(uint64_t id, const char* why);
  void give_up_all(const char* why);
  void tick();

  Reactor& reactor_;
  std::string node_id_;
  std::string channel_;
  ServeFn serve_;
  std::atomic<bool> closed_{false};
  std::atomic<bool> healthy_{false};

  // Loop thread only.
  RedisLink publish_, subscription_;
  bool subscribed_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace parley
