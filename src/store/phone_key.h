// phone_key: when two phone numbers are the same number.
//
// Users type a number as they write it ("+1 555 0100", "1-555-0100",
// "(555) 010.0100"); an account is found by its digits only, in order, so
// every spelling of one number reaches one account and registers it once.
// A leading + is not part of the key: people write one number both ways.
// Both stores keep the key in users.phone_key (UNIQUE) next to the number
// as typed, which is what clients are shown. Pure; any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"

namespace parley {

// The digits of `phone`, in order; "" when it has none (such a number has
// no key and is never found by one).
std::string phone_key(std::string_view phone);

// What a store keeps in users.phone_key for an account's number: nullopt
// (NULL) for no number or one without digits.
std::optional<std::string> stored_phone_key(const std::optional<std::string>& phone);

// An account as the migration that introduced keys reads it.
struct PhoneOwner {
  std::string id;
  std::string phone_number;
  Micros created_at = 0;
};

// The key each account gets when stored numbers are keyed for the first
// time: two accounts whose numbers were spelled differently may share one.
// The earliest created (then the lowest id) keeps the key; the others get
// nullopt (they still log in by username), as does a number without digits,
// and each is logged as a warning by user id. Shared by both stores'
// migrations so they decide alike.
struct PhoneKeyed {
  std::string id;
  std::optional<std::string> key;
};
std::vector<PhoneKeyed> assign_phone_keys(std::vector<PhoneOwner> owners);

}  // namespace parley
