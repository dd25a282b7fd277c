// What a connection sends again that it may have missed or its client may
// not have: after the bus lost events (resync: messages of threads it had no
// position in, groups, read receipts, edits and deletions) and, at connect,
// the edits and deletions its client missed while away (the change sync and
// its marks). Part of Connection (api/connection.h): the same loop thread,
// the same rules; kept apart as it is one idea, told in
// docs/architecture.md ("Edits and deletions a client missed while away").
#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "api/connection.h"
#include "api/connection_reads.h"
#include "protocol/encode.h"  // thread_json

namespace parley {

namespace json = boost::json;

// Messages whose last change sent a connection keeps (ChangesSent::last).
constexpr size_t kChangesKept = 4096;

// A resync's reads of the store are not given up while the connection
// lives: nothing else would send what the bus lost (a gap fill waits for the
// store likewise). Past kGapFillAttempts tries a second apart, the wait
// doubles, up to kResyncRetryLast. Every wait is spread by +-25%: every
// connection of a node began at the same resync, and a store that is down
// should not get all their reads in the same instant.
constexpr auto kResyncRetryLast = std::chrono::seconds(30);

static std::chrono::milliseconds resync_retry_after(int attempt) {
  const int over = attempt + 1 - kGapFillAttempts;
  const auto wait = over < 0 ? std::chrono::milliseconds(kGapFillRetry)
                             : std::min<std::chrono::milliseconds>(kGapFillRetry * (1 << std::min(over + 1, 5)),
                                                                   kResyncRetryLast);
  thread_local std::minstd_rand rng{std::random_device{}()};
  std::uniform_int_distribution<int64_t> spread(wait.count() * 3 / 4, wait.count() * 5 / 4);
  return std::chrono::milliseconds(spread(rng));
}

// The bus may have lost events. Each thread this connection has been sent
// messages on is re-read after the last one (the cursor's begin_resync). A
// thread it has been sent nothing on has no last seq, and no later message
// may come to open a gap: what was lost there (the first messages since the
// connection began, a thread created meanwhile) would never arrive. So the
// user's threads are read as well (resync_unseen_threads).
void Connection::resync(int64_t changes_after) {
  if (closed_) return;
  // One record for the connection's life. A change an earlier resync's read
  // sent must still stop an older event of the same message that comes late:
  // when Redis hangs, outages come a few seconds apart, and a record begun
  // anew at each let a deleted message's earlier edits through after its
  // deletion. Bounded: a resync that finds it past kChangesKept messages,
  // and no read running, starts it again (the node's NewestChange still
  // stops what came over the bus).
  if (!changes_sent_) changes_sent_ = std::make_unique<ChangesSent>();
  else if (changes_sent_->reads == 0 && changes_sent_->last.size() > kChangesKept) changes_sent_->last.clear();
  for (auto& [thread_id, from] : cursor_.begin_resync()) fill_gap(thread_id, from);
  // One read of each kind at a time (one the store keeps failing is tried
  // for as long as it fails): a resync while one runs has it read again
  // once it is done, as it may have read before what this outage lost.
  ChangesSent& sent = *changes_sent_;
  if (sent.unseen_reading) sent.unseen_again = true;
  else resync_unseen_threads(0);
  if (changes_after < 0) return;
  if (sent.rereading) {
    sent.reread_again = sent.reread_again < 0 ? changes_after : std::min(sent.reread_again, changes_after);
    return;
  }
  sent.rereading = true;
  ++sent.reads;
  resend_changes(changes_after, 0);
}

// A thread with a message since the connection began, on which the connection
// has no cursor entry, is filled as a first message is on several nodes: from
// at least this window before its last seq (fill_gap's first_seq reaches back
// to the newest message older than the connection), sending only what is
// newer than the connection (less the margin for other nodes' clocks).
constexpr int64_t kUnseenFillWindow = kReplayPage;

// The read's chain (its retries included) holds the cursor's first-fill
// window open to kUnseenFillWindow, so a live message that comes first does
// not narrow what is filled before it.
void Connection::resync_unseen_threads(int attempt) {
  if (attempt == 0) {
    cursor_.begin_unseen_read(kUnseenFillWindow);
    changes_sent_->unseen_reading = true;  // resync() made changes_sent_
    ++changes_sent_->receipt_reads;
  }
  auto self = shared_from_this();
  off_loop([self, attempt]() -> std::function<void()> {
    auto threads = self->ctx_.chat.store().threads_for_user(self->user_id_);
    const Micros floor = self->connected_at_us_ - kFirstFillMarginUs;
    // Groups made since the connection opened, whose thread_created the bus
    // may have lost, with their frames' payloads (made here, off the loop).
    std::vector<std::pair<std::string, std::string>> created;
    if (threads)
      for (const ThreadSummary& s : *threads) {
        if (s.thread.type != ThreadType::kGroup || s.thread.created_at < floor) continue;
        Thread t = s.thread;
        self->ctx_.chat.mark_online(t);
        created.emplace_back(t.id, json::serialize(json::object{{"thread", thread_json(t)}}));
      }
    return [self, attempt, floor, threads = std::move(threads), created = std::move(created)] {
      if (!threads) return self->retry_unseen_resync(attempt, threads.error());
      self->announce_unseen_groups(created);  // before the fills send their messages
      for (const ThreadSummary& s : *threads) {
        if (!s.last_message || s.last_message->created_at < floor) continue;  // nothing new since the connection
        if (!self->cursor_.begin_unseen_fill(s.thread.id)) continue;
        self->fill_gap(s.thread.id, std::max<int64_t>(0, s.last_message->seq - kUnseenFillWindow), floor,
                       s.last_message->seq + 1);
      }
      self->cursor_.end_unseen_read();
      self->resend_read_marks(*threads);
      ChangesSent& sent = *self->changes_sent_;
      sent.unseen_reading = false;
      if (std::exchange(sent.unseen_again, false)) self->resync_unseen_threads(0);
    };
  });
}

// Groups a connection was sent thread_created for (ChangesSent::groups).
constexpr size_t kGroupsKept = 4096;

// False when `thread_id`'s thread_created was sent already: live, or by a
// resync (the one the bus kept back may come after the resync's).
bool Connection::note_group(const std::string& thread_id) {
  if (!changes_sent_) changes_sent_ = std::make_unique<ChangesSent>();
  auto& groups = changes_sent_->groups;
  if (groups.size() >= kGroupsKept) groups.clear();  // bounded: a later resync may announce one again
  return groups.insert(thread_id).second;
}

// A group created while the bus was down reached only its creator's node:
// its members elsewhere heard of it from nothing but a later message. Sent
// once per connection (one the client had already changes nothing: a thread
// is known by its id).
void Connection::announce_unseen_groups(const std::vector<std::pair<std::string, std::string>>& created) {
  for (const auto& [thread_id, payload] : created) {
    if (closed_) return;
    if (!note_group(thread_id)) continue;
    BusEvent announced;
    announced.thread_id = thread_id;
    announced.type = "thread_created";
    announced.payload = payload;
    send_in_thread(thread_id, kAnySeq, encoder_->event(announced), /*counted_by_hub=*/false);
  }
}

// Read receipts carry neither seq nor change number, so nothing shows that
// the bus lost one: after a resync every member's mark in the user's threads
// is announced again (one the client had changes nothing). The most recently
// active threads first, at most kResyncReceipts frames (about 400 KB queued)
// and no more than a quarter of the outbound bound. A mark read before a
// live receipt raised it is not sent (ChangesSent::receipts, kept while the read runs).
constexpr size_t kResyncReceipts = 2000;

// A live receipt while a resync reads the marks: the mark it names, which a
// mark read earlier must not undo.
void Connection::note_receipt(const BusEvent& event) {
  boost::system::error_code ec;
  json::value v = json::parse(event.payload, ec);
  if (ec || !v.is_object()) return;
  const json::object& o = v.get_object();
  const json::value* user = o.if_contains("user_id");
  const json::value* seq = o.if_contains("seq");
  if (!user || !user->is_string() || !seq || !seq->is_int64()) return;
  int64_t& seen = changes_sent_->receipts[event.thread_id + '/' + std::string(user->get_string())];
  seen = std::max(seen, seq->get_int64());
}

void Connection::end_receipt_read() {
  if (!changes_sent_ || changes_sent_->receipt_reads == 0) return;
  if (--changes_sent_->receipt_reads == 0) changes_sent_->receipts.clear();
}

void Connection::resend_read_marks(const std::vector<ThreadSummary>& threads) {
  std::unordered_map<std::string, int64_t> seen;
  if (changes_sent_) seen = changes_sent_->receipts;  // a copy: another read may still be running
  end_receipt_read();
  auto t = transport_.lock();
  if (!t) return;
  const size_t budget = ctx_.chat.config().limits.max_outbound_bytes / 4;
  size_t sent = 0;
  for (const ThreadSummary& s : threads) {
    for (const Participant& p : s.thread.participants) {
      if (p.last_read_seq <= 0) continue;
      if (auto it = seen.find(s.thread.id + '/' + p.user_id); it != seen.end() && it->second >= p.last_read_seq)
        continue;
      if (closed_ || sent++ == kResyncReceipts || t->queued_bytes() > budget) return;
      BusEvent receipt;
      receipt.thread_id = s.thread.id;
      receipt.type = "read_receipt";
      receipt.payload = json::serialize(
          json::object{{"thread_id", s.thread.id}, {"user_id", p.user_id}, {"seq", p.last_read_seq}});
      send_in_thread(s.thread.id, kAnySeq, encoder_->event(receipt), /*counted_by_hub=*/false);
    }
  }
}

void Connection::retry_unseen_resync(int attempt, const Error& error) {
  spdlog::warn("event=resync_read_failed session_id={} attempt={} code={}", session_id_, attempt, error.code);
  auto t = transport_.lock();
  if (!t) return;  // closing
  std::weak_ptr<Connection> weak = weak_from_this();
  t->schedule(resync_retry_after(attempt), [weak, attempt] {
    if (auto self = weak.lock()) self->resync_unseen_threads(attempt + 1);
  });
}

// Edits and deletions carry no seq, so no gap shows that the bus lost them:
// the node counts those it received (ChangeWatermark) and each connection
// reads from the store those numbered above what had arrived when the bus
// broke, in its user's threads, and is sent each message as it is now. A
// change it had already been sent comes again, with the same final state.
// One read of the chain that resync() began (ChangesSent::rereading): it
// ends with its last page, and until then no change mark is given.
void Connection::resend_changes(int64_t after, int attempt) {
  auto self = shared_from_this();
  off_loop([self, after, attempt]() -> std::function<void()> {
    auto page = self->ctx_.chat.store().changes_after(self->user_id_, after, kReplayPage);
    return [self, after, attempt, page = std::move(page)] {
      if (page) {
        for (const Message& m : *page) self->resend_change(m);
        if (static_cast<int>(page->size()) == kReplayPage) return self->resend_changes(page->back().change_no, 0);
        ChangesSent& sent = *self->changes_sent_;
        if (sent.reread_again >= 0) return self->resend_changes(std::exchange(sent.reread_again, -1), 0);
      } else {
        spdlog::warn("event=resync_changes_failed session_id={} attempt={} code={}", self->session_id_, attempt,
                     page.error().code);
        auto t = self->transport_.lock();
        if (!t) return;  // closing
        std::weak_ptr<Connection> weak = self;
        t->schedule(resync_retry_after(attempt), [weak, after, attempt] {
          if (auto again = weak.lock()) again->resend_changes(after, attempt + 1);
        });
        return;
      }
      self->changes_sent_->rereading = false;
      self->end_change_read();
    };
  });
}

void Connection::resend_change(const Message& changed) {
  if (!admit_change(changed.id, changed.change_no)) return;
  auto event = change_event(changed);
  FramePtr frame = encoder_->event(*event);
  if (!tell_change(changed.id, changed.change_no, frame)) return;
  if (holding_) return held_.push_back({changed.thread_id, 0, std::move(frame), {}, false});
  // Behind the thread's fills, like a live change.
  if (!cursor_.changed(changed.thread_id, frame)) return;
  send_in_thread(changed.thread_id, kAnySeq, std::move(frame));
}

// How often changes_synced looks again for the frames it waits behind: they
// go as fills end and answers come, a few milliseconds to seconds. Each look
// goes through every held frame, so the wait doubles up to the last.
constexpr auto kChangeMarkWaitFirst = std::chrono::milliseconds(10);
constexpr auto kChangeMarkWaitLast = std::chrono::milliseconds(320);

// A page of the sync: fewer than a replay's, as a page goes out whole (a
// page of long messages is a few MB), and the next is read only once what
// waits to go out is below an eighth of the outbound bound
// (sync_changes_page).
constexpr int kSyncPage = 200;

// The sync of edits and deletions a client missed while away (its
// `changes_after`): what is at stake is the mark it is given at the end,
// which it stores and sends next time, never to be sent what it covers
// again. The mark is `through`, the node's ChangeWatermark read before the
// hub's add: every change up to it reached the node on the bus, so was
// committed before anything could be read or sent for this connection.
// For each such change above the client's mark, then, this connection has,
// or holds, a frame showing its message at that change or later: the
// sync's pages are read after it, and a page's copy is only left out where
// an event as new was already sent or held (admit_change, tell_change).
// The pages go where live changes go, behind their threads' fills, so that
// the last frame about a message is its current state (a fill's page may
// have been read before the change). `changes_synced` waits until every
// change frame held when the last page was handled has gone out
// (send_change_mark): before that a client could drop with a mark
// covering a change it was never sent. A change after the add may come
// later, but is numbered above the mark: the next sync has it.
void Connection::sync_changes(int64_t after, int64_t through) {
  if (closed_) return;
  if (!changes_sent_) changes_sent_ = std::make_unique<ChangesSent>();
  changes_sent_->mark_pending = true;
  if (after == kNoChangeMark) return send_change_mark(through, {}, true, kChangeMarkWaitFirst);
  ++changes_sent_->reads;  // a live change meanwhile stops an older copy of its message (admit_change)
  // From the lower: a client's mark past this node's (another node ahead of
  // it, or a store restored from a backup, whose numbers start again lower)
  // is not this node's to trust, and the mark given is never the client's.
  // A lower mark only means more to send.
  sync_changes_page(std::min(after, through), through, 0);
}

// What a change frame adds to its message's content, about (its fields, the
// sender's names): enough to pace the sync without encoding twice.
constexpr size_t kChangeFrameOverhead = 400;

// The sync is paced by what waits to go out: the outbound queue, and the
// copies held behind a replay of their thread, which its end releases all at
// once (read on, a sync of a long thread's edits would overflow the queue's
// bound then, and drop the client).
size_t Connection::sync_waiting_bytes() const {
  size_t waiting = 0;
  if (auto t = transport_.lock()) waiting = t->queued_bytes();
  for (const FramePtr& f : held_change_frames()) waiting += f->size();
  return waiting;
}

void Connection::sync_changes_page(int64_t after, int64_t mark, int attempt) {
  auto t = transport_.lock();
  if (!t || closed_) return;
  if (sync_waiting_bytes() > ctx_.chat.config().limits.max_outbound_bytes / 8) {
    // A client that reads nothing is dropped by the queue's bound or the idle timeout.
    std::weak_ptr<Connection> weak = weak_from_this();
    t->schedule(kReplayPause, [weak, after, mark, attempt] {
      if (auto self = weak.lock()) self->sync_changes_page(after, mark, attempt);
    });
    return;
  }
  auto self = shared_from_this();
  off_loop([self, after, mark, attempt]() -> std::function<void()> {
    auto page = self->ctx_.chat.store().changes_after(self->user_id_, after, kSyncPage);
    return [self, after, mark, attempt, page = std::move(page)] {
      if (page) {
        // Within the page too: past the budget, the rest is read again later.
        const size_t budget = self->ctx_.chat.config().limits.max_outbound_bytes / 8;
        size_t waiting = self->sync_waiting_bytes();
        for (size_t i = 0; i < page->size(); ++i) {
          if (i > 0 && waiting > budget) return self->sync_changes_page((*page)[i - 1].change_no, mark, 0);
          const Message& m = (*page)[i];
          self->resend_change(m);
          waiting += m.content.size() + kChangeFrameOverhead;
        }
        if (static_cast<int>(page->size()) == kSyncPage)
          return self->sync_changes_page(page->back().change_no, mark, 0);
      } else if (attempt + 1 < kGapFillAttempts) {
        spdlog::warn("event=sync_changes_failed session_id={} attempt={} code={}", self->session_id_, attempt,
                     page.error().code);
        auto t = self->transport_.lock();
        if (!t) return;
        std::weak_ptr<Connection> weak = self;
        t->schedule(kGapFillRetry, [weak, after, mark, attempt] {
          if (auto again = weak.lock()) again->sync_changes_page(after, mark, attempt + 1);
        });
        return;
      }
      self->end_change_read();
      if (!page) {
        // Given up: no mark, now or later on this connection (a later one
        // would cover what this sync did not send), so the client keeps its
        // own and asks again next time.
        self->changes_sent_->mark_pending = false;
        return self->send_error(page.error(), nullptr);
      }
      self->send_change_mark(mark, {}, true, kChangeMarkWaitFirst);
    };
  });
}

// `first`: the frames to wait for are those held now. Frames keep their
// identity as they move from one hold to another, so each is followed by
// its pointer until it is held nowhere, i.e. sent.
void Connection::send_change_mark(int64_t mark, std::vector<FramePtr> waiting, bool first,
                                  std::chrono::milliseconds wait) {
  if (closed_) return;
  std::vector<FramePtr> held = held_change_frames();
  if (first) {
    waiting = std::move(held);
  } else {
    std::unordered_set<const Frame*> still;
    for (const auto& f : held) still.insert(f.get());
    std::erase_if(waiting, [&](const FramePtr& f) { return !still.contains(f.get()); });
  }
  if (waiting.empty()) {
    changes_sent_->mark_given = mark;
    changes_sent_->mark_pending = false;
    send(encoder_->reply("changes_synced", json::object{{"change_mark", mark}}, nullptr));
    return give_declined_mark();
  }
  auto t = transport_.lock();
  if (!t) return;
  std::weak_ptr<Connection> weak = weak_from_this();
  const auto next = std::min(wait * 2, std::chrono::milliseconds(kChangeMarkWaitLast));
  t->schedule(wait, [weak, mark, waiting = std::move(waiting), next]() mutable {
    if (auto self = weak.lock()) self->send_change_mark(mark, std::move(waiting), false, next);
  });
}

// After its sync, a connection's client is given a newer mark as changes
// come (at most every few seconds: ChatService::tick_change_marks). Every
// change up to `through` has been handed to this loop before this call, so
// this connection was sent it, holds it, or holds a newer change of its
// message, or dropped it as older than one it has (or its user is not in
// the thread); send_change_mark waits for what it holds. Not while a read
// of changes runs (a resync's: what the bus lost comes by it), an own
// edit's answer is on its way (it comes from a worker, not this loop), or
// another mark is: such a mark is given once none is (give_declined_mark),
// as the next comes only with the next change, which may be long.
void Connection::changes_marked(int64_t through) {
  if (closed_ || !changes_sent_) return;
  ChangesSent& sent = *changes_sent_;
  if (sent.mark_given < 0 && !sent.mark_pending) return;  // no sync asked for, or it failed
  if (through <= sent.mark_given) return;
  if (sent.mark_pending || sent.reads > 0 || sent.awaited > 0) {
    sent.mark_declined = std::max(sent.mark_declined, through);
    return;
  }
  sent.mark_pending = true;
  send_change_mark(through, {}, true, kChangeMarkWaitFirst);
}

// Everything up to a declined mark had been handed to this loop when it was
// declined, so it is as good now as a newer one would be.
void Connection::give_declined_mark() {
  if (changes_sent_ && changes_sent_->mark_declined > changes_sent_->mark_given)
    changes_marked(changes_sent_->mark_declined);
}

// A bus event older than a read's copy of its message comes within this of
// the read, or not at all (Redis hangs a few seconds at a time).
constexpr auto kChangesKeptFor = std::chrono::seconds(30);

// A read of changes (a resync's, a sync's) ended. Its record of what it sent
// (ChangesSent::last, one entry per message) is not kept for the
// connection's life once past kChangesKept: with no read running a while
// later, it goes.
void Connection::end_change_read() {
  if (!changes_sent_ || changes_sent_->reads == 0) return;
  if (--changes_sent_->reads > 0) return;
  give_declined_mark();
  if (changes_sent_->last.size() <= kChangesKept) return;
  auto t = transport_.lock();
  if (!t) return;
  std::weak_ptr<Connection> weak = weak_from_this();
  t->schedule(kChangesKeptFor, [weak] {
    auto self = weak.lock();
    if (!self || !self->changes_sent_) return;
    ChangesSent& sent = *self->changes_sent_;
    if (sent.reads == 0 && sent.last.size() > kChangesKept) sent.last.clear();
  });
}

// At most this many messages noted while reads run: an older event of a
// message past it that comes late (one in flight as the read began) is not
// stopped, where a sync from `changes_after: 0` would note every message
// ever changed in the user's threads.
constexpr size_t kChangesNotedAtMost = 4 * kChangesKept;

bool Connection::admit_change(const std::string& message_id, int64_t change_no) {
  if (!changes_sent_ || change_no <= 0 || message_id.empty()) return true;
  auto it = changes_sent_->last.find(message_id);
  if (it != changes_sent_->last.end()) {
    if (it->second >= change_no) return false;
    it->second = change_no;
  } else if (changes_sent_->reads > 0 && changes_sent_->last.size() < kChangesNotedAtMost) {
    changes_sent_->last.emplace(message_id, change_no);
  }
  return true;
}

}  // namespace parley
