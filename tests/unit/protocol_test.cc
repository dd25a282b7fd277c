#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <regex>
#include <set>
#include <string>

#include "protocol/client_frame.h"
#include "protocol/encode.h"

namespace parley {
namespace {

namespace json = boost::json;

constexpr const char* kThread = "0b7c2a9e-3f41-4d2a-9a51-6c1e8f2d4b10";
constexpr const char* kMsg = "5d1f0a3c-7e2b-4c8d-b9a0-1e2f3a4b5c6d";

std::string with_thread(const std::string& rest) {
  return std::string(R"({"thread_id":")") + kThread + "\"" + rest + "}";
}

ClientFrame parse_ok(const std::string& text) {
  ParsedFrame p = parse_client_frame(text);
  EXPECT_FALSE(p.error) << text << " -> " << p.error->code << ": " << p.error->message;
  return p.frame;
}

std::string parse_code(const std::string& text) {
  ParsedFrame p = parse_client_frame(text);
  return p.error ? p.error->code : "<no error>";
}

// ------------------------------------------------------------ each client type

TEST(ParseClientFrame, AuthKeepsToken) {
  auto f = parse_ok(R"({"type":"auth","token":"abc.def.ghi"})");
  EXPECT_EQ(f.type, ClientType::kAuth);
  EXPECT_EQ(f.token, "abc.def.ghi");
}

TEST(ParseClientFrame, AuthWithoutTokenIsMissingField) {
  EXPECT_EQ(parse_code(R"({"type":"auth"})"), "missing_field");
}

TEST(ParseClientFrame, AuthCarriesSubscribeEntriesWithTheirRequestIds) {
  auto f = parse_ok(std::string(R"({"type":"auth","token":"t","subscribe":[{"thread_id":")") + kThread +
                    R"(","since_seq":41,"request_id":"s1"},{"thread_id":")" + kMsg + R"("}]})");
  ASSERT_EQ(f.subscribes.size(), 2u);
  EXPECT_EQ(f.subscribes[0].type, ClientType::kSubscribeThread);
  EXPECT_EQ(f.subscribes[0].thread_id, kThread);
  EXPECT_EQ(f.subscribes[1].thread_id, kMsg);
  EXPECT_EQ(f.subscribes[0].since_seq, 41);
  EXPECT_EQ(f.subscribes[0].request_id, json::value("s1"));
  EXPECT_FALSE(f.subscribes[1].since_seq);
  EXPECT_TRUE(f.subscribes[1].request_id.is_null());
  EXPECT_TRUE(parse_ok(R"({"type":"auth","token":"t","subscribe":null})").subscribes.empty());
  EXPECT_TRUE(parse_ok(R"({"type":"auth","token":"t","subscribe":[]})").subscribes.empty());
}

TEST(ParseClientFrame, AuthCarriesChangesAfterNullAsNoMarkYet) {
  EXPECT_FALSE(parse_ok(R"({"type":"auth","token":"t"})").changes_after);
  EXPECT_EQ(parse_ok(R"({"type":"auth","token":"t","changes_after":null})").changes_after, kNoChangeMark);
  EXPECT_EQ(parse_ok(R"({"type":"auth","token":"t","changes_after":0})").changes_after, 0);
  EXPECT_EQ(parse_ok(R"({"type":"auth","token":"t","changes_after":42})").changes_after, 42);
  EXPECT_EQ(parse_ok(R"({"type":"auth","token":"t","changes_after":42.0})").changes_after, 42);
  EXPECT_EQ(parse_ok(R"({"type":"auth","token":"t","changes_after":9007199254740991})").changes_after,
            9007199254740991);
  for (const char* bad : {"-1", "1.5", "\"7\"", "true", "[]", "{}", "9007199254740992", "18446744073709551615"}) {
    ParsedFrame p = parse_client_frame(std::string(R"({"type":"auth","token":"t","changes_after":)") + bad + "}");
    ASSERT_TRUE(p.error) << bad;
    EXPECT_EQ(p.error->code, "invalid_field") << bad;
    EXPECT_NE(p.error->message.find("changes_after"), std::string::npos) << p.error->message;
  }
}

TEST(ParseChangesAfterParam, TakesNullOrDigitsUpTo2To53Minus1) {
  EXPECT_EQ(parse_changes_after_param("null").value(), kNoChangeMark);
  EXPECT_EQ(parse_changes_after_param("0").value(), 0);
  EXPECT_EQ(parse_changes_after_param("1841").value(), 1841);
  EXPECT_EQ(parse_changes_after_param("9007199254740991").value(), 9007199254740991);
  for (const char* bad : {"", "-1", "+1", "1.0", "1e3", "12a", " 1", "9007199254740992", "99999999999999999999", "NULL"}) {
    auto r = parse_changes_after_param(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, "invalid_field") << bad;
  }
}

