#include "chat/presence.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace parley {
namespace {

using Announcements = std::vector<std::pair<std::string, bool>>;

// A directory whose answers the test chooses.
class ScriptedDirectory final : public PresenceDirectory {
 public:
  bool first = true, last = true;
  std::vector<std::string> calls;
  std::function<void(const std::string&)> gone;
  void node_online(const std::string& user, std::function<void(bool)> done) override {
    calls.push_back("online " + user);
    done(first);
  }
  void node_offline(const std::string& user, std::function<void(bool)> done) override {
    calls.push_back("offline " + user);
    done(last);
  }
  bool known_online(const std::string& user) const override { return user == "elsewhere"; }
  void set_gone_hook(std::function<void(const std::string&)> hook) override { gone = std::move(hook); }
  void set_back_hook(std::function<void(const std::string&)> hook) override { back = std::move(hook); }
  std::function<void(const std::string&)> back;
};

struct Fixture {
  Presence presence{std::chrono::milliseconds(0)};
  ScriptedDirectory directory;
  Announcements said;
  Fixture() {
    presence.set_hooks(nullptr, [this](const std::string& u, bool on) { said.emplace_back(u, on); });
    presence.set_directory(&directory);
  }
};

TEST(Presence, WithoutADirectoryAnnouncesLocalChanges) {
  Presence p(std::chrono::milliseconds(0));
  Announcements said;
  p.set_hooks(nullptr, [&](const std::string& u, bool on) { said.emplace_back(u, on); });
  p.connect("a");
  p.connect("a");
  p.disconnect("a");
  p.disconnect("a");
  EXPECT_EQ(said, (Announcements{{"a", true}, {"a", false}}));
}

TEST(Presence, AsksTheDirectoryOncePerNodeTransition) {
  Fixture f;
  f.presence.connect("a");
  f.presence.connect("a");
  f.presence.disconnect("a");
  f.presence.disconnect("a");
  EXPECT_EQ(f.directory.calls, (std::vector<std::string>{"online a", "offline a"}));
  EXPECT_EQ(f.said, (Announcements{{"a", true}, {"a", false}}));
}

TEST(Presence, OnlineOnAnotherNodeAlreadyMeansNoAnnouncement) {
  Fixture f;
  f.directory.first = false;
  f.directory.last = false;
  f.presence.connect("a");
  f.presence.disconnect("a");
  EXPECT_TRUE(f.said.empty()) << "the other node announced it, and still has the user";
}

TEST(Presence, OnlineCountsOtherNodes) {
  Fixture f;
  EXPECT_TRUE(f.presence.online("elsewhere"));
  EXPECT_FALSE(f.presence.online("nobody"));
  EXPECT_EQ(f.presence.users_online(), 0u) << "users_online counts this process";
}

TEST(Presence, AUserWhoseNodeDiedGoesOfflineUnlessConnectedHere) {
  Fixture f;
  ASSERT_TRUE(f.directory.gone);
  f.presence.connect("here");
  f.said.clear();
  f.directory.gone("here");
  f.directory.gone("there");
  EXPECT_EQ(f.said, (Announcements{{"there", false}}));
}

TEST(Presence, AUserTheDirectoryLostIsAnnouncedAgainWhileConnectedHere) {
  Fixture f;
  ASSERT_TRUE(f.directory.back);
  f.presence.connect("here");
  f.said.clear();
  f.directory.back("here");
  f.directory.back("gone-meanwhile");
  EXPECT_EQ(f.said, (Announcements{{"here", true}})) << "only a user still connected here comes back";
}

}  // namespace
}  // namespace parley
