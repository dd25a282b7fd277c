#include "chat/hub.h"

#include <algorithm>

#include "common/clock.h"
#include "common/metrics.h"

namespace parley {

// Bounds the resolution cache; past it, it starts over.
constexpr size_t kMaxResolved = 4096;
// Bounds the arrival log (about 100 bytes a thread).
constexpr size_t kMaxArrivalThreads = 200000;

void Hub::add(ClientSession* session) {
  by_user_[session->user_id()].push_back(session);
  ++count_;
  ++generation_;
}

void Hub::remove(ClientSession* session) {
  auto it = by_user_.find(session->user_id());
  if (it == by_user_.end()) return;
  auto& v = it->second;
  auto pos = std::find(v.begin(), v.end(), session);
  if (pos == v.end()) return;
  v.erase(pos);
  --count_;
  ++generation_;
  if (v.empty()) by_user_.erase(it);
}

const std::vector<ClientSession*>& Hub::resolve(const BusEvent& event) {
  auto collect = [this](const std::vector<std::string>& users, std::vector<ClientSession*>& out) {
    out.clear();
    for (const auto& user : users) {
      auto it = by_user_.find(user);
      if (it != by_user_.end()) out.insert(out.end(), it->second.begin(), it->second.end());
    }
  };
  if (!event.shared_recipients) {
    collect(*event.recipients, scratch_);
    return scratch_;
  }
  Resolved& r = resolved_[event.recipients.get()];
  if (r.generation != generation_ || r.members != event.recipients) {
    if (resolved_.size() > kMaxResolved) {
      resolved_.clear();
      return resolve(event);
    }
    r.members = event.recipients;
    r.generation = generation_;
    collect(*event.recipients, r.sessions);
  }
  return r.sessions;
}

void Hub::resync(int64_t changes_after) {
  for (auto& [user, sessions] : by_user_)
    for (ClientSession* s : sessions) s->resync(changes_after);
}

void Hub::changes_marked(int64_t through) {
  for (auto& [user, sessions] : by_user_)
    for (ClientSession* s : sessions) s->changes_marked(through);
}

void Hub::account_changed(const AccountState& state) {
  auto it = by_user_.find(state.user_id);
  if (it == by_user_.end()) return;
  std::vector<ClientSession*> sessions = it->second;  // closing removes from the list
  for (ClientSession* s : sessions) s->account_changed(state);
}

void Hub::log_arrivals(Micros keep) { arrivals_ = std::make_unique<ArrivalLog>(keep, kMaxArrivalThreads); }

void Hub::dispatch(const BusEvent& event) {
  if (event.resync) return resync(event.changes_after);
  if (event.changes_mark) return changes_marked(event.changes_after);
  if (!event.recipients || event.members_changed) return;
  if (arrivals_ && event.seq > 0) arrivals_->note(event.thread_id, event.seq, now_micros());
  const auto& sessions = resolve(event);
  if (sessions.empty()) return;
  // Several local recipients: this loop's own copy of each encoding (see Delivery).
  Delivery delivery(event, sessions.size() > 1);
  uint64_t delivered = 0;
  for (ClientSession* s : sessions) {
    if (!event.exclude_session.empty() && s->session_id() == event.exclude_session) {
      // A redelivery's sender has its answer (message_sent) and needs nothing.
      if (!event.redelivery) s->excluded(event);
      continue;
    }
    s->deliver(delivery);
    ++delivered;
  }
  // A redelivery is counted by the sessions that send it (most drop it).
  if (delivered && !event.redelivery) {
    auto& m = Metrics::get();
    m.messages_out.fetch_add(delivered, std::memory_order_relaxed);
    if (event.seq > 0) m.deliveries.fetch_add(delivered, std::memory_order_relaxed);
  }
}

void Fanout::each_loop(const std::function<void(Hub&)>& fn) const {
  for (const auto& loop : loops_) loop->post([hub = loop->hub, fn] { fn(*hub); });
}

void Fanout::add_loop(Hub* hub, PostFn post) {
  auto inbox = std::make_unique<Inbox>();
  inbox->hub = hub;
  inbox->post = std::move(post);
  loops_.push_back(std::move(inbox));
}

void Fanout::operator()(const BusEventPtr& event) const {
  for (const auto& loop : loops_) {
    Inbox* inbox = loop.get();
    {
      std::lock_guard lock(inbox->mu);
      inbox->events.push_back(event);
      if (inbox->posted) continue;  // the pending task will take it
      inbox->posted = true;
    }
    inbox->post([inbox] {
      std::vector<BusEventPtr> batch;
      {
        std::lock_guard lock(inbox->mu);
        batch.swap(inbox->events);
        inbox->posted = false;
      }
      for (const auto& e : batch) inbox->hub->dispatch(*e);
    });
  }
}

}  // namespace parley
