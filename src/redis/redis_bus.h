// RedisBus: the Bus of several Parley processes ("nodes") sharing one Redis.
// Every node publishes its events on one pub/sub channel and subscribes to
// it; an event reaches the local sessions at once on publish (so a node with
// Redis down still serves its own clients) and other nodes through Redis.
// Wire format: bus/bus_codec.h.
//
// Threading: publish() from any thread (it encodes there and hands the bytes
// to the reactor's loop; no thread per message). Both Redis connections live
// on the reactor's loop thread, which also calls the receiver for events of
// other nodes. start() and the destructor from any thread but the loop's.
//
// Loss: events published while the publishing connection is down wait in a
// bounded queue and go out when it is back; if any were dropped (queue full,
// or the connection broke with commands in flight) a resync event follows,
// and a node whose subscription broke resyncs its own sessions when it is
// back. A node that died cannot say so: the others resync their own sessions
// when it is removed (resync_here). Sessions then fill their gaps from the
// store (DeliveryCursor).
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "bus/bus.h"
#include "bus/typing_lapse.h"
#include "common/clock.h"
#include "common/reactor.h"
#include "redis/redis_link.h"

namespace parley {

struct RedisBusOptions {
  RedisEndpoint endpoint;
  std::string channel = "parley:events";
  size_t max_queued = 10000;  // events kept while Redis is unreachable
  std::string node_id;        // this process on the bus; empty = a random one
  Micros typing_lapse = 0;    // > 0: stop other nodes' typists silent this long (bus/typing_lapse.h)
};

class RedisBus final : public Bus {
 public:
  RedisBus(Reactor& reactor, RedisBusOptions options);
  ~RedisBus() override;

  // Stores the receiver and begins connecting; returns at once (healthy()
  // turns true once subscribed).
  void set_receiver(BusReceiver receiver) override;
  void publish(BusEventPtr event) override;
  std::string describe() const override { return options_.endpoint.describe(); }
  bool healthy() const override { return healthy_.load(std::memory_order_relaxed); }
  void close() override;

  // Hands this node's sessions a resync within a second (loop thread only):
  // events another node meant to publish may be lost for good (`node` died
  // with its queue of events not yet published).
  void resync_here(const std::string& node);
  // This process's id on the bus (random per start).
  const std::string& node_id() const { return node_id_; }
  Reactor& reactor() { return reactor_; }
  // The command connection, for state shared by nodes (presence, counters).
  // Loop thread only.
  RedisLink& commands() { return pub_; }

 private:
  void drain();
  void flush();
  void start();
  void on_pub_up();
  void on_sub_up();
  void on_message(const struct redisReply* reply);
  void deliver_remote(std::shared_ptr<BusEvent> event);
  void update_health();
  void ping();
  // Every second: delivers here the stops of other nodes' typists that lapsed.
  void sweep_typing();

  Reactor& reactor_;
  RedisBusOptions options_;
  std::string node_id_;
  BusReceiver receiver_;
  std::atomic<bool> healthy_{false};

  // From publishing threads to the loop.
  std::mutex mu_;
  std::vector<std::string> outbox_;
  bool posted_ = false;

  // Loop thread only.
  RedisLink pub_, sub_;
  std::deque<std::string> pending_;  // encoded events waiting for the publishing connection
  bool lost_ = false;                // events were lost since the last resync was sent
  bool subscribed_ = false;
  bool node_gone_resync_due_ = false;  // resync_here's, within its second
  int64_t ping_sent_ms_ = 0;         // 0 = no PING in flight
  // Remote events carry the member list of their thread: keep one copy per
  // thread, so the Hubs' per-list caches work as they do for local events.
  std::unordered_map<std::string, std::shared_ptr<const std::vector<std::string>>> members_;
  TypingLapse typing_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::atomic<bool> closed_{false};
};

}  // namespace parley
