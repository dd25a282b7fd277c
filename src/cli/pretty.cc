#include "cli/pretty.h"

#include <time.h>

#include <algorithm>
#include <cstdio>

#include "common/clock.h"

namespace parley::cli {

namespace {

std::string short_id(std::string_view id) { return std::string(id.substr(0, 8)); }

// Local wall-clock time of an ISO 8601 timestamp (now when absent or odd).
std::string clock_time(std::string_view iso) {
  Micros t = now_micros();
  if (auto parsed = parse_iso8601(iso)) t = *parsed;
  time_t secs = static_cast<time_t>(t / 1000000);
  struct tm local {};
  localtime_r(&secs, &local);
  char buf[16];
  std::snprintf(buf, sizeof buf, "[%02d:%02d:%02d]", local.tm_hour, local.tm_min, local.tm_sec);
  return buf;
}

// Continuation lines of a multi-line message are indented under the first.
std::string indent_newlines(std::string_view text) {
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '\n') out += "    ";
  }
  return out;
}

std::string thread_tag(const json::object& o) { return "#" + short_id(get_string(o, "thread_id")); }

// At most max bytes, never cutting a UTF-8 sequence, on one line.
std::string preview(std::string_view text, size_t max) {
  if (text.size() > max) {
    while (max > 0 && (static_cast<unsigned char>(text[max]) & 0xC0) == 0x80) --max;
    text = text.substr(0, max);
  }
  std::string out(text);
  for (char& c : out) c = c == '\n' ? ' ' : c;
  return out;
}

// To `width` characters (code points: a name in Cyrillic or with an accent
// takes as many columns as its letters, not its bytes).
std::string pad(std::string s, size_t width) {
  size_t chars = 0;
  for (unsigned char c : s) chars += (c & 0xC0) != 0x80;
  if (chars < width) s.append(width - chars, ' ');
  return s;
}

// What a message shows: "(deleted)" for a tombstone, else its content as
// `shown` renders it, marked "(edited)" after an edit.
std::string message_body(const json::object& m, std::string shown) {
  const json::value* deleted = m.if_contains("deleted");
  if (deleted && deleted->is_bool() && deleted->get_bool()) return "(deleted)";
  const json::value* edited_at = m.if_contains("edited_at");
  return edited_at && edited_at->is_string() ? std::move(shown) + " (edited)" : std::move(shown);
}

std::string sender_name(const json::object& message) {
  const json::object* sender = get_object(message, "sender");
  std::string name = sender ? get_string(*sender, "username") : "";
  return name.empty() ? short_id(get_string(message, "sender_id")) : name;
}

std::string pretty_presence(const json::object& f, const Names& names) {
  const json::value* online = f.if_contains("online");
  bool on = online && online->is_bool() && online->get_bool();
  return clock_time("") + " " + names.of(get_string(f, "user_id")) + (on ? " is online" : " went offline");
}

std::string pretty_typing(const json::object& f, const Names& names) {
  const json::value* typing = f.if_contains("is_typing");
  bool on = !typing || !typing->is_bool() || typing->get_bool();
  return clock_time("") + " " + thread_tag(f) + " " + names.of(get_string(f, "user_id")) +
         (on ? " is typing..." : " stopped typing");
}

std::string pretty_receipt(const json::object& f, const Names& names) {
  auto seq = get_int(f, "seq");
  return clock_time("") + " " + thread_tag(f) + " " + names.of(get_string(f, "user_id")) + " read up to #" +
         (seq ? std::to_string(*seq) : "?");
}

std::string pretty_error(const json::object& f) {
  return clock_time("") + " error " + get_string(f, "code") + ": " + get_string(f, "message");
}

