// Logging: spdlog, one line per event, "event key=value ..." style.
// Message contents and secrets are never logged at info level or above.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace parley {

// Sets the global level ("trace".."critical", "off"); false if unknown.
bool init_logging(const std::string& level);
// Whether init_logging would take `level`.
bool valid_log_level(const std::string& level);

}  // namespace parley