TEST(ParseClientFrame, AuthWithABadSubscribeListIsRefusedNamingTheEntry) {
  const std::string entry = std::string(R"({"thread_id":")") + kThread + R"(","since_seq":1})";
  struct Case {
    std::string list, code, message;
  } cases[] = {
      {R"({"thread_id":"x"})", "invalid_field", "field subscribe must be an array"},
      {"[" + entry + ",5]", "invalid_field", "field subscribe[1] must be an object"},
      {R"([{"since_seq":1}])", "missing_field", "subscribe[0]: "},
      {R"([{"thread_id":"nope"}])", "invalid_field", "subscribe[0]: field thread_id"},
      {std::string(R"([{"thread_id":")") + kThread + R"(","since_seq":-1}])", "invalid_field",
       "subscribe[0]: field since_seq"},
      {std::string(R"([{"thread_id":")") + kThread + R"(","request_id":[1]}])", "invalid_field",
       "field subscribe[0].request_id"},
      {"[" + entry + "," + entry + "]", "invalid_field", "field subscribe[1].thread_id is listed twice"},
  };
  for (const auto& c : cases) {
    ParsedFrame p = parse_client_frame(R"({"type":"auth","token":"t","subscribe":)" + c.list + "}");
    ASSERT_TRUE(p.error) << c.list;
    EXPECT_EQ(p.error->code, c.code) << c.list;
    EXPECT_NE(p.error->message.find(c.message), std::string::npos) << c.list << " -> " << p.error->message;
    EXPECT_EQ(p.frame.type, ClientType::kAuth) << "a bad auth frame closes the connection: " << c.list;
  }
  std::string many = "[";
  for (size_t i = 0; i <= kMaxSubscribesAtAuth; ++i) many += (i ? "," : "") + entry;
  many += "]";
  ParsedFrame p = parse_client_frame(R"({"type":"auth","token":"t","subscribe":)" + many + "}");
  ASSERT_TRUE(p.error);
  EXPECT_NE(p.error->message.find("at most 500"), std::string::npos) << p.error->message;
  // Socket.IO's CONNECT has no way to echo one: request ids are dropped there.
  json::value list = json::parse("[" + std::string(R"({"thread_id":")") + kThread + R"(","request_id":7}])");
  auto sio = parse_subscribe_list(&list, /*keep_request_ids=*/false);
  ASSERT_TRUE(sio);
  EXPECT_TRUE((*sio)[0].request_id.is_null());
}

TEST(ParseClientFrame, Ping) { EXPECT_EQ(parse_ok(R"({"type":"ping"})").type, ClientType::kPing); }

TEST(ParseClientFrame, SendMessageWithThreadId) {
  auto f = parse_ok(with_thread(R"(,"type":"send_message","content":"Hello!","message_type":"image","client_msg_id":"c-17")"));
  EXPECT_EQ(f.type, ClientType::kSendMessage);
  EXPECT_EQ(f.thread_id, kThread);
  EXPECT_TRUE(f.username.empty());
  EXPECT_EQ(f.content, "Hello!");
  EXPECT_EQ(f.message_type, "image");
  EXPECT_EQ(f.client_msg_id, "c-17");
}

TEST(ParseClientFrame, SendMessageWithUsername) {
  auto f = parse_ok(R"({"type":"send_message","username":"john","content":"hi"})");
  EXPECT_EQ(f.type, ClientType::kSendMessage);
  EXPECT_EQ(f.username, "john");
  EXPECT_TRUE(f.thread_id.empty());
  EXPECT_EQ(f.content, "hi");
}

TEST(ParseClientFrame, SendMessageTextIsAliasForContent) {
  auto f = parse_ok(with_thread(R"(,"type":"send_message","text":"via alias")"));
  EXPECT_EQ(f.content, "via alias");
}

TEST(ParseClientFrame, SendMessageContentWinsOverText) {
  auto f = parse_ok(with_thread(R"(,"type":"send_message","content":"real","text":"alias")"));
  EXPECT_EQ(f.content, "real");
}

TEST(ParseClientFrame, SendMessageTypeDefaultsToTextAndNoClientMsgId) {
  auto f = parse_ok(with_thread(R"(,"type":"send_message","content":"x")"));
  EXPECT_EQ(f.message_type, "text");
  EXPECT_TRUE(f.client_msg_id.empty());
}

TEST(ParseClientFrame, SendMessageContentKeptExactly) {
  auto f = parse_ok(with_thread(R"(,"type":"send_message","content":"  h\u00e9llo \ud83d\ude00\n ")"));
  EXPECT_EQ(f.content, "  h\xC3\xA9llo \xF0\x9F\x98\x80\n ");
}

TEST(ParseClientFrame, SendMessageWithoutThreadOrUsernameIsMissingField) {
  EXPECT_EQ(parse_code(R"({"type":"send_message","content":"x"})"), "missing_field");
}

TEST(ParseClientFrame, SubscribeThreadWithSinceSeq) {
  auto f = parse_ok(with_thread(R"(,"type":"subscribe_thread","since_seq":42)"));
  EXPECT_EQ(f.type, ClientType::kSubscribeThread);
  EXPECT_EQ(f.thread_id, kThread);
  ASSERT_TRUE(f.since_seq.has_value());
  EXPECT_EQ(*f.since_seq, 42);
}

TEST(ParseClientFrame, SubscribeThreadSinceSeqZeroAndAbsent) {
  auto zero = parse_ok(with_thread(R"(,"type":"subscribe_thread","since_seq":0)"));
  ASSERT_TRUE(zero.since_seq.has_value());
  EXPECT_EQ(*zero.since_seq, 0);
  auto absent = parse_ok(with_thread(R"(,"type":"subscribe_thread")"));
  EXPECT_FALSE(absent.since_seq.has_value());
}

TEST(ParseClientFrame, SeqsAbove2To53Minus1AreInvalid) {
  EXPECT_EQ(parse_ok(with_thread(R"(,"type":"subscribe_thread","since_seq":9007199254740991)")).since_seq,
            9007199254740991);
  for (const char* v : {"9007199254740992", "9223372036854775807", "18446744073709551615", "-1", "1.5"}) {
    EXPECT_EQ(parse_code(with_thread(std::string(R"(,"type":"subscribe_thread","since_seq":)") + v)), "invalid_field") << v;
    EXPECT_EQ(parse_code(with_thread(std::string(R"(,"type":"mark_as_read","up_to_seq":)") + v)), "invalid_field") << v;
  }
}

TEST(ParseClientFrame, AuthFieldErrorsKeepTheAuthType) {
  // The connection closes 4401 on these, so the type must be known.
  for (const char* f : {R"({"type":"auth"})", R"({"type":"auth","token":5})"}) {
    auto p = parse_client_frame(f);
    ASSERT_TRUE(p.error.has_value()) << f;
    EXPECT_EQ(p.frame.type, ClientType::kAuth) << f;
  }
}

TEST(ParseClientFrame, UnsubscribeThread) {
  auto f = parse_ok(with_thread(R"(,"type":"unsubscribe_thread")"));
  EXPECT_EQ(f.type, ClientType::kUnsubscribeThread);
  EXPECT_EQ(f.thread_id, kThread);
}

TEST(ParseClientFrame, JoinChat) {
  auto f = parse_ok(R"({"type":"join_chat","username":"mary"})");
  EXPECT_EQ(f.type, ClientType::kJoinChat);
  EXPECT_EQ(f.username, "mary");
}

TEST(ParseClientFrame, MarkAsReadWithThreadIdAndUpToSeq) {
  auto f = parse_ok(with_thread(R"(,"type":"mark_as_read","up_to_seq":7)"));
  EXPECT_EQ(f.type, ClientType::kMarkAsRead);
  EXPECT_EQ(f.thread_id, kThread);
  ASSERT_TRUE(f.up_to_seq.has_value());
  EXPECT_EQ(*f.up_to_seq, 7);
}

TEST(ParseClientFrame, MarkAsReadChatIdAlias) {
  auto f = parse_ok(std::string(R"({"type":"mark_as_read","chatId":")") + kThread + "\"}");
  EXPECT_EQ(f.type, ClientType::kMarkAsRead);
  EXPECT_EQ(f.thread_id, kThread);
  EXPECT_FALSE(f.up_to_seq.has_value());
  // A null thread_id is absent, so the alias is read.
  auto g = parse_ok(std::string(R"({"type":"mark_as_read","thread_id":null,"chatId":")") + kThread + "\"}");
  EXPECT_EQ(g.thread_id, kThread);
}

TEST(ParseClientFrame, MarkAsReadWithoutThreadIsMissingField) {
  EXPECT_EQ(parse_code(R"({"type":"mark_as_read"})"), "missing_field");
}

TEST(ParseClientFrame, MessageReceived) {
  auto f = parse_ok(std::string(R"({"type":"message_received","message_id":")") + kMsg + "\"}");
  EXPECT_EQ(f.type, ClientType::kMessageReceived);
  EXPECT_EQ(f.message_id, kMsg);
}

TEST(ParseClientFrame, MessageReceivedNeedsUuid) {
  EXPECT_EQ(parse_code(R"({"type":"message_received","message_id":"nope"})"), "invalid_field");
}

TEST(ParseClientFrame, DeleteMessage) {
  auto f = parse_ok(std::string(R"({"type":"delete_message","message_id":")") + kMsg + "\"}");
  EXPECT_EQ(f.type, ClientType::kDeleteMessage);
  EXPECT_EQ(f.message_id, kMsg);
  EXPECT_EQ(parse_code(R"({"type":"delete_message"})"), "missing_field");
  EXPECT_EQ(parse_code(R"({"type":"delete_message","message_id":"nope"})"), "invalid_field");
}

TEST(ParseClientFrame, EditMessageNeedsIdAndContent) {
  auto f = parse_ok(std::string(R"({"type":"edit_message","content":"fixed","message_id":")") + kMsg + "\"}");
  EXPECT_EQ(f.type, ClientType::kEditMessage);
  EXPECT_EQ(f.message_id, kMsg);
  EXPECT_EQ(f.content, "fixed");
  EXPECT_EQ(parse_code(std::string(R"({"type":"edit_message","message_id":")") + kMsg + "\"}"), "missing_field");
  EXPECT_EQ(parse_code(std::string(R"({"type":"edit_message","content":7,"message_id":")") + kMsg + "\"}"),
            "invalid_field");
}

TEST(ParseClientFrame, TypingDefaultsToTrue) {
  auto f = parse_ok(with_thread(R"(,"type":"typing")"));
  EXPECT_EQ(f.type, ClientType::kTyping);
  EXPECT_EQ(f.thread_id, kThread);
  EXPECT_TRUE(f.is_typing);
}

TEST(ParseClientFrame, TypingFalse) {
  auto f = parse_ok(with_thread(R"(,"type":"typing","is_typing":false)"));
  EXPECT_FALSE(f.is_typing);
}

TEST(ParseClientFrame, CallOfferPayloadKeptAsGiven) {
  auto f = parse_ok(with_thread(R"(,"type":"call_offer","payload":{"sdp":"v=0\r\n","n":[1,2.5,null,true]})"));
  EXPECT_EQ(f.type, ClientType::kCallOffer);
  EXPECT_EQ(f.thread_id, kThread);
  EXPECT_EQ(f.payload, json::parse(R"({"sdp":"v=0\r\n","n":[1,2.5,null,true]})"));
}

TEST(ParseClientFrame, SignallingTypes) {
  EXPECT_EQ(parse_ok(with_thread(R"(,"type":"call_answer","payload":"x")")).type, ClientType::kCallAnswer);
  EXPECT_EQ(parse_ok(with_thread(R"(,"type":"ice_candidate","payload":{})")).type, ClientType::kIceCandidate);
  EXPECT_EQ(parse_ok(with_thread(R"(,"type":"call_end")")).type, ClientType::kCallEnd);
}

// A null payload is an absent one, as for every required field.
TEST(ParseClientFrame, SignallingWithoutAPayloadIsRefusedButAHangUp) {
  for (const char* type : {"call_offer", "call_answer", "ice_candidate"}) {
    EXPECT_EQ(parse_code(with_thread(std::string(R"(,"type":")") + type + R"(")")), "missing_field") << type;
    EXPECT_EQ(parse_code(with_thread(std::string(R"(,"type":")") + type + R"(","payload":null)")), "missing_field")
        << type;
  }
  EXPECT_TRUE(parse_ok(with_thread(R"(,"type":"call_end")")).payload.is_null());
  EXPECT_TRUE(parse_ok(with_thread(R"(,"type":"call_end","payload":null)")).payload.is_null());
}

// ------------------------------------------------------------ request_id

TEST(ParseClientFrame, RequestIdStringEchoed) {
  auto f = parse_ok(R"({"type":"ping","request_id":"r-1"})");
  EXPECT_EQ(f.request_id, json::value("r-1"));
}

TEST(ParseClientFrame, RequestIdNumberEchoed) {
  auto f = parse_ok(R"({"type":"ping","request_id":17})");
  ASSERT_TRUE(f.request_id.is_number());
  EXPECT_EQ(f.request_id.to_number<int64_t>(), 17);
}

TEST(ParseClientFrame, RequestIdAbsentIsNull) {
  EXPECT_TRUE(parse_ok(R"({"type":"ping"})").request_id.is_null());
}

TEST(ParseClientFrame, RequestIdOfAnotherTypeIsInvalidField) {
  // Not a string or a number: refused, the frame not carried out, nothing to echo.
  for (const char* rid : {R"({"n":1})", "[1]", "{}", "true", "false"}) {
    std::string text = std::string(R"({"type":"send_message","content":"hi","request_id":)") + rid +
                       R"(,"thread_id":")" + kThread + "\"}";
    ParsedFrame p = parse_client_frame(text);
    ASSERT_TRUE(p.error) << text;
    EXPECT_EQ(p.error->code, "invalid_field") << text;
    EXPECT_NE(p.error->message.find("request_id"), std::string::npos) << p.error->message;
    EXPECT_TRUE(p.frame.request_id.is_null()) << text;
    EXPECT_NE(p.frame.type, ClientType::kAuth) << "a bad request_id alone does not close the connection";
  }
  auto auth = parse_client_frame(R"({"type":"auth","token":"abc.def.ghi","request_id":[]})");
  ASSERT_TRUE(auth.error);
  EXPECT_NE(auth.frame.type, ClientType::kAuth);
}

TEST(ParseClientFrame, RequestIdNullIsAbsent) {
  EXPECT_TRUE(parse_ok(R"({"type":"ping","request_id":null})").request_id.is_null());
}

TEST(ParseClientFrame, RequestIdKeptWhenTypeUnknown) {
  ParsedFrame p = parse_client_frame(R"({"type":"bogus","request_id":"r-9"})");
  ASSERT_TRUE(p.error);
  EXPECT_EQ(p.error->code, "unknown_type");
  EXPECT_EQ(p.frame.request_id, json::value("r-9"));
}

TEST(ParseClientFrame, RequestIdKeptWhenFieldInvalid) {
  ParsedFrame p = parse_client_frame(R"({"request_id":5,"type":"subscribe_thread","thread_id":"x"})");
  ASSERT_TRUE(p.error);
  EXPECT_EQ(p.error->code, "invalid_field");
  ASSERT_TRUE(p.frame.request_id.is_number());
  EXPECT_EQ(p.frame.request_id.to_number<int64_t>(), 5);
}

TEST(ParseClientFrame, RequestIdKeptWhenTypeMissing) {
  ParsedFrame p = parse_client_frame(R"({"request_id":"r-2"})");
  ASSERT_TRUE(p.error);
  EXPECT_EQ(p.error->code, "missing_field");
  EXPECT_EQ(p.frame.request_id, json::value("r-2"));
}

// A frame refused as a whole for its encoding or a number still answers with
// its request_id: a client matching replies by it would wait forever.
TEST(ParseClientFrame, RequestIdKeptWhenFrameRefusedWhole) {
  ParsedFrame surrogate =
      parse_client_frame(R"({"type":"send_message","thread_id":"t","content":"\ud800","request_id":"r-s"})");
  ASSERT_TRUE(surrogate.error);
  EXPECT_EQ(surrogate.error->code, "invalid_utf8");
  EXPECT_EQ(surrogate.frame.request_id, json::value("r-s"));

  // A surrogate pair in the request_id is kept as sent.
  ParsedFrame pair =
      parse_client_frame(R"({"type":"send_message","thread_id":"t","content":"\udc00","request_id":"r-\ud83d\ude00"})");
  ASSERT_TRUE(pair.error);
  EXPECT_EQ(pair.frame.request_id, json::value("r-\xF0\x9F\x98\x80"));

  ParsedFrame huge = parse_client_frame(R"({"type":"ping","request_id":7,"n":1e400})");
  ASSERT_TRUE(huge.error);
  EXPECT_EQ(huge.error->code, "invalid_json");
  ASSERT_TRUE(huge.frame.request_id.is_number());
  EXPECT_EQ(huge.frame.request_id.to_number<int64_t>(), 7);

  std::string deep = R"({"type":"ping","request_id":"r-d","n":)" + std::string(40, '[') + std::string(40, ']') + "}";
  ParsedFrame nested = parse_client_frame(deep);
  ASSERT_TRUE(nested.error);
  EXPECT_EQ(nested.error->code, "invalid_json");
  EXPECT_EQ(nested.frame.request_id, json::value("r-d"));

  // A backslash escaped before "ud…" is no surrogate escape: the id comes back as sent.
  ParsedFrame path = parse_client_frame(R"({"type":"ping","request_id":"C:\\udcfiles","n":1e400})");
  ASSERT_TRUE(path.error);
  EXPECT_EQ(path.error->code, "invalid_json");
  EXPECT_EQ(path.frame.request_id, json::value("C:\\udcfiles"));

  // Nothing to salvage: a request_id out of range, or a frame that is not JSON.
  EXPECT_TRUE(parse_client_frame(R"({"type":"ping","request_id":1e400})").frame.request_id.is_null());
  EXPECT_TRUE(parse_client_frame(R"({"type":"ping","request_id":"r-x",)").frame.request_id.is_null());
}

// ------------------------------------------------------------ errors

TEST(ParseClientFrameErrors, NotJson) {
  EXPECT_EQ(parse_code("hello"), "invalid_json");
  EXPECT_EQ(parse_code(R"({"type":"ping")"), "invalid_json");
  EXPECT_EQ(parse_code(""), "invalid_json");
}

// Boost.JSON reads a number beyond a double's range as infinity, which would
// be written back as `Infinity` (not JSON) to whoever a payload is relayed to.
TEST(ParseClientFrameErrors, NumberBeyondADoubleIsInvalidJson) {
  EXPECT_EQ(parse_code(R"({"type":"ping","request_id":1e400})"), "invalid_json");
  EXPECT_EQ(parse_code(R"({"type":"call_offer","thread_id":"t","payload":{"a":[{"n":-1e309}]}})"), "invalid_json");
  EXPECT_NE(parse_code(R"({"type":"ping","request_id":1e300})"), "invalid_json") << "a large number in range is fine";
}

TEST(ParseClientFrameErrors, JsonButNotObject) {
  EXPECT_EQ(parse_code(R"([{"type":"ping"}])"), "invalid_json");
  EXPECT_EQ(parse_code("42"), "invalid_json");
  EXPECT_EQ(parse_code(R"("ping")"), "invalid_json");
}

TEST(ParseClientFrameErrors, LoneSurrogateEscapeIsInvalidUtf8) {
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"send_message","content":"a\ud800b")")), "invalid_utf8");
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"send_message","content":"\ud800")")), "invalid_utf8");
}

// Malformed JSON that merely holds the text of a surrogate escape (an
// escaped backslash before it), or a whole pair, is malformed JSON.
TEST(ParseClientFrameErrors, SyntaxErrorNearAnEscapedBackslashOrAPairIsInvalidJson) {
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"send_message","content":"\\ud800" x)")), "invalid_json");
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"send_message","content":"\ud83d\ude00" x)")), "invalid_json");
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"send_message","content":"\ud800" x)")), "invalid_utf8")
      << "a lone one is still an encoding problem";
}

