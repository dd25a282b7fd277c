// RFC 6455 close handshake: the server echoes a well-formed close and answers
// a malformed one (a code no endpoint may send, a 1-byte payload, a reason
// that is not UTF-8) with 1002. Crafted frames over a raw socket, since
// well-behaved clients (ws) refuse to send them.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, rawUpgrade, clientFrame } from './harness.mjs';

// Reads server frames until a close; resolves its code (null: no code) and
// whether the server then closed the TCP connection.
function readClose(socket, initial) {
  return new Promise((resolve, reject) => {
    let buf = initial;
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('no close frame within 5 s')); }, 5000);
    const scan = () => {
      while (buf.length >= 2) {
        const op = buf[0] & 0x0f;
        let len = buf[1] & 0x7f;
        let pos = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); pos = 4; }
        if (buf.length < pos + len) return;
        const payload = buf.subarray(pos, pos + len);
        buf = buf.subarray(pos + len);
        if (op === 0x8) {
          clearTimeout(timer);
          socket.off('data', onData);
          const code = payload.length >= 2 ? payload.readUInt16BE(0) : null;
          const ended = new Promise((r) => { socket.once('close', () => r(true)); setTimeout(() => r(false), 5000); });
          socket.resume();
          return resolve({ code, reason: payload.subarray(2).toString(), ended });
        }
      }
    };
    const onData = (chunk) => { buf = Buffer.concat([buf, chunk]); scan(); };
    socket.on('data', onData);
    scan();
  });
}

const closePayload = (code, reason = Buffer.alloc(0)) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code);
  return Buffer.concat([b, Buffer.from(reason)]);
};

describe('WebSocket close handshake (RFC 6455 7.4)', () => {
  let server, user;
  before(async () => {
    server = await startServer();
    user = await server.register();
  });
  after(async () => { await server?.stop(); });

  async function closeWith(payload) {
    const { socket, rest } = await rawUpgrade(server.port, `/ws?token=${user.token}`);
    socket.write(clientFrame(0x8, payload));
    const answer = await readClose(socket, rest);
    socket.end();
    assert.equal(await answer.ended, true, 'the server ends the connection after the close handshake');
    socket.destroy();
    return answer;
  }

  for (const code of [1000, 1001, 1003, 1007, 1011, 3000, 4000, 4999]) {
    it(`a valid code ${code} is echoed`, async () => {
      assert.equal((await closeWith(closePayload(code, 'bye'))).code, code);
    });
  }

  it('an empty close payload is answered with 1000', async () => {
    assert.equal((await closeWith(Buffer.alloc(0))).code, 1000);
  });

  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]) {
    it(`a reserved or invalid code ${code} gets 1002`, async () => {
      assert.equal((await closeWith(closePayload(code))).code, 1002);
    });
  }

  it('a 1-byte close payload gets 1002', async () => {
    assert.equal((await closeWith(Buffer.from([0x03]))).code, 1002);
  });

  it('a close reason that is not UTF-8 gets 1002', async () => {
    assert.equal((await closeWith(closePayload(1000, Buffer.from([0xc3, 0x28, 0xff])))).code, 1002);
  });

  it('a close reason in valid UTF-8 is fine', async () => {
    assert.equal((await closeWith(closePayload(1000, 'été ✓'))).code, 1000);
  });
});
