// WebhookNotifier: push for participants with no open connection (CONTRACT
// section 9, docs/webhooks.md). Each new message is handed over by the chat
// service (observe(), never blocking the commit path); the notifier's intake
// thread picks the thread's participants who are offline on every node
// (Presence, with its directory), builds one signed-body notification each
// (recipient, thread, message, unread count) and stores them in the outbox;
// its delivery thread claims due notifications from the outbox (claims are
// exclusive across nodes sharing a database), POSTs at most `concurrency` at
// once, deletes what got a 2xx, reschedules the rest with exponential
// backoff and, after max_attempts, marks them dead (counted in /metrics).
// The outbox holds no message text: each POST's body gets the message's
// content as the store has it then (an edit shows, a delete sends nothing).
// A restart loses nothing stored: delivery resumes from the outbox, and a
// clean stop first stores what the intake still holds. Nor is a push lost
// between the commit and the outbox: each message is committed with a
// record that its push is owed (ChatService::set_records_owed_pushes), and
// storing its notifications removes that record in the same transaction.
// A record left behind (the process was killed, or a backlog or a stop
// dropped the message here) is overdue after 30 s, or at once if it is from
// before this process started (on a shared database another node's intake
// may still hold it: the settle decides): the delivery thread's sweep then
// notifies the thread's members, other than its sender, who were members
// when it was stored, have acknowledged no delivery of it and have nothing
// live (a day-old one only settles). Of the intake and a sweep (on any
// node), the first to settle stores; the other stores nothing.
//
// Threading: observe() from any thread (the store's completion thread);
// start() and stop() from the owner's thread. Store, presence and poster
// must outlive the notifier.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "chat/presence.h"
#include "common/config.h"
#include "common/error.h"
#include "model/model.h"
#include "store/store.h"

namespace parley {

// Sends one POST: the response status, or an Error when none came. Once
// `abandon` is set it should give up promptly (the server is stopping).
using WebhookPost = std::function<Result<int>(
    const std::string& body, const std::vector<std::pair<std::string, std::string>>& headers,
    const std::atomic<bool>& abandon)>;

// "sha256=" + lowercase hex HMAC-SHA256 of body with secret (X-Parley-Signature).
std::string webhook_signature(const std::string& secret, const std::string& body);

class WebhookNotifier {
 public:
  WebhookNotifier(const WebhookConfig& config, Store& store, const Presence& presence, WebhookPost post);
  ~WebhookNotifier();  // stops

  using Clock = std::chrono::steady_clock;

  void start();
  // Stops both threads. POSTs under way are abandoned and their
  // notifications made due again (not counted as an attempt); what observe()
  // handed over is stored in the outbox until `store_until`, and only what is
  // left then is left owed (logged: the next start's sweep, or another
  // node's, makes it). Everything stored waits for the next start.
  void stop(Clock::time_point store_until);
  void stop();  // stop(now + 2 s)

  // A new message, stored owing its push (AppendRequest::owes_push), and who
  // is in its thread; quick, never blocks on I/O.
  void observe(const Message& message, const std::string& message_json,
               const std::shared_ptr<const ThreadMembers>& members);

 private:
  struct Pending {
    Message message;
    std::string message_json;
    std::shared_ptr<const ThreadMembers> members;
  };
  // What one write of the outbox stores and settles (Store::enqueue_notifications).
  struct Settlement {
    std::vector<Notification> items;
    std::vector<std::string> settles;
  };
  void intake_loop();
  void add(Settlement& settlement, const Message& message, const std::string& message_json,
           const std::vector<std::string>& recipients);
  void store(Settlement settlement, std::function<void(bool committed)> then);
  void sweep_overdue();  // delivery thread
  void delivery_loop();
  // Sleeps until the next notification is due (at most the idle poll) or a
  // wake-up; when it could not claim now (no slot free, or the claim just
  // failed), until a sender ends or the idle poll.
  void wait_for_due(bool can_claim);
  // One claimed notification: POST, then delete, reschedule or bury it.
  void deliver(const Notification& n);
  // parley_webhook_dead_letters from the store's count: dead letters leave
  // it when their message is deleted, and other nodes add to it.
  void count_dead_letters();
  Micros backoff(int attempts) const;

  const WebhookConfig config_;
  Store& store_;
  const Presence& presence_;
  const WebhookPost post_;

  std::mutex mu_;
  std::condition_variable intake_cv_;
  std::condition_variable delivery_cv_;
  std::deque<Pending> pending_;
  bool stopping_ = false;
  Clock::time_point store_until_;  // set by stop(): the intake's last moment
  std::atomic<bool> abandon_{false};  // POSTs under way give up (stop())
  bool wake_delivery_ = false;
  Clock::time_point dead_counted_at_{};  // the delivery thread's last count_dead_letters()
  Clock::time_point next_sweep_{};       // the delivery thread's next sweep_overdue()
  Micros started_at_ = 0;  // what was owed before is in no intake here: overdue at once
  std::thread intake_;
  std::thread delivery_;
};

}  // namespace parley