TEST(ParseClientFrameErrors, LoneTrailingSurrogateEscapeIsInvalidUtf8) {
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"send_message","content":"\udc00")")), "invalid_utf8");
}

TEST(ParseClientFrameErrors, HighSurrogateFollowedByNonSurrogateEscapeIsInvalidUtf8) {
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"send_message","content":"\ud800\u0041")")), "invalid_utf8");
}

TEST(ParseClientFrameErrors, RawInvalidUtf8BytesAreInvalidUtf8) {
  EXPECT_EQ(parse_code(with_thread(",\"type\":\"send_message\",\"content\":\"a\xff\xfe\"")), "invalid_utf8");
  // Overlong encoding of '/'.
  EXPECT_EQ(parse_code(with_thread(",\"type\":\"send_message\",\"content\":\"\xc0\xaf\"")), "invalid_utf8");
}

TEST(ParseClientFrameErrors, MissingType) { EXPECT_EQ(parse_code(R"({"content":"x"})"), "missing_field"); }

TEST(ParseClientFrameErrors, NumericTypeIsInvalidField) { EXPECT_EQ(parse_code(R"({"type":3})"), "invalid_field"); }

TEST(ParseClientFrameErrors, UnknownType) { EXPECT_EQ(parse_code(R"({"type":"send_messages"})"), "unknown_type"); }

