// Socket.IO peer: the Socket.IO subset of Parley (CONTRACT.md section 7) on
// the official `socket.io` server (Engine.IO v4 + Socket.IO v5, polling and
// WebSocket, default settings: pingInterval 25 s, pingTimeout 20 s,
// maxHttpBufferSize 1 MB, no compression).
// - CONNECT on "/" with the auth payload {token} (HS256, as the other peers);
//   a missing or bad token -> CONNECT_ERROR {message} (the client's connect_error).
// - on connect: `connection_success` {userId}; the socket joins one room per
//   thread it is in (the seed rule gives one).
// - `send_message` {thread_id, content | text, client_msg_id} with an ack
//   callback -> ack {success: true, message} and `new_message` (message) to
//   the room's other sockets (socket.io encodes a broadcast packet once for
//   all of them); without a callback, `message_sent` (message) to the sender.
//   A refused message -> ack {success: false, error: {code, message}}, or an
//   `error` event {code, message} without a callback.
// Not here (Parley has them): test_message, the server `ping` event, other
// events of the native protocol. In memory, like the other peers.
// Env: PORT (0 = any), HOST (127.0.0.1), JWT_SECRET, GROUP_SIZE.
// Prints `listening port=N` on stdout once ready.
import http from 'node:http';
import { Server } from 'socket.io';
import { Chat, benchUser, config, verifyToken } from '../lib/chat.js';

const cfg = config();
const chat = new Chat();

const server = http.createServer((req, res) => {
  // socket.io answers /socket.io/ itself before this handler runs.
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ status: 'ok', server: 'socketio-peer' }));
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found');
});

const io = new Server(server, { serveClient: false });

io.use((socket, next) => {
  const auth = socket.handshake.auth;
  const claims = verifyToken(auth && auth.token, cfg.secret);
  const user = claims && benchUser(claims.sub, cfg.groupSize);
  if (!user) {
    next(new Error('invalid_token: missing, invalid or expired token'));
    return;
  }
  socket.data.user = user;
  next();
});

io.on('connection', (socket) => {
  const user = socket.data.user;
  socket.join(user.threadId);
  socket.emit('connection_success', { userId: user.id });

  socket.on('send_message', (payload, ack) => {
    const made = chat.create(user, payload);
    const reply = typeof ack === 'function' ? ack : null;
    if (made.error) {
      if (reply) reply({ success: false, error: made.error });
      else socket.emit('error', made.error);
      return;
    }
    socket.to(user.threadId).emit('new_message', made.message);
    if (reply) reply({ success: true, message: made.message });
    else socket.emit('message_sent', made.message);
  });
});

server.listen(cfg.port, cfg.host, () => {
  console.log(`listening port=${server.address().port}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    io.close();
    process.exit(0);
  });
}
