// Moderation and push across two `parley` nodes sharing one PostgreSQL and
// one Redis: delete and edit reach participants on the other node (bus),
// `parley user disable` closes the user's connections on every node (each
// polls the shared store), and each webhook notification is POSTed by one
// node only (outbox claims).
//
// Needs Debian's postgresql (tests/db/pg.sh) and redis-server; skipped when
// either is missing.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { HOST, randomId, sleep } from './harness.mjs';
import { Cluster, clusterSkip as skip } from './cluster.mjs';

describe('moderation and push on two nodes', { skip }, () => {
  const cluster = new Cluster({ secret: `mod-multinode-${randomId(16)}` });
  let receiver;
  const hits = [];
  let nodes = [];

  before(async () => {
    receiver = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        hits.push({ delivery: req.headers['x-parley-delivery'], body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        res.writeHead(200).end('ok');
      });
    });
    await new Promise((resolve) => receiver.listen(0, HOST, resolve));
    const hookUrl = `http://${HOST}:${receiver.address().port}/hook`;
    // --account-poll-ms 200: each node notices a disable well within the
    // bound below even on a loaded machine (the default polls every second).
    await cluster.start({ size: 2, args: ['--webhook-url', hookUrl, '--webhook-secret', 'hook-secret', '--account-poll-ms', '200'] });
    nodes = cluster.nodes;
  });
  after(async () => {
    await cluster.stop();
    await new Promise((resolve) => receiver?.close(resolve));
  });

  it('edit and delete on one node reach a participant on the other', async () => {
    const [n1, n2] = nodes;
    const [alice, bob] = await n1.registerMany(2);
    const thread = await n1.createGroup(alice, [bob]);
    const aliceWs = await n1.connect(alice);
    const bobWs = await n2.connect(bob);
    await sleep(300);  // presence and bus subscriptions settle
    const m = await aliceWs.sendMessage({ thread_id: thread.id, content: 'cross-node' });
    await bobWs.next((f) => f.type === 'new_message' && f.data.id === m.id, 10000);

    const edited = await aliceWs.request({ type: 'edit_message', message_id: m.id, content: 'cross-node, edited' });
    assert.equal(edited.type, 'message_edited');
    const ev = await bobWs.next((f) => f.type === 'message_edited' && f.data.id === m.id, 10000);
    assert.equal(ev.data.content, 'cross-node, edited');

    const del = await n2.http('DELETE', `/api/chat/messages/${m.id}`, { token: alice.token });
    assert.equal(del.status, 200, del.text);
    const gone = await aliceWs.next((f) => f.type === 'message_deleted', 10000);
    assert.equal(gone.message_id, m.id);
    await bobWs.next((f) => f.type === 'message_deleted' && f.message_id === m.id, 10000);
  });

  it('disable closes the user\'s connections on both nodes', async () => {
    const [n1, n2] = nodes;
    const mallory = await n1.register();
    const on1 = await n1.connect(mallory);
    const on2 = await n2.connect(mallory);
    await n1.cli(['user', 'disable', mallory.username]);
    const started = Date.now();  // once the command is done: its own start-up is not the nodes' delay
    for (const c of [on1, on2]) {
      const info = await c.waitClose(5000);
      assert.equal(info.code, 4403);
    }
    assert.ok(Date.now() - started <= 4000, `closed after ${Date.now() - started} ms`);
    assert.equal((await n2.http('GET', '/api/users/me', { token: mallory.token })).status, 401);
  });

  it('an account disabled while its connection waits for admission is closed once admitted, before it is sent any history or its frames run', async () => {
    const [n1] = nodes;
    const [alice, mallory] = await n1.registerMany(2);
    const thread = await n1.createGroup(alice, [mallory]);
    for (let i = 0; i < 5; i++) assert.equal((await n1.sendRest(alice.token, thread.id, { content: `before ${i}` })).status, 201);
    const ws = await n1.connect(mallory, { via: 'none' });
    // The per-user connection limit is asked of Redis: while it hangs, the
    // token is checked (the account still enabled) and the admission waits.
    cluster.redis.pause();
    try {
      ws.send({ type: 'auth', token: mallory.token, request_id: 'auth', subscribe: [{ thread_id: thread.id, since_seq: 0, request_id: 'sub' }] });
      ws.send({ type: 'send_message', thread_id: thread.id, content: 'sent while the admission waits', request_id: 'late' });
      await sleep(200);
      await n1.cli(['user', 'disable', mallory.username]);
      // n1 has polled the change (every 200 ms). Within 3 s of the pause, or
      // the link gives up on Redis and admits without it.
      const seen = `event=account_changed user_id=${mallory.id} disabled=true`;
      for (let i = 0; i < 300 && !n1.log.some((l) => l.includes(seen)); i++) await sleep(10);
      assert.ok(n1.log.some((l) => l.includes(seen)), n1.logTail());
    } finally {
      cluster.redis.resume();
    }
    const info = await ws.waitClose(10000);
    assert.equal(info.code, 4403);
    const frames = ws.frames.map((e) => e.frame);
    assert.ok(frames.some((f) => f.type === 'error' && f.code === 'account_disabled'), JSON.stringify(frames));
    assert.deepEqual(frames.filter((f) => f.type === 'new_message' || f.type === 'thread_subscribed' || f.type === 'message_sent'), [],
      'no history, no subscription answer, no send for a disabled account');
    const history = await n1.history(alice.token, thread.id);
    assert.deepEqual(history.filter((m) => m.message_type !== 'system').map((m) => m.content), [0, 1, 2, 3, 4].map((i) => `before ${i}`), 'the frame sent meanwhile was not stored');
  });

  it('each notification for an offline participant is POSTed once, by one node', async () => {
    const [n1, n2] = nodes;
    const [sender, offline] = await n1.registerMany(2);
    const thread = await n1.createDirect(sender, offline);
    const ids = [];
    for (let i = 0; i < 6; i++) {
      const node = i % 2 ? n2 : n1;  // sent through both nodes
      const res = await node.sendRest(sender.token, thread.id, { content: `push ${i}` });
      assert.equal(res.status, 201);
      ids.push(res.body.data.id);
    }
    const deadline = Date.now() + 15000;
    const mine = () => hits.filter((h) => h.body.recipient_id === offline.id);
    while (Date.now() < deadline && mine().length < 6) await sleep(100);
    await sleep(1500);  // both nodes poll the outbox meanwhile
    const got = mine();
    assert.equal(got.length, 6, 'one POST per message, not one per node');
    assert.deepEqual(got.map((h) => h.body.message.id).sort(), [...ids].sort());
    assert.equal(new Set(got.map((h) => h.delivery)).size, 6);
  });
});