TEST(ParseClientFrameErrors, ThreadIdNotUuid) {
  EXPECT_EQ(parse_code(R"({"type":"send_message","thread_id":"general","content":"x"})"), "invalid_field");
  EXPECT_EQ(parse_code(R"({"type":"subscribe_thread","thread_id":"0b7c2a9e-3f41-4d2a-9a51-6c1e8f2d4b1"})"),
            "invalid_field");
}

TEST(ParseClientFrameErrors, ThreadIdNumber) {
  EXPECT_EQ(parse_code(R"({"type":"send_message","thread_id":12,"content":"x"})"), "invalid_field");
  EXPECT_EQ(parse_code(R"({"type":"typing","thread_id":12})"), "invalid_field");
}

TEST(ParseClientFrameErrors, ContentMissing) {
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"send_message")")), "missing_field");
  ParsedFrame p = parse_client_frame(with_thread(R"(,"type":"send_message")"));
  ASSERT_TRUE(p.error);
  EXPECT_NE(p.error->message.find("content"), std::string::npos) << p.error->message;
}

TEST(ParseClientFrameErrors, ContentNumber) {
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"send_message","content":5)")), "invalid_field");
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"send_message","text":5)")), "invalid_field");
}

// JSON has one number type: 42.0 and 4.2e1 are the integer 42 (Python's
// json writes floats so); a fraction or a value past 2^53-1 is not a seq.
TEST(ParseClientFrame, SinceSeqWrittenWithAFractionOfZeroIsAnInteger) {
  for (const char* v : {"42.0", "4.2e1", "42e0"})
    EXPECT_EQ(parse_ok(with_thread(std::string(R"(,"type":"subscribe_thread","since_seq":)") + v)).since_seq, 42) << v;
  EXPECT_EQ(parse_ok(with_thread(R"(,"type":"mark_as_read","up_to_seq":0.0)")).up_to_seq, 0);
  for (const char* v : {"42.5", "-1.0", "1e16", "9007199254740992.0"})
    EXPECT_EQ(parse_code(with_thread(std::string(R"(,"type":"subscribe_thread","since_seq":)") + v)), "invalid_field") << v;
}

