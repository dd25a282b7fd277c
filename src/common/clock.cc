#include "common/clock.h"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace parley {

Micros now_micros() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

namespace {

// Writes v as exactly `width` decimal digits (v >= 0 and fits).
char* put_digits(char* p, int64_t v, int width) {
  for (int i = width - 1; i >= 0; --i, v /= 10) p[i] = static_cast<char>('0' + v % 10);
  return p + width;
}

// By hand, not snprintf and gmtime_r: every message frame carries one or two
// of these, and the two took 7% of the completion thread in `dm` (gmtime_r
// also takes glibc's timezone lock). The calendar is C++20 <chrono>.
std::string format(Micros t, bool micros) {
  using namespace std::chrono;
  int64_t secs = t / 1000000;
  int64_t frac = t % 1000000;
  if (frac < 0) { frac += 1000000; secs -= 1; }
  const sys_seconds at{seconds{secs}};
  const sys_days day = floor<days>(at);
  const year_month_day ymd{day};
  const int64_t in_day = (at - day).count();
  const int y = static_cast<int>(ymd.year());
  char buf[40];
  char* p = buf;
  if (y < 0 || y > 9999) {
    p += std::snprintf(p, 16, "%d", y);  // outside what clients parse anyway
  } else {
    p = put_digits(p, y, 4);
  }
  *p++ = '-';
  p = put_digits(p, static_cast<unsigned>(ymd.month()), 2);
  *p++ = '-';
  p = put_digits(p, static_cast<unsigned>(ymd.day()), 2);
  *p++ = 'T';
  p = put_digits(p, in_day / 3600, 2);
  *p++ = ':';
  p = put_digits(p, in_day / 60 % 60, 2);
  *p++ = ':';
  p = put_digits(p, in_day % 60, 2);
  *p++ = '.';
  p = micros ? put_digits(p, frac, 6) : put_digits(p, frac / 1000, 3);
  *p++ = 'Z';
  return std::string(buf, p);
}

}  // namespace

std::string iso8601_millis(Micros t) { return format(t, false); }
std::string iso8601_micros(Micros t) { return format(t, true); }

namespace {
bool digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}
}  // namespace

std::optional<Micros> parse_iso8601(std::string_view s) {
  int y, mo, d, h = 0, mi = 0, se = 0;
  if (!digits(s, 0, 4, y) || s.size() < 10 || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
      !digits(s, 8, 2, d))
    return std::nullopt;
  size_t p = 10;
  int64_t frac_us = 0;
  int64_t offset_s = 0;
  if (p < s.size()) {
    if (s[p] != 'T' && s[p] != 't' && s[p] != ' ') return std::nullopt;
    if (!digits(s, p + 1, 2, h) || s.size() < p + 9 || s[p + 3] != ':' || !digits(s, p + 4, 2, mi) ||
        s[p + 6] != ':' || !digits(s, p + 7, 2, se))
      return std::nullopt;
    p += 9;
    if (p < s.size() && s[p] == '.') {
      ++p;
      int64_t scale = 100000;
      size_t start = p;
      while (p < s.size() && s[p] >= '0' && s[p] <= '9') {
        if (scale > 0) { frac_us += (s[p] - '0') * scale; scale /= 10; }
        ++p;
      }
      if (p == start) return std::nullopt;
    }
    if (p < s.size()) {
      if ((s[p] == 'Z' || s[p] == 'z') && p + 1 == s.size()) {
        p += 1;
      } else if (s[p] == '+' || s[p] == '-') {
        int oh, om;
        bool colon = p + 3 < s.size() && s[p + 3] == ':';
        if (!digits(s, p + 1, 2, oh) || !digits(s, p + (colon ? 4 : 3), 2, om)) return std::nullopt;
        if (p + (colon ? 6 : 5) != s.size()) return std::nullopt;
        offset_s = (oh * 3600 + om * 60) * (s[p] == '+' ? 1 : -1);
        p = s.size();
      } else {
        return std::nullopt;
      }
    }
  }
  if (p != s.size() && p != 10) return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 59) return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = se;
  std::time_t local = timegm(&tm);
  std::tm check{};
  gmtime_r(&local, &check);
  if (check.tm_mday != d) return std::nullopt;  // 30 February and the like
  int64_t secs = local - offset_s;
  return secs * 1000000 + frac_us;
}

}  // namespace parley
