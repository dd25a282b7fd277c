// A message that got message_sent (or HTTP 201) survives a kill -9 of the
// server at any moment: here, right after the last acknowledgement.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, sleep } from './harness.mjs';

describe('durability across kill -9', () => {
  let server;
  // A high frame limit: the mid-burst kill test sends frames as fast as the
  // server takes them until the kill lands, and resends what was not acked
  // on one connection; a loaded machine lets either pass the default burst.
  before(async () => { server = await startServer({ args: ['--rate-per-second', '100000', '--rate-burst', '100000'] }); });
  after(async () => { await server?.stop(); });

  it('100 acknowledged WebSocket messages are all there after kill -9 and restart, seq 1..100', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const ws = await server.connect(alice);

    // Pipelined: all 100 frames go out at once; kill as soon as the 100th ack is in.
    const acks = [];
    for (let i = 1; i <= 100; i++) {
      acks.push(ws.sendMessage({ thread_id: thread.id, content: `durable ${i}`, client_msg_id: `d-${i}` }, 20000));
    }
    const acked = await Promise.all(acks);
    await server.kill9();

    await server.restart();
    const history = await server.history(bob.token, thread.id);
    assert.equal(history.length, 100, `all 100 acknowledged messages survive (found ${history.length})`);
    assert.deepEqual(history.map((m) => m.seq), Array.from({ length: 100 }, (_, i) => i + 1), 'seq 1..100');
    const byId = new Map(history.map((m) => [m.id, m]));
    for (const m of acked) {
      const stored = byId.get(m.id);
      assert.ok(stored, `acknowledged message ${m.seq} (${m.id}) survives`);
      assert.equal(stored.content, m.content);
      assert.equal(stored.seq, m.seq);
    }
  });

  it('REST 201 messages, users and threads survive kill -9; seq continues after restart', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createGroup(alice, [bob], 'survivors');
    const base = thread.last_seq ?? 0;
    const ids = [];
    for (let i = 1; i <= 20; i++) {
      const r = await server.sendRest(alice.token, thread.id, { content: `rest durable ${i}` });
      assert.equal(r.status, 201);
      ids.push(r.body.data.id);
    }
    await server.kill9();
    await server.restart();

    const login = await server.http('POST', '/api/auth/login', { body: { username: bob.username, password: bob.password } });
    assert.equal(login.status, 200, 'the account survives');
    const got = await server.http('GET', `/api/chat/threads/${thread.id}`, { token: bob.token });
    assert.equal(got.status, 200, 'the thread survives');
    assert.equal(got.body.data.title, 'survivors');
    const history = await server.history(bob.token, thread.id);
    assert.deepEqual(history.filter((m) => m.message_type !== 'system').map((m) => m.id), ids, 'every 201 message, in order');

    const ws = await server.connect(alice);
    const next = await ws.sendMessage({ thread_id: thread.id, content: 'after the crash' });
    assert.equal(next.seq, base + 21, 'seq continues without a gap or a reuse');
  });

  it('a retried client_msg_id after the crash still returns the original', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const first = await server.sendRest(alice.token, thread.id, { content: 'once', client_msg_id: 'crash-retry' });
    assert.equal(first.status, 201);
    await server.kill9();
    await server.restart();
    const retry = await server.sendRest(alice.token, thread.id, { content: 'once', client_msg_id: 'crash-retry' });
    assert.equal(retry.status, 200, `the retry after restart answers 200: ${retry.text}`);
    assert.equal(retry.body.data.id, first.body.data.id);
  });

  it('a graceful SIGTERM stop keeps everything too', async () => {
    const [alice, bob] = await server.registerMany(2);
    const ws = await server.connect(alice);
    const acks = [];
    for (let i = 1; i <= 30; i++) acks.push(ws.sendMessage({ username: bob.username, content: `graceful ${i}` }, 20000));
    const acked = await Promise.all(acks);
    await server.restart();  // SIGTERM, wait, start
    const history = await server.history(bob.token, acked[0].thread_id);
    assert.equal(history.length, 30);
  });

  it('kill -9 in the middle of a burst: every acked message survives, seqs stay gapless, retries do not duplicate', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const ws = await server.connect(alice);
    const limit = 4000;  // sends stop once the kill has landed, long before this
    const acked = new Map();  // client_msg_id -> message
    let killing = null;
    let killed = false;
    let total = 0;  // sends issued
    const attempts = [];
    // Paced, and going on until the kill has landed, so that it lands while
    // frames are still being sent and processed (a fast store may otherwise
    // acknowledge a short burst whole before the signal).
    for (let i = 1; i <= limit && !killed; i++) {
      const cid = `mid-${i}`;
      total = i;
      attempts.push(ws.sendMessage({ thread_id: thread.id, content: `burst ${i}`, client_msg_id: cid }, 20000)
        .then((m) => {
          acked.set(cid, m);
          if (acked.size === 100 && !killing) killing = server.kill9().then(() => { killed = true; });
        })
        .catch(() => { /* in flight when the server died */ }));
      if (i % 5 === 0) await sleep(1);
    }
    await Promise.all(attempts);
    assert.ok(killing, 'the server was killed mid-burst');
    await killing;
    const ackedAtKill = new Map(acked);
    assert.ok(ackedAtKill.size < total, `the kill landed mid-burst (${ackedAtKill.size} of ${total} acknowledged)`);

    await server.restart();
    const history = await server.history(bob.token, thread.id);
    const seqs = history.map((m) => m.seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), 'seqs gapless from 1 after the crash');
    const stored = new Map(history.map((m) => [m.client_msg_id, m]));
    for (const [cid, m] of ackedAtKill) {
      assert.ok(stored.has(cid), `acknowledged ${cid} survives`);
      assert.equal(stored.get(cid).id, m.id, `${cid} keeps its id`);
    }

    // The client retries everything it has no ack for; nothing is stored twice.
    const rest = await server.connect(alice);
    for (let i = 1; i <= total; i++) {
      const cid = `mid-${i}`;
      if (ackedAtKill.has(cid)) continue;
      const m = await rest.sendMessage({ thread_id: thread.id, content: `burst ${i}`, client_msg_id: cid }, 10000);
      if (stored.has(cid)) assert.equal(m.id, stored.get(cid).id, `retry of ${cid} returns the stored original`);
    }
    const after = await server.history(bob.token, thread.id);
    assert.equal(after.length, total, 'every message exactly once after the retries');
    assert.equal(new Set(after.map((m) => m.client_msg_id)).size, total);
    assert.deepEqual(after.map((m) => m.seq), Array.from({ length: total }, (_, i) => i + 1));
  });
});
