// Internal to net/: Engine.IO v4, the transport under Socket.IO clients
// (CONTRACT.md section 7). An Engine.IO session (sid) lives on one event
// loop, where its SocketIoSession and Connection live too; it speaks HTTP
// long-polling, a WebSocket, or polling first and then a WebSocket after the
// upgrade (2probe/3probe, 5). Polling requests for a sid may arrive on any
// loop's HTTP connection: the process-wide registry says which loop owns it,
// and the request is handed to that loop, its answer back to the HTTP
// connection's loop. With several nodes (a PollForwarder), a sid names the
// node that owns it, and a polling request for another node's sid is
// forwarded there and answered from there. A WebSocket for an existing sid
// is moved to the owning loop (its socket is re-registered there); one for
// another node's sid is refused (400, as an unknown sid): the client's probe
// fails and it stays on polling, which forwarding serves.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "bus/poll_forwarder.h"
#include "net/engineio_query.h"
#include "net/sessions.h"
#include "protocol/socketio.h"

namespace parley::net {

// What a handshake request carried as `?token=` or `Authorization: Bearer`:
// "" for nothing, nullopt for two that differ. The Socket.IO CONNECT falls
// back to it when its auth payload has no token.
using HandshakeToken = std::optional<std::string>;

// An HTTP answer for a polling request: status, content type, body. Called
// once, on any thread: the callee posts to its own loop.
using EioRespond = std::function<void(int status, std::string content_type, std::string body)>;

// A polling request (GET, POST) or a polling handshake (which alone uses
// `token`). Loop thread of the HTTP connection.
void eio_http_request(LoopContext& loop, const std::string& remote, std::string_view method, const EioQuery& query,
                      HandshakeToken token, std::string body, EioRespond respond);

// The HTTP connection of a long poll for `sid` closed before its answer was
// written: the session closes (its answer, if one is on the way, is lost
// with the connection). A sid of another node or already gone is ignored.
// Any thread.
void eio_poll_abandoned(const std::string& sid);

// A polling request another node forwarded here (PollForwarder's serve
// hook): served by the session's loop as if it had come in here. Any thread.
void eio_serve_forwarded(PollRequest request, PollForwarder::AnswerFn answer);

// A WebSocket upgrade on the Engine.IO path: checks it (nullopt when it may
// proceed), then eio_websocket() takes the socket over.
std::optional<sio::EioError> eio_check_upgrade(const EioQuery& query);
void eio_websocket(LoopContext& loop, WsSocket socket, http::request<http::string_body> request,
                   std::string leftover, const EioQuery& query, HandshakeToken token);

// Once `loop` has stopped for good: drops the registry's hold on its polling
// sessions, so that none outlives the loop it belongs to. Any thread, after
// the loop's thread has returned from run().
void eio_forget_sessions(LoopContext& loop);

}  // namespace parley::net
