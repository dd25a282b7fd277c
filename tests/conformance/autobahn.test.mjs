// RFC 6455 conformance: the case families of the Autobahn WebSocket test
// suite (autobahn-testsuite, the reference that WebSocket servers report
// against), replayed by hand against the real `parley` binary on loopback,
// because the suite itself (Python 2) cannot be installed here. Case numbers
// are Autobahn's. Each case opens its own authenticated connection on /ws
// and asserts what the RFC requires: a JSON `ping` frame gets its reply (so
// a text message is seen whole and intact), a WebSocket ping its pong with the
// same payload, and a broken frame a close with the right code (1002
// protocol error, 1007 invalid UTF-8, 1009 too big).
//
// Refused on purpose (docs/security.md): binary messages get an `error`
// reply (Parley speaks JSON text), messages over --max-frame-bytes (64 KiB)
// close 1009 (Autobahn 9.x sends up to 16 MiB), and no extension is
// negotiated (12.x/13.x permessage-deflate: RSV1 is a protocol error).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, HOST } from '../e2e/node/harness.mjs';
import { RawWs, OP, frame, closePayload, parseJson } from './wire.mjs';

const MAX = 64 * 1024;  // the server's default --max-frame-bytes

let server;
let token;
let nextId = 0;

before(async () => {
  server = await startServer();
  ({ token } = await server.register());
});
after(async () => { await server?.stop(); });

async function open() {
  const ws = await RawWs.open(HOST, server.port, `/ws?token=${encodeURIComponent(token)}`);
  // Authenticated once connection_established has come.
  await ws.waitFor((e) => e.op === OP.TEXT && parseJson(e.payload)?.type === 'connection_established',
                   { what: 'connection_established' });
  return ws;
}

// A JSON `ping` frame of exactly `size` bytes (padded), and its request id.
function pingText(size = 0) {
  const id = `r${++nextId}`;
  const base = `{"type":"ping","request_id":"${id}","pad":""}`;
  const pad = Math.max(0, size - base.length);
  return { id, text: Buffer.from(`{"type":"ping","request_id":"${id}","pad":"${'x'.repeat(pad)}"}`) };
}

// Runs fn on a fresh connection and always tears it down.
async function withWs(fn) {
  const ws = await open();
  try { await fn(ws); } finally { ws.destroy(); }
}

async function expectClose(ws, code) {
  const c = await ws.closed();
  assert.equal(c.noCloseFrame, undefined, `expected a close frame with ${code}, the connection just ended: ${ws.describe()}`);
  assert.equal(c.code, code, `close code; events ${ws.describe()}`);
}

// A text message still works on this connection (nothing left half-parsed).
async function expectAlive(ws) {
  const p = pingText();
  ws.send(frame(OP.TEXT, p.text));
  await ws.reply(p.id);
}

describe('1 framing: text and binary messages', () => {
  for (const [name, size] of [['1.1.1', 0], ['1.1.2', 125], ['1.1.3', 126], ['1.1.4', 127], ['1.1.5', 128],
                              ['1.1.6', 65535], ['1.1.7', 65536]]) {
    test(`${name} text message of ${size} bytes`, () => withWs(async (ws) => {
      if (size === 0) {
        const from = ws.events.length;
        ws.send(frame(OP.TEXT, ''));
        const e = await ws.waitFor((ev) => ev.op === OP.TEXT && parseJson(ev.payload)?.type === 'error', { from });
        assert.equal(parseJson(e.payload).code, 'invalid_json');
        return expectAlive(ws);
      }
      const p = pingText(size);
      assert.equal(p.text.length, size);
      ws.send(frame(OP.TEXT, p.text));
      await ws.reply(p.id);
    }));
  }

  test('1.1.8 text message of 65536 bytes, written in 997-byte pieces', () => withWs(async (ws) => {
    const p = pingText(65536);
    await ws.sendChunked(frame(OP.TEXT, p.text), 997);
    await ws.reply(p.id);
  }));

  for (const [name, size] of [['1.2.1', 0], ['1.2.2', 125], ['1.2.6', 65535]]) {
    test(`${name} binary message of ${size} bytes: refused with an error, connection kept`, () => withWs(async (ws) => {
      const from = ws.events.length;
      ws.send(frame(OP.BINARY, Buffer.alloc(size, 0xfe)));
      const e = await ws.waitFor((ev) => ev.op === OP.TEXT && parseJson(ev.payload)?.type === 'error', { from });
      assert.equal(parseJson(e.payload).code, 'binary_not_supported');
      await expectAlive(ws);
    }));
  }
});

