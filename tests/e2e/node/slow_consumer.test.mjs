// A stalled reader in a busy group: the server cuts it off once its outbound
// queue passes --max-outbound-bytes, the healthy readers get every message in
// order, and the cut-off client catches up exactly with subscribe_thread since_seq.
//
// limits.test.mjs has a smaller version (3 users, 1 MiB bound, counts only);
// this one checks exact seq order at two healthy readers, that the drop
// happened while messages were flowing, and the resume afterwards.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, sleep } from './harness.mjs';

const TOTAL = 10000;
const WINDOW = 200;  // message_sent replies outstanding at most
// Messages sent at most ahead of what the slowest healthy reader has read
// (about 130 KB of frames, half the bound): a healthy reader is one that
// keeps up, and with the test process itself short of CPU (a browser test
// starting beside it) unpaced sending put a healthy reader past the bound.
const LEAD = 400;
const MAX_OUTBOUND = 262144;

// ~100 bytes of content that names its index.
const contentFor = (i) => `slow-consumer message ${String(i).padStart(5, '0')} `.padEnd(100, 'abcdefghij');

// Sends TOTAL messages with at most WINDOW unacknowledged and at most LEAD
// ahead of readCount() (the frames the slowest healthy reader has received);
// resolves the seq of each index.
function sendWindowed(ws, threadId, { deadlineMs, readCount }) {
  const seqs = new Array(TOTAL);
  let next = 0;
  let acked = 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { clearInterval(poll); reject(new Error(`only ${acked} of ${TOTAL} messages acknowledged within ${deadlineMs} ms`)); }, deadlineMs);
    const fail = (err) => { clearTimeout(timer); clearInterval(poll); reject(err); };
    // Readers catching up wake no ack: look again every few milliseconds.
    const poll = setInterval(() => pump(), 5);
    const pump = () => {
      while (next < TOTAL && next - acked < WINDOW && next - readCount() < LEAD) {
        const i = next++;
        ws.request({ type: 'send_message', thread_id: threadId, content: contentFor(i), client_msg_id: `sc-${i}` }, 30000)
          .then((reply) => {
            if (reply.type !== 'message_sent') return fail(new Error(`message ${i} answered ${JSON.stringify(reply).slice(0, 300)}`));
            seqs[i] = reply.data.seq;
            acked++;
            if (acked === TOTAL) { clearTimeout(timer); clearInterval(poll); resolve(seqs); } else pump();
          }, fail);
      }
    };
    pump();
  });
}

// The server's slow-consumer log lines, for failure messages.
const dropLog = (server) => server.log.filter((line) => line.includes('slow_consumer')).join('\n') || '(no slow_consumer log line)';

const newMessagesOf = (ws, threadId) => ws.all((f) => f.type === 'new_message' && f.data?.thread_id === threadId).map((f) => f.data);

function assertExactRun(assert, seqs, from, to, what) {
  const expectedLen = to - from + 1;
  assert.equal(seqs.length, expectedLen, `${what}: ${seqs.length} messages, expected ${expectedLen} (seq ${from}..${to})`);
  for (let k = 0; k < seqs.length; k++) {
    if (seqs[k] !== from + k) {
      assert.fail(`${what}: position ${k} has seq ${seqs[k]}, expected ${from + k} (previous ${seqs[k - 1]}): a gap, repeat or reordering`);
    }
  }
}

