// The Engine.IO and Socket.IO packet codecs (protocol/socketio.h) and the
// Socket.IO encoder's reply and event shapes.
#include "protocol/socketio.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "protocol/client_frame.h"
#include "protocol/encode.h"
#include "protocol/socketio_encoder.h"

namespace parley {
namespace {

namespace json = boost::json;
using sio::SioType;

TEST(EngineIoPayload, SplitsOnTheRecordSeparator) {
  auto p = sio::split_payload("40{\"token\":\"t\"}\x1e" "3\x1e" "42[\"ping\"]");
  ASSERT_TRUE(p);
  ASSERT_EQ(p->size(), 3u);
  EXPECT_EQ((*p)[0], "40{\"token\":\"t\"}");
  EXPECT_EQ((*p)[1], "3");
  EXPECT_EQ((*p)[2], "42[\"ping\"]");
}

TEST(EngineIoPayload, OnePacketIsItsOwnPayload) {
  auto p = sio::split_payload("6");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->size(), 1u);
}

TEST(EngineIoPayload, EmptyPacketsAreRefused) {
  EXPECT_FALSE(sio::split_payload(""));
  EXPECT_FALSE(sio::split_payload("2\x1e"));
  EXPECT_FALSE(sio::split_payload("\x1e" "2"));
  EXPECT_FALSE(sio::split_payload("2\x1e\x1e" "3"));
}

TEST(EngineIoOpen, CarriesSidUpgradesPingsAndMaxPayload) {
  std::string open = sio::encode_open("abc", true, 25000, 20000, 1000000);
  ASSERT_EQ(open[0], '0');
  json::value v = json::parse(open.substr(1));
  EXPECT_EQ(v.at("sid"), "abc");
  EXPECT_EQ(v.at("upgrades"), (json::array{"websocket"}));
  EXPECT_EQ(v.at("pingInterval"), 25000);
  EXPECT_EQ(v.at("pingTimeout"), 20000);
  EXPECT_EQ(v.at("maxPayload"), 1000000);
  EXPECT_TRUE(json::parse(sio::encode_open("abc", false, 1, 2, 3).substr(1)).at("upgrades").as_array().empty());
}

TEST(EngineIoErrors, AreTheReferenceServersCodesAndMessages) {
  EXPECT_EQ(sio::eio_error_body(sio::EioError::kUnknownSid), R"({"code":1,"message":"Session ID unknown"})");
  EXPECT_EQ(sio::eio_error_body(sio::EioError::kUnknownTransport), R"({"code":0,"message":"Transport unknown"})");
  EXPECT_EQ(sio::eio_error_body(sio::EioError::kUnsupportedProtocolVersion),
            R"({"code":5,"message":"Unsupported protocol version"})");
  EXPECT_EQ(sio::eio_error_status(sio::EioError::kBadHandshakeMethod), 400);
  EXPECT_EQ(sio::eio_error_status(sio::EioError::kForbidden), 403);
}

TEST(SocketIoDecode, ConnectWithAuth) {
  auto p = sio::decode_packet(R"(0{"token":"abc"})");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->type, SioType::kConnect);
  EXPECT_EQ(p->nsp, "/");
  EXPECT_FALSE(p->id);
  EXPECT_EQ(p->data.at("token"), "abc");
  EXPECT_TRUE(sio::decode_packet("0"));
}

TEST(SocketIoDecode, NamespaceAndAckId) {
  auto p = sio::decode_packet(R"(2/admin,12["hello",{"a":1}])");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->nsp, "/admin");
  ASSERT_TRUE(p->id);
  EXPECT_EQ(*p->id, 12u);
  EXPECT_EQ(p->data.at(0), "hello");
  auto q = sio::decode_packet(R"(27["send_message",{"text":"x"}])");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->nsp, "/");
  EXPECT_EQ(*q->id, 7u);
  auto ack = sio::decode_packet("35[]");
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->type, SioType::kAck);
  EXPECT_EQ(*ack->id, 5u);
}

