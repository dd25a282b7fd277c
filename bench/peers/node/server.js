// Node peer: Parley's WebSocket subset with node:http and the `ws` package.
// Each thread keeps a Set of its sockets; a new message is encoded once (one
// Buffer) and written to every other socket of the thread.
// Env: PORT (0 = any), HOST (127.0.0.1), JWT_SECRET, GROUP_SIZE.
// Prints `listening port=N` on stdout once ready.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { WebSocket, WebSocketServer } from 'ws';
import {
  Chat,
  MAX_FRAME_BYTES,
  MAX_OUTBOUND_BYTES,
  WS_PATHS,
  benchUser,
  config,
  errorFrame,
  establishedFrame,
  verifyToken,
} from '../lib/chat.js';

const cfg = config();
const chat = new Chat();
const threads = new Map(); // thread id -> Set<WebSocket>

const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ status: 'ok', server: 'node-peer' }));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('Parley chat server running');
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES });

function refuse(socket) {
  const body = JSON.stringify({ status: 'error', code: 'invalid_token', message: 'missing, invalid or expired token' });
  socket.end(
    `HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  if (!WS_PATHS.has(url.pathname)) {
    socket.destroy();
    return;
  }
  const claims = verifyToken(url.searchParams.get('token'), cfg.secret);
  const user = claims && benchUser(claims.sub, cfg.groupSize);
  if (!user) {
    refuse(socket);
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, user));
});

function onConnection(ws, user) {
  let members = threads.get(user.threadId);
  if (!members) {
    members = new Set();
    threads.set(user.threadId, members);
  }
  members.add(ws);
  ws.send(establishedFrame(user, randomUUID()));

  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      ws.send(errorFrame('binary_not_supported', 'binary frames are not supported; send JSON text'));
      return;
    }
    const out = chat.handle(user, data.toString('utf8'));
    if (out.broadcast) {
      const frame = Buffer.from(out.broadcast); // encoded once for every recipient
      for (const peer of members) {
        if (peer === ws || peer.readyState !== WebSocket.OPEN) continue;
        if (peer.bufferedAmount > MAX_OUTBOUND_BYTES) {
          peer.terminate(); // a stalled reader must not hold everyone's memory
          continue;
        }
        peer.send(frame, { binary: false });
      }
    }
    ws.send(out.reply);
  });
  ws.on('close', () => members.delete(ws));
  ws.on('error', () => members.delete(ws));
}

server.listen(cfg.port, cfg.host, () => {
  console.log(`listening port=${server.address().port}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    for (const ws of wss.clients) ws.terminate();
    process.exit(0);
  });
}