describe('2 pings and pongs', () => {
  const pongFor = (ws, payload, from) =>
    ws.waitFor((e) => e.op === OP.PONG && e.payload.equals(payload), { from, what: `pong ${payload.length} bytes` });

  for (const [name, payload] of [['2.1', Buffer.alloc(0)], ['2.2', Buffer.from('Hello, world!')],
                                 ['2.3', Buffer.from([0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff])],
                                 ['2.4', Buffer.alloc(125, 0xfe)]]) {
    test(`${name} ping with ${payload.length} bytes: pong echoes the payload`, () => withWs(async (ws) => {
      const from = ws.events.length;
      ws.send(frame(OP.PING, payload));
      await pongFor(ws, payload, from);
    }));
  }

  test('2.5 ping with 126 bytes: close 1002', () => withWs(async (ws) => {
    ws.send(frame(OP.PING, Buffer.alloc(126, 0xfe)));
    await expectClose(ws, 1002);
  }));

  test('2.6 ping with 125 bytes written one byte at a time: pong', () => withWs(async (ws) => {
    const payload = Buffer.from('x'.repeat(125));
    const from = ws.events.length;
    await ws.sendChunked(frame(OP.PING, payload), 1);
    await pongFor(ws, payload, from);
  }));

  test('2.7 / 2.8 unsolicited pongs are ignored', () => withWs(async (ws) => {
    const from = ws.events.length;
    ws.send(frame(OP.PONG, ''), frame(OP.PONG, 'unsolicited'));
    await expectAlive(ws);
    assert.ok(!ws.events.slice(from).some((e) => e.op === OP.PONG || e.op === OP.CLOSE));
  }));

  test('2.9 unsolicited pong, then a ping: one pong for the ping', () => withWs(async (ws) => {
    const from = ws.events.length;
    ws.send(frame(OP.PONG, 'unsolicited'), frame(OP.PING, 'solicited'));
    await pongFor(ws, Buffer.from('solicited'), from);
    await expectAlive(ws);
    assert.equal(ws.events.slice(from).filter((e) => e.op === OP.PONG).length, 1);
  }));

  test('2.10 / 2.11 ten pings, at once and one by one: ten pongs in order', () => withWs(async (ws) => {
    const from = ws.events.length;
    const pings = Array.from({ length: 10 }, (_, i) => frame(OP.PING, `payload-${i}`));
    ws.send(...pings.slice(0, 5));
    for (const p of pings.slice(5)) await ws.sendChunked(p, 3);
    await pongFor(ws, Buffer.from('payload-9'), from);
    const pongs = ws.events.slice(from).filter((e) => e.op === OP.PONG).map((e) => e.payload.toString());
    assert.deepEqual(pongs, Array.from({ length: 10 }, (_, i) => `payload-${i}`));
  }));
});

describe('3 reserved bits (no extension negotiated)', () => {
  const cases = [['3.1', 1, OP.TEXT], ['3.2', 2, OP.TEXT], ['3.3', 3, OP.TEXT], ['3.4', 4, OP.TEXT],
                 ['3.5', 5, OP.BINARY], ['3.6', 6, OP.PING], ['3.7', 7, OP.CLOSE]];
  for (const [name, rsv, op] of cases) {
    test(`${name} RSV=${rsv} on opcode ${op}: close 1002`, () => withWs(async (ws) => {
      const p = pingText();
      // 3.2 and 3.3 send a good message first: it must still be answered.
      if (name === '3.2' || name === '3.3') ws.send(frame(OP.TEXT, p.text));
      const payload = op === OP.CLOSE ? closePayload(1000) : op === OP.TEXT ? pingText().text : Buffer.from('x');
      ws.send(frame(op, payload, { rsv }));
      if (name === '3.2' || name === '3.3') await ws.reply(p.id);
      await expectClose(ws, 1002);
    }));
  }
});