// Text from others (a message, a name, a title) is printed to a terminal,
// where control characters would act instead of show: ESC starts sequences
// that clear the screen, retitle the window or write to the clipboard, CR
// overwrites what was printed. They are shown in caret notation, as `cat -v`
// does (ESC is ^[), C1 controls as <U+009B>; newlines and tabs stay. The
// bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069) are
// shown as <U+202E> too: they reverse what follows them on the line, so a
// message could make the sender's name or a later column read otherwise.
std::string terminal_safe(std::string line) {
  auto control = [](unsigned char c) {
    return (c < 0x20 && c != '\n' && c != '\t') || c == 0x7F || c == 0xC2 || c == 0xE2;
  };
  if (std::none_of(line.begin(), line.end(), [&](char c) { return control(static_cast<unsigned char>(c)); })) {
    return line;
  }
  std::string out;
  out.reserve(line.size() + 16);
  for (size_t i = 0; i < line.size(); ++i) {
    auto c = static_cast<unsigned char>(line[i]);
    auto next = i + 1 < line.size() ? static_cast<unsigned char>(line[i + 1]) : 0;
    if (c == 0x7F) {
      out += "^?";
    } else if (c < 0x20 && c != '\n' && c != '\t') {
      out += '^';
      out += static_cast<char>(c + 0x40);
    } else if (c == 0xC2 && next >= 0x80 && next <= 0x9F) {  // U+0080..U+009F in UTF-8
      char code[16];
      std::snprintf(code, sizeof code, "<U+%04X>", next);
      out += code;
      ++i;
    } else if (auto third = i + 2 < line.size() ? static_cast<unsigned char>(line[i + 2]) : 0;
               c == 0xE2 && ((next == 0x80 && third >= 0xAA && third <= 0xAE) ||
                             (next == 0x81 && third >= 0xA6 && third <= 0xA9))) {
      char code[16];  // E2 80 AA = U+202A, E2 81 A6 = U+2066
      std::snprintf(code, sizeof code, "<U+%04X>", 0x2000 + ((next & 0x3F) << 6) + (third & 0x3F));
      out += code;
      i += 2;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// The lines before terminal_safe (defined below, after Names).
std::string event_line(const json::object& frame, const Names& names);
std::string thread_row(const json::object& thread, std::string_view self_id);

}  // namespace

void Names::learn_thread(const json::object& thread) {
  const json::array* people = get_array(thread, "participants");
  if (!people) return;
  for (const json::value& p : *people) {
    if (const json::object* o = p.if_object()) {
      std::string id = get_string(*o, "user_id"), name = get_string(*o, "username");
      if (!id.empty() && !name.empty()) names_[id] = name;
    }
  }
}

void Names::learn_message(const json::object& message) {
  const json::object* sender = get_object(message, "sender");
  std::string id = get_string(message, "sender_id"), name = sender ? get_string(*sender, "username") : "";
  if (!id.empty() && !name.empty()) names_[id] = name;
}

void Names::learn_user(const json::object& user) {
  std::string id = get_string(user, "id"), name = get_string(user, "username");
  if (!id.empty() && !name.empty()) names_[id] = name;
}

std::string Names::of(std::string_view user_id) const {
  auto it = names_.find(user_id);
  return it != names_.end() ? it->second : short_id(user_id);
}

std::string pretty_message(const json::object& m, bool with_status) {
  std::string type = get_string(m, "message_type");
  std::string body = message_body(m, indent_newlines(get_string(m, "content")));
  std::string head = clock_time(get_string(m, "created_at")) + " " + thread_tag(m);
  // History shows seq too: it is what --before and mark-read --up-to take.
  if (with_status) {
    auto seq = get_int(m, "seq");
    head += " #" + (seq ? std::to_string(*seq) : std::string("?"));
  }
  if (type == "system") return terminal_safe(head + " * " + body);
  std::string kind = type.empty() || type == "text" ? "" : "[" + type + "] ";
  std::string line = head + " " + sender_name(m) + ": " + kind + body;
  std::string status = get_string(m, "status");
  if (with_status && !status.empty()) line += "  (" + status + ")";
  return terminal_safe(line);
}

std::string pretty_event(const json::object& f, const Names& names) { return terminal_safe(event_line(f, names)); }

std::string pretty_thread(const json::object& t, std::string_view self_id) {
  return terminal_safe(thread_row(t, self_id));
}

std::string pretty_user(const json::object& u) {
  return terminal_safe(get_string(u, "username") + " (" + get_string(u, "full_name") +
                       ") role=" + get_string(u, "role") + " id=" + get_string(u, "id"));
}

namespace {

std::string event_line(const json::object& f, const Names& names) {
  std::string type = get_string(f, "type");
  const json::object* data = get_object(f, "data");
  if ((type == "new_message" || type == "message_sent" || type == "message_edited") && data) {
    return pretty_message(*data);
  }
  if (type == "message_deleted") {
    auto seq = get_int(f, "seq");
    return clock_time("") + " " + thread_tag(f) + " #" + (seq ? std::to_string(*seq) : std::string("?")) +
           " was deleted";
  }
  if (type == "typing") return pretty_typing(f, names);
  if (type == "presence") return pretty_presence(f, names);
  if (type == "read_receipt") return pretty_receipt(f, names);
  if (type == "message_delivered") {
    return clock_time("") + " " + thread_tag(f) + " delivered to " + names.of(get_string(f, "user_id"));
  }
  if (type == "error") return pretty_error(f);
  if (type.starts_with("call_") || type == "ice_candidate") {
    return clock_time("") + " " + thread_tag(f) + " " + type + " from " + names.of(get_string(f, "from_user_id"));
  }
  if (const json::object* thread = get_object(f, "thread"); type == "thread_created" && thread)
    return clock_time("") + " new " + thread_row(*thread, "");
  if (type == "pong" || type == "thread_subscribed" || type == "thread_unsubscribed") return "";
  return clock_time("") + " " + type;
}

std::string thread_row(const json::object& t, std::string_view self_id) {
  std::string name = get_string(t, "title");
  if (name.empty()) {
    Names names;
    names.learn_thread(t);
    const json::array* people = get_array(t, "participants");
    for (size_t i = 0; people && i < people->size(); ++i) {
      const json::object* p = (*people)[i].if_object();
      std::string id = p ? get_string(*p, "user_id") : "";
      if (id.empty() || id == self_id) continue;
      name += (name.empty() ? "" : ",") + names.of(id);
    }
  }
  auto unread = get_int(t, "unread_count");
  auto last_seq = get_int(t, "last_seq");
  std::string row = short_id(get_string(t, "id")) + "  " + pad(get_string(t, "type"), 6) + "  " + pad(name, 20) + "  " +
                    pad(std::to_string(unread.value_or(0)) + " unread", 9) + "  #" +
                    std::to_string(last_seq.value_or(0));
  if (const json::object* last = get_object(t, "last_message")) {
    row += "  " + sender_name(*last) + ": " + message_body(*last, preview(get_string(*last, "content"), 40));
  }
  return row;
}

}  // namespace

}  // namespace parley::cli
