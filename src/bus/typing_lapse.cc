#include "bus/typing_lapse.h"

#include <boost/json.hpp>

namespace parley {

namespace json = boost::json;

namespace {
// A typing event's payload is the frame's fields: thread_id, user_id,
// from_user_id, is_typing (Connection::on_typing).
const json::object* typing_fields(const json::value& v) {
  const json::object* o = v.if_object();
  if (!o) return nullptr;
  const json::value* user = o->if_contains("user_id");
  const json::value* typing = o->if_contains("is_typing");
  if (!user || !user->is_string() || !typing || !typing->is_bool()) return nullptr;
  return o;
}
}  // namespace

void TypingLapse::observe(const BusEventPtr& event, Micros now) {
  if (event->type != "typing" || !event->recipients) return;
  boost::system::error_code ec;
  json::value v = json::parse(event->payload, ec);
  const json::object* fields = ec ? nullptr : typing_fields(v);
  if (!fields) return;
  std::string key = event->thread_id + '\n' + std::string(fields->at("user_id").get_string());
  if (!fields->at("is_typing").get_bool()) {
    typing_.erase(key);
    return;
  }
  typing_[std::move(key)] = Typing{now + lapse_, event};
}

std::vector<BusEventPtr> TypingLapse::expired(Micros now) {
  std::vector<BusEventPtr> out;
  for (auto it = typing_.begin(); it != typing_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    const BusEvent& started = *it->second.started;
    json::object fields = json::parse(started.payload).as_object();  // checked by observe()
    fields["is_typing"] = false;
    auto stop = std::make_shared<BusEvent>();
    stop->thread_id = started.thread_id;
    stop->recipients = started.recipients;
    stop->shared_recipients = started.shared_recipients;
    stop->type = "typing";
    stop->payload = json::serialize(fields);
    out.push_back(std::move(stop));
    it = typing_.erase(it);
  }
  return out;
}

}  // namespace parley