describe('4 opcodes', () => {
  for (const op of [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]) {
    const name = op < 8 ? `4.1.${op - 2}` : `4.2.${op - 10}`;
    test(`${name} reserved opcode ${op}: close 1002`, () => withWs(async (ws) => {
      ws.send(frame(op, op < 8 ? 'reserved' : ''));
      await expectClose(ws, 1002);
    }));
  }

  test('4.1.3 a good message, then a reserved opcode, then a ping: the message answered, close 1002, no pong',
       () => withWs(async (ws) => {
    const p = pingText();
    ws.send(frame(OP.TEXT, p.text), frame(5, 'x'), frame(OP.PING, 'late'));
    await ws.reply(p.id);
    await expectClose(ws, 1002);
    assert.ok(!ws.events.some((e) => e.op === OP.PONG));
  }));
});

describe('5 fragmentation', () => {
  test('5.1 a fragmented ping: close 1002', () => withWs(async (ws) => {
    ws.send(frame(OP.PING, 'frag-', { fin: false }), frame(OP.CONT, 'ment'));
    await expectClose(ws, 1002);
  }));

  test('5.2 a fragmented pong: close 1002', () => withWs(async (ws) => {
    ws.send(frame(OP.PONG, 'frag-', { fin: false }), frame(OP.CONT, 'ment'));
    await expectClose(ws, 1002);
  }));

  for (const [name, pieces] of [['5.3', 2], ['5.4', 2], ['5.5', 11]]) {
    test(`${name} a text message in ${pieces} fragments${name === '5.5' ? ', each written apart' : ''}: reassembled`,
         () => withWs(async (ws) => {
      const p = pingText(200);
      const step = Math.ceil(p.text.length / pieces);
      const frames = [];
      for (let i = 0; i < pieces; i++) {
        frames.push(frame(i === 0 ? OP.TEXT : OP.CONT, p.text.subarray(i * step, (i + 1) * step), { fin: i === pieces - 1 }));
      }
      if (name === '5.5') { for (const f of frames) await ws.sendChunked(f, f.length); }
      else ws.send(...frames);
      await ws.reply(p.id);
    }));
  }

  for (const [name, control] of [['5.6', OP.PING], ['5.7', OP.PING], ['5.8', OP.PING]]) {
    test(`${name} a ping between the fragments of a text message: pong first, then the message`,
         () => withWs(async (ws) => {
      const p = pingText();
      const half = Math.floor(p.text.length / 2);
      const from = ws.events.length;
      const frames = [frame(OP.TEXT, p.text.subarray(0, half), { fin: false }), frame(control, 'between'),
                      frame(OP.CONT, p.text.subarray(half))];
      if (name === '5.8') { for (const f of frames) await ws.sendChunked(f, 1); }
      else if (name === '5.7') { for (const f of frames) await ws.sendChunked(f, f.length); }
      else ws.send(...frames);
      const reply = await ws.reply(p.id, { from });
      const pong = await ws.waitFor((e) => e.op === OP.PONG && e.payload.toString() === 'between', { from });
      assert.ok(ws.events.indexOf(pong) < ws.events.indexOf(reply), 'the pong answers before the message completes');
    }));
  }

  for (const [name, frames] of [
    ['5.9', () => [frame(OP.CONT, 'fragment1', { fin: false }), frame(OP.TEXT, 'fragment2', { fin: false }), frame(OP.CONT, 'fragment3')]],
    ['5.10', () => [frame(OP.CONT, 'fragment1', { fin: false }), frame(OP.TEXT, 'fragment2', { fin: false }), frame(OP.CONT, 'fragment3')]],
    ['5.12', () => [frame(OP.CONT, 'non-continuation payload', { fin: false }), frame(OP.TEXT, 'Hello, world!')]],
    ['5.15', () => [frame(OP.TEXT, 'fragment1', { fin: false }), frame(OP.CONT, 'fragment2'),
                    frame(OP.CONT, 'fragment3', { fin: false }), frame(OP.TEXT, 'fragment4')]],
    ['5.16', () => [frame(OP.CONT, 'fragment1', { fin: false }), frame(OP.TEXT, 'fragment2', { fin: false }), frame(OP.CONT, 'fragment3')]],
    ['5.18', () => [frame(OP.TEXT, 'fragment1', { fin: false }), frame(OP.TEXT, 'fragment2')]],
    ['5.18b', () => [frame(OP.TEXT, 'fragment1', { fin: false }), frame(OP.BINARY, 'fragment2')]],
  ]) {
    test(`${name} a continuation with no message to continue, or a new message inside one: close 1002`,
         () => withWs(async (ws) => {
      ws.send(...frames());
      await expectClose(ws, 1002);
    }));
  }

  test('5.19 / 5.20 a text message in five fragments with two pings between, some written late: reassembled',
       () => withWs(async (ws) => {
    const p = pingText(100);
    const parts = [0, 20, 40, 60, 80, 100].map((o, i, a) => p.text.subarray(o, a[i + 1]));
    const from = ws.events.length;
    ws.send(frame(OP.TEXT, parts[0], { fin: false }), frame(OP.CONT, parts[1], { fin: false }), frame(OP.PING, 'pongme 1!'));
    await ws.waitFor((e) => e.op === OP.PONG && e.payload.toString() === 'pongme 1!', { from });
    ws.send(frame(OP.CONT, parts[2], { fin: false }), frame(OP.CONT, parts[3], { fin: false }), frame(OP.PING, 'pongme 2!'));
    await ws.waitFor((e) => e.op === OP.PONG && e.payload.toString() === 'pongme 2!', { from });
    ws.send(frame(OP.CONT, parts[4]));
    await ws.reply(p.id, { from });
  }));

  test('an empty final continuation completes the message', () => withWs(async (ws) => {
    const p = pingText();
    ws.send(frame(OP.TEXT, p.text, { fin: false }), frame(OP.CONT, ''));
    await ws.reply(p.id);
  }));
});

