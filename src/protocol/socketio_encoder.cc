#include "protocol/socketio_encoder.h"

#include <boost/json.hpp>

#include <memory>
#include <random>

#include "protocol/socketio.h"

namespace parley {

namespace json = boost::json;

namespace {

std::optional<uint64_t> ack_id_of(const json::value& request) {
  if (request.is_uint64()) return request.get_uint64();
  if (request.is_int64() && request.get_int64() >= 0) return static_cast<uint64_t>(request.get_int64());
  return std::nullopt;
}

FramePtr frame(std::string text) { return std::make_shared<const Frame>(std::move(text)); }

}  // namespace

SocketIoEncoder::SocketIoEncoder() : first_number_(std::random_device{}() % kNumbers) {}

uint64_t SocketIoEncoder::remember(const MessageRef& message) const {
  std::lock_guard lock(mu_);
  if (message.seq > 0 && message.seq < (int64_t{1} << kSeqBits)) {
    auto it = thread_numbers_.find(message.thread_id);
    if (it == thread_numbers_.end() && threads_.size() < kMaxNumbered) {
      threads_.emplace_back(message.thread_id);
      it = thread_numbers_.emplace(threads_.back(), number_of(threads_.size() - 1)).first;
    }
    // Every number taken: a plain id.
    if (it != thread_numbers_.end()) return kNamed | it->second << kSeqBits | static_cast<uint64_t>(message.seq);
  }
  uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  Slot& s = slots_[id % kRemembered];
  s.id = id;
  s.message.message_id = message.id;
  s.message.thread_id = message.thread_id;
  s.message.seq = message.seq;
  return id;
}

std::optional<SocketIoEncoder::Acked> SocketIoEncoder::message_for_ack(uint64_t ack_id) const {
  std::lock_guard lock(mu_);
  if (ack_id >= kNamed) {
    const uint64_t number = (ack_id - kNamed) >> kSeqBits;
    const int64_t seq = static_cast<int64_t>(ack_id & ((uint64_t{1} << kSeqBits) - 1));
    if (number == 0 || number > kNumbers || seq == 0 || ack_id >= kNamed << 1) return std::nullopt;
    const uint64_t index = (number - 1 + kNumbers - first_number_) % kNumbers;
    if (index >= threads_.size()) return std::nullopt;
    return Acked{"", threads_[index], seq};
  }
  const Slot& s = slots_[ack_id % kRemembered];
  if (s.id != ack_id || s.message.message_id.empty()) return std::nullopt;
  return s.message;
}

FramePtr SocketIoEncoder::event(const BusEvent& e) const {
  if (e.type == "new_message" && !e.message_id.empty())
    return replayed_message({e.message_id, e.thread_id, e.seq}, e.payload);
  return frame(sio::encode_event(e.type, e.payload.empty() ? std::string_view("{}") : std::string_view(e.payload)));
}

FramePtr SocketIoEncoder::replayed_message(const MessageRef& message, std::string_view message_json) const {
  return frame(sio::encode_event("new_message", message_json, remember(message)));
}

Frames SocketIoEncoder::reply(std::string_view type, json::object fields, const json::value& request) const {
  auto ack = ack_id_of(request);
  if (!ack) return {frame(sio::encode_event(type, json::serialize(fields)))};
  json::object o;
  o.reserve(fields.size() + 1);
  o["success"] = true;
  for (auto& kv : fields) o.emplace(kv.key(), std::move(kv.value()));
  return {frame(sio::encode_ack(*ack, json::serialize(o)))};
}

Frames SocketIoEncoder::data_reply(std::string_view type, std::string_view data_json, const json::value& request) const {
  Frames out{frame(sio::encode_event(type, data_json))};
  if (auto ack = ack_id_of(request)) {
    std::string payload = "{\"success\":true,\"message\":";
    payload += data_json;
    payload += '}';
    out.insert(out.begin(), frame(sio::encode_ack(*ack, payload)));
  }
  return out;
}

Frames SocketIoEncoder::error(const Error& e, const json::value& request) const {
  if (auto ack = ack_id_of(request))
    return {frame(sio::encode_ack(
        *ack, json::serialize(json::object{{"success", false}, {"error", e.message}, {"code", e.code}})))};
  return {frame(sio::encode_event("error", json::serialize(json::object{{"message", e.message}, {"code", e.code}})))};
}

Frames SocketIoEncoder::done(const json::value& request) const {
  auto ack = ack_id_of(request);
  if (!ack) return {};
  return {frame(sio::encode_ack(*ack, R"({"success":true})"))};
}

const SocketIoEncoder& socketio_encoder() {
  static const SocketIoEncoder encoder;
  return encoder;
}

}  // namespace parley