// The start of a packet too large to read whole: its header only.
TEST(SocketIoDecode, HeaderOfAPacketCutShort) {
  auto p = sio::decode_header(R"(2/admin,12["send_message",{"content":"AAAA)");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->type, SioType::kEvent);
  EXPECT_EQ(p->nsp, "/admin");
  ASSERT_TRUE(p->id);
  EXPECT_EQ(*p->id, 12u);
  EXPECT_TRUE(p->data.is_null());
  auto q = sio::decode_header(R"(2["send_message",{"con)");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->nsp, "/");
  EXPECT_FALSE(q->id);
  EXPECT_FALSE(sio::decode_header("x12["));
  EXPECT_FALSE(sio::decode_header("0123{")) << "an ack id on a CONNECT";
  EXPECT_FALSE(sio::decode_header("21234567890123456[")) << "an ack id of 16 digits";
}

TEST(SocketIoDecode, BinaryEventIsReadButMarked) {
  auto p = sio::decode_packet(R"(51-["upload",{"_placeholder":true,"num":0}])");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->type, SioType::kBinaryEvent);
  EXPECT_EQ(p->attachments, 1u);
  auto ack = sio::decode_packet(R"(612-7[{"_placeholder":true,"num":0}])");
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->type, SioType::kBinaryAck);
  EXPECT_EQ(ack->attachments, 12u);
  EXPECT_EQ(ack->id, 7u);
  EXPECT_EQ(sio::decode_packet(R"(2["a"])")->attachments, 0u);
}

TEST(SocketIoDecode, RefusesMalformedPackets) {
  for (std::string_view bad : {"", "7", "x", "2", "2[]", "2{}", "2[1", "2\"name\"", "1{}", "3", "3{}",
                               "21234567890123456[\"a\"]", "5[\"a\"]", "5x-[\"a\"]", "0[1]", "4", "2[\"a\"]]",
                               "01{}", "2[null]"}) {
    EXPECT_FALSE(sio::decode_packet(bad)) << "accepted: " << bad;
  }
}

// Data JavaScript's JSON.parse reads but ours refuses: the packet decodes,
// with data_error set, so that the event alone is refused (the session stays).
TEST(SocketIoDecode, DataOurParserRefusesIsAPacketWithADataError) {
  std::string deep = "2[\"send_message\"," + std::string(40, '[') + std::string(40, ']') + "]";
  const std::pair<std::string, std::string_view> cases[] = {
      {"2[\"a\",\"\xff\"]", "invalid_utf8"},
      {R"(27["send_message",{"content":"hi \ud83d"}])", "invalid_utf8"},
      {R"(2["send_message",{"content":"\udc00 low first"}])", "invalid_utf8"},
      {deep, "invalid_json"},
      // JSON.parse reads it as Infinity; relayed, ours would write `Infinity`, not JSON.
      {R"(2["call_offer",{"thread_id":"t","payload":{"sdp":[1,-1e400]}}])", "invalid_json"},
  };
  for (const auto& [text, code] : cases) {
    auto p = sio::decode_packet(text);
    ASSERT_TRUE(p) << text << ": " << p.error().message;
    EXPECT_EQ(p->type, SioType::kEvent);
    ASSERT_TRUE(p->data_error) << text;
    EXPECT_EQ(p->data_error->code, code) << text;
    EXPECT_TRUE(p->data.is_null());
  }
  auto acked = sio::decode_packet(R"(27["send_message",{"content":"hi \ud83d"}])");
  ASSERT_TRUE(acked);
  ASSERT_TRUE(acked->id) << "the ack id is read, so the refusal can go in the ack";
  EXPECT_EQ(*acked->id, 7u);
  auto connect = sio::decode_packet(R"(0{"token":"\ud800"})");
  ASSERT_TRUE(connect);
  EXPECT_TRUE(connect->data_error);
  EXPECT_FALSE(sio::decode_packet(R"(1"\ud800")")) << "a DISCONNECT takes no data";
  EXPECT_FALSE(sio::decode_packet("2[\"a\",{]")) << "JSON no parser reads still breaks the packet";
  auto fine = sio::decode_packet(R"(2["send_message",{"content":"\ud83d\ude00"}])");
  ASSERT_TRUE(fine);
  EXPECT_FALSE(fine->data_error) << "a surrogate pair is fine";
}

