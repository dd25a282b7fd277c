// A client that sends and never reads must not make the server queue
// replies without bound: what the server owes it is bounded by
// --max-outbound-bytes whatever produced it (WebSocket pongs, Engine.IO
// pongs), and past the bound the client is dropped as a slow consumer.
// Each flood is bounded in bytes and time; without the bound the server's
// memory grows by a few times what is sent.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, rawUpgrade, clientFrame, sleep } from './harness.mjs';

// Writes `frame` again and again, never reading, until the server drops the
// connection or `maxBytes` are written or `timeoutMs` pass. Resolves
// {dropped, sent}.
async function floodUntilDropped(socket, frame, { maxBytes = 48 * 1024 * 1024, timeoutMs = 30000 } = {}) {
  socket.pause();
  let dropped = false;
  socket.on('close', () => { dropped = true; });
  socket.on('error', () => { /* the reset of a dropped connection */ });
  const chunk = Buffer.concat(Array(Math.ceil(64 * 1024 / frame.length)).fill(frame));
  const started = Date.now();
  let sent = 0;
  while (!dropped && sent < maxBytes && Date.now() - started < timeoutMs) {
    if (!socket.write(chunk)) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 200);
        socket.once('drain', () => { clearTimeout(timer); resolve(); });
      });
    }
    sent += chunk.length;
  }
  for (let i = 0; i < 40 && !dropped; i++) await sleep(50);  // the close may trail the last write
  socket.destroy();
  return { dropped, sent };
}

describe('floods of tiny replies are bounded like any other output', () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--max-outbound-bytes', String(1024 * 1024)] });
  });
  after(async () => { await server?.stop(); });

  it('a client that sends pings and never reads the pongs is dropped past --max-outbound-bytes', { timeout: 60000 }, async () => {
    const user = await server.register();
    const before = await server.metric('parley_slow_consumer_disconnects_total');
    const { socket } = await rawUpgrade(server.port, `/ws?token=${user.token}`);
    const { dropped, sent } = await floodUntilDropped(socket, clientFrame(0x9, Buffer.alloc(125, 0x61)));
    assert.ok(dropped, `the server kept the connection after ${(sent / 1048576).toFixed(0)} MiB of unread pongs`);
    assert.equal(await server.metric('parley_slow_consumer_disconnects_total'), before + 1);
    assert.equal((await server.http('GET', '/health')).status, 200);
  });
});