describe('6 UTF-8 in text messages', () => {
  const hello = Buffer.from('Hello-µ@ßöäüàá-UTF-8!!');  // 6.2.x's text
  // A JSON ping frame whose pad carries `bytes` (raw, maybe invalid UTF-8).
  const pingWith = (bytes) => {
    const id = `u${++nextId}`;
    return { id, text: Buffer.concat([Buffer.from(`{"type":"ping","request_id":"${id}","pad":"`), bytes, Buffer.from('"}')]) };
  };

  test('6.1.1 an empty text message: no UTF-8 error (an invalid_json reply, connection kept)', () => withWs(async (ws) => {
    ws.send(frame(OP.TEXT, ''));
    await ws.waitFor((e) => e.op === OP.TEXT && parseJson(e.payload)?.code === 'invalid_json');
    await expectAlive(ws);
  }));

  test('6.2.1 - 6.2.4 valid UTF-8 split inside code points across fragments: reassembled', () => withWs(async (ws) => {
    const p = pingWith(Buffer.concat([hello, Buffer.from('κόσμε 𝄞')]));
    const frames = [];
    // Every fragment one byte: every multi-byte character is split.
    for (let i = 0; i < p.text.length; i++) frames.push(frame(i === 0 ? OP.TEXT : OP.CONT, p.text.subarray(i, i + 1), { fin: i === p.text.length - 1 }));
    ws.send(...frames);
    await ws.reply(p.id);
  }));

  const invalid = [
    ['6.3.1', Buffer.from('cebae1bdb9cf83cebcceb5eda080656469746564', 'hex')],  // κόσμε then a surrogate
    ['6.6.x', Buffer.from('cebae1bdb9cf83cebcce', 'hex')],                     // truncated at the end
    ['6.8.1', Buffer.from('f888808080', 'hex')],                               // 5-byte sequence
    ['6.9.1', Buffer.from('c0af', 'hex')],                                     // overlong '/'
    ['6.9.3', Buffer.from('e080af', 'hex')],                                   // overlong, 3 bytes
    ['6.10.1', Buffer.from('f4908080', 'hex')],                                // over U+10FFFF
    ['6.11.1', Buffer.from('eda080', 'hex')],                                  // lone high surrogate
    ['6.12.1', Buffer.from('80', 'hex')],                                      // lone continuation byte
    ['6.14.1', Buffer.from('fe', 'hex')],                                      // impossible byte
  ];
  for (const [name, bytes] of invalid) {
    test(`${name} invalid UTF-8 (${bytes.toString('hex')}) in one frame: close 1007`, () => withWs(async (ws) => {
      ws.send(frame(OP.TEXT, pingWith(bytes).text));
      await expectClose(ws, 1007);
    }));
  }

  test('6.3.2 invalid UTF-8 in a message fragmented one byte per frame: close 1007', () => withWs(async (ws) => {
    const p = pingWith(invalid[0][1]);
    const frames = [];
    for (let i = 0; i < p.text.length; i++) frames.push(frame(i === 0 ? OP.TEXT : OP.CONT, p.text.subarray(i, i + 1), { fin: i === p.text.length - 1 }));
    ws.send(...frames);
    await expectClose(ws, 1007);
  }));

  test('6.4.x a valid first fragment, then an invalid one: close 1007', () => withWs(async (ws) => {
    const p = pingWith(Buffer.concat([Buffer.from('cebae1bdb9cf83cebcceb5', 'hex'), Buffer.from('f4908080', 'hex')]));
    const cut = p.text.length - 8;
    ws.send(frame(OP.TEXT, p.text.subarray(0, cut), { fin: false }));
    await ws.sendChunked(frame(OP.CONT, p.text.subarray(cut)), 1);
    await expectClose(ws, 1007);
  }));

  for (const [name, cp] of [['6.5.1', 'κόσμε'], ['6.7.1', '\u0000'.replace('\u0000', '\u0001')], ['6.7.4', '\ud7ff'],
                            ['6.7.5', '\ue000'], ['6.7.6', '\ufffd'], ['6.7.7', '\u{10ffff}'], ['6.7.8', '\u{10000}']]) {
    test(`${name} valid text (U+${cp.codePointAt(0).toString(16)}) is accepted`, () => withWs(async (ws) => {
      // JSON must escape U+0001; the others go raw.
      const bytes = cp === '\u0001' ? Buffer.from('\\u0001') : Buffer.from(cp);
      const p = pingWith(bytes);
      ws.send(frame(OP.TEXT, p.text));
      await ws.reply(p.id);
    }));
  }
});

