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

// The frame types the server encodes by name: the first argument of
// encode_frame / encode_data_frame / reply_thread_state when it is a literal.
// (Relayed frames, typing and call_*, carry the client frame's type.)
std::set<std::string> server_frame_types() {
  static const std::regex kEncode(R"re((?:encode_frame|encode_data_frame|reply_thread_state)\(\s*"([a-z_]+)")re");
  std::set<std::string> types;
  for (const auto& entry : fs::recursive_directory_iterator(fs::path(PARLEY_SOURCE_DIR) / "src")) {
    if (entry.path().extension() != ".cc") continue;
    std::string text = read_text(entry.path());
    for (std::sregex_iterator it(text.begin(), text.end(), kEncode), end; it != end; ++it) types.insert((*it)[1]);
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
  for (const char* known : {"connection_established", "new_message", "message_sent", "error", "pong"}) {
    EXPECT_TRUE(types.contains(known)) << known << " not found in the sources: is the scan broken?";
  }
  for (const std::string& type : types) {
    EXPECT_NE(doc.find("`" + type + "`"), std::string::npos) << "server frame `" << type << "` is not in docs/protocol.md";
  }
}

}  // namespace
}  // namespace parley
