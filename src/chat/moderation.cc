// ChatService: deleting and editing messages (CONTRACT section 8). Who may
// do what is decided here, and checked again by the store as the change
// commits. Each action that changes something writes one audit log line:
// who, what, which message; never the content.
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "chat/chat_service.h"
#include "common/clock.h"
#include "protocol/encode.h"

namespace parley {

namespace json = boost::json;

namespace {

// An unknown message and one in a thread the actor is not in get the same
// answer, so ids of other people's messages tell nothing.
Error message_forbidden() { return forbidden("message not found or you may not change it"); }

// A message to delete or edit, with its thread's members, when the actor is
// one of them (else message_forbidden(), whether or not it exists).
struct Target {
  Message message;
  std::shared_ptr<const ThreadMembers> members;
};
Result<Target> find_target(ChatService& chat, const std::string& actor_id, const std::string& message_id) {
  auto found = chat.store().message(message_id);
  if (!found) return found.error();
  if (!*found) return message_forbidden();
  auto m = chat.members((*found)->thread_id);
  if (!m) return m.error();
  if (!*m || !chat.is_member(**m, actor_id)) return message_forbidden();
  return Target{std::move(**found), std::move(*m)};
}

bool contains(const std::vector<std::string>& ids, const std::string& id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}


}  // namespace

// With its status as history has it: a change's frame and answer replace the
// client's copy, whose read ticks must not go back. Without the thread (a
// read that failed), as stored ("sent").
Message ChatService::with_status(Message m) const {
  std::vector<Message> one;
  one.push_back(std::move(m));
  if (auto st = annotate_each_thread(one); !st)
    spdlog::warn("event=message_status_unknown message_id={} code={}", one.front().id, st.error().code);
  return std::move(one.front());
}

Result<Message> ChatService::delete_message(const std::string& actor_id, const std::string& message_id,
                                            const std::string& origin_session) {
  auto target = find_target(*this, actor_id, message_id);
  if (!target) return target.error();
  const Message& msg = target->message;
  const auto& m = target->members;
  const bool is_sender = msg.sender_id == actor_id;
  // The record of who joined and left stays whole: nobody is in a group
  // without the message that says so (docs/protocol.md).
  if (msg.message_type == "system") return forbidden("system messages cannot be deleted");
  if (!is_sender && !contains(m->admin_ids, actor_id))
    return forbidden("only the sender or a thread admin may delete a message");
  if (msg.deleted) return with_status(msg);  // already a tombstone: nothing changes, nobody is told again
  auto deleted = store_.delete_message(message_id, actor_id);
  // The checks above read the cache; the store's, as it commits, has the last word.
  if (!deleted && deleted.error().code == "not_allowed") return message_forbidden();
  if (!deleted) return deleted.error();
  *deleted = with_status(std::move(*deleted));
  spdlog::info("event=audit action=message_delete actor_id={} as={} message_id={} thread_id={} seq={} sender_id={}",
               actor_id, is_sender ? "sender" : "thread_admin", msg.id, msg.thread_id, msg.seq, msg.sender_id);
  publish_change(*deleted, Audience::members(members_after_change(msg.thread_id, m)), origin_session);
  return deleted;
}

Result<Message> ChatService::edit_message(const std::string& actor_id, const std::string& message_id,
                                          const std::string& content, const std::string& origin_session) {
  auto target = find_target(*this, actor_id, message_id);
  if (!target) return target.error();
  const Message& msg = target->message;
  const auto& m = target->members;
  if (msg.message_type == "system") return forbidden("system messages cannot be edited");
  if (msg.sender_id != actor_id) return forbidden("only the sender may edit a message");
  if (msg.deleted) return Error{ErrorKind::kConflict, "message_deleted", "the message was deleted"};
  const Micros now = now_micros();
  if (now - msg.created_at > int64_t{config_.limits.edit_window_seconds} * 1000000)
    return Error{ErrorKind::kForbidden, "edit_window_passed",
                 "messages can be edited for " + std::to_string(config_.limits.edit_window_seconds) +
                     " seconds after sending"};
  if (auto e = validate_content(content, msg.message_type)) return *e;
  auto edited = store_.edit_message(message_id, actor_id, content, now);
  if (!edited && edited.error().code == "not_allowed") return message_forbidden();
  if (!edited) return edited.error();
  *edited = with_status(std::move(*edited));
  spdlog::info("event=audit action=message_edit actor_id={} message_id={} thread_id={} seq={}", actor_id, msg.id,
               msg.thread_id, msg.seq);
  publish_change(*edited, Audience::members(members_after_change(msg.thread_id, m)), origin_session);
  return edited;
}

}  // namespace parley