describe('7 close handshake', () => {
  test('7.1.1 a message, then a close: the message answered, close echoed with 1000', () => withWs(async (ws) => {
    const p = pingText();
    ws.send(frame(OP.TEXT, p.text), frame(OP.CLOSE, closePayload(1000)));
    await ws.reply(p.id);
    await expectClose(ws, 1000);
  }));

  test('7.1.2 / 7.1.3 / 7.1.5 after a close, a second close, a ping and a message are ignored', () => withWs(async (ws) => {
    const from = ws.events.length;
    const p = pingText();
    ws.send(frame(OP.CLOSE, closePayload(1000)), frame(OP.CLOSE, closePayload(1000)), frame(OP.PING, 'late'),
            frame(OP.TEXT, p.text));
    await expectClose(ws, 1000);
    const after = ws.events.slice(from);
    assert.equal(after.filter((e) => e.op === OP.CLOSE).length, 1);
    assert.ok(!after.some((e) => e.op === OP.PONG || (e.op === OP.TEXT && parseJson(e.payload)?.request_id === p.id)));
  }));

  test('7.1.6 a large message then a close: the server still closes cleanly', () => withWs(async (ws) => {
    const p = pingText(60000);
    ws.send(frame(OP.TEXT, p.text), frame(OP.CLOSE, closePayload(1000)));
    await expectClose(ws, 1000);
  }));

  test('7.3.1 a close with no payload: answered with a close (1000 or none)', () => withWs(async (ws) => {
    ws.send(frame(OP.CLOSE, ''));
    const c = await ws.closed();
    assert.ok(c.code === 1000 || c.code === 1005, `close code ${c.code}`);
  }));

  test('7.3.2 a close with a 1-byte payload: close 1002', () => withWs(async (ws) => {
    ws.send(frame(OP.CLOSE, Buffer.from([0x03])));
    await expectClose(ws, 1002);
  }));

  for (const [name, reason] of [['7.3.3', ''], ['7.3.4', 'Hello World!'], ['7.3.5', 'x'.repeat(123)]]) {
    test(`${name} close 1000 with a ${reason.length}-byte reason: echoed with 1000`, () => withWs(async (ws) => {
      ws.send(frame(OP.CLOSE, closePayload(1000, reason)));
      await expectClose(ws, 1000);
    }));
  }

  test('7.3.6 a close with a 124-byte reason (payload over 125): close 1002', () => withWs(async (ws) => {
    ws.send(frame(OP.CLOSE, closePayload(1000, 'x'.repeat(124))));
    await expectClose(ws, 1002);
  }));

  test('7.5.1 a close reason that is not UTF-8: close 1002', () => withWs(async (ws) => {
    ws.send(frame(OP.CLOSE, closePayload(1000, Buffer.from('cebae1bdb9cf83cebcceb5eda080656469746564', 'hex'))));
    await expectClose(ws, 1002);
  }));

  for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]) {
    test(`7.7.x close with valid code ${code}: echoed`, () => withWs(async (ws) => {
      ws.send(frame(OP.CLOSE, closePayload(code)));
      await expectClose(ws, code);
    }));
  }

  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]) {
    test(`7.9.x close with invalid code ${code}: close 1002`, () => withWs(async (ws) => {
      ws.send(frame(OP.CLOSE, closePayload(code)));
      await expectClose(ws, 1002);
    }));
  }
});

