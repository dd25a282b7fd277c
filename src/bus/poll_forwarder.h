// PollForwarder: carries an Engine.IO long-polling request (a GET or a POST
// for a sid) from the node a client's HTTP request happened to reach to the
// node that owns the session, and its answer back, so Socket.IO clients need
// no sticky sessions behind a load balancer. A sid names the node that made
// it ("<node id>.<uuid>"). Only a server of several nodes has a forwarder
// (redis/redis_poll_forwarder.h); an embedded server has none, and its sids
// are plain uuids.
//
// Threading: every method may be called from any thread. The serve hook and
// the `done` callbacks run on the forwarder's own thread: they must be quick
// and only hand work on. Lifetime: owned by whoever made it (the `serve`
// command); it must stop calling the hook (close it) before the server's
// loops go away.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace parley {

struct PollRequest {
  bool post = false;  // false: a GET (a long poll), true: a POST of packets
  std::string sid;
  std::string body;   // a POST's payload, at most the Engine.IO maxPayload
};

struct PollAnswer {
  int status = 200;
  std::string content_type;
  std::string body;
};

class PollForwarder {
 public:
  using AnswerFn = std::function<void(PollAnswer)>;
  // Owner side: serves a request forwarded to this node; `answer` must be
  // called exactly once, from any thread, and may wait (a long poll does).
  using ServeFn = std::function<void(PollRequest, AnswerFn answer)>;
  // Requesting side: the owner's answer, or nullopt when no node served it
  // (no such node, the owner died or lost Redis, the deadline passed, Redis
  // is down here): the session is then as good as unknown.
  using DoneFn = std::function<void(std::optional<PollAnswer>)>;

  virtual ~PollForwarder() = default;

  // This node's id: the prefix of the sids it makes.
  virtual const std::string& node_id() const = 0;
  // Set once, before the forwarder starts.
  virtual void serve_with(ServeFn serve) = 0;
  // Sends `request` to `node` and calls `done` exactly once, at the latest
  // about `deadline` later.
  virtual void forward(const std::string& node, PollRequest request, std::chrono::milliseconds deadline,
                       DoneFn done) = 0;
};

// The sid of a new session on `node`: "<node>.<uuid>".
inline std::string node_sid(const std::string& node, const std::string& uuid) { return node + "." + uuid; }

// The node a sid names; empty for a sid no node made (a plain uuid, or a
// character ours never have: the wire between nodes splits on spaces).
inline std::string sid_owner(std::string_view sid) {
  if (sid.size() > 128) return {};
  for (char c : sid) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.' || c == '_';
    if (!ok) return {};
  }
  size_t dot = sid.find('.');
  if (dot == std::string_view::npos || dot == 0) return {};
  return std::string(sid.substr(0, dot));
}

}  // namespace parley
