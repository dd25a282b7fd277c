// HttpPoster: the outgoing HTTP client of the webhook (Beast). One POST per
// call, on the calling thread, bounded by a timeout; a new connection each
// time (notifications are few and a receiver may sit behind anything).
// Plain http:// only: for an https:// endpoint, put a TLS-terminating proxy
// or relay in front (docs/webhooks.md).
//
// Threading: post() may be called from several threads at once (each call
// has its own I/O context). Immutable after create().
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

namespace parley {

class HttpPoster {
 public:
  // Errors: bad_input "invalid_webhook_url" (not http://HOST[:PORT][/PATH]).
  static Result<std::shared_ptr<const HttpPoster>> create(const std::string& url, std::chrono::milliseconds timeout);

  // The response status, or an Error when no response came (refused, reset,
  // timed out). Setting `abandon` ends a POST under way within ~20 ms with
  // the error "webhook_abandoned" (a stopping server does not wait out a
  // slow receiver).
  Result<int> post(const std::string& body, const std::vector<std::pair<std::string, std::string>>& headers,
                   const std::atomic<bool>& abandon) const;

  const std::string& host() const { return host_; }

 private:
  HttpPoster() = default;
  std::string host_, port_, target_;
  std::chrono::milliseconds timeout_{0};
};

}  // namespace parley