describe('slow consumer in a group of four', { timeout: 120000 }, () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--max-outbound-bytes', String(MAX_OUTBOUND), '--rate-per-second', '100000', '--rate-burst', '100000'] });
  });
  after(async () => { await server?.stop(); });

  it('the stalled reader is cut off, the healthy ones get all 10,000 in order, and the stalled one resumes exactly with since_seq', { timeout: 115000 }, async (t) => {
    const started = Date.now();
    const [s, h1, h2, l] = await server.registerMany(4);
    const group = await server.createGroup(s, [h1, h2, l], 'slow consumer');
    const threadRes = await server.http('GET', `/api/chat/threads/${group.id}`, { token: s.token });
    const baseSeq = threadRes.body.data.last_seq;

    const sWs = await server.connect(s);
    const h1Ws = await server.connect(h1);
    const h2Ws = await server.connect(h2);
    const lWs = await server.connect(l);
    lWs.ws._socket.pause();  // L stops reading: TCP backpressure, then the server's queue for L grows
    const dropsBefore = await server.metric('parley_slow_consumer_disconnects_total');
    const read = [0, 0];
    h1Ws.ws.on('message', () => { read[0]++; });
    h2Ws.ws.on('message', () => { read[1]++; });

    // S sends 10,000 messages of ~100 bytes.
    const readCount = () => Math.min(read[0], read[1]);
    const seqByIndex = await sendWindowed(sWs, group.id, { deadlineMs: 60000, readCount }).catch((err) => {
      throw new Error(`${err.message}\nserver: ${dropLog(server)}`);
    });
    const sorted = [...seqByIndex].sort((a, b) => a - b);
    assertExactRun(assert, sorted, baseSeq + 1, baseSeq + TOTAL, 'seqs acknowledged to the sender');
    const lastSeq = baseSeq + TOTAL;
    const contentBySeq = new Map(seqByIndex.map((seq, i) => [seq, contentFor(i)]));

    // H1 and H2 receive everything, in strictly increasing seq order, no gap, no repeat.
    for (const [name, ws] of [['H1', h1Ws], ['H2', h2Ws]]) {
      for (let i = 0; i < 600 && newMessagesOf(ws, group.id).length < TOTAL && ws.isOpen; i++) await sleep(50);
      assert.ok(ws.isOpen, `${name} is still connected (close: ${JSON.stringify(ws.closeInfo)}, got ${newMessagesOf(ws, group.id).length} of ${TOTAL}); server: ${dropLog(server)}`);
      const got = newMessagesOf(ws, group.id);
      assertExactRun(assert, got.map((m) => m.seq), baseSeq + 1, lastSeq, `${name} live`);
      const wrong = got.find((m) => m.content !== contentBySeq.get(m.seq));
      assert.equal(wrong, undefined, `${name}: every message has the content sent with its seq`);
    }

    // L was dropped by the server while the messages were flowing (L has not read anything since it paused).
    const dropsAfter = await server.metric('parley_slow_consumer_disconnects_total');
    assert.equal(dropsAfter - dropsBefore, 1, `exactly one slow-consumer disconnect (L), none for the healthy readers; server: ${dropLog(server)}`);

    // L resumes reading: what was already in flight arrives, then the connection ends.
    lWs.ws._socket.resume();
    const info = await lWs.waitClose(10000);
    assert.equal(info.code, 1006, `dropped without a close frame (docs/protocol.md), got code ${info.code} "${info.reason}"`);
    const lGot = newMessagesOf(lWs, group.id).map((m) => m.seq);
    assert.ok(lGot.length < TOTAL, `L did not get everything before the cut (${lGot.length} of ${TOTAL})`);
    if (lGot.length) assertExactRun(assert, lGot, baseSeq + 1, lGot[lGot.length - 1], 'what L processed before the cut');
    const lastProcessed = lGot.length ? lGot[lGot.length - 1] : baseSeq;

    // The others are unaffected.
    await h1Ws.ping();
    await h2Ws.ping();
    await sWs.ping();

    // L reconnects and fills the gap, each missed message once and in order, then thread_subscribed.
    const l2 = await server.connect(l);
    const sub = await l2.request({ type: 'subscribe_thread', thread_id: group.id, since_seq: lastProcessed },
      Math.max(5000, 110000 - (Date.now() - started)));
    assert.equal(sub.type, 'thread_subscribed', JSON.stringify(sub).slice(0, 300));
    assert.equal(sub.last_seq, lastSeq, 'thread_subscribed carries the last seq');
    const subIndex = l2.frames.findIndex((e) => e.frame === sub);
    const replayed = l2.frames.slice(0, subIndex).map((e) => e.frame)
      .filter((f) => f.type === 'new_message' && f.data?.thread_id === group.id).map((f) => f.data);
    assertExactRun(assert, replayed.map((m) => m.seq), lastProcessed + 1, lastSeq, 'L replay');
    const wrongReplay = replayed.find((m) => m.content !== contentBySeq.get(m.seq));
    assert.equal(wrongReplay, undefined, 'replayed messages carry their content');
    await sleep(500);
    const afterSub = l2.frames.slice(subIndex + 1).map((e) => e.frame).filter((f) => f.type === 'new_message');
    assert.deepEqual(afterSub.map((f) => f.data?.seq), [], 'no new_message after thread_subscribed (nothing was sent since: a repeat)');
    t.diagnostic(`L processed ${lGot.length} messages before the cut, ${replayed.length} replayed; ${Date.now() - started} ms in all`);
    assert.ok(Date.now() - started < 120000, `finished in ${Date.now() - started} ms`);
  });
});

// A client that asks for a long replay, then reads nothing while it keeps
// the connection alive (pings) and its thread goes on: the replay pauses for
// the outbound budget while the thread's live messages are held behind it,
// outside that budget. Past half the idle timeout paused, it is dropped.
describe('a replay stalled by a client that reads nothing', { timeout: 60000 }, () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--max-outbound-bytes', '262144', '--idle-timeout', '6',
      '--rate-per-second', '100000', '--rate-burst', '100000'] });
  });
  after(async () => { await server?.stop(); });

  it('is dropped as a slow consumer, not left holding the thread\'s traffic', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    // More than the kernel's socket buffers take (several MB on loopback), so the replay pauses.
    await server.sendBacklog(alice, thread.id, 12000, `backlog ${'y'.repeat(1000)}`);
    const reader = await server.connect(bob);
    reader.send({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 });
    reader.ws._socket.pause();  // reads nothing from here on
    const keepAlive = setInterval(() => { try { reader.ws.ping(); } catch { /* closed */ } }, 1000);
    const sender = await server.connect(alice);
    try {
      const deadline = Date.now() + 15000;
      let i = 0;
      while (Date.now() < deadline && !server.log.some((l) => l.includes('reason=replay_stalled'))) {
        sender.send({ type: 'send_message', thread_id: thread.id, content: `live ${i++} ${'z'.repeat(400)}` });
        await sleep(20);
      }
      assert.ok(server.log.some((l) => l.includes('reason=replay_stalled')), `not dropped; ${dropLog(server)}`);
    } finally {
      clearInterval(keepAlive);
      reader.ws._socket.resume();
      sender.close();
    }
  });
});