TEST(ParseClientFrameErrors, SinceSeqNegativeOrString) {
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"subscribe_thread","since_seq":-1)")), "invalid_field");
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"subscribe_thread","since_seq":"3")")), "invalid_field");
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"subscribe_thread","since_seq":1.5)")), "invalid_field");
}

TEST(ParseClientFrameErrors, UpToSeqNegative) {
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"mark_as_read","up_to_seq":-2)")), "invalid_field");
}

TEST(ParseClientFrameErrors, IsTypingString) {
  EXPECT_EQ(parse_code(with_thread(R"(,"type":"typing","is_typing":"yes")")), "invalid_field");
}

TEST(ParseClientFrame, UppercaseUuidNormalisedToLowercase) {
  auto f = parse_ok(R"({"type":"subscribe_thread","thread_id":"0B7C2A9E-3F41-4D2A-9A51-6C1E8F2D4B10"})");
  EXPECT_EQ(f.thread_id, kThread);
  auto g = parse_ok(R"({"type":"mark_as_read","chatId":"0B7C2A9E-3F41-4D2A-9A51-6C1E8F2D4B10"})");
  EXPECT_EQ(g.thread_id, kThread);
}

TEST(ParseClientFrameErrors, DeepNestingRejectedWithoutCrash) {
  std::string deep = R"({"type":"call_offer","payload":)";
  for (int i = 0; i < 100; ++i) deep += "[";
  for (int i = 0; i < 100; ++i) deep += "]";
  deep += "}";
  EXPECT_EQ(parse_code(deep), "invalid_json");

  std::string deeper(100000, '[');  // far past any sane depth
  EXPECT_EQ(parse_code(deeper), "invalid_json");
}

