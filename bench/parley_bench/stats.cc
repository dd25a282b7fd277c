#include "stats.h"

#include <cmath>
#include <cstdio>

namespace bench {

Histogram::Histogram() : counts_(kBuckets, 0) {}

// Values below 128 ns have a bucket each; above, each power of two is split
// into 64 buckets (the 7 leading bits of the value).
int Histogram::bucket(uint64_t v) {
  if (v < 128) return static_cast<int>(v);
  int e = 63 - __builtin_clzll(v);  // 7..63
  int top = static_cast<int>(v >> (e - 6));  // 64..127
  return 128 + (e - 7) * 64 + (top - 64);
}

int64_t Histogram::value_of(int b) {
  if (b < 128) return b;
  int e = (b - 128) / 64 + 7;
  int64_t top = (b - 128) % 64 + 64;
  int64_t lo = top << (e - 6);
  int64_t width = int64_t{1} << (e - 6);
  return lo + width / 2;  // bucket midpoint
}

void Histogram::record(int64_t ns) {
  if (ns < 0) ns = 0;
  ++counts_[static_cast<size_t>(bucket(static_cast<uint64_t>(ns)))];
  ++count_;
  sum_ += ns;
  if (ns > max_) max_ = ns;
}

void Histogram::merge(const Histogram& o) {
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
  count_ += o.count_;
  sum_ += o.sum_;
  if (o.max_ > max_) max_ = o.max_;
}

void Histogram::reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = 0;
  max_ = 0;
  sum_ = 0;
}

int64_t Histogram::quantile(double q) const {
  if (count_ == 0) return 0;
  auto rank = static_cast<int64_t>(std::ceil(q * static_cast<double>(count_)));
  if (rank < 1) rank = 1;
  int64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += counts_[static_cast<size_t>(b)];
    if (seen >= rank) return std::min(value_of(b), max_);
  }
  return max_;
}

void Json::key(std::string_view k) {
  if (first_.empty()) return;
  if (!first_.back()) out_ += ',';
  first_.back() = false;
  if (!k.empty()) {
    out_ += '"';
    out_ += k;
    out_ += "\":";
  }
}

Json& Json::begin_object(std::string_view k) {
  key(k);
  out_ += '{';
  first_.push_back(true);
  return *this;
}

Json& Json::end_object() {
  out_ += '}';
  first_.pop_back();
  return *this;
}

Json& Json::kv(std::string_view k, std::string_view v) {
  key(k);
  out_ += '"';
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out_ += '\\';
      out_ += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out_ += buf;
    } else {
      out_ += c;
    }
  }
  out_ += '"';
  return *this;
}

Json& Json::kv(std::string_view k, int64_t v) {
  key(k);
  out_ += std::to_string(v);
  return *this;
}

Json& Json::kv(std::string_view k, double v) {
  key(k);
  if (!std::isfinite(v)) {
    out_ += "null";
  } else {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    out_ += buf;
  }
  return *this;
}

Json& Json::kv(std::string_view k, bool v) {
  key(k);
  out_ += v ? "true" : "false";
  return *this;
}

Json& Json::null(std::string_view k) {
  key(k);
  out_ += "null";
  return *this;
}

Json& Json::latency(std::string_view k, const Histogram& h) {
  auto ms = [](int64_t ns) { return static_cast<double>(ns) / 1e6; };
  begin_object(k);
  kv("p50", ms(h.quantile(0.50)));
  kv("p90", ms(h.quantile(0.90)));
  kv("p99", ms(h.quantile(0.99)));
  kv("p999", ms(h.quantile(0.999)));
  kv("max", ms(h.max()));
  kv("mean", h.mean() / 1e6);
  kv("count", h.count());
  return end_object();
}

}  // namespace bench
