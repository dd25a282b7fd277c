// docs/protocol.md is the protocol's reference, so it must keep up with the
// code: every client frame type the codec accepts, and every server frame
// type the sources encode, is named in it (as `type`). Cheap, and it fails
// the day someone adds a frame and forgets the doc.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <string>

#include "protocol/client_frame.h"

namespace parley {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string protocol_doc() {
  std::string doc = read_text(fs::path(PARLEY_SOURCE_DIR) / "docs" / "protocol.md");
  EXPECT_FALSE(doc.empty()) << "cannot read docs/protocol.md under " << PARLEY_SOURCE_DIR;
  return doc;
}

// The frame types the server sends by name: the literal first argument of
// the encoders (encode_frame, encode_data_frame, an encoder's reply /
// data_reply, reply_thread_state) and the first non-empty literal of a
// ChatService publish (thread, audience, type, ...). Relayed frames (typing,
// call_*) carry the client frame's type. src/cli is a client: not scanned.
std::set<std::string> server_frame_types() {
  static const std::regex kEncode(
      R"re((?:encode_frame|encode_data_frame|reply|data_reply|reply_thread_state)\(\s*"([a-z_]+)")re");
  static const std::regex kPublish(R"re(publish\((?:[^;"]|"")*"([a-z_]+)")re");
  std::set<std::string> types;
  for (const auto& entry : fs::recursive_directory_iterator(fs::path(PARLEY_SOURCE_DIR) / "src")) {
    if (entry.path().extension() != ".cc" || entry.path().parent_path().filename() == "cli") continue;
    std::string text = read_text(entry.path());
    for (const std::regex* re : {&kEncode, &kPublish}) {
      for (std::sregex_iterator it(text.begin(), text.end(), *re), end; it != end; ++it) types.insert((*it)[1]);
    }
  }
  return types;
}

TEST(ProtocolDoc, NamesEveryClientFrameType) {
  std::string doc = protocol_doc();
  auto types = client_frame_types();
  EXPECT_GE(types.size(), 13u);
  for (std::string_view type : types) {
    EXPECT_NE(doc.find("`" + std::string(type) + "`"), std::string::npos)
        << "client frame `" << type << "` is not in docs/protocol.md";
  }
}

TEST(ProtocolDoc, NamesEveryServerFrameType) {
  std::string doc = protocol_doc();
  auto types = server_frame_types();
  // The scan itself works: these are certainly encoded somewhere.
  for (const char* known : {"connection_established", "new_message", "message_sent", "error", "pong", "presence",
                            "read_receipt", "message_delivered", "thread_subscribed"}) {
    EXPECT_TRUE(types.contains(known)) << known << " not found in the sources: is the scan broken?";
  }
  for (const std::string& type : types) {
    EXPECT_NE(doc.find("`" + type + "`"), std::string::npos) << "server frame `" << type << "` is not in docs/protocol.md";
  }
}

}  // namespace
}  // namespace parley
