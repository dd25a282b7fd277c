#include "common/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace parley {

namespace {

// The event text with line breaks written as \n and \r: one event stays one
// line whatever a value carries (libpq's errors span lines: "server closed
// the connection unexpectedly\n\tThis probably means…"), so a line-oriented
// collector never splits an event or takes its tail for another one.
class OneLinePayload : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    for (char ch : msg.payload) {
      if (ch == '\n') {
        dest.append(std::string_view("\\n"));
      } else if (ch == '\r') {
        dest.append(std::string_view("\\r"));
      } else {
        dest.push_back(ch);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<OneLinePayload>(); }
};

}  // namespace

bool valid_log_level(const std::string& level) {
  return spdlog::level::from_str(level) != spdlog::level::off || level == "off";
}

bool init_logging(const std::string& level) {
  if (!valid_log_level(level)) return false;
  auto lvl = spdlog::level::from_str(level);
  auto logger = spdlog::stderr_logger_mt("parley");
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  formatter->add_flag<OneLinePayload>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%eZ level=%l %*");
  logger->set_formatter(std::move(formatter));
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  return true;
}

}  // namespace parley