TEST(SocketIoEncode, EventsAcksAndConnects) {
  EXPECT_EQ(sio::encode_event("ping", "{}"), R"(42["ping",{}])");
  EXPECT_EQ(sio::encode_event("new_message", R"({"id":"m"})", 9), R"(429["new_message",{"id":"m"}])");
  EXPECT_EQ(sio::encode_ack(3, R"({"success":true})"), R"(433[{"success":true}])");
  EXPECT_EQ(sio::encode_connect("s1"), R"(40{"sid":"s1"})");
  EXPECT_EQ(sio::encode_connect_error("/", "bad"), R"(44{"message":"bad"})");
  EXPECT_EQ(sio::encode_connect_error("/admin", "Invalid namespace"), R"(44/admin,{"message":"Invalid namespace"})");
  EXPECT_EQ(sio::encode_connect_error("/", "too many", "too_many_connections"),
            R"(44{"message":"too many","data":{"code":"too_many_connections"}})");
  EXPECT_EQ(sio::encode_disconnect(), "41");
}

TEST(SocketIoEncoder, RepliesGoInTheAckWhenAsked) {
  const auto& e = socketio_encoder();
  auto frames = e.reply("chat_joined", json::object{{"chatId", "t"}}, json::value(4));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(*frames[0], R"(434[{"success":true,"chatId":"t"}])");
  frames = e.reply("chat_joined", json::object{{"chatId", "t"}}, nullptr);
  EXPECT_EQ(*frames[0], R"(42["chat_joined",{"chatId":"t"}])");
}

TEST(SocketIoEncoder, RequestsWithoutANativeReplyStillGetTheirAck) {
  auto acked = socketio_encoder().done(json::value(6));
  ASSERT_EQ(acked.size(), 1u);
  EXPECT_EQ(*acked[0], R"(436[{"success":true}])");
  EXPECT_TRUE(socketio_encoder().done(nullptr).empty());
  EXPECT_TRUE(json_encoder().done(json::value("r-1")).empty()) << "natively, typing and relays have no reply";
}

TEST(SocketIoEncoder, MessageSentAcksWithTheMessageAndEmitsMessageSent) {
  auto frames = socketio_encoder().data_reply("message_sent", R"({"id":"m1"})", json::value(2));
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(*frames[0], R"(432[{"success":true,"message":{"id":"m1"}}])");
  EXPECT_EQ(*frames[1], R"(42["message_sent",{"id":"m1"}])");
}

TEST(SocketIoEncoder, ErrorsAreAFailedAckOrAnErrorEvent) {
  Error err = bad_input("unknown_type", "unknown event: x");
  auto acked = socketio_encoder().error(err, json::value(8));
  EXPECT_EQ(json::parse(acked[0]->payload().substr(3)),
            json::parse(R"([{"success":false,"error":"unknown event: x","code":"unknown_type"}])"));
  EXPECT_EQ(acked[0]->payload().substr(0, 3), "438");
  auto event = socketio_encoder().error(err, nullptr);
  EXPECT_EQ(*event[0], R"(42["error",{"message":"unknown event: x","code":"unknown_type"}])");
}