describe('masking and limits', () => {
  test('an unmasked client frame: close 1002', () => withWs(async (ws) => {
    ws.send(frame(OP.TEXT, pingText().text, { masked: false }));
    await expectClose(ws, 1002);
  }));

  test('an unmasked ping: close 1002, no pong', () => withWs(async (ws) => {
    ws.send(frame(OP.PING, 'x', { masked: false }));
    await expectClose(ws, 1002);
    assert.ok(!ws.events.some((e) => e.op === OP.PONG));
  }));

  test('9.1.x a text message one byte over --max-frame-bytes: close 1009', () => withWs(async (ws) => {
    ws.send(frame(OP.TEXT, pingText(MAX + 1).text));
    await expectClose(ws, 1009);
  }));

  test('9.1.x a header announcing 2^62 bytes: close 1009 at once, before any payload', () => withWs(async (ws) => {
    ws.send(frame(OP.BINARY, Buffer.alloc(0), { len: 2 ** 52 }).subarray(0, 14));
    await expectClose(ws, 1009);
  }));

  test('9.2.x a fragmented message whose fragments add up to over the limit: close 1009', () => withWs(async (ws) => {
    const piece = Buffer.alloc(40000, 0x61);
    ws.send(frame(OP.TEXT, piece, { fin: false }), frame(OP.CONT, piece, { fin: false }));
    await expectClose(ws, 1009);
  }));

  test('a 64-bit length with the top bit set: close 1002', () => withWs(async (ws) => {
    const f = Buffer.from([0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]);
    ws.send(f);
    await expectClose(ws, 1002);
  }));

  test('a ping in the middle of a large fragmented message, split across writes, is answered', () => withWs(async (ws) => {
    // The fragments so far (65450 bytes) plus the ping would pass the limit if
    // a control frame were counted as part of the message.
    const p = pingText(65500);
    const from = ws.events.length;
    ws.send(frame(OP.TEXT, p.text.subarray(0, 65450), { fin: false }));
    await ws.sendChunked(frame(OP.PING, Buffer.alloc(125, 0x70)), 7);
    ws.send(frame(OP.CONT, p.text.subarray(65450)));
    await ws.waitFor((e) => e.op === OP.PONG, { from });
    await ws.reply(p.id, { from });
  }));
});
