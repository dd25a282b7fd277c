#include "chat/change_watermark.h"

namespace parley {

void ChangeWatermark::received(int64_t n) {
  std::lock_guard lock(mu_);
  if (n <= through_) return;  // a repeat, or covered by a resync
  if (n != through_ + 1) {
    if (ahead_.size() < kMaxAhead) ahead_.insert(n);
    return;
  }
  through_ = n;
  while (!ahead_.empty() && *ahead_.begin() == through_ + 1) {
    through_ = *ahead_.begin();
    ahead_.erase(ahead_.begin());
  }
}

void ChangeWatermark::reset(int64_t last) {
  std::lock_guard lock(mu_);
  through_ = last;
  ahead_.clear();
}

int64_t ChangeWatermark::through() const {
  std::lock_guard lock(mu_);
  return through_;
}

int64_t ChangeWatermark::resync() {
  std::lock_guard lock(mu_);
  const int64_t from = through_;
  if (!ahead_.empty()) through_ = *ahead_.rbegin();
  ahead_.clear();
  return from;
}

}  // namespace parley