TEST(ParseJsonObject, ObjectParsesOthersRefused) {
  auto ok = parse_json_object(R"({"a":1})");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->at("a").as_int64(), 1);
  auto arr = parse_json_object("[1]");
  ASSERT_FALSE(arr.ok());
  EXPECT_EQ(arr.error().code, "invalid_json");
}

// ------------------------------------------------------------ encoders

Message sample_message() {
  Message m;
  m.id = kMsg;
  m.thread_id = kThread;
  m.seq = 42;
  m.sender_id = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
  m.content = "Hello! \xC3\xA9";
  m.message_type = "text";
  m.client_msg_id = "";
  m.created_at = 1'795'262'400'123'456;  // 2026-11-21T12:00:00.123456Z
  m.sender = UserRef{m.sender_id, "john", "John Doe", "teacher"};
  return m;
}

TEST(MessageJson, HasExactlyTheContractFields) {
  json::object o = message_json(sample_message());
  std::set<std::string> keys;
  for (const auto& kv : o) keys.insert(std::string(kv.key()));
  std::set<std::string> expected{"id",           "thread_id", "seq",        "sender_id", "content", "message_type",
                                 "client_msg_id", "status",    "created_at", "edited_at", "sender"};
  EXPECT_EQ(keys, expected);
}

TEST(MessageJson, Values) {
  json::object o = message_json(sample_message());
  EXPECT_EQ(o.at("id"), json::value(kMsg));
  EXPECT_EQ(o.at("thread_id"), json::value(kThread));
  EXPECT_EQ(o.at("seq").to_number<int64_t>(), 42);
  EXPECT_EQ(o.at("content"), json::value("Hello! \xC3\xA9"));
  EXPECT_EQ(o.at("message_type"), json::value("text"));
  EXPECT_EQ(o.at("status"), json::value("sent"));
  EXPECT_TRUE(o.at("edited_at").is_null());
  const json::object& s = o.at("sender").as_object();
  EXPECT_EQ(s.at("username"), json::value("john"));
  EXPECT_EQ(s.at("full_name"), json::value("John Doe"));
  EXPECT_EQ(s.at("role"), json::value("teacher"));
}

