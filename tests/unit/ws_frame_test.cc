#include "net/ws_frame.h"
#include "net/ws_out_queue.h"
#include "net/ws_reader.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace parley::ws {
namespace {

// A masked client frame, as a browser would send it.
std::vector<uint8_t> client_frame(uint8_t first, std::string_view payload, bool masked = true) {
  std::vector<uint8_t> f{first};
  size_t n = payload.size();
  uint8_t m = masked ? 0x80 : 0;
  if (n < 126) {
    f.push_back(m | static_cast<uint8_t>(n));
  } else if (n <= 0xFFFF) {
    f.push_back(m | 126);
    f.push_back(static_cast<uint8_t>(n >> 8));
    f.push_back(static_cast<uint8_t>(n));
  } else {
    f.push_back(m | 127);
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<uint8_t>(uint64_t{n} >> (8 * i)));
  }
  const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
  if (masked) f.insert(f.end(), mask, mask + 4);
  for (size_t i = 0; i < n; ++i) f.push_back(static_cast<uint8_t>(payload[i]) ^ (masked ? mask[i & 3] : 0));
  return f;
}

TEST(WsFrame, AcceptKeyMatchesRfc6455Example) {
  EXPECT_EQ(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(WsFrame, HeaderSizesFollowPayloadLength) {
  uint8_t h[10];
  EXPECT_EQ(encode_header(kText, 0, h), 2u);
  EXPECT_EQ(h[0], 0x81);
  EXPECT_EQ(h[1], 0);
  EXPECT_EQ(encode_header(kText, 125, h), 2u);
  EXPECT_EQ(encode_header(kText, 126, h), 4u);
  EXPECT_EQ(h[1], 126);
  EXPECT_EQ((h[2] << 8) | h[3], 126);
  EXPECT_EQ(encode_header(kBinary, 65535, h), 4u);
  EXPECT_EQ(encode_header(kBinary, 65536, h), 10u);
  EXPECT_EQ(h[1], 127);
  EXPECT_EQ(h[7], 1);  // 65536 = 0x00010000
}

TEST(WsFrame, CloseFrameCarriesCodeAndReason) {
  std::string f = encode_close(4401, "token expired");
  ASSERT_GE(f.size(), 4u);
  EXPECT_EQ(static_cast<uint8_t>(f[0]), 0x88);
  EXPECT_EQ(static_cast<uint8_t>(f[1]), 2 + 13);
  EXPECT_EQ((static_cast<uint8_t>(f[2]) << 8) | static_cast<uint8_t>(f[3]), 4401);
  EXPECT_EQ(f.substr(4), "token expired");
  EXPECT_LE(close_payload(1000, std::string(300, 'x')).size(), 125u);
}

TEST(WsFrame, CloseReplyEchoesValidCodesAndRefusesTheRest) {
  auto payload = [](uint16_t code, std::string reason = "") {
    return std::string{char(code >> 8), char(code & 0xFF)} + reason;
  };
  EXPECT_EQ(close_reply_code(""), kCloseNormal);
  for (uint16_t ok : {1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999})
    EXPECT_EQ(close_reply_code(payload(ok, "bye")), ok) << ok;
  for (uint16_t bad : {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535})
    EXPECT_EQ(close_reply_code(payload(bad)), kCloseProtocolError) << bad;
  EXPECT_EQ(close_reply_code(std::string(1, '\x03')), kCloseProtocolError);
  EXPECT_EQ(close_reply_code(payload(1000, "\xC3\x28")), kCloseProtocolError);  // not UTF-8
  EXPECT_EQ(close_reply_code(payload(1000, "\xC3\xA9t\xC3\xA9")), kCloseNormal);
}

TEST(WsFrame, ParsesAndUnmasksATextFrame) {
  auto f = client_frame(0x81, "hello");
  FrameHeader h;
  ASSERT_EQ(parse_header(f.data(), f.size(), 1024, h), ParseStatus::kFrame);
  EXPECT_TRUE(h.fin);
  EXPECT_EQ(h.opcode, kText);
  EXPECT_EQ(h.payload_len, 5u);
  EXPECT_EQ(h.header_len, 6u);
  unmask(f.data() + h.header_len, h.payload_len, h.mask, 0);
  EXPECT_EQ(std::string(f.begin() + h.header_len, f.end()), "hello");
}

TEST(WsFrame, ExtendedLengths) {
  for (size_t n : {size_t{126}, size_t{70000}}) {
    auto f = client_frame(0x82, std::string(n, 'a'));
    FrameHeader h;
    ASSERT_EQ(parse_header(f.data(), f.size(), 1 << 20, h), ParseStatus::kFrame) << n;
    EXPECT_EQ(h.payload_len, n);
    EXPECT_EQ(h.opcode, kBinary);
  }
}

TEST(WsFrame, NeedsMoreUntilTheHeaderAndMaskAreThere) {
  auto f = client_frame(0x81, std::string(300, 'a'));
  FrameHeader h;
  for (size_t cut : {0, 1, 2, 3, 7}) EXPECT_EQ(parse_header(f.data(), cut, 1024, h), ParseStatus::kNeedMore) << cut;
  EXPECT_EQ(parse_header(f.data(), 8, 1024, h), ParseStatus::kFrame);  // header complete; payload may follow later
}

TEST(WsFrame, RejectsWhatRfc6455Forbids) {
  FrameHeader h;
  auto unmasked = client_frame(0x81, "hi", false);
  EXPECT_EQ(parse_header(unmasked.data(), unmasked.size(), 1024, h), ParseStatus::kProtocolError);
  auto rsv = client_frame(0xC1, "hi");  // RSV1 without a negotiated extension
  EXPECT_EQ(parse_header(rsv.data(), rsv.size(), 1024, h), ParseStatus::kProtocolError);
  auto opcode = client_frame(0x83, "hi");  // reserved opcode
  EXPECT_EQ(parse_header(opcode.data(), opcode.size(), 1024, h), ParseStatus::kProtocolError);
  auto long_ping = client_frame(0x89, std::string(126, 'p'));
  EXPECT_EQ(parse_header(long_ping.data(), long_ping.size(), 1024, h), ParseStatus::kProtocolError);
  auto fragmented_ping = client_frame(0x09, "p");
  EXPECT_EQ(parse_header(fragmented_ping.data(), fragmented_ping.size(), 1024, h), ParseStatus::kProtocolError);
}

TEST(WsFrame, TooBigIsReportedFromTheHeaderAlone) {
  auto f = client_frame(0x81, std::string(2000, 'a'));
  FrameHeader h;
  EXPECT_EQ(parse_header(f.data(), 8, 1000, h), ParseStatus::kTooBig);
  // Control frames are bounded by the protocol, not by the limit.
  auto ping = client_frame(0x89, std::string(100, 'p'));
  EXPECT_EQ(parse_header(ping.data(), ping.size(), 10, h), ParseStatus::kFrame);
}

TEST(WsFrame, UnmaskHonoursTheOffset) {
  const uint8_t mask[4] = {1, 2, 3, 4};
  uint8_t data[3] = {0, 0, 0};
  unmask(data, 3, mask, 2);
  EXPECT_EQ(data[0], 3);
  EXPECT_EQ(data[1], 4);
  EXPECT_EQ(data[2], 1);
}

// ---- WsReader and WsOutQueue

struct Recorder : WsReader::Handler {
  std::vector<std::pair<Opcode, std::string>> got;
  uint16_t violation = 0;
  bool on_message(Opcode op, std::string_view m) override { got.emplace_back(op, std::string(m)); return true; }
  bool on_control(Opcode op, std::string_view p) override { got.emplace_back(op, std::string(p)); return true; }
  void on_violation(uint16_t code, std::string_view) override { violation = code; }
};

TEST(WsReader, ReassemblesFragmentsAroundAControlFrame) {
  std::vector<uint8_t> bytes = client_frame(0x01, "hel");  // text, not FIN
  for (auto b : client_frame(0x89, "p")) bytes.push_back(b);  // ping in between
  for (auto b : client_frame(0x80, "lo")) bytes.push_back(b);  // continuation, FIN
  WsReader reader(1024);
  Recorder r;
  ASSERT_TRUE(reader.consume(bytes.data(), bytes.size(), r));
  ASSERT_EQ(r.got.size(), 2u);
  EXPECT_EQ(r.got[0], std::make_pair(kPing, std::string("p")));
  EXPECT_EQ(r.got[1], std::make_pair(kText, std::string("hello")));
}

TEST(WsReader, KeepsAFrameSplitAcrossReads) {
  std::vector<uint8_t> bytes = client_frame(0x81, "split me");
  WsReader reader(1024);
  Recorder r;
  for (size_t i = 0; i < bytes.size(); ++i) ASSERT_TRUE(reader.consume(&bytes[i], 1, r));
  ASSERT_EQ(r.got.size(), 1u);
  EXPECT_EQ(r.got[0].second, "split me");
}

TEST(WsReader, RefusesWhatIsTooBigOrOutOfOrder) {
  {
    std::vector<uint8_t> bytes = client_frame(0x81, std::string(100, 'x'));
    WsReader reader(50);
    Recorder r;
    EXPECT_FALSE(reader.consume(bytes.data(), bytes.size(), r));
    EXPECT_EQ(r.violation, kCloseTooBig);
  }
  {
    std::vector<uint8_t> bytes = client_frame(0x80, "orphan continuation");
    WsReader reader(1024);
    Recorder r;
    EXPECT_FALSE(reader.consume(bytes.data(), bytes.size(), r));
    EXPECT_EQ(r.violation, kCloseProtocolError);
  }
}

// What a gather would put on the wire, as one string.
std::string wire(const std::vector<struct iovec>& iov, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
  return out;
}

TEST(WsOutQueue, TextFramesAreOneIovecEachAndResumeMidFrame) {
  WsOutQueue q;
  auto frame = std::make_shared<const Frame>("abc");
  auto pong = std::make_shared<const Frame>("p");
  q.push(kText, frame);
  q.push(kPong, pong);
  q.push(kText, frame);
  EXPECT_EQ(q.bytes(), 7u + 3 * kQueuedFrameCost);  // payloads, and what each queued frame costs
  std::vector<struct iovec> iov(8);
  std::vector<uint8_t> headers(4 * kMaxHeaderLen);
  size_t bytes = 0;
  // Text: the shared frame with its header (one iovec); pong: header and payload.
  int n = q.gather(iov, headers, 1 << 20, bytes);
  EXPECT_EQ(n, 4);
  EXPECT_EQ(bytes, 13u);
  EXPECT_EQ(wire(iov, n), encode_frame(kText, "abc") + encode_frame(kPong, "p") + encode_frame(kText, "abc"));
  q.advance(9);  // the first frame (5 bytes), the pong (3) and one byte of the last frame's header
  EXPECT_EQ(q.bytes(), 3u + kQueuedFrameCost);
  bytes = 0;
  n = q.gather(iov, headers, 1 << 20, bytes);
  EXPECT_EQ(n, 1);
  EXPECT_EQ(bytes, 4u);
  EXPECT_EQ(wire(iov, n), encode_frame(kText, "abc").substr(1));
  q.advance(4);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.bytes(), 0u);
  q.release();
}

// A queue that never drains (each write takes one frame while the client
// adds one, a ping flood kept just behind) must not keep the written entries.
TEST(WsOutQueue, WrittenEntriesAreDroppedWhileTheQueueNeverDrains) {
  WsOutQueue q;
  auto frame = std::make_shared<const Frame>("abc");
  for (int i = 0; i < 100; ++i) q.push(kText, frame);
  const size_t one = encode_frame(kText, "abc").size();
  for (int i = 0; i < 100000; ++i) {
    q.push(kText, frame);
    q.advance(one);
  }
  EXPECT_EQ(q.bytes(), 100 * (3 + kQueuedFrameCost));
  EXPECT_LE(q.entries(), 400u) << "the vector grew with every frame ever written";
  // What is left is still written in order, resuming mid-frame.
  q.advance(1);
  std::vector<struct iovec> iov(512);
  std::vector<uint8_t> headers(256 * kMaxHeaderLen);
  size_t bytes = 0;
  int n = q.gather(iov, headers, 1 << 20, bytes);
  EXPECT_EQ(bytes, 100 * one - 1);
  EXPECT_EQ(n, 100);
  q.advance(bytes);
  EXPECT_TRUE(q.empty());
  q.release();
}

// A flood of empty pongs holds memory (an entry and a block per frame) that
// their payloads do not show: the bound must see it.
TEST(WsOutQueue, EmptyFramesCountAgainstTheBound) {
  WsOutQueue q;
  for (int i = 0; i < 1000; ++i) q.push(kPong, std::make_shared<const Frame>(""));
  q.push(kPong, nullptr);
  EXPECT_EQ(q.bytes(), 1001 * kQueuedFrameCost);
  std::vector<struct iovec> iov(2048);
  std::vector<uint8_t> headers(1024 * kMaxHeaderLen);
  size_t bytes = 0;
  q.gather(iov, headers, 1 << 20, bytes);
  q.advance(bytes);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.bytes(), 0u);
  q.release();
}

TEST(Frame, CarriesTheTextHeaderAtEverySizeClass) {
  for (size_t len : {size_t{0}, size_t{1}, size_t{125}, size_t{126}, size_t{65535}, size_t{65536}}) {
    std::string payload(len, 'x');
    Frame f(payload);
    EXPECT_EQ(f.size(), len);
    EXPECT_EQ(f.payload(), payload);
    EXPECT_EQ(f.text_frame(), encode_frame(kText, payload)) << len;
  }
}

}  // namespace
}  // namespace parley::ws
