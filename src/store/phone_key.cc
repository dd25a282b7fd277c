#include "store/phone_key.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <tuple>

namespace parley {

std::string phone_key(std::string_view phone) {
  std::string key;
  for (char c : phone)
    if (c >= '0' && c <= '9') key.push_back(c);
  return key;
}

std::optional<std::string> stored_phone_key(const std::optional<std::string>& phone) {
  if (!phone) return std::nullopt;
  std::string key = phone_key(*phone);
  if (key.empty()) return std::nullopt;
  return key;
}

std::vector<PhoneKeyed> assign_phone_keys(std::vector<PhoneOwner> owners) {
  std::sort(owners.begin(), owners.end(), [](const PhoneOwner& a, const PhoneOwner& b) {
    return std::tie(a.created_at, a.id) < std::tie(b.created_at, b.id);
  });
  std::set<std::string> taken;
  std::vector<PhoneKeyed> out;
  out.reserve(owners.size());
  for (const auto& o : owners) {
    std::string key = phone_key(o.phone_number);
    if (key.empty()) {
      spdlog::warn("event=phone_key_missing user_id={} reason=no_digits", o.id);
      out.push_back({o.id, std::nullopt});
    } else if (!taken.insert(key).second) {
      // The number stays on the account; only the key (login, uniqueness) goes.
      spdlog::warn("event=phone_key_missing user_id={} reason=same_number_as_an_older_account", o.id);
      out.push_back({o.id, std::nullopt});
    } else {
      out.push_back({o.id, std::move(key)});
    }
  }
  return out;
}

}  // namespace parley
