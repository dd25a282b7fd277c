// A client that sends and never reads must not make the server queue
// replies without bound: what the server owes it is bounded by
// --max-outbound-bytes whatever produced it (WebSocket pongs, Engine.IO
// pongs), and past the bound the client is dropped as a slow consumer.
// Tiny replies count too: each queued frame costs the server memory beyond
// its payload. Each flood is bounded in bytes and time; without the bound
// the server's memory grows by several times what is sent.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import fs from 'node:fs';

import { startServer, rawUpgrade, clientFrame, sleep } from './harness.mjs';

// The server's peak resident memory so far, in MiB.
const peakMiB = (server) => Number(fs.readFileSync(`/proc/${server.child.pid}/status`, 'utf8').match(/VmHWM:\s+(\d+)/)[1]) / 1024;

// Writes `frame` again and again, never reading, until the server drops the
// connection or `maxBytes` are written or `timeoutMs` pass. Resolves
// {dropped, sent}.
async function floodUntilDropped(socket, frame, { maxBytes = 48 * 1024 * 1024, timeoutMs = 30000, settleMs = 2000 } = {}) {
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
  // The close may trail the last write: read from here on, so that a close
  // made after the flood (not a reset met by a write) is seen too.
  socket.resume();
  for (let i = 0; i < settleMs / 50 && !dropped; i++) await sleep(50);
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

  // The flood runs on a server of its own, so that its peak memory is its
  // own; the user it may need is registered first (hashing a password takes
  // 64 MiB for a moment).
  async function peakGrowth(flood) {
    const own = await startServer({ args: ['--max-outbound-bytes', String(1024 * 1024)] });
    try {
      const user = await own.register();
      const start = peakMiB(own);
      const result = await flood(own, user);
      return { ...result, growth: peakMiB(own) - start };
    } finally {
      await own.stop();
    }
  }

  it('empty pings, never read: dropped, and the server stays small', { timeout: 60000 }, async () => {
    const { dropped, sent, growth } = await peakGrowth(async (own, user) => {
      const { socket } = await rawUpgrade(own.port, `/ws?token=${user.token}`);
      return floodUntilDropped(socket, clientFrame(0x9, Buffer.alloc(0)));
    });
    assert.ok(dropped, `the server kept the connection after ${(sent / 1048576).toFixed(0)} MiB of empty pings`);
    assert.ok(growth < 40, `the server grew by ${growth.toFixed(0)} MiB`);
  });

  // Engine.IO v4: only the server pings, so the first closes the session;
  // the rest is read and dropped while the close lingers (at most about 3 s).
  it('Engine.IO pings over a WebSocket, never read: dropped, and the server stays small', { timeout: 60000 }, async () => {
    const { dropped, sent, growth } = await peakGrowth(async (own) => {
      const { socket } = await rawUpgrade(own.port, '/socket.io/?EIO=4&transport=websocket');
      return floodUntilDropped(socket, clientFrame(0x1, Buffer.from('2')), { settleMs: 5000 });
    });
    assert.ok(dropped, `the server kept the connection after ${(sent / 1048576).toFixed(0)} MiB of Engine.IO pings`);
    assert.ok(growth < 40, `the server grew by ${growth.toFixed(0)} MiB`);
  });

  // Once answered with pongs that piled up to the outbound bound; now the
  // first ping closes the session (only the server pings in v4).
  it('Engine.IO polling: POSTs of pings whose pongs are never polled end the session', async () => {
    const open = await server.http('GET', '/socket.io/?EIO=4&transport=polling');
    assert.equal(open.status, 200);
    const { sid } = JSON.parse(open.text.slice(1));
    const url = `/socket.io/?EIO=4&transport=polling&sid=${sid}`;
    // 400,000 pings in a body under maxPayload: 400,000 pongs owed, each a
    // queued packet. Twice: 800,000 one-byte payloads fit in 1 MiB; the
    // packets holding them do not.
    const body = Array(400000).fill('2').join('\x1e');
    const headers = { 'Content-Type': 'text/plain;charset=UTF-8' };
    const first = await server.http('POST', url, { body, headers });
    assert.equal(first.status, 200);
    const second = await server.http('POST', url, { body, headers });
    assert.equal(second.status, 400, `the session still took pings: ${second.status} ${second.text}`);
    assert.equal(JSON.parse(second.text).code, 1);  // Session ID unknown: it was closed
  });
});
