#include "redis/redis_bus.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <future>

#include "bus/bus_codec.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"

namespace parley {

// A Redis that accepts the connection but stops answering (paused, swapped
// out) is dropped after this long without a PONG, and retried.
constexpr std::chrono::milliseconds kPingInterval{1000};
constexpr int64_t kPingTimeoutMs = 3000;
constexpr size_t kMaxCachedMemberLists = 4096;
constexpr std::chrono::milliseconds kTypingSweepInterval{1000};

RedisBus::RedisBus(Reactor& reactor, RedisBusOptions options)
    : reactor_(reactor),
      options_(std::move(options)),
      node_id_(options_.node_id.empty() ? random_hex(8) : options_.node_id),
      pub_(reactor, options_.endpoint, "publish", [this] { on_pub_up(); },
           [this] {
             // Commands in flight may be lost with the connection: others must resync.
             lost_ = true;
             ping_sent_ms_ = 0;
             // The subscriber sends nothing, so only this link can tell that
             // Redis stopped answering (its PING, or the link's own deadline):
             // the subscription is as suspect, and is taken again.
             sub_.drop("publish link down");
             update_health();
           }),
      sub_(reactor, options_.endpoint, "subscribe", [this] { on_sub_up(); },
           [this] {
             subscribed_ = false;
             update_health();
           }),
      typing_(options_.typing_lapse) {}

RedisBus::~RedisBus() { close(); }

void RedisBus::set_receiver(BusReceiver receiver) {
  receiver_ = std::move(receiver);
  start();
}

void RedisBus::close() {
  if (closed_.exchange(true)) return;
  auto stop = [this] {
    *alive_ = false;
    pub_.stop();
    sub_.stop();
    healthy_ = false;
  };
  if (reactor_.on_loop()) return stop();
  std::promise<void> done;
  reactor_.post([&] {
    stop();
    done.set_value();
  });
  done.get_future().wait();
}

void RedisBus::start() {
  spdlog::info("event=bus_starting kind=redis endpoint={} node_id={}", describe(), node_id_);
  reactor_.post([this] {
    pub_.start();
    sub_.start();
    ping();
    if (options_.typing_lapse > 0) sweep_typing();
  });
}

void RedisBus::publish(BusEventPtr event) {
  if (receiver_) receiver_(event);  // this node's sessions, at once, Redis or not
  if (closed_.load(std::memory_order_relaxed)) return;
  std::string payload = encode_bus_event(*event, node_id_);
  bool post = false;
  {
    std::lock_guard lock(mu_);
    outbox_.push_back(std::move(payload));
    if (!posted_) post = posted_ = true;
  }
  if (post) {
    std::weak_ptr<bool> alive = alive_;
    reactor_.post([this, alive] {
      if (auto a = alive.lock(); a && *a) drain();
    });
  }
}

void RedisBus::drain() {
  std::vector<std::string> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(outbox_);
    posted_ = false;
  }
  for (auto& p : batch) pending_.push_back(std::move(p));
  flush();
}

void RedisBus::flush() {
  auto& m = Metrics::get();
  while (!pending_.empty() && pub_.up()) {
    if (!pub_.command({"PUBLISH", options_.channel, pending_.front()})) break;
    pending_.pop_front();
    m.bus_published.fetch_add(1, std::memory_order_relaxed);
  }
  while (pending_.size() > options_.max_queued) {
    pending_.pop_front();
    m.bus_dropped.fetch_add(1, std::memory_order_relaxed);
    lost_ = true;
  }
  if (lost_ && pub_.up()) {
    BusEvent resync;
    resync.resync = true;
    if (pub_.command({"PUBLISH", options_.channel, encode_bus_event(resync, node_id_)})) {
      lost_ = false;
      spdlog::info("event=bus_resync_sent node_id={}", node_id_);
    }
  }
}

