#include "chat/presence.h"

#include "common/clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "chat/presence_batch.h"
#include "common/clock.h"

namespace parley {
namespace {

using Announcements = std::vector<std::pair<std::string, bool>>;

// A directory whose answers the test chooses.
class ScriptedDirectory : public PresenceDirectory {
 public:
  bool first = true, last = true;
  std::vector<std::string> calls;
  std::function<void(const std::string&, int64_t)> gone;
  void node_online(const std::string& user, std::function<void(bool)> done) override {
    calls.push_back("online " + user);
    done(first);
  }
  void node_offline(const std::string& user, std::function<void(bool)> done) override {
    calls.push_back("offline " + user);
    done(last);
  }
  void node_live(const std::string& user, bool live) override {
    calls.push_back((live ? "live " : "idle ") + user);
  }
  // "elsewhere" has a connection on another node; "grace-elsewhere" is in
  // another node's grace period (online, not connected).
  bool known_online(const std::string& user) const override {
    return user == "elsewhere" || user == "grace-elsewhere";
  }
  bool known_connected_elsewhere(const std::string& user) const override { return user == "elsewhere"; }
  void set_gone_hook(std::function<void(const std::string&, int64_t)> hook) override { gone = std::move(hook); }
  void set_back_hook(std::function<void(const std::string&, bool)> hook) override { back = std::move(hook); }
  std::function<void(const std::string&, bool)> back;
};

struct Fixture {
  Presence presence{std::chrono::milliseconds(0)};
  ScriptedDirectory directory;
  Announcements said;
  Fixture() {
    presence.set_hooks(nullptr, [this](PresenceChange c) { said.emplace_back(c.user_id, c.online); });
    presence.set_directory(&directory);
  }
};

TEST(Presence, WithoutADirectoryAnnouncesLocalChanges) {
  Presence p(std::chrono::milliseconds(0));
  Announcements said;
  p.set_hooks(nullptr, [&](PresenceChange c) { said.emplace_back(c.user_id, c.online); });
  p.connect("a");
  p.connect("a");
  p.disconnect("a");
  p.disconnect("a");
  EXPECT_EQ(said, (Announcements{{"a", true}, {"a", false}}));
}

// last_seen is when the last connection closed: the grace period decides
// whether to say so, not what time it was.
TEST(Presence, AnOfflineChangeCarriesTheTimeTheLastConnectionClosed) {
  Presence p(std::chrono::milliseconds(3000));
  std::function<void()> grace;
  std::vector<PresenceChange> said;
  p.set_hooks([&](std::chrono::milliseconds, std::function<void()> fn) { grace = std::move(fn); },
              [&](PresenceChange c) { said.push_back(std::move(c)); });
  const Micros before_open = now_micros();
  p.connect("a");
  const Micros after_open = now_micros();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const Micros before_close = now_micros();
  p.disconnect("a");
  const Micros after_close = now_micros();
  ASSERT_TRUE(grace);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  grace();
  ASSERT_EQ(said.size(), 2u);
  EXPECT_TRUE(said[0].online);
  EXPECT_GE(said[0].at, before_open);
  EXPECT_LE(said[0].at, after_open);
  EXPECT_FALSE(said[1].online);
  EXPECT_GE(said[1].at, before_close);
  EXPECT_LE(said[1].at, after_close) << "the close's time, not the grace period's end (50 ms later)";
}

TEST(Presence, AsksTheDirectoryOncePerNodeTransition) {
  Fixture f;
  f.presence.connect("a");
  f.presence.connect("a");
  f.presence.disconnect("a");
  f.presence.disconnect("a");
  EXPECT_EQ(f.directory.calls, (std::vector<std::string>{"online a", "idle a", "offline a"}));
  EXPECT_EQ(f.said, (Announcements{{"a", true}, {"a", false}}));
}

// The directory hears when the grace period begins and when a reconnect ends
// it early, so other nodes know the user has nothing open here meanwhile.
TEST(Presence, TellsTheDirectoryWhenTheGracePeriodBeginsAndWhenAReconnectEndsIt) {
  Presence p(std::chrono::milliseconds(3000));
  ScriptedDirectory directory;
  std::function<void()> grace;
  p.set_hooks([&](std::chrono::milliseconds, std::function<void()> fn) { grace = std::move(fn); }, nullptr);
  p.set_directory(&directory);
  p.connect("a");
  p.disconnect("a");
  p.connect("a");
  p.connect("a");
  p.disconnect("a");
  EXPECT_EQ(directory.calls, (std::vector<std::string>{"online a", "idle a", "live a"}))
      << "one idle per last close, one live per first open within the grace";
}

TEST(Presence, OnlineOnAnotherNodeAlreadyMeansNoAnnouncement) {
  Fixture f;
  f.directory.first = false;
  f.directory.last = false;
  f.presence.connect("a");
  f.presence.disconnect("a");
  EXPECT_TRUE(f.said.empty()) << "the other node announced it, and still has the user";
}

// A reconnect on another event loop just as the grace period ends: the
// directory must hear offline then online, in that order (the other way
// round Redis would drop this node's user while it is connected).
TEST(Presence, AReconnectAsTheGraceEndsReachesTheDirectoryAfterTheOffline) {
  class RacingDirectory final : public ScriptedDirectory {
   public:
    std::function<void()> during_offline;
    void node_offline(const std::string& user, std::function<void(bool)> done) override {
      if (during_offline) std::exchange(during_offline, nullptr)();
      ScriptedDirectory::node_offline(user, std::move(done));
    }
  };
  Presence p(std::chrono::milliseconds(3000));
  RacingDirectory directory;
  std::mutex said_mu;
  Announcements said;
  std::function<void()> grace;
  p.set_hooks([&](std::chrono::milliseconds, std::function<void()> fn) { grace = std::move(fn); },
              [&](PresenceChange c) {
                std::lock_guard lock(said_mu);
                said.emplace_back(c.user_id, c.online);
              });
  p.set_directory(&directory);
  p.connect("a");
  p.disconnect("a");
  ASSERT_TRUE(grace);
  std::thread reconnect;
  std::atomic<bool> connected{false};
  directory.during_offline = [&] {
    // The offline is decided; a connect on another thread now must wait for it.
    reconnect = std::thread([&] {
      p.connect("a");
      connected = true;
    });
    for (int i = 0; i < 40 && !connected; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  };
  grace();
  reconnect.join();
  EXPECT_EQ(directory.calls, (std::vector<std::string>{"online a", "idle a", "offline a", "online a"}));
  EXPECT_EQ(said, (Announcements{{"a", true}, {"a", false}, {"a", true}}));
  EXPECT_TRUE(p.online("a"));
}

// What the API reports follows the announcements: a reload within the grace
// period announces nothing, so nothing may read offline meanwhile; push and
// calls ask whether anything is connected now.
TEST(Presence, OnlineUntilTheOfflineIsAnnouncedConnectedOnlyWhileAConnectionIsOpen) {
  Presence p(std::chrono::milliseconds(3000));
  std::function<void()> grace;
  Announcements said;
  p.set_hooks([&](std::chrono::milliseconds, std::function<void()> fn) { grace = std::move(fn); },
              [&](PresenceChange c) { said.emplace_back(c.user_id, c.online); });
  EXPECT_FALSE(p.online("a"));
  p.connect("a");
  EXPECT_TRUE(p.online("a"));
  EXPECT_TRUE(p.connected("a"));
  p.disconnect("a");
  ASSERT_TRUE(grace);
  EXPECT_TRUE(p.online("a")) << "in the grace period: no offline announced yet";
  EXPECT_FALSE(p.connected("a"));
  grace();
  EXPECT_FALSE(p.online("a"));
  EXPECT_FALSE(p.connected("a"));
  EXPECT_EQ(said, (Announcements{{"a", true}, {"a", false}}));
}

TEST(Presence, OnlineCountsOtherNodes) {
  Fixture f;
  EXPECT_TRUE(f.presence.online("elsewhere"));
  EXPECT_FALSE(f.presence.online("nobody"));
  EXPECT_TRUE(f.presence.connected("elsewhere"));
  EXPECT_TRUE(f.presence.online("grace-elsewhere"));
  EXPECT_FALSE(f.presence.connected("grace-elsewhere")) << "in another node's grace period: nothing open";
  EXPECT_EQ(f.presence.users_online(), 0u) << "users_online counts this process";
}

TEST(Presence, AUserWhoseNodeDiedGoesOfflineUnlessConnectedHere) {
  Fixture f;
  ASSERT_TRUE(f.directory.gone);
  f.presence.connect("here");
  f.said.clear();
  f.directory.gone("here", 0);
  f.directory.gone("there", 0);
  EXPECT_EQ(f.said, (Announcements{{"there", false}}));
}

// The user was last seen when their node was last heard of, not when its
// death was noticed; a time from a clock ahead of this one is taken as now.
TEST(Presence, AUserWhoseNodeDiedWasLastSeenWhenTheNodeWasLastHeardOf) {
  Presence presence{std::chrono::milliseconds(0)};
  ScriptedDirectory directory;
  std::vector<PresenceChange> said;
  presence.set_hooks(nullptr, [&said](PresenceChange c) { said.push_back(c); });
  presence.set_directory(&directory);
  const Micros hour_ago = now_micros() - 3600LL * 1000 * 1000;
  directory.gone("u1", hour_ago);
  directory.gone("u2", 0);
  directory.gone("u3", now_micros() + 3600LL * 1000 * 1000);
  const Micros after = now_micros();
  ASSERT_EQ(said.size(), 3u);
  EXPECT_EQ(said[0].at, hour_ago);
  EXPECT_GE(said[1].at, after - 60LL * 1000 * 1000);
  EXPECT_LE(said[1].at, after);
  EXPECT_LE(said[2].at, after) << "not in the future";
  EXPECT_GE(said[2].at, after - 60LL * 1000 * 1000);
}

TEST(Presence, AUserTheDirectoryLostIsAnnouncedAgainWhileConnectedHere) {
  Fixture f;
  ASSERT_TRUE(f.directory.back);
  f.presence.connect("here");
  f.said.clear();
  f.directory.back("here", false);
  f.directory.back("gone-meanwhile", false);
  EXPECT_EQ(f.said, (Announcements{{"here", true}})) << "only a user still connected here comes back";
  f.directory.back("on-another-node", true);
  EXPECT_EQ(f.said, (Announcements{{"here", true}, {"on-another-node", true}}))
      << "announced offline here while cut off, yet another node has them";
}

// A burst of changes waits for one scheduled flush and is handed over as one
// batch, in the order the changes came; the next change starts a new batch.
struct BatchFixture {
  std::vector<std::pair<std::chrono::milliseconds, std::function<void()>>> scheduled;
  std::vector<std::vector<PresenceChange>> batches;
  std::function<void()> during_flush;
  std::shared_ptr<PresenceBatch> batch = PresenceBatch::create(
      std::chrono::milliseconds(5),
      [this](std::chrono::milliseconds delay, std::function<void()> fn) { scheduled.emplace_back(delay, std::move(fn)); },
      [this](std::vector<PresenceChange> changes) {
        batches.push_back(std::move(changes));
        if (during_flush) std::exchange(during_flush, nullptr)();
      });
  static std::vector<std::pair<std::string, bool>> flat(const std::vector<PresenceChange>& changes) {
    std::vector<std::pair<std::string, bool>> out;
    for (const auto& c : changes) out.emplace_back(c.user_id, c.online);
    return out;
  }
};

TEST(PresenceBatch, ABurstIsOneBatchInOrder) {
  BatchFixture f;
  f.batch->add({"a", true});
  f.batch->add({"b", true});
  f.batch->add({"a", false});
  ASSERT_EQ(f.scheduled.size(), 1u) << "one flush for the burst";
  EXPECT_EQ(f.scheduled[0].first, std::chrono::milliseconds(5));
  EXPECT_TRUE(f.batches.empty()) << "nothing is handed over before the flush runs";
  f.scheduled[0].second();
  ASSERT_EQ(f.batches.size(), 1u);
  EXPECT_EQ(BatchFixture::flat(f.batches[0]),
            (std::vector<std::pair<std::string, bool>>{{"a", true}, {"b", true}, {"a", false}}));
  f.batch->add({"c", true});
  ASSERT_EQ(f.scheduled.size(), 2u) << "the next change starts a new batch";
  f.scheduled[1].second();
  ASSERT_EQ(f.batches.size(), 2u);
  EXPECT_EQ(BatchFixture::flat(f.batches[1]), (std::vector<std::pair<std::string, bool>>{{"c", true}}));
}

TEST(PresenceBatch, AChangeDuringAFlushGoesToTheNextBatch) {
  BatchFixture f;
  f.during_flush = [&f] { f.batch->add({"late", true}); };
  f.batch->add({"a", true});
  ASSERT_EQ(f.scheduled.size(), 1u);
  f.scheduled[0].second();
  ASSERT_EQ(f.batches.size(), 1u);
  EXPECT_EQ(BatchFixture::flat(f.batches[0]), (std::vector<std::pair<std::string, bool>>{{"a", true}}));
  ASSERT_EQ(f.scheduled.size(), 2u) << "the late change scheduled its own flush";
  f.scheduled[1].second();
  ASSERT_EQ(f.batches.size(), 2u);
  EXPECT_EQ(BatchFixture::flat(f.batches[1]), (std::vector<std::pair<std::string, bool>>{{"late", true}}));
}

TEST(PresenceBatch, TheScheduledFlushKeepsTheBatchAlive) {
  std::function<void()> pending;
  std::vector<PresenceChange> got;
  {
    auto batch = PresenceBatch::create(
        std::chrono::milliseconds(5), [&](std::chrono::milliseconds, std::function<void()> fn) { pending = std::move(fn); },
        [&](std::vector<PresenceChange> changes) { got = std::move(changes); });
    batch->add({"a", true});
  }
  ASSERT_TRUE(pending);
  pending();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].user_id, "a");
}

}  // namespace
}  // namespace parley
