#include "auth/identity.h"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "auth/address_block.h"
#include "auth/password.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "common/utf8.h"
#include "store/phone_key.h"

namespace parley {

namespace json = boost::json;

namespace {

int64_t now_seconds() { return now_micros() / 1000000; }

bool valid_username(const std::string& u) {
  if (u.size() < 3 || u.size() > 32) return false;
  return std::all_of(u.begin(), u.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'; });
}

// Digits and the punctuation people write numbers with ("+1 (555) 010-0100",
// "555.010.0100"); only the digits tell numbers apart (store/phone_key.h).
bool valid_phone(const std::string& p) {
  if (p.size() < 3 || p.size() > 32) return false;
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (std::count_if(p.begin(), p.end(), digit) < 3) return false;  // "   " or "+-+" is no number
  return std::all_of(p.begin(), p.end(), [&](char c) {
    return digit(c) || c == '+' || c == '-' || c == ' ' || c == '(' || c == ')' || c == '.';
  });
}

Error unauthorized(std::string code, std::string msg) { return {ErrorKind::kUnauthorized, std::move(code), std::move(msg)}; }

constexpr size_t kMaxFullNameBytes = 200;
constexpr size_t kMaxRoleBytes = 64;

// Profile text from a provider's token, made to pass registration's checks:
// control characters (NUL and C1 included) dropped, then cut to max_bytes at a
// character boundary. Refusing instead would lock the provider's user out
// for a profile they may not be able to change.
std::string clean_profile_text(std::string_view text, size_t max_bytes) {
  if (!utf8_length(text)) return "";
  std::string out;
  for (size_t i = 0; i < text.size();) {
    // A C1 character is two bytes, 0xC2 then 0x80-0x9F: taken as one.
    std::string_view piece = text.substr(i, static_cast<unsigned char>(text[i]) == 0xC2 ? 2 : 1);
    if (!has_control_chars(piece)) out.append(piece);
    i += piece.size();
  }
  if (out.size() > max_bytes) {
    size_t cut = max_bytes;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;  // not inside a character
    out.resize(cut);
  }
  return out;
}

}  // namespace

std::string ascii_lowercase(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

Identity::Identity(Store& store, std::shared_ptr<const JwtVerifier> jwt, const Config& config)
    : store_(store),
      jwt_(std::move(jwt)),
      config_(config),
      login_limiter_(config.limits.login_failures_per_account, config.limits.login_failures_per_address,
                     config.limits.login_window_seconds),
      // Counts every registration attempt per address; the account side is unused.
      registration_limiter_(INT32_MAX, config.limits.registrations_per_address,
                            config.limits.registration_window_seconds) {}

void Identity::use_login_limits(std::unique_ptr<LoginLimits> limits) {
  shared_login_limits_ = std::move(limits);
  login_limits_ = shared_login_limits_ ? shared_login_limits_.get() : &login_limiter_;
}

AuthResult Identity::issue_token(const User& user) const {
  // Never before the account's revocation time: revoke-tokens refuses iat
  // earlier than it, and it may lie a second or more ahead (each revocation
  // moves it past the last: docs/moderation.md).
  int64_t now = std::max(now_seconds(), user.tokens_valid_after);
  AuthResult r;
  r.user = user;
  r.token = jwt_->sign(user.id, now, config_.token_ttl_seconds, json::object{{"username", user.username}});
  r.expires_at = (now + config_.token_ttl_seconds) * 1000000;
  return r;
}

Result<AuthResult> Identity::register_user(const RegisterRequest& req, const std::string& address) {
  std::string username = ascii_lowercase(req.username);
  if (!valid_username(username))
    return bad_input("invalid_username", "username must be 3-32 characters of a-z, 0-9, _ and .");
  if (req.id && !is_uuid(*req.id)) return bad_input("invalid_field", "id must be a UUID");
  const bool no_password = req.id && req.password.empty();  // signs in through its identity provider only
  // Counted in characters, as the message says: "éééééééé" is eight.
  const size_t password_chars = utf8_length(req.password).value_or(req.password.size());
  if (!no_password && password_chars < 8)
    return bad_input("weak_password", "password must have at least 8 characters");
  if (req.password.size() > 1024) return bad_input("invalid_field", "password must be at most 1024 bytes");
  if (!utf8_length(req.full_name) || !has_visible_text(req.full_name) || req.full_name.size() > kMaxFullNameBytes ||
      has_control_chars(req.full_name))
    return bad_input("invalid_field", "full_name must be 1-200 bytes of text (UTF-8), without control characters");
  if (req.phone_number && !valid_phone(*req.phone_number))
    return bad_input("invalid_field", "phone_number must be at least 3 digits, with spaces, +, -, ., ( and )");
  if (!utf8_length(req.role) || req.role.size() > kMaxRoleBytes || has_control_chars(req.role))
    return bad_input("invalid_field", "role must be at most 64 bytes of text (UTF-8), without control characters");
  // The default role too must be one the server allows: with --roles, a
  // registration that names none is refused, not given a role outside them.
  if (!known_role(config_, req.role.empty() ? kDefaultRole : req.role)) {
    std::string roles;
    for (const std::string& r : config_.roles) roles += (roles.empty() ? "" : ", ") + r;
    return bad_input("invalid_role", std::string(req.role.empty() ? "a role is required: " : "role must be ") +
                                         "one of: " + roles);
  }
  if (!address.empty() && !registration_limiter_.admit("", address_block(address), now_seconds())) {
    Metrics::get().count_error("rate_limited");
    return Error{ErrorKind::kRateLimited, "rate_limited", "too many registrations from this address; try again later"};
  }
  User u;
  u.id = req.id ? normalize_uuid(*req.id) : new_uuid();
  if (req.id) {
    auto existing = store_.user_by_id(u.id);
    if (!existing) return existing.error();
    if (*existing) return Error{ErrorKind::kConflict, "user_exists", "a user with this id already exists"};
  }
  u.username = username;
  u.full_name = req.full_name;
  u.phone_number = req.phone_number;
  u.role = req.role.empty() ? kDefaultRole : req.role;
  if (!no_password) u.password_hash = hash_password(req.password);
  u.created_at = now_micros();
  auto created = store_.create_user(u);
  if (!created && req.id) {
    // The provider's first token for this id may have made it meanwhile.
    auto existing = store_.user_by_id(u.id);
    if (existing && *existing) return Error{ErrorKind::kConflict, "user_exists", "a user with this id already exists"};
  }
  if (!created) return created.error();
  spdlog::info("event=user_registered user_id={}", u.id);
  return issue_token(*created);
}

Result<AuthResult> Identity::login(const std::string& login, const std::string& password,
                                      const std::string& address) {
  auto by_name = store_.user_by_username(ascii_lowercase(login));
  if (!by_name) return by_name.error();  // an outage is not "wrong password"
  std::optional<User> u = std::move(*by_name);
  if (!u) {
    auto by_phone = store_.user_by_phone(login);
    if (!by_phone) return by_phone.error();
    u = std::move(*by_phone);
  }
  // Failures count per account (whichever name it was reached by), or per
  // login text when no account matches: for a phone number, per its digits,
  // since every spelling of it would reach the same account.
  const std::string key = u ? u->id : login_text_key(login);
  int64_t now = now_seconds();
  const std::string block = address_block(address);
  if (!login_limits_->admit(key, block, now)) {
    Metrics::get().count_error("rate_limited");
    const int window = config_.limits.login_window_seconds;
    const std::string wait = window >= 120 ? std::to_string(window / 60) + " minutes" : std::to_string(window) + " seconds";
    return Error{ErrorKind::kRateLimited, "rate_limited", "too many failed logins; try again in at most " + wait};
  }
  // Hash even for an unknown account, so timing does not tell which exist.
  static const std::string kDummy = hash_password("parley-dummy-password");
  bool has_password = u && !u->password_hash.empty();
  bool ok = verify_password(password, has_password ? u->password_hash : kDummy) && has_password;
  if (!ok) {  // admit() counted it already
    spdlog::info("event=login_failed address={}", address);
    return unauthorized("invalid_credentials", "wrong username, phone number or password");
  }
  // The right password is no failed login, also on a disabled account: an
  // app retrying saved credentials must not lock the account past `enable`,
  // nor lock out its address (a school's NAT).
  login_limits_->record_success(key, block, now);
  if (u->disabled) {
    spdlog::info("event=login_refused reason=account_disabled user_id={}", u->id);
    return Error{ErrorKind::kForbidden, "account_disabled", "this account is disabled"};
  }
  return issue_token(*u);
}

std::string login_text_key(const std::string& login) {
  return valid_phone(login) ? "phone:" + phone_key(login) : "login:" + ascii_lowercase(login);
}

Status Identity::unchanged_since(const User& user) {
  auto now = account_state(user.id);
  if (!now) return now.error();
  if (now->disabled) return unauthorized("account_disabled", "this account is disabled");
  if (now->tokens_valid_after != user.tokens_valid_after)
    return unauthorized("token_revoked", "this token was revoked; log in again");
  return Ok{};
}

Result<AccountState> Identity::account_state(const std::string& user_id) {
  auto u = store_.user_by_id(user_id);
  if (!u) return u.error();
  if (!*u) return AccountState{user_id, true, 0, 0};  // gone: nothing of it may stay connected
  return AccountState{user_id, (*u)->disabled, (*u)->tokens_valid_after, 0};
}

Result<Authenticated> Identity::admit(const JwtClaims& claims, User user) {
  if (user.disabled) return unauthorized("account_disabled", "this account is disabled");
  // A token without iat cannot show it is newer than a revocation.
  if (user.tokens_valid_after > 0 && claims.iat < user.tokens_valid_after)
    return unauthorized("token_revoked", "this token was revoked; log in again");
  return Authenticated{std::move(user), claims.exp, claims.iat, 0};
}

Result<Authenticated> Identity::authenticate(const std::string& token) {
  auto claims = jwt_->verify(token, now_seconds());
  if (!claims) return claims.error();
  if (!is_uuid(claims->sub)) return unauthorized("invalid_token", "token subject is not a user id");
  const uint64_t before_read = generation();
  auto u = store_.user_by_id(normalize_uuid(claims->sub));
  if (!u) return u.error();  // an outage is not "unknown user": no provisioning either
  if (!*u) {
    auto made = provision(*claims);
    if (!made) return made.error();
    return Authenticated{std::move(*made), claims->exp, claims->iat, before_read};
  }
  if (!(*u)->disabled) remember(**u, before_read);
  auto ok = admit(*claims, std::move(**u));
  if (ok) ok->generation = before_read;
  return ok;
}

std::optional<Result<Authenticated>> Identity::authenticate_cached(const std::string& token) {
  const int64_t now = now_seconds();
  auto claims = jwt_->verify(token, now);
  if (!claims) return Result<Authenticated>(claims.error());
  if (!is_uuid(claims->sub)) return Result<Authenticated>(unauthorized("invalid_token", "token subject is not a user id"));
  User user;
  user.id = normalize_uuid(claims->sub);
  uint64_t generation = 0;
  {
    std::lock_guard lock(cache_mu_);
    auto it = cache_.find(user.id);
    if (it == cache_.end() || now - it->second.read_at >= kUserCacheSeconds) return std::nullopt;
    user.tokens_valid_after = it->second.tokens_valid_after;
    generation = forgets_;
  }
  // Only acceptances come from the cache: a refusal is the store's to make,
  // so `parley user enable` takes effect at once.
  auto ok = admit(*claims, std::move(user));
  if (!ok) return std::nullopt;
  ok->generation = generation;
  return ok;
}

uint64_t Identity::generation() {
  std::lock_guard lock(cache_mu_);
  return forgets_;
}

void Identity::remember(const User& user, uint64_t generation) {
  CachedUser entry{user.tokens_valid_after, now_seconds()};
  std::lock_guard lock(cache_mu_);
  if (forgets_ != generation) return;
  // Bounded: past this many accounts, start again (a miss costs one store
  // read, as every upgrade did before the cache).
  if (cache_.size() >= kMaxCachedUsers) cache_.clear();
  cache_.insert_or_assign(user.id, entry);
}

void Identity::forget_user(const std::string& user_id) {
  std::lock_guard lock(cache_mu_);
  ++forgets_;
  cache_.erase(user_id);
}

void Identity::warm(int limit) {
  const uint64_t before_read = generation();
  auto users = store_.recent_users(std::min(limit, static_cast<int>(kMaxCachedUsers / 2)));
  if (!users) {
    spdlog::warn("event=user_cache_not_warmed code={}", users.error().code);
    return;
  }
  const int64_t now = now_seconds();
  size_t cached = 0;
  {
    std::lock_guard lock(cache_mu_);
    if (forgets_ != before_read) return;  // an account changed meanwhile: left to authenticate()
    for (User& u : *users) {
      if (u.disabled) continue;
      cache_.insert_or_assign(std::move(u.id), CachedUser{u.tokens_valid_after, now});
      ++cached;
    }
  }
  spdlog::info("event=user_cache_warmed users={}", cached);
}

// A provider's token (Supabase-style) for a user we have not seen: create the
// user from the profile it carries. A token without a profile is refused, so a
// deleted user's old token does not bring the account back.
Result<User> Identity::provision(const JwtClaims& claims) {
  const json::object& all = claims.all;
  const json::object* meta = all.contains("user_metadata") && all.at("user_metadata").is_object()
                                 ? &all.at("user_metadata").as_object()
                                 : nullptr;
  const json::value* email = all.if_contains("email");
  if (!meta && !(email && email->is_string())) return unauthorized("invalid_token", "unknown user");
  auto str = [](const json::object* o, const char* key) -> std::string {
    if (!o) return "";
    const json::value* v = o->if_contains(key);
    return v && v->is_string() ? std::string(v->get_string()) : "";
  };
  std::string base = ascii_lowercase(str(meta, "username"));
  if (base.empty() && email && email->is_string()) {
    std::string e(email->get_string());
    base = ascii_lowercase(e.substr(0, e.find('@')));
  }
  std::string clean;
  for (char c : base)
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.') clean.push_back(c);
  if (clean.size() < 3) clean = "user" + clean;
  clean = clean.substr(0, 24);
  User u;
  u.id = normalize_uuid(claims.sub);
  u.full_name = clean_profile_text(str(meta, "full_name"), kMaxFullNameBytes);
  const bool name_is_username = !has_visible_text(u.full_name);
  u.role = clean_profile_text(str(meta, "role"), kMaxRoleBytes);
  if (u.role.empty()) u.role = "member";
  u.created_at = now_micros();
  for (int attempt = 0; attempt < 5; ++attempt) {
    u.username = attempt == 0 ? clean : clean + "_" + random_hex(3);
    if (name_is_username) u.full_name = u.username;
    auto created = store_.create_user(u);
    if (created) {
      spdlog::info("event=user_provisioned user_id={}", u.id);
      return *created;
    }
    // A concurrent first login with this token's subject may have won: with
    // the name taken, each picks its own suffix and the two collide on the
    // user id instead (a plain conflict), so both kinds look for it.
    if (created.error().kind != ErrorKind::kConflict) return created.error();
    auto existing = store_.user_by_id(u.id);
    if (!existing) return existing.error();
    if (*existing) return **existing;
  }
  return internal_error("could not choose a username");
}

}  // namespace parley
