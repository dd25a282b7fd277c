// parley-bench's hand-written Engine.IO/Socket.IO packet codec
// (bench/parley_bench/sio.h), on packets as the reference server writes them.
#include "../../bench/parley_bench/sio.h"

#include <gtest/gtest.h>

namespace bench {
namespace {

TEST(BenchSio, Target) {
  EXPECT_EQ(sio_target("/socket.io/"), "/socket.io/?EIO=4&transport=websocket");
  EXPECT_EQ(sio_target("/x/?a=1"), "/x/?a=1&EIO=4&transport=websocket");
}

TEST(BenchSio, EngineIoPackets) {
  SioPacket p;
  ASSERT_TRUE(parse_sio(R"(0{"sid":"abc","upgrades":[],"pingInterval":25000})", p));
  EXPECT_EQ(p.eio, '0');
  EXPECT_EQ(p.data, R"({"sid":"abc","upgrades":[],"pingInterval":25000})");
  ASSERT_TRUE(parse_sio("2", p));
  EXPECT_EQ(p.eio, '2');
  EXPECT_EQ(p.data, "");
  ASSERT_TRUE(parse_sio("2probe", p));
  EXPECT_EQ(p.data, "probe");
  EXPECT_FALSE(parse_sio("", p));
  EXPECT_FALSE(parse_sio("7", p));
  EXPECT_FALSE(parse_sio("x", p));
}

TEST(BenchSio, SocketIoPackets) {
  SioPacket p;
  ASSERT_TRUE(parse_sio(R"(40{"sid":"s1"})", p));
  EXPECT_EQ(p.eio, '4');
  EXPECT_EQ(p.sio, '0');
  EXPECT_EQ(p.ack_id, -1);
  EXPECT_TRUE(p.nsp.empty());
  EXPECT_EQ(p.data, R"({"sid":"s1"})");

  ASSERT_TRUE(parse_sio(R"(42["new_message",{"seq":3}])", p));
  EXPECT_EQ(p.sio, '2');
  EXPECT_EQ(p.ack_id, -1);
  std::string_view name;
  ASSERT_TRUE(sio_event_name(p.data, name));
  EXPECT_EQ(name, "new_message");

  ASSERT_TRUE(parse_sio(R"(427["ping",{}])", p));
  EXPECT_EQ(p.ack_id, 7);
  ASSERT_TRUE(sio_event_name(p.data, name));
  EXPECT_EQ(name, "ping");

  ASSERT_TRUE(parse_sio(R"(43123[{"success":true}])", p));
  EXPECT_EQ(p.sio, '3');
  EXPECT_EQ(p.ack_id, 123);
  EXPECT_EQ(p.data, R"([{"success":true}])");

  ASSERT_TRUE(parse_sio(R"(42/admin,5["x"])", p));
  EXPECT_EQ(p.nsp, "/admin");
  EXPECT_EQ(p.ack_id, 5);
  ASSERT_TRUE(parse_sio(R"(44{"message":"bad token"})", p));
  EXPECT_EQ(p.sio, '4');
  EXPECT_EQ(p.data, R"({"message":"bad token"})");

  EXPECT_FALSE(parse_sio("4", p));
  EXPECT_FALSE(parse_sio("42", p));                   // an event needs its array
  EXPECT_FALSE(parse_sio(R"(43[{}])", p));            // an ack needs its id
  EXPECT_FALSE(parse_sio(R"(421234567890123456["x"])", p));  // id longer than any we send
  EXPECT_FALSE(sio_event_name("[]", name));
  EXPECT_FALSE(sio_event_name(R"({"a":1})", name));
}

TEST(BenchSio, Writers) {
  std::string out;
  append_sio_event_head(out, "send_message", 42);
  out += R"({"content":"x"}])";
  EXPECT_EQ(out, R"(4242["send_message",{"content":"x"}])");
  SioPacket p;
  ASSERT_TRUE(parse_sio(out, p));
  EXPECT_EQ(p.ack_id, 42);
  out.clear();
  append_sio_empty_ack(out, 0);
  EXPECT_EQ(out, "430[]");
}

}  // namespace
}  // namespace bench
