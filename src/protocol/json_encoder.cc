// The Encoder of the WebSocket JSON protocol: every frame is one JSON object
// with its `type` first (encode.h).
#include <boost/json.hpp>

#include "protocol/encode.h"
#include "protocol/encoder.h"

namespace parley {

namespace {

class JsonEncoder final : public Encoder {
 public:
  WireFormat format() const override { return WireFormat::kJson; }

  FramePtr event(const BusEvent& event) const override { return std::make_shared<const Frame>(encode_event(event)); }

  FramePtr replayed_message(const MessageRef&, std::string_view message_json) const override {
    return std::make_shared<const Frame>(encode_data_frame("new_message", message_json));
  }

  Frames reply(std::string_view type, boost::json::object fields, const boost::json::value& request) const override {
    return {std::make_shared<const Frame>(encode_frame(type, std::move(fields), request))};
  }

  Frames data_reply(std::string_view type, std::string_view data_json,
                    const boost::json::value& request) const override {
    return {std::make_shared<const Frame>(encode_data_frame(type, data_json, request))};
  }

  Frames error(const Error& error, const boost::json::value& request) const override {
    return {std::make_shared<const Frame>(encode_error(error, request))};
  }

  Frames done(const boost::json::value&) const override { return {}; }
};

}  // namespace

const Encoder& json_encoder() {
  static const JsonEncoder encoder;
  return encoder;
}

}  // namespace parley
