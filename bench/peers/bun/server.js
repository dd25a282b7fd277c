// Bun peer: Parley's WebSocket subset with Bun.serve's built-in WebSocket
// server and its pub/sub (one topic per thread; ws.publish skips the sender).
// Env: PORT (0 = any), HOST (127.0.0.1), JWT_SECRET, GROUP_SIZE.
// Prints `listening port=N` on stdout once ready.
import { randomUUID } from 'node:crypto';
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

function unauthorized() {
  return Response.json(
    { status: 'error', code: 'invalid_token', message: 'missing, invalid or expired token' },
    { status: 401 },
  );
}

const server = Bun.serve({
  hostname: cfg.host,
  port: cfg.port,
  fetch(req, srv) {
    const url = new URL(req.url);
    if (WS_PATHS.has(url.pathname) && req.headers.get('upgrade')?.toLowerCase() === 'websocket') {
      const claims = verifyToken(url.searchParams.get('token'), cfg.secret);
      const user = claims && benchUser(claims.sub, cfg.groupSize);
      if (!user) return unauthorized();
      if (srv.upgrade(req, { data: { user, sessionId: randomUUID() } })) return undefined;
      return new Response('WebSocket upgrade failed', { status: 400 });
    }
    if (url.pathname === '/health') return Response.json({ status: 'ok', server: 'bun-peer' });
    return new Response('Parley chat server running', { headers: { 'content-type': 'text/plain' } });
  },
  websocket: {
    perMessageDeflate: false,
    maxPayloadLength: MAX_FRAME_BYTES,
    backpressureLimit: MAX_OUTBOUND_BYTES,
    closeOnBackpressureLimit: true,
    idleTimeout: 120,
    open(ws) {
      ws.subscribe(ws.data.user.threadId);
      ws.send(establishedFrame(ws.data.user, ws.data.sessionId));
    },
    message(ws, message) {
      if (typeof message !== 'string') {
        ws.send(errorFrame('binary_not_supported', 'binary frames are not supported; send JSON text'));
        return;
      }
      const out = chat.handle(ws.data.user, message);
      if (out.broadcast) ws.publish(out.threadId, out.broadcast);
      ws.send(out.reply);
    },
  },
});

console.log(`listening port=${server.port}`);

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.stop(true);
    process.exit(0);
  });
}
