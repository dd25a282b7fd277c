#include "chat/hub.h"

#include <algorithm>

#include "common/metrics.h"

namespace parley {

void Hub::add(ClientSession* session) {
  by_user_[session->user_id()].push_back(session);
  ++count_;
}

void Hub::remove(ClientSession* session) {
  auto it = by_user_.find(session->user_id());
  if (it == by_user_.end()) return;
  auto& v = it->second;
  auto pos = std::find(v.begin(), v.end(), session);
  if (pos == v.end()) return;
  v.erase(pos);
  --count_;
  if (v.empty()) by_user_.erase(it);
}

void Hub::dispatch(const BusEvent& event) {
  if (!event.recipients) return;
  uint64_t delivered = 0;
  for (const auto& user : *event.recipients) {
    auto it = by_user_.find(user);
    if (it == by_user_.end()) continue;
    for (ClientSession* s : it->second) {
      if (!event.exclude_session.empty() && s->session_id() == event.exclude_session) continue;
      s->deliver(event);
      ++delivered;
    }
  }
  if (event.seq > 0 && delivered) Metrics::get().deliveries.fetch_add(delivered, std::memory_order_relaxed);
}

void Fanout::operator()(const BusEventPtr& event) const {
  for (const auto& loop : loops_) {
    Hub* hub = loop.hub;
    loop.post([hub, event] { hub->dispatch(*event); });
  }
}

}  // namespace parley
