#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ctime>
#include <chrono>
#include <future>
#include <set>
#include <thread>
#include <vector>

#include "common/allocator.h"
#include "common/atomic_file.h"
#include "common/bearer.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/log_throttle.h"
#include "common/redact.h"
#include "common/utf8.h"
#include "common/thread_pool.h"

namespace parley {
namespace {

// 2023-11-14T22:13:20Z
constexpr Micros kT = 1'700'000'000LL * 1'000'000 + 123'456;

// ---- logging ----

// One event is one line, whatever a value carries: libpq's connection errors
// span lines ("server closed the connection unexpectedly\n\tThis probably
// means..."), and a collector reading lines must not split them.
TEST(Logging, OneEventIsOneLine) {
  ASSERT_TRUE(init_logging("info"));
  testing::internal::CaptureStderr();
  spdlog::error("event=store_error error=\"{}\"", "server closed the connection unexpectedly\n\tThis probably means\r\n");
  spdlog::info("event=second");
  spdlog::default_logger()->flush();
  std::string out = testing::internal::GetCapturedStderr();
  std::vector<std::string> lines;
  for (size_t start = 0, nl; (nl = out.find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(out.substr(start, nl - start));
  ASSERT_EQ(lines.size(), 2u) << out;
  EXPECT_NE(lines[0].find("level=error event=store_error error=\"server closed the connection unexpectedly\\n\tThis "
                          "probably means\\r\\n\""),
            std::string::npos)
      << lines[0];
  EXPECT_NE(lines[1].find("level=info event=second"), std::string::npos) << lines[1];
  EXPECT_EQ(out.find('\r'), std::string::npos);
}

// A failure repeated in a tight loop (a full disk under retrying clients):
// the first line at once, then one per interval with the count held back.
TEST(LogThrottle, FirstAtOnceThenOnePerIntervalWithTheCountHeldBack) {
  using namespace std::chrono_literals;
  LogThrottle throttle(1s);
  const LogThrottle::Clock::time_point t0{};  // the clock's epoch: the first must pass all the same
  EXPECT_EQ(throttle.admit(t0), 0u);
  for (int i = 1; i <= 4000; ++i) EXPECT_EQ(throttle.admit(t0 + i * 200us), std::nullopt) << i;
  EXPECT_EQ(throttle.admit(t0 + 999ms), std::nullopt);
  EXPECT_EQ(throttle.admit(t0 + 1s), 4001u);
  // A quiet spell: the next one goes out at once, and the count starts again.
  EXPECT_EQ(throttle.admit(t0 + 60s), 0u);
  EXPECT_EQ(throttle.admit(t0 + 60s + 1ms), std::nullopt);
  EXPECT_EQ(throttle.admit(t0 + 61s), 1u);
}

// When the failure stops, one line may say so with what was held back since
// the last line; after it the next failure is logged at once.
TEST(LogThrottle, RecoveredGivesTheCountNeverShownAndStartsAgain) {
  using namespace std::chrono_literals;
  LogThrottle throttle(1s);
  const LogThrottle::Clock::time_point t0{};
  EXPECT_EQ(throttle.recovered(), std::nullopt) << "nothing failed";
  EXPECT_EQ(throttle.admit(t0), 0u);
  for (int i = 1; i <= 5; ++i) EXPECT_EQ(throttle.admit(t0 + i * 1ms), std::nullopt);
  EXPECT_EQ(throttle.recovered(), 5u) << "the five held back since the line";
  EXPECT_EQ(throttle.recovered(), std::nullopt) << "said once";
  EXPECT_EQ(throttle.admit(t0 + 10ms), 0u) << "a new failure is logged at once, within the interval";
  EXPECT_EQ(throttle.recovered(), 0u) << "logged, none held back: the end is still said";
}

TEST(LogThrottle, CountsEveryCallAcrossThreads) {
  LogThrottle throttle(std::chrono::hours(1));
  ASSERT_EQ(throttle.admit(), 0u);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) EXPECT_EQ(throttle.admit(), std::nullopt);
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(throttle.admit(LogThrottle::Clock::now() + std::chrono::hours(2)), 4000u);
}

// ---- atomic small files ----

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(AtomicFile, WritesWholeFilesPrivateWhateverTheUmaskAndLeavesNothingBeside) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("parley-atomic-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::path file = dir / "jwt_secret";
  mode_t old = ::umask(022);
  ASSERT_TRUE(write_file_atomically(file.string(), "first\n"));
  ::umask(old);
  EXPECT_EQ(slurp(file), "first\n");
  EXPECT_EQ(fs::status(file).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  ASSERT_TRUE(write_file_atomically(file.string(), "second, longer\n"));
  EXPECT_EQ(slurp(file), "second, longer\n") << "replaced, not appended to";
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"jwt_secret"}) << "no temporary file left";

  auto missing = write_file_atomically((dir / "no-such-dir" / "f").string(), "x");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("no-such-dir"), std::string::npos) << missing.error().message;
  fs::remove_all(dir);
}

// ---- redaction ----

// libpq takes a password in the URL's user info and as a query parameter;
// neither may reach /health, the log or `config check`.
TEST(Redact, MasksEveryPasswordOfADatabaseUrl) {
  EXPECT_EQ(redact_url_password("postgres://parley:hunter2@db:5432/parley"), "postgres://parley:***@db:5432/parley");
  EXPECT_EQ(redact_url_password("postgres://parley@db:5432/parley?password=hunter2&sslmode=require"),
            "postgres://parley@db:5432/parley?password=***&sslmode=require");
  EXPECT_EQ(redact_url_password("postgresql://db/parley?sslmode=verify-full&sslpassword=k3y&PASSWORD=p@ss"),
            "postgresql://db/parley?sslmode=verify-full&sslpassword=***&PASSWORD=***");
  EXPECT_EQ(redact_url_password("postgres://u:pw@db/parley?password=p@ss"), "postgres://u:***@db/parley?password=***");
  EXPECT_EQ(redact_url_password("redis://:secret@127.0.0.1:6379"), "redis://:***@127.0.0.1:6379");
  EXPECT_EQ(redact_url_password("redis://user:p%2Fss@127.0.0.1:6379/0"), "redis://user:***@127.0.0.1:6379/0");
  EXPECT_EQ(redact_url_password("redis://:p/ss@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
  EXPECT_EQ(redact_url_password("redis://:a:b/c@d@[::1]:6379"), "redis://:***@[::1]:6379");
  // A Redis URL's user info without ':' is all password (redis-cli reads it so).
  EXPECT_EQ(redact_url_password("redis://s3cret@127.0.0.1:6379"), "redis://***@127.0.0.1:6379");
  EXPECT_EQ(redact_url_password("postgres://parley@db:5432/parley"), "postgres://parley@db:5432/parley");
  EXPECT_EQ(redact_url_password("postgres://parley@db/parley?application_name=x"), "postgres://parley@db/parley?application_name=x");
  EXPECT_EQ(redact_url_password("not a url"), "not a url");
}

// ---- clock ----

TEST(Clock, FormatsMillisAndMicros) {
  EXPECT_EQ(iso8601_millis(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(iso8601_millis(kT), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(iso8601_micros(kT), "2023-11-14T22:13:20.123456Z");
  // Before the epoch the fraction still counts forward within the second.
  EXPECT_EQ(iso8601_micros(-1), "1969-12-31T23:59:59.999999Z");
}

// The formatter is hand-written; gmtime_r and snprintf are the reference,
// across leap days, year ends, centuries and a spread of instants.
TEST(Clock, FormatsLikeGmtime) {
  auto reference = [](Micros t) {
    int64_t secs = t / 1000000, frac = t % 1000000;
    if (frac < 0) { frac += 1000000; secs -= 1; }
    std::time_t tt = static_cast<std::time_t>(secs);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(frac));
    return std::string(buf);
  };
  constexpr int64_t kS = 1'000'000;
  std::vector<Micros> instants = {
      0, -1, kT, 951'782'400 * kS,                 // 2000-02-29 (a leap century)
      4'107'542'399 * kS + 999'999,                // 2100-02-28T23:59:59.999999 (2100 is not leap)
      4'107'542'400 * kS,                          // 2100-03-01
      1'704'067'199 * kS + 999'999,                // 2023-12-31T23:59:59.999999
      253'402'300'799 * kS + 999'999,              // 9999-12-31T23:59:59.999999
      -62'135'596'800 * kS,                        // 0001-01-01
  };
  uint64_t x = 88172645463325252ULL;  // xorshift: a deterministic spread over 1970..2400
  for (int i = 0; i < 20000; ++i) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    instants.push_back(static_cast<Micros>(x % (13'569'465'600ULL * kS)));
  }
  for (Micros t : instants) {
    ASSERT_EQ(iso8601_micros(t), reference(t)) << t;
    std::string millis = reference(t);
    millis.erase(millis.size() - 4, 3);  // .uuuuuuZ -> .mmmZ
    ASSERT_EQ(iso8601_millis(t), millis) << t;
  }
}

TEST(Clock, RoundTrips) {
  EXPECT_EQ(parse_iso8601(iso8601_micros(kT)), kT);  // exact: the cursor form
  EXPECT_EQ(parse_iso8601(iso8601_millis(kT)), kT - 456);
  EXPECT_EQ(parse_iso8601(iso8601_micros(-1)), -1);
  Micros now = now_micros();
  EXPECT_EQ(parse_iso8601(iso8601_micros(now)), now);
}

TEST(Clock, NowIsPlausible) {
  Micros a = now_micros();
  EXPECT_GT(a, kT);  // after 2023
  EXPECT_GE(now_micros(), a);
}

TEST(Clock, ParsesVariants) {
  constexpr Micros kSec = 1'700'000'000LL * 1'000'000;
  EXPECT_EQ(parse_iso8601("2023-11-14T22:13:20Z"), kSec);
  EXPECT_EQ(parse_iso8601("2023-11-14T22:13:20z"), kSec);
  EXPECT_EQ(parse_iso8601("2023-11-14 22:13:20Z"), kSec);
  EXPECT_EQ(parse_iso8601("2023-11-14T22:13:20"), kSec);  // no zone: UTC
  EXPECT_EQ(parse_iso8601("2023-11-14T22:13:20.5Z"), kSec + 500'000);
  EXPECT_EQ(parse_iso8601("2023-11-14T22:13:20.1234567Z"), kSec + 123'456);  // beyond micros dropped
  EXPECT_EQ(parse_iso8601("2023-11-14"), 1'699'920'000LL * 1'000'000);
}

TEST(Clock, ParsesOffsets) {
  constexpr Micros kSec = 1'700'000'000LL * 1'000'000;
  EXPECT_EQ(parse_iso8601("2023-11-14T23:13:20+01:00"), kSec);
  EXPECT_EQ(parse_iso8601("2023-11-14T23:13:20+0100"), kSec);
  EXPECT_EQ(parse_iso8601("2023-11-14T16:43:20-05:30"), kSec);
  EXPECT_EQ(parse_iso8601("2023-11-15T03:13:20.123456+05:00"), kT);
  EXPECT_EQ(parse_iso8601("2023-11-14T22:13:20+00:00"), kSec);
}

TEST(Clock, RejectsGarbage) {
  for (const char* s : {"", "hello", "2023", "2023-11", "2023/11/14", "2023-13-01", "2023-00-10", "2023-11-32",
                        "2023-11-14T", "2023-11-14T22:13", "2023-11-14T25:00:00Z", "2023-11-14T22:60:00Z",
                        "2023-11-14T22:13:20.", "2023-11-14T22:13:20.Z", "2023-11-14T22:13:20Zjunk",
                        "2023-11-14T22:13:20+1", "2023-11-14T22:13:20+01:00x", "2023-11-14X22:13:20Z",
                        "2023-11-14T22:13:20 ", " 2023-11-14", "2023-11-14junk", "2023-1a-14"}) {
    EXPECT_FALSE(parse_iso8601(s).has_value()) << s;
  }
}

// ---- utf8 ----

TEST(Utf8, CountsCodePoints) {
  EXPECT_EQ(utf8_length(""), 0u);
  EXPECT_EQ(utf8_length("hello"), 5u);
  EXPECT_EQ(utf8_length("h\xC3\xA9llo"), 5u);             // é: 2 bytes
  EXPECT_EQ(utf8_length("\xE6\x97\xA5\xE6\x9C\xAC"), 2u);  // 日本: 3 bytes each
  EXPECT_EQ(utf8_length("\xF0\x9F\x98\x80"), 1u);          // 😀: one code point, 4 bytes
  EXPECT_EQ(utf8_length("a\xF0\x9F\x98\x80" "b"), 3u);
  EXPECT_EQ(utf8_length(std::string_view("a\0b", 3)), 3u);
  EXPECT_EQ(utf8_length("\xED\x9F\xBF"), 1u);      // U+D7FF, just below the surrogates
  EXPECT_EQ(utf8_length("\xEE\x80\x80"), 1u);      // U+E000, just above them
  EXPECT_EQ(utf8_length("\xF4\x8F\xBF\xBF"), 1u);  // U+10FFFF, the last code point
}

TEST(Utf8, PrefixNeverEndsInsideACharacter) {
  EXPECT_EQ(utf8_prefix("hello", 64), "hello");
  EXPECT_EQ(utf8_prefix("hello", 3), "hel");
  EXPECT_EQ(utf8_prefix("h\xC3\xA9llo", 2), "h");                 // not half of é
  EXPECT_EQ(utf8_prefix("h\xC3\xA9llo", 3), "h\xC3\xA9");
  EXPECT_EQ(utf8_prefix("\xF0\x9F\x98\x80\xF0\x9F\x98\x80", 7), "\xF0\x9F\x98\x80");  // 😀😀 cut at 7
  EXPECT_EQ(utf8_prefix("\xF0\x9F\x98\x80", 3), "");
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "\xC3\xA9";  // é x 40 = 80 bytes
  for (size_t max = 0; max <= 80; ++max) {
    auto p = utf8_prefix(long_text, max);
    EXPECT_LE(p.size(), max);
    EXPECT_GE(p.size() + 1, max);
    EXPECT_TRUE(utf8_length(p).has_value()) << max;
  }
}

TEST(Utf8, RejectsOverlongs) {
  EXPECT_FALSE(utf8_length("\xC0\xAF").has_value());          // '/' in 2 bytes
  EXPECT_FALSE(utf8_length("\xC1\xBF").has_value());
  EXPECT_FALSE(utf8_length("\xE0\x80\xAF").has_value());      // in 3 bytes
  EXPECT_FALSE(utf8_length("\xE0\x9F\xBF").has_value());      // U+07FF in 3 bytes
  EXPECT_FALSE(utf8_length("\xF0\x80\x80\xAF").has_value());  // in 4 bytes
  EXPECT_FALSE(utf8_length("\xF0\x8F\xBF\xBF").has_value());  // U+FFFF in 4 bytes
}

TEST(Utf8, RejectsSurrogates) {
  EXPECT_FALSE(utf8_length("\xED\xA0\x80").has_value());  // U+D800
  EXPECT_FALSE(utf8_length("\xED\xBF\xBF").has_value());  // U+DFFF
  // CESU-8 style pair for 😀.
  EXPECT_FALSE(utf8_length("\xED\xA0\xBD\xED\xB8\x80").has_value());
}

TEST(Utf8, RejectsTruncatedAndStray) {
  EXPECT_FALSE(utf8_length("\xC3").has_value());
  EXPECT_FALSE(utf8_length("\xE6\x97").has_value());
  EXPECT_FALSE(utf8_length("\xF0\x9F\x98").has_value());
  EXPECT_FALSE(utf8_length("ok\xF0\x9F\x98").has_value());
  EXPECT_FALSE(utf8_length("\xE6\x97x").has_value());  // continuation replaced by ASCII
  EXPECT_FALSE(utf8_length("\x80").has_value());       // lone continuation byte
  EXPECT_FALSE(utf8_length("\xFF").has_value());
}

TEST(Utf8, RejectsAboveMax) {
  EXPECT_FALSE(utf8_length("\xF4\x90\x80\x80").has_value());  // U+110000
  EXPECT_FALSE(utf8_length("\xF5\x80\x80\x80").has_value());
  EXPECT_FALSE(utf8_length("\xF8\x88\x80\x80\x80").has_value());  // old 5-byte form
}

TEST(Utf8, ControlCharacters) {
  EXPECT_FALSE(has_control_chars("Ms. Émilie O'Brien \xC2\xA0 \xE2\x80\x8B"));  // NBSP, zero-width space
  EXPECT_TRUE(has_control_chars(std::string("a\0b", 3)));
  EXPECT_TRUE(has_control_chars("tab\there"));
  EXPECT_TRUE(has_control_chars("del\x7f"));
  EXPECT_TRUE(has_control_chars("ab\xC2\x9B" "31mcd"));  // C1 CSI
  EXPECT_TRUE(has_control_chars("\xC2\x80"));
  EXPECT_TRUE(has_control_chars("\xC2\x9F"));
  EXPECT_FALSE(has_control_chars("\xC2\xA9"));  // ©
}

TEST(Utf8, VisibleText) {
  EXPECT_FALSE(has_visible_text(""));
  EXPECT_FALSE(has_visible_text("   "));
  EXPECT_FALSE(has_visible_text(" \t\r\n\v\f"));
  EXPECT_FALSE(has_visible_text("\xC2\xA0"));          // NBSP
  EXPECT_FALSE(has_visible_text(" \xC2\xA0\t"));
  EXPECT_FALSE(has_visible_text("\xE3\x80\x80"));      // ideographic space
  EXPECT_FALSE(has_visible_text("\xE2\x80\x83"));      // em space
  EXPECT_TRUE(has_visible_text("a"));
  EXPECT_TRUE(has_visible_text("  a  "));
  EXPECT_TRUE(has_visible_text("\xC2\xA0x"));
  EXPECT_TRUE(has_visible_text("\xF0\x9F\x98\x80"));
  EXPECT_TRUE(has_visible_text("."));
  EXPECT_FALSE(has_visible_text(std::string("\0", 1)));     // NUL
  EXPECT_FALSE(has_visible_text("\x07\x1b \x7f"));         // BEL, ESC, DEL
  EXPECT_FALSE(has_visible_text("\xC2\x9B"));             // C1 CSI
  EXPECT_TRUE(has_visible_text("\x07" "bell"));
}

TEST(Utf8, CharactersThatDrawNothingAreNotText) {
  EXPECT_FALSE(has_visible_text("\xE2\x81\xA0"));              // U+2060 word joiner
  EXPECT_FALSE(has_visible_text("\xE2\x80\x8B\xE2\x80\x8D"));  // zero-width space, joiner
  EXPECT_FALSE(has_visible_text("\xE2\x80\x8F \xE2\x81\xA6"));  // RLM, an isolate
  EXPECT_TRUE(has_visible_text("\xC2\xAD")) << "soft hyphen: a terminal draws it";
  EXPECT_FALSE(has_visible_text("\xE3\x85\xA4"));              // Hangul filler
  EXPECT_FALSE(has_visible_text("\xE2\xA0\x80"));              // blank Braille pattern
  EXPECT_FALSE(has_visible_text("\xEF\xB8\x8F"));              // variation selector 16
  EXPECT_FALSE(has_visible_text("\xF3\xA0\x80\x81"));         // U+E0001 language tag
  EXPECT_FALSE(has_visible_text("\xEF\xBB\xBF"));              // BOM
  EXPECT_TRUE(has_visible_text("\xE2\x9D\xA4\xEF\xB8\x8F"));  // heart + VS16
  EXPECT_TRUE(has_visible_text("\xE2\xA0\x81"));               // Braille dot 1
  EXPECT_TRUE(has_visible_text("\xE2\x80\x8D" "a"));           // a joiner, then a letter
}

// ---- ids ----

TEST(Ids, UuidFormat) {
  std::string u = new_uuid();
  ASSERT_EQ(u.size(), 36u);
  for (size_t i = 0; i < u.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      EXPECT_EQ(u[i], '-') << u;
    } else {
      EXPECT_TRUE(std::isxdigit(static_cast<unsigned char>(u[i])) && !std::isupper(static_cast<unsigned char>(u[i])))
          << u;
    }
  }
  EXPECT_EQ(u[14], '4') << u;                                    // version 4
  EXPECT_NE(std::string("89ab").find(u[19]), std::string::npos) << u;  // RFC 4122 variant
  EXPECT_TRUE(is_uuid(u));
  EXPECT_EQ(normalize_uuid(u), u);
}

TEST(Ids, UuidsAreUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(new_uuid());
  EXPECT_EQ(seen.size(), 1000u);
}

// The random bytes come from a per-thread pool of 4 KiB (256 UUIDs): ids stay
// unique and well-formed across its refills, and between threads (each
// refills its own pool from the kernel).
TEST(Ids, UuidsAreUniqueAcrossPoolRefillsAndThreads) {
  constexpr int kPerThread = 3000;  // about twelve refills each
  std::vector<std::vector<std::string>> made(3);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < made.size(); ++t) {
    threads.emplace_back([&made, t] {
      for (int i = 0; i < kPerThread; ++i) made[t].push_back(i % 2 ? new_uuid() : new_uuid_v7(1'700'000'000'000));
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::string> seen;
  for (const auto& ids : made) {
    for (const auto& id : ids) {
      ASSERT_TRUE(is_uuid(id)) << id;
      seen.insert(id);
    }
  }
  EXPECT_EQ(seen.size(), made.size() * kPerThread);
}

TEST(Ids, IsUuidNegatives) {
  EXPECT_TRUE(is_uuid("123e4567-e89b-42d3-a456-426614174000"));
  EXPECT_TRUE(is_uuid("123E4567-E89B-42D3-A456-426614174000"));  // any case
  for (const char* s : {"", "123e4567-e89b-42d3-a456-42661417400", "123e4567-e89b-42d3-a456-4266141740000",
                        "123e4567e89b42d3a456426614174000", "123e4567-e89b-42d3-a456_426614174000",
                        "123e456-7e89b-42d3-a456-426614174000", "123e4567-e89b-42d3-a456-42661417400g",
                        "{23e4567-e89b-42d3-a456-426614174000", " 123e4567-e89b-42d3-a456-42661417400"}) {
    EXPECT_FALSE(is_uuid(s)) << s;
  }
}

TEST(Ids, NormalizeLowercases) {
  EXPECT_EQ(normalize_uuid("123E4567-E89B-42D3-A456-426614174ABC"), "123e4567-e89b-42d3-a456-426614174abc");
}

TEST(Ids, RandomHex) {
  std::string h = random_hex(16);
  ASSERT_EQ(h.size(), 32u);
  for (char c : h) EXPECT_NE(std::string("0123456789abcdef").find(c), std::string::npos) << h;
  EXPECT_NE(random_hex(16), h);
  EXPECT_EQ(random_hex(0), "");
}

// ---- allocator ----

// When the build links jemalloc (CMake PARLEY_JEMALLOC; `parley version` and
// the e2e CLI test say which), malloc really goes to it: jemalloc's
// per-thread byte count grows by what this thread mallocs. A jemalloc that
// was linked but shadowed by another malloc would count nothing.
TEST(Allocator, MallocGoesToTheLinkedAllocator) {
  const std::string name = allocator_name();
  if (name == "system") {
    EXPECT_EQ(allocator_thread_allocated(), -1);
    return;
  }
  EXPECT_EQ(name.rfind("jemalloc 5.", 0), 0u) << name;
  const int64_t before = allocator_thread_allocated();
  ASSERT_GE(before, 0);
  constexpr size_t kBytes = 1 << 20;
  void* p = std::malloc(kBytes);
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, kBytes);
  const int64_t after = allocator_thread_allocated();
  std::free(p);
  EXPECT_GE(after - before, static_cast<int64_t>(kBytes));
}

// RFC 6750 2.1: "Bearer" in any case, one or more spaces, then the token.
TEST(BearerToken, SchemeThenOneOrMoreSpaces) {
  EXPECT_EQ(bearer_token("Bearer abc.def.ghi"), "abc.def.ghi");
  EXPECT_EQ(bearer_token("bearer abc"), "abc");
  EXPECT_EQ(bearer_token("BEARER   abc"), "abc");
  EXPECT_EQ(bearer_token("Bearer"), std::nullopt);
  EXPECT_EQ(bearer_token("Bearer "), std::nullopt);
  EXPECT_EQ(bearer_token("Bearer    "), std::nullopt);
  EXPECT_EQ(bearer_token("Bearerabc"), std::nullopt);
  EXPECT_EQ(bearer_token("Basic abc"), std::nullopt);
  EXPECT_EQ(bearer_token(""), std::nullopt);
}

}  // namespace
}  // namespace parley

// A graceful shutdown waits for the worker pool to be idle: a running task
// counts, not only a queued one.
TEST(ThreadPool, IdleOnlyWhenNothingQueuedOrRunning) {
  parley::ThreadPool pool(1);
  EXPECT_TRUE(pool.idle());
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  pool.submit([&started, released] {
    started.set_value();
    released.wait();
  });
  started.get_future().wait();
  EXPECT_FALSE(pool.idle()) << "a running task keeps the pool busy";
  pool.submit([] {});
  EXPECT_FALSE(pool.idle());
  release.set_value();
  for (int i = 0; i < 2000 && !pool.idle(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(pool.idle());
}