TEST(MessageJson, ClientMsgIdNullWhenEmptyStringWhenSet) {
  Message m = sample_message();
  EXPECT_TRUE(message_json(m).at("client_msg_id").is_null());
  m.client_msg_id = "c-17";
  EXPECT_EQ(message_json(m).at("client_msg_id"), json::value("c-17"));
}

TEST(MessageJson, CreatedAtIsIso8601WithMillisAndZ) {
  json::object o = message_json(sample_message());
  ASSERT_TRUE(o.at("created_at").is_string());
  std::string t(o.at("created_at").get_string());
  EXPECT_TRUE(std::regex_match(t, std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)"))) << t;
  EXPECT_EQ(t, "2026-11-21T12:00:00.123Z");
}

TEST(MessageJson, EditedAtIsIsoWhenSet) {
  Message m = sample_message();
  m.edited_at = m.created_at + 1'000'000;
  EXPECT_EQ(message_json(m).at("edited_at"), json::value("2026-11-21T12:00:01.123Z"));
}

// change_no only on a message that has changed (CONTRACT section 3 has no
// such field: a message never edited stays as it was); message_deleted's
// fields carry it too.
TEST(MessageJson, ChangeNoOnlyOnceChanged) {
  Message m = sample_message();
  EXPECT_FALSE(message_json(m).contains("change_no"));
  EXPECT_EQ(message_json_text(m).find("change_no"), std::string::npos);
  EXPECT_FALSE(deletion_json(m).contains("change_no"));
  m.change_no = 42;
  EXPECT_EQ(message_json(m).at("change_no"), json::value(42));
  EXPECT_NE(message_json_text(m).find(",\"change_no\":42,"), std::string::npos);
  m.deleted = true;
  EXPECT_EQ(json::serialize(deletion_json(m)),
            "{\"thread_id\":\"" + m.thread_id + "\",\"message_id\":\"" + m.id + "\",\"seq\":" + std::to_string(m.seq) +
                ",\"change_no\":42}");
}

// The send path's serialiser must write exactly what the library writes.
TEST(MessageJsonText, IsTheLibrarysSerialisationByteForByte) {
  std::string every_ascii;
  for (int c = 0; c < 128; ++c) every_ascii += static_cast<char>(c);
  const std::string contents[] = {"", "Hello! \xC3\xA9", every_ascii, "\"quoted\" \\ back\\slash /",
                                  "\xF0\x9F\x98\x80 \xE2\x82\xAC \xE4\xB8\xAD", "'; DROP TABLE messages; --",
                                  "tab\there\nnew\rline\x01\x1f\x7f"};
  for (const auto& content : contents) {
    for (int variant = 0; variant < 4; ++variant) {
      Message m = sample_message();
      m.content = content;
      if (variant & 1) m.client_msg_id = "c-\"17\"\n";
      if (variant & 2) {
        m.edited_at = m.created_at + 1'000'000;
        m.deleted = true;
        m.status = "read";
        m.seq = 9'007'199'254'740'991;
        m.sender.full_name = content;
        m.change_no = 9'007'199'254'740'990;
      }
      EXPECT_EQ(message_json_text(m), json::serialize(message_json(m))) << "variant " << variant;
    }
  }
}

// The serialiser scans eight bytes at a time: a character to escape must be
// found at every offset of a block, next to any byte that needs none.
TEST(MessageJsonText, EscapesAtEveryOffsetOfTheScan) {
  const std::string specials[] = {"\"", "\\", "\n", "\x01", "\x1f", std::string(1, '\0')};
  const std::string fillers[] = {"a", "\x7f", "\xC3\xA9", " ", "!", "#", "[", "]"};
  for (const auto& special : specials) {
    for (const auto& filler : fillers) {
      for (size_t at = 0; at < 20; ++at) {
        std::string content(at % filler.size(), 'a');  // whole UTF-8 sequences only
        while (content.size() < at) content += filler;
        content += special;
        for (int i = 0; i < 19; ++i) content += filler;
        Message m = sample_message();
        m.content = content;
        ASSERT_EQ(message_json_text(m), json::serialize(message_json(m))) << "offset " << at;
      }
    }
  }
}

TEST(EncodeDataFrame, ParsesBackWithTypeRequestIdAndData) {
  std::string data = json::serialize(message_json(sample_message()));
  std::string frame = encode_data_frame("new_message", data, json::value("r-1"));
  boost::system::error_code ec;
  json::value v = json::parse(frame, ec);
  ASSERT_FALSE(ec) << frame;
  ASSERT_TRUE(v.is_object());
  EXPECT_EQ(v.at("type"), json::value("new_message"));
  EXPECT_EQ(v.at("request_id"), json::value("r-1"));
  EXPECT_EQ(v.at("data"), json::value(message_json(sample_message())));
}

TEST(EncodeDataFrame, NumericRequestIdAndNoRequestId) {
  json::value with = json::parse(encode_data_frame("message_sent", "{}", json::value(7)));
  EXPECT_EQ(with.at("request_id").to_number<int64_t>(), 7);
  json::value without = json::parse(encode_data_frame("message_sent", "{\"a\":1}"));
  EXPECT_FALSE(without.as_object().contains("request_id"));
  EXPECT_EQ(without.at("data").at("a").as_int64(), 1);
}

TEST(EncodeError, HasCodeAndMessage) {
  json::value v = json::parse(encode_error(bad_input("invalid_field", "field \"x\" bad"), json::value("q")));
  EXPECT_EQ(v.at("type"), json::value("error"));
  EXPECT_EQ(v.at("code"), json::value("invalid_field"));
  EXPECT_EQ(v.at("message"), json::value("field \"x\" bad"));
  EXPECT_EQ(v.at("request_id"), json::value("q"));
}

TEST(EncodeFrame, FieldsAndType) {
  json::value v = json::parse(encode_frame("read_receipt", json::object{{"thread_id", kThread}, {"seq", 3}}));
  EXPECT_EQ(v.at("type"), json::value("read_receipt"));
  EXPECT_EQ(v.at("thread_id"), json::value(kThread));
  EXPECT_EQ(v.at("seq").as_int64(), 3);
  EXPECT_FALSE(v.as_object().contains("request_id"));
}

TEST(UserJson, NeverContainsPasswordHash) {
  User u;
  u.id = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
  u.username = "john";
  u.full_name = "John Doe";
  u.role = "teacher";
  u.password_hash = "$argon2id$v=19$m=65536,t=2,p=1$SECRETSALT$SECRETHASH";
  u.created_at = 1'795'262'400'000'000;
  json::object o = user_json(u);
  std::string text = json::serialize(o);
  EXPECT_EQ(text.find("argon2id"), std::string::npos) << text;
  EXPECT_EQ(text.find("SECRETHASH"), std::string::npos) << text;
  EXPECT_FALSE(o.contains("password_hash"));
  EXPECT_FALSE(o.contains("password"));
  EXPECT_EQ(o.at("username"), json::value("john"));
  EXPECT_TRUE(o.at("phone_number").is_null());
}

}  // namespace
}  // namespace parley