TEST(SocketIoEncoder, NewMessageAsksForAnAckThatNamesTheMessage) {
  BusEvent e;
  e.type = "new_message";
  e.payload = R"({"id":"msg-1","seq":3})";
  e.payload_is_data = true;
  e.message_id = "msg-1";
  e.thread_id = "thread-1";
  e.seq = 3;
  FramePtr f = socketio_encoder().event(e);
  auto packet = sio::decode_packet((*f).payload().substr(1));
  ASSERT_TRUE(packet);
  ASSERT_TRUE(packet->id);
  EXPECT_EQ(packet->data.at(0), "new_message");
  EXPECT_EQ(packet->data.at(1).at("seq"), 3);
  auto acked = socketio_encoder().message_for_ack(*packet->id);
  ASSERT_TRUE(acked);
  EXPECT_EQ(acked->thread_id, "thread-1");  // a deferred receipt is kept per thread
  EXPECT_EQ(acked->seq, 3);
  EXPECT_TRUE(acked->message_id.empty()) << "named by its thread and seq";
  // Every recipient, live or replayed, is asked with the same id.
  auto replayed = sio::decode_packet(socketio_encoder().replayed_message({"msg-1", "thread-1", 3}, "{}")->payload().substr(1));
  ASSERT_TRUE(replayed && replayed->id);
  EXPECT_EQ(*replayed->id, *packet->id);
  EXPECT_FALSE(socketio_encoder().message_for_ack(*packet->id + (uint64_t{1} << 40))) << "a thread never numbered";
  EXPECT_FALSE(socketio_encoder().message_for_ack(*packet->id - 3)) << "seq 0";
}

uint64_t ack_id_of(const FramePtr& f) {
  auto packet = sio::decode_packet(f->payload().substr(1));
  return packet && packet->id ? *packet->id : 0;
}

TEST(SocketIoEncoder, AnAckIsUnderstoodHoweverLateItComes) {
  const uint64_t late = ack_id_of(socketio_encoder().replayed_message({"m-late", "thread-late", 7}, "{}"));
  ASSERT_NE(late, 0u);
  EXPECT_LT(late, uint64_t{1'000'000'000'000'000}) << "a Socket.IO decoder reads 15 digits at most";
  // More messages since than a table of ids could hold (it held 65,536).
  for (int i = 0; i < 70000; ++i)
    socketio_encoder().replayed_message({"m", "thread-other-" + std::to_string(i % 50), i + 1}, "{}");
  auto acked = socketio_encoder().message_for_ack(late);
  ASSERT_TRUE(acked);
  EXPECT_EQ(acked->thread_id, "thread-late");
  EXPECT_EQ(acked->seq, 7);
}

TEST(SocketIoEncoder, ASeqPastItsBitsGetsARememberedId) {
  const uint64_t id = ack_id_of(socketio_encoder().replayed_message({"m-big", "thread-big", int64_t{1} << 27}, "{}"));
  auto acked = socketio_encoder().message_for_ack(id);
  ASSERT_TRUE(acked);
  EXPECT_EQ(acked->message_id, "m-big");
  EXPECT_EQ(acked->seq, int64_t{1} << 27);
}

TEST(SocketIoEncoder, OtherEventsCarryTheFrameFields) {
  BusEvent e;
  e.type = "read_receipt";
  e.payload = R"({"thread_id":"t","seq":2})";
  EXPECT_EQ(*socketio_encoder().event(e), R"(42["read_receipt",{"thread_id":"t","seq":2}])");
  EXPECT_EQ(encode_event(e), R"({"type":"read_receipt","thread_id":"t","seq":2})");
  e.payload = "{}";
  EXPECT_EQ(encode_event(e), R"({"type":"read_receipt"})");
}

TEST(ClientFields, AnEventArgumentParsesAsTheNativeFrame) {
  auto type = client_type("send_message");
  ASSERT_TRUE(type);
  auto parsed = parse_client_fields(*type, json::object{{"username", "bob"}, {"text", "hi"}});
  ASSERT_FALSE(parsed.error);
  EXPECT_EQ(parsed.frame.type, ClientType::kSendMessage);
  EXPECT_EQ(parsed.frame.username, "bob");
  EXPECT_EQ(parsed.frame.content, "hi");
  EXPECT_FALSE(client_type("nope"));
  auto missing = parse_client_fields(ClientType::kJoinChat, json::object{});
  ASSERT_TRUE(missing.error);
  EXPECT_EQ(missing.error->code, "missing_field");
}

}  // namespace
}  // namespace parley
