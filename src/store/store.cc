#include "store/store.h"

#include <algorithm>
#include <iterator>
#include <memory>
#include <set>

#include "common/clock.h"
#include "common/ids.h"
#include "common/wait.h"

namespace parley {

Error not_admin() {
  return Error{ErrorKind::kForbidden, "not_admin", "only thread admins may change its participants"};
}

Error group_too_large(size_t max_members) {
  return bad_input("group_too_large", "a group has at most " + std::to_string(max_members) +
                                          " participants (--max-group-members)");
}

Error not_allowed() {
  return Error{ErrorKind::kForbidden, "not_allowed", "you may no longer change this message"};
}

Result<AppendResult> Store::append_and_wait(AppendRequest request) {
  return wait_for_callback<Result<AppendResult>>(
      [&](AppendCallback done) { append(std::move(request), std::move(done)); });
}

Result<std::vector<std::string>> Store::add_participants(const std::string& thread_id,
                                                         const std::vector<std::string>& user_ids) {
  auto added = wait_for_callback<Result<Added>>(
      [&](AdditionCallback done) { add_participants(Addition{thread_id, user_ids, {}}, std::move(done)); });
  if (!added) return added.error();
  return std::move(added->user_ids);
}

Result<Removed> Store::remove_participant_and_wait(Removal removal) {
  return wait_for_callback<Result<Removed>>(
      [&](RemovalCallback done) { remove_participant(std::move(removal), std::move(done)); });
}

std::optional<AppendRequest> promotion_notice(const Removal& removal, const std::string& username) {
  if (!removal.promotion_notice) return std::nullopt;
  return AppendRequest{removal.thread_id, removal.user_id, removal.promotion_notice(username), "system", ""};
}

int64_t last_notice_seq(const Removed& removed) {
  if (removed.promotion) return removed.promotion->seq;
  return removed.notice ? removed.notice->seq : 0;
}

OfflinePage offline_page(std::vector<Message> current, std::vector<Message> former, int limit) {
  OfflinePage page;
  page.messages = std::move(current);
  if (!former.empty()) {
    // created_at is unique across the store: one order for both.
    const auto mid = page.messages.insert(page.messages.end(), std::make_move_iterator(former.begin()),
                                          std::make_move_iterator(former.end()));
    std::inplace_merge(page.messages.begin(), mid, page.messages.end(),
                       [](const Message& a, const Message& b) { return a.created_at < b.created_at; });
  }
  const size_t keep = static_cast<size_t>(std::max(limit, 0));
  if (page.messages.size() > keep) {
    page.messages.resize(keep);
    page.has_more = true;
    if (!page.messages.empty()) page.cursor = page.messages.back().created_at;
  }
  return page;
}

const char* stored_thread_type(ThreadType type) { return type == ThreadType::kDirect ? "direct" : "group"; }

ThreadType thread_type_from_stored(std::string_view name) {
  return name == "direct" ? ThreadType::kDirect : ThreadType::kGroup;
}

Result<NewThread> prepare_new_thread(const Thread& requested) {
  NewThread out;
  Thread& t = out.thread;
  t = requested;
  t.participants.clear();
  std::set<std::string> seen;
  for (const auto& p : requested.participants) {
    if (p.user_id.empty()) return bad_input("invalid_participants", "participant without user id");
    if (seen.insert(p.user_id).second) t.participants.push_back(p);
  }
  if (t.participants.empty()) return bad_input("invalid_participants", "a thread needs participants");
  if (t.type == ThreadType::kDirect) {
    if (t.participants.size() != 2)
      return bad_input("invalid_participants", "a direct thread has exactly two distinct participants");
    auto [lo, hi] = std::minmax(t.participants[0].user_id, t.participants[1].user_id);
    out.direct_key = lo + ":" + hi;  // one key per unordered pair
  }
  if (t.id.empty()) t.id = new_uuid();
  if (t.created_at == 0) t.created_at = now_micros();
  return out;
}

std::string like_contains_pattern(std::string_view text) {
  std::string p = "%";
  for (char ch : text) {
    if (ch == '%' || ch == '_' || ch == '\\') p += '\\';
    p += ch;
  }
  return p + "%";
}

Result<std::vector<std::vector<std::string>>> Store::contacts_of_each(const std::vector<std::string>& user_ids) {
  std::vector<std::vector<std::string>> out;
  out.reserve(user_ids.size());
  for (const auto& id : user_ids) {
    auto contacts_of_one = contacts(id);
    if (!contacts_of_one) return contacts_of_one.error();
    out.push_back(std::move(*contacts_of_one));
  }
  return out;
}

}  // namespace parley
