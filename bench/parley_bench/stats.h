// Latency histogram (log-linear buckets, <1.6% relative error, exact max)
// and a minimal JSON writer for the one-object-per-run output.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bench {

class Histogram {
 public:
  Histogram();
  void record(int64_t ns);
  void merge(const Histogram& other);
  void reset();
  int64_t count() const { return count_; }
  int64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0; }
  // Value (ns) at quantile q in [0,1]; 0 when empty.
  int64_t quantile(double q) const;

 private:
  static constexpr int kBuckets = 128 + 57 * 64;
  static int bucket(uint64_t v);
  static int64_t value_of(int b);
  std::vector<int64_t> counts_;
  int64_t count_ = 0;
  int64_t max_ = 0;
  __int128 sum_ = 0;
};

class Json {
 public:
  Json& begin_object(std::string_view key = {});
  Json& end_object();
  Json& kv(std::string_view key, std::string_view value);
  Json& kv(std::string_view key, const char* value) { return kv(key, std::string_view(value)); }
  Json& kv(std::string_view key, const std::string& value) { return kv(key, std::string_view(value)); }
  Json& kv(std::string_view key, int64_t value);
  Json& kv(std::string_view key, int value) { return kv(key, static_cast<int64_t>(value)); }
  Json& kv(std::string_view key, double value);  // non-finite -> null
  Json& kv(std::string_view key, bool value);
  Json& null(std::string_view key);
  // {"p50":..,"p90":..,"p99":..,"p999":..,"max":..,"mean":..,"count":..} in milliseconds
  Json& latency(std::string_view key, const Histogram& h);
  const std::string& str() const { return out_; }

 private:
  void key(std::string_view k);
  std::string out_;
  std::vector<bool> first_;
};

}  // namespace bench
