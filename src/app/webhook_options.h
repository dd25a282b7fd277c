// The webhook's command-line options and its start for `parley serve`
// (push/webhook_notifier.h, net/http_post.h).
#pragma once

#include <memory>

#include "chat/chat_service.h"
#include "common/config.h"
#include "push/webhook_notifier.h"

namespace CLI {
class App;
}

namespace parley {

void add_webhook_options(CLI::App& cmd, Config& config);

// What start_webhook would refuse (a bad URL, a URL without a secret), for
// `parley config check`; Ok when no URL is set.
Status check_webhook(const WebhookConfig& webhook);

// nullptr when no --webhook-url is set; else a started notifier that the
// chat service hands every new message. Errors: a bad URL, a missing secret.
Result<std::unique_ptr<WebhookNotifier>> start_webhook(const Config& config, ChatService& chat, Store& store);

}  // namespace parley
