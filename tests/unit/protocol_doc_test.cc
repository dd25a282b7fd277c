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

// The codes of the error table: the first column of the rows under
// "## Error codes" (a row may name several, `a`, `b`).
std::set<std::string> documented_error_codes(const std::string& doc) {
  size_t begin = doc.find("\n## Error codes");
  EXPECT_NE(begin, std::string::npos) << "docs/protocol.md has no \"## Error codes\" section";
  if (begin == std::string::npos) return {};
  size_t end = doc.find("\n## ", begin + 1);
  std::string section = doc.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
  static const std::regex kRow(R"re(\n\| ([^|]+) \|)re");
  static const std::regex kCode("`([a-z_]+)`");
  std::set<std::string> codes;
  for (std::sregex_iterator row(section.begin(), section.end(), kRow), end_row; row != end_row; ++row) {
    std::string first = (*row)[1];
    for (std::sregex_iterator c(first.begin(), first.end(), kCode), end_code; c != end_code; ++c) codes.insert((*c)[1]);
  }
  return codes;
}

// The error codes the server code can put in an answer to a client: the
// literal code of an Error made by a helper or by kind, of an HTTP error
// response, of a Socket.IO CONNECT_ERROR. Only where answers are made: the
// store's and the admin commands' codes reach clients through these layers
// or not at all.
std::set<std::string> client_error_codes() {
  static const std::regex kCodes[] = {
      std::regex(R"re(\b(?:bad_input|not_found|unauthorized)\(\s*"([a-z_]+)")re"),
      std::regex(R"re(ErrorKind::k[A-Za-z]+,\s*"([a-z_]+)")re"),
      std::regex(R"re(error_response\(\s*\d+,\s*"([a-z_]+)")re"),
      std::regex(R"re(encode_connect_error\([^;]*,\s*"([a-z_]+)"\s*\))re"),
  };
  std::set<std::string> codes;
  for (const char* dir : {"api", "auth", "chat", "protocol", "net", "common"}) {
    for (const auto& entry : fs::recursive_directory_iterator(fs::path(PARLEY_SOURCE_DIR) / "src" / dir)) {
      if (entry.path().extension() != ".cc" && entry.path().extension() != ".h") continue;
      std::string text = read_text(entry.path());
      for (const std::regex& re : kCodes) {
        for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) codes.insert((*it)[1]);
      }
    }
  }
  return codes;
}

TEST(ProtocolDoc, ListsEveryErrorCodeAClientCanGet) {
  std::string doc = protocol_doc();
  auto documented = documented_error_codes(doc);
  auto codes = client_error_codes();
  for (const char* known : {"invalid_json", "forbidden", "token_expired", "uri_too_long", "too_many_connections"}) {
    EXPECT_TRUE(codes.contains(known)) << known << " not found in the sources: is the scan broken?";
    EXPECT_TRUE(documented.contains(known)) << known << " not found in the table: is its parsing broken?";
  }
  // Made in these layers but never sent to a client: failures at start
  // (a bad setting, no TLS files, a port in use), the webhook's own HTTP
  // client, a Socket.IO packet that cannot be parsed (the session is
  // closed, as by the reference server; the code only labels the metric),
  // and `parley user add --id`'s refusal of an id in use (a local command).
  const std::set<std::string> not_for_clients = {"crypto_init_failed", "invalid_config", "invalid_bind",
                                                 "tls_config",         "listen_failed",  "invalid_webhook_url",
                                                 "webhook_abandoned",  "webhook_unreachable", "invalid_packet",
                                                 "user_exists"};
  for (const std::string& code : codes) {
    if (not_for_clients.contains(code)) continue;
    EXPECT_TRUE(documented.contains(code)) << "error code `" << code
                                           << "` is not in the table of docs/protocol.md, \"Error codes\"";
  }
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
