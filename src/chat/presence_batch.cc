#include "chat/presence_batch.h"

#include <utility>

namespace parley {

std::shared_ptr<PresenceBatch> PresenceBatch::create(std::chrono::milliseconds gather, Presence::Scheduler schedule,
                                                     Flush flush) {
  return std::shared_ptr<PresenceBatch>(new PresenceBatch(gather, std::move(schedule), std::move(flush)));
}

PresenceBatch::PresenceBatch(std::chrono::milliseconds gather, Presence::Scheduler schedule, Flush flush)
    : gather_(gather), schedule_(std::move(schedule)), flush_(std::move(flush)) {}

void PresenceBatch::add(PresenceChange change) {
  bool first;
  {
    std::lock_guard lock(mu_);
    first = pending_.empty();
    pending_.push_back(std::move(change));
  }
  if (!first) return;  // the batch already waiting takes this one too
  schedule_(gather_, [self = shared_from_this()] { self->flush_now(); });
}

bool PresenceBatch::idle() {
  std::lock_guard lock(mu_);
  return pending_.empty();
}

// Taken under the lock and handed over outside it: a change added while
// flush_ runs starts the next batch, which is handed over after this one.
void PresenceBatch::flush_now() {
  std::vector<PresenceChange> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(pending_);
  }
  if (!batch.empty()) flush_(std::move(batch));
}

}  // namespace parley