// Not while unsubscribed: the resync at the next subscription covers it (and
// receiver_ is only read on the loop once start() has run there). Nodes
// removed within a second (after an outage, several at once) make one.
void RedisBus::resync_here(const std::string& node) {
  if (!subscribed_) return;
  spdlog::info("event=bus_resync_node_gone node_id={} gone={}", node_id_, node);
  if (node_gone_resync_due_) return;
  node_gone_resync_due_ = true;
  std::weak_ptr<bool> alive = alive_;
  reactor_.schedule(std::chrono::seconds(1), [this, alive] {
    if (auto a = alive.lock(); !a || !*a) return;
    node_gone_resync_due_ = false;
    auto resync = std::make_shared<BusEvent>();
    resync->resync = true;
    if (subscribed_ && receiver_) receiver_(resync);
  });
}

void RedisBus::on_pub_up() {
  Metrics::get().bus_reconnects.fetch_add(1, std::memory_order_relaxed);
  update_health();
  flush();
}

void RedisBus::on_sub_up() {
  sub_.subscribe(options_.channel, [this](const redisReply* r) { on_message(r); });
}

void RedisBus::on_message(const redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
  std::string_view kind(r->element[0]->str, r->element[0]->len);
  if (kind == "subscribe") {
    spdlog::info("event=bus_subscribed channel={} node_id={}", options_.channel, node_id_);
    // Events published while this node was not subscribed are gone: its
    // sessions read what they missed from the store, and its caches forget
    // what those events would have changed. Before the bus reports healthy
    // again: the member cache trusts its entries only while it is. The first
    // subscription too: the node accepts clients before it (Redis may be
    // down at start), and their events of that time are gone as well.
    auto resync = std::make_shared<BusEvent>();
    resync->resync = true;
    if (receiver_) receiver_(resync);
    subscribed_ = true;
    update_health();
    return;
  }
  if (kind != "message" || r->element[2]->type != REDIS_REPLY_STRING) return;
  auto decoded = decode_bus_event(std::string_view(r->element[2]->str, r->element[2]->len));
  if (!decoded) {
    spdlog::warn("event=bus_bad_payload bytes={}", r->element[2]->len);
    return;
  }
  if (decoded->node_id == node_id_) return;  // delivered locally on publish
  Metrics::get().bus_received.fetch_add(1, std::memory_order_relaxed);
  deliver_remote(std::move(decoded->event));
}

void RedisBus::deliver_remote(std::shared_ptr<BusEvent> e) {
  if (e->shared_recipients && e->recipients) {
    auto& cached = members_[e->thread_id];
    if (cached && *cached == *e->recipients) {
      e->recipients = cached;
    } else {
      if (members_.size() > kMaxCachedMemberLists) {
        members_.clear();
        return deliver_remote(std::move(e));
      }
      cached = e->recipients;
    }
  }
  if (options_.typing_lapse > 0) typing_.observe(e, now_micros());
  if (receiver_) receiver_(e);
}

void RedisBus::sweep_typing() {
  std::weak_ptr<bool> alive = alive_;
  reactor_.schedule(kTypingSweepInterval, [this, alive] {
    auto a = alive.lock();
    if (!a || !*a) return;
    for (auto& stop : typing_.expired(now_micros()))
      if (receiver_) receiver_(stop);  // this node's sessions only: the typist's node may be alive after all
    sweep_typing();
  });
}

void RedisBus::update_health() {
  bool ok = pub_.up() && subscribed_;
  if (ok != healthy_.exchange(ok)) spdlog::info("event=bus_health kind=redis ok={}", ok);
}

// Liveness of the command connection: a Redis that stopped answering is
// treated as gone (both connections are dropped and retried).
void RedisBus::ping() {
  std::weak_ptr<bool> alive = alive_;
  reactor_.schedule(kPingInterval, [this, alive] {
    auto a = alive.lock();
    if (!a || !*a) return;
    int64_t now = now_micros() / 1000;
    if (ping_sent_ms_ && now - ping_sent_ms_ > kPingTimeoutMs) {
      spdlog::warn("event=redis_unresponsive waited_ms={}", now - ping_sent_ms_);
      ping_sent_ms_ = 0;
      pub_.drop();
      sub_.drop();
    } else if (!ping_sent_ms_ && pub_.up()) {
      std::weak_ptr<bool> still = alive_;
      if (pub_.command({"PING"}, [this, still](const redisReply*) {
            if (auto s = still.lock(); s && *s) ping_sent_ms_ = 0;
          }))
        ping_sent_ms_ = now;
    }
    ping();
  });
}

}  // namespace parley
