// A connection's messages are numbered in the order it sent them, whichever
// path each send takes on the server: a thread whose members are not cached
// yet and a direct message by username both go through a worker, and the
// sends behind them must not overtake them.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, sleep } from './harness.mjs';

const N = 60;

describe('send order', { timeout: 60000 }, () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--rate-per-second', '100000', '--rate-burst', '100000'] });
  });
  after(async () => { await server?.stop(); });

  async function sendAll(ws, frameFor) {
    const replies = await Promise.all(
      Array.from({ length: N }, (_, i) => ws.request({ type: 'send_message', ...frameFor(i), client_msg_id: `o-${i}` }, 15000)));
    for (const r of replies) assert.equal(r.type, 'message_sent', JSON.stringify(r).slice(0, 200));
    return replies.map((r) => r.data);
  }

  it('pipelined sends to a cold thread keep their order', async () => {
    // A restart empties the member cache: the first send misses it.
    const [a, b, c] = await server.registerMany(3);
    const group = await server.createGroup(a, [b, c], 'order');
    await server.restart();
    const ws = await server.connect(a);
    const sent = await sendAll(ws, (i) => ({ thread_id: group.id, content: `m${i}` }));
    assert.deepEqual(sent.map((m) => m.content), sent.map((_, i) => `m${i}`));
    assert.deepEqual(sent.map((m) => m.seq), sent.map((_, i) => i + 1), 'seq follows send order');
  });

  it('pipelined direct messages by username keep their order', async () => {
    const [a, b] = await server.registerMany(2);
    const ws = await server.connect(a);
    const sent = await sendAll(ws, (i) => ({ username: b.username, content: `d${i}` }));
    assert.deepEqual(sent.map((m) => m.seq), sent.map((_, i) => i + 1), 'seq follows send order');
    const history = await server.history(b.token, sent[0].thread_id);
    assert.deepEqual(history.map((m) => m.content), sent.map((_, i) => `d${i}`));
  });

  // The fast path: once a thread's members are cached, a send runs on the
  // event loop; a worker hop per send (a futex wake each) is what a
  // regression here would bring back, and nothing else would notice it.
  it('sends to a thread whose members are cached run on the event loop', async () => {
    const [a, b] = await server.registerMany(2);
    const group = await server.createGroup(a, [b], 'fast path');
    const ws = await server.connect(a);
    const first = await ws.request({ type: 'send_message', thread_id: group.id, content: 'warm', client_msg_id: 'w' }, 15000);
    assert.equal(first.type, 'message_sent');
    const loopBefore = await server.metric('parley_steps_on_loop_total');
    const workerBefore = await server.metric('parley_steps_on_worker_total');
    const sent = await sendAll(ws, (i) => ({ thread_id: group.id, content: `f${i}` }));
    assert.deepEqual(sent.map((m) => m.seq), sent.map((_, i) => i + 2), 'seq follows send order');
    assert.equal(await server.metric('parley_steps_on_worker_total') - workerBefore, 0, 'no send went to a worker');
    assert.equal(await server.metric('parley_steps_on_loop_total') - loopBefore, N, 'every send ran on the loop');
  });

  // CONTRACT section 6: every connection sees a thread's messages in seq
  // order; a sender sees its own as message_sent. Commits of both senders
  // land in one group commit, and one fan-out task carries several of them:
  // the other's next message must not overtake one's own message_sent.
  it('two people writing at once each get the thread in seq order, their own messages as message_sent', async () => {
    const [a, b] = await server.registerMany(2);
    const thread = await server.createDirect(a, b);
    const wa = await server.connect(a);
    const wb = await server.connect(b);
    for (let i = 0; i < N; i++) {
      wa.send({ type: 'send_message', thread_id: thread.id, content: `a${i}` });
      wb.send({ type: 'send_message', thread_id: thread.id, content: `b${i}` });
    }
    for (const [who, ws, mine] of [['a', wa, a], ['b', wb, b]]) {
      const inThread = (f) => (f.type === 'message_sent' || f.type === 'new_message') && f.data?.thread_id === thread.id;
      const deadline = Date.now() + 15000;
      while (ws.all(inThread).length < 2 * N && Date.now() < deadline) await sleep(20);
      const frames = ws.all(inThread);
      assert.equal(frames.length, 2 * N, `${who} got every message of the thread once`);
      assert.deepEqual(frames.map((f) => f.data.seq), frames.map((_, i) => i + 1), `${who} got the thread in seq order`);
      for (const f of frames) {
        assert.equal(f.type, f.data.sender_id === mine.id ? 'message_sent' : 'new_message', `${who}: seq ${f.data.seq}`);
      }
    }
  });
});
