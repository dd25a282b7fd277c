// Large frames to a reader that pauses: the server's gathered writes stop
// part-way through a frame when the socket buffer fills, and must resume at
// the exact byte. The reader then gets every message whole, in order, with
// its multi-byte content intact.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, sleep } from './harness.mjs';

const TOTAL = 1500;  // ~13 MB: more than loopback's socket buffers hold for a reader that does not read
// ~3000 code points, 1- to 4-byte UTF-8 mixed, so frames are 6-9 KB and use
// the 16-bit length header; each names its index so a splice would show.
const contentFor = (i) => `#${i}# ` + 'aé€😀'.repeat(750).slice(0, 2990) + ` #${i}#`;

describe('partial writes', { timeout: 60000 }, () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--rate-per-second', '100000', '--rate-burst', '100000', '--max-outbound-bytes', String(32 << 20)] });
  });
  after(async () => { await server?.stop(); });

  it('a paused reader gets every large frame whole and in order once it reads again', async () => {
    const [a, b] = await server.registerMany(2);
    const group = await server.createGroup(a, [b], 'partial writes');
    const aWs = await server.connect(a);
    const bWs = await server.connect(b);
    bWs.ws._socket.pause();  // b's kernel buffers fill, then the server's writes to b come up short

    const waitsBefore = await server.metric('parley_socket_write_waits_total');
    const seqs = [];
    for (let i = 0; i < TOTAL; i += 20) {
      const batch = [];
      for (let k = i; k < Math.min(TOTAL, i + 20); k++) {
        batch.push(aWs.request({ type: 'send_message', thread_id: group.id, content: contentFor(k), client_msg_id: `pw-${k}` }, 15000));
      }
      for (const reply of await Promise.all(batch)) {
        assert.equal(reply.type, 'message_sent', JSON.stringify(reply).slice(0, 200));
        seqs.push(reply.data.seq);
      }
    }
    await sleep(300);
    assert.equal(bWs.all((f) => f.type === 'new_message').length, 0, 'nothing read while paused');
    const waits = (await server.metric('parley_socket_write_waits_total')) - waitsBefore;
    assert.ok(waits > 0, 'the writes to b hit a full socket buffer (else this test proves nothing)');

    bWs.ws._socket.resume();
    for (let i = 0; i < 400 && bWs.all((f) => f.type === 'new_message').length < TOTAL; i++) await sleep(50);
    const got = bWs.all((f) => f.type === 'new_message' && f.data?.thread_id === group.id).map((f) => f.data);
    assert.equal(got.length, TOTAL, `b got ${got.length} of ${TOTAL}`);
    assert.ok(bWs.isOpen, 'b is still connected');
    for (let k = 0; k < TOTAL; k++) {
      assert.equal(got[k].seq, seqs[k], `message ${k} in order`);
      assert.equal(got[k].content, contentFor(k), `message ${k} content intact`);
    }
  });
});
