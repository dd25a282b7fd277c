// Three `parley` nodes on one PostgreSQL and one Redis behave as one server
// (CONTRACT section 6): any client on any node, each message once per device
// in seq order, receipts, typing, presence and calls across nodes, gapless
// seq under concurrent senders on different nodes, nothing acknowledged lost
// when a node is killed or Redis restarts.
//
// Needs Debian's postgresql (tests/db/pg.sh) and redis-server
// (scripts/redis-test.sh); skipped when either is missing.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomId, sleep } from './harness.mjs';
import { Cluster, clusterSkip as skip, waitBus as waitHealth } from './cluster.mjs';

// Waits for all of a client's new_message frames of a thread to reach n; returns their seqs in arrival order.
async function seqsAt(client, threadId, n, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const seqs = client.all((f) => f.type === 'new_message' && f.data.thread_id === threadId).map((f) => f.data.seq);
    if (seqs.length >= n || Date.now() > deadline) return seqs;
    await sleep(50);
  }
}
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('three nodes on one PostgreSQL and one Redis', { skip }, () => {
  const cluster = new Cluster({ secret: `multinode-${randomId(16)}` });
  let nodes = [];
  const startNode = () => cluster.startNode();
  // Tests that stop Redis or a node put it back in a `finally`, so that one
  // failing does not fail the tests after it for want of their fixture.
  const redisUp = () => { try { return cluster.redis.cli('ping') === 'PONG'; } catch { return false; } };
  // A restore that fails is logged, not thrown: thrown from a `finally`, it
  // would replace the failure that made it necessary.
  async function restoreRedis() {
    try { if (!redisUp()) cluster.redis.start(); } catch (err) { console.error('restoring Redis failed:', err); }
    for (const n of nodes) await waitHealth(n, true, 30000).catch(() => {});
  }
  const running = (node) => node.child && node.child.exitCode === null && node.child.signalCode === null;
  async function restoreNode(i) {
    try { if (!running(nodes[i])) nodes[i] = await startNode(); } catch (err) { console.error(`restoring node ${i} failed:`, err); }
  }

  before(async () => {
    await cluster.start({ size: 3 });
    nodes = cluster.nodes;
  });
  after(() => cluster.stop());

  it('a DM between users on two nodes, and the reply', async () => {
    const [n1, n2] = nodes;
    const [alice, bob] = await n1.registerMany(2);
    const aliceWs = await n1.connect(alice);
    const bobWs = await n2.connect(bob);
    const sent = await aliceWs.sendMessage({ username: bob.username, content: 'across nodes' });
    const got = await bobWs.next((f) => f.type === 'new_message' && f.data.id === sent.id, 5000, 'the DM on the other node');
    assert.equal(got.data.content, 'across nodes');
    const reply = await bobWs.sendMessage({ thread_id: sent.thread_id, content: 'and back' });
    assert.equal(reply.seq, 2);
    await aliceWs.next((f) => f.type === 'new_message' && f.data.id === reply.id, 5000, 'the reply');
    await sleep(300);
    assert.deepEqual(await seqsAt(bobWs, sent.thread_id, 1), [1], 'once at Bob, and not his own reply');
    assert.deepEqual(await seqsAt(aliceWs, sent.thread_id, 1), [2]);
  });

  it('a group over three nodes gets each message exactly once per device, in seq order', async () => {
    const users = await nodes[0].registerMany(6);
    const [sender, ...members] = users;
    const group = await nodes[0].createGroup(sender, members);
    const devices = [];
    members.forEach((u, i) => devices.push(nodes[i % 3].connect(u)));
    devices.push(nodes[1].connect(members[0]), nodes[2].connect(members[0]));  // one user, three devices, three nodes
    const clients = await Promise.all(devices);
    const senderWs = await nodes[2].connect(sender);
    const n = 40;
    const acks = [];
    for (let i = 1; i <= n; i++) acks.push(senderWs.request({ type: 'send_message', thread_id: group.id, content: `g${i}`, client_msg_id: `g-${i}` }, 15000));
    const replies = await Promise.all(acks);
    assert.ok(replies.every((r) => r.type === 'message_sent'), 'every send acknowledged');
    for (const c of clients) assert.deepEqual(await seqsAt(c, group.id, n), range(1, n));
    await sleep(500);
    for (const c of clients) assert.equal(c.all((f) => f.type === 'new_message').length, n, 'no duplicates');
    assert.equal(senderWs.all((f) => f.type === 'new_message').length, 0, 'nothing echoed to the sending device');
  });

  it('concurrent senders on three nodes into one thread: gapless seq, nothing duplicated', async () => {
    const users = await nodes[0].registerMany(4);
    const [a, b, c, reader] = users;
    const group = await nodes[0].createGroup(a, [b, c, reader]);
    const senders = await Promise.all([nodes[0].connect(a), nodes[1].connect(b), nodes[2].connect(c)]);
    const readers = await Promise.all(nodes.map((node) => node.connect(reader)));
    const per = 30;
    await Promise.all(senders.map(async (ws, s) => {
      const pending = [];
      for (let i = 0; i < per; i++) pending.push(ws.request({ type: 'send_message', thread_id: group.id, content: `s${s}-${i}`, client_msg_id: `c-${s}-${i}` }, 20000));
      const replies = await Promise.all(pending);
      assert.ok(replies.every((r) => r.type === 'message_sent'));
    }));
    const history = await nodes[1].history(reader.token, group.id);
    assert.deepEqual(history.map((m) => m.seq), range(1, 3 * per), 'seq 1..N, no gap, no repeat');
    assert.equal(new Set(history.map((m) => m.content)).size, 3 * per);
    for (const r of readers) assert.deepEqual(await seqsAt(r, group.id, 3 * per), range(1, 3 * per));
  });

  it('receipts, typing, calls and presence cross nodes', async () => {
    const [n1, n2, n3] = nodes;
    const [alice, bob] = await n1.registerMany(2);
    const aliceWs = await n1.connect(alice);
    const bobWs = await n2.connect(bob);
    const sent = await aliceWs.sendMessage({ username: bob.username, content: 'read me' });
    await bobWs.next((f) => f.type === 'new_message' && f.data.id === sent.id, 5000, 'the message');

    bobWs.send({ type: 'message_received', message_id: sent.id });
    const delivered = await aliceWs.next((f) => f.type === 'message_delivered', 5000, 'message_delivered at the sender');
    assert.equal(delivered.message_id, sent.id);
    await bobWs.request({ type: 'mark_as_read', thread_id: sent.thread_id });
    const receipt = await aliceWs.next((f) => f.type === 'read_receipt', 5000, 'read_receipt at the sender');
    assert.equal(receipt.user_id, bob.id);
    assert.equal(receipt.seq, 1);
    const unread = await n3.http('GET', '/api/chat/unread-count', { token: bob.token });
    assert.equal(unread.body.data.unread_count, 0, 'unread counts agree on a third node');

    aliceWs.send({ type: 'typing', thread_id: sent.thread_id, is_typing: true });
    const typing = await bobWs.next((f) => f.type === 'typing', 5000, 'typing across nodes');
    assert.equal(typing.user_id, alice.id);

    aliceWs.send({ type: 'call_offer', thread_id: sent.thread_id, payload: { sdp: 'offer' }, request_id: 'call-1' });
    const offer = await bobWs.next((f) => f.type === 'call_offer', 5000, 'call_offer across nodes (the callee is online on another node)');
    assert.deepEqual(offer.payload, { sdp: 'offer' });
    await aliceWs.expectNone((f) => f.type === 'error' && f.request_id === 'call-1', 300, 'callee_offline');

    const carolUser = await n1.register();
    const withCarolThread = await n1.createDirect(alice, carolUser);
    const carolWs = await n3.connect(carolUser);
    const on = await aliceWs.next((f) => f.type === 'presence' && f.user_id === carolUser.id && f.online, 5000, 'presence online from another node');
    assert.equal(on.online, true);
    const threads = await n1.http('GET', '/api/chat/threads', { token: alice.token });
    const withCarol = threads.body.data.threads.find((t) => t.participants.some((p) => p.user_id === carolUser.id));
    assert.equal(withCarol.participants.find((p) => p.user_id === carolUser.id).online, true, 'online in listings on another node');
    carolWs.close();
    // In Carol's grace period on node 3 (online, no offline announced yet),
    // node 1 knows she has nothing open: a call to her is refused, not rung
    // into nothing. Each attempt that is still relayed (node 3 had not yet
    // seen the close) answers nothing.
    const carolOffline = (f) => f.type === 'presence' && f.user_id === carolUser.id && !f.online;
    const isRefusal = (f) => f.type === 'error' && f.code === 'callee_offline';
    // Tried within the grace (3 s); a refusal that comes after its attempt's
    // 250 ms wait on a loaded machine still counts, so the frames are read.
    const deadline = Date.now() + 2500;
    for (let i = 0; i < 20 && Date.now() < deadline && aliceWs.all(isRefusal).length === 0; i++) {
      await aliceWs.request({ type: 'call_offer', thread_id: withCarolThread.id, payload: { sdp: 'offer' } }, 250).catch(() => null);
    }
    for (let i = 0; i < 100 && aliceWs.all((f) => isRefusal(f) || carolOffline(f)).length === 0; i++) await sleep(50);
    const first = aliceWs.all((f) => isRefusal(f) || carolOffline(f))[0];
    assert.ok(first && isRefusal(first), `a call in the grace period on another node is refused before her offline is announced (first: ${JSON.stringify(first)})`);
    await aliceWs.next(carolOffline, 10000, 'presence offline');
  });

  // One reader's two devices on two nodes mark at once, alternately: each
  // node announces its own marks in order, but the two nodes' receipts meet
  // in Redis in either order. A watcher on a third node must never see the
  // reader's receipts go backwards, and the last one is the highest mark.
  it("a reader's receipts never go backwards when two devices on two nodes mark at once", async () => {
    const [n1, n2, n3] = nodes;
    const [alice, bob] = await n1.registerMany(2);
    const watcher = await n3.connect(alice);
    const phone = await n1.connect(bob);
    const laptop = await n2.connect(bob);
    const total = 100;
    for (let round = 0; round < 3; round++) {
      const thread = await n1.createGroup(alice, [bob], `receipts ${round}`);
      await Promise.all(Array.from({ length: total }, (_, i) => n3.sendRest(alice.token, thread.id, { content: `m${i}` })));
      for (let seq = 1; seq <= total; seq++) {
        (seq % 2 ? phone : laptop).send({ type: 'mark_as_read', thread_id: thread.id, up_to_seq: seq });
      }
      const bobReceipts = () => watcher.all((f) => f.type === 'read_receipt' && f.thread_id === thread.id && f.user_id === bob.id)
        .map((f) => f.seq);
      for (let i = 0; i < 200 && !bobReceipts().includes(total); i++) await sleep(50);
      await sleep(300);  // a late, lower receipt would come now
      const seen = bobReceipts();
      assert.ok(seen.includes(total), `the highest mark was announced: ${seen.join(',')}`);
      const backwards = seen.filter((s, i) => i > 0 && s <= seen[i - 1]);
      assert.deepEqual(backwards, [], `round ${round}: receipts in order: ${seen.join(',')}`);
      assert.equal(seen[seen.length - 1], total, 'the last receipt is the highest mark');
    }
    for (const c of [watcher, phone, laptop]) c.close();
  });

  // Each node caches who is in a thread. A change made through one node must
  // hold on the others: a removed member can no longer send there (the store
  // refuses it at once) nor receive what is sent there, and an added member
  // receives what is sent there, live.
  it('membership changed on one node holds on the others', async () => {
    const [n1, n2] = nodes;
    const [admin, bob, carol, dave] = await n1.registerMany(4);
    const g = await n1.createGroup(admin, [bob, carol]);
    const bobWs = await n2.connect(bob);
    const carolWs = await n2.connect(carol);
    const daveWs = await n2.connect(dave);
    const adminWs = await n1.connect(admin);
    // Node 2 caches the members: carol sends through it.
    const first = await carolWs.sendMessage({ thread_id: g.id, content: 'while a member' });
    await bobWs.next((f) => f.type === 'new_message' && f.data.id === first.id, 5000, 'carol\'s message');

    const removed = await n1.http('DELETE', `/api/chat/threads/${g.id}/participants/${carol.id}`, { token: admin.token });
    assert.equal(removed.status, 200, removed.text);
    const refused = await carolWs.request({ type: 'send_message', thread_id: g.id, content: 'still here?', client_msg_id: randomId() });
    assert.equal(refused.type, 'error', `carol's send after her removal answered ${JSON.stringify(refused)}`);
    assert.equal(refused.code, 'forbidden');

    const added = await n1.http('POST', `/api/chat/threads/${g.id}/participants`, { token: admin.token, body: { participant_ids: [dave.id] } });
    assert.equal(added.status, 200, added.text);
    // Node 1 publishes in order: once bob on node 2 has this, node 2 has had both changes.
    const marker = await adminWs.sendMessage({ thread_id: g.id, content: 'marker' });
    await bobWs.next((f) => f.type === 'new_message' && f.data.id === marker.id, 5000, 'the marker on node 2');
    const fromBob = await bobWs.sendMessage({ thread_id: g.id, content: 'sent through node 2' });
    const atDave = await daveWs.next((f) => f.type === 'new_message' && f.data.id === fromBob.id, 5000, 'bob\'s message at dave, added on node 1');
    assert.equal(atDave.data.content, 'sent through node 2');
    await adminWs.next((f) => f.type === 'new_message' && f.data.id === fromBob.id, 5000, 'bob\'s message at the admin');
    await sleep(300);
    assert.deepEqual(carolWs.all((f) => f.type === 'new_message' && [marker.id, fromBob.id].includes(f.data.id)), [],
      'nothing sent after her removal reaches carol');
    const history = await n2.http('GET', `/api/chat/threads/${g.id}/messages`, { token: bob.token });
    assert.ok(!history.body.data.messages.some((m) => m.content === 'still here?'), 'the refused message was not stored');
    for (const c of [bobWs, carolWs, daveWs, adminWs]) c.close();
  });

  it('a member removed and added back gets nothing said while out, on any node, even in the last second', async () => {
    const [n1, n2] = nodes;
    const [admin, bob] = await n1.registerMany(2);
    const g = await n1.createGroup(admin, [bob]);
    const bobWs = [await n1.connect(bob), await n2.connect(bob)];
    const before = await n1.sendRest(admin.token, g.id, { content: 'before' });
    for (const ws of bobWs) await ws.next((f) => f.type === 'new_message' && f.data.id === before.body.data.id, 5000, 'before');
    const out = await n1.http('DELETE', `/api/chat/threads/${g.id}/participants/${bob.id}`, { token: admin.token });
    assert.equal(out.status, 200, out.text);
    const away = [];
    for (let i = 0; i < 5; i++) away.push((await n2.sendRest(admin.token, g.id, { content: `while out ${i}` })).body.data.id);
    // Added back at once: each "while out" is well within a second of it.
    const back = await n1.http('POST', `/api/chat/threads/${g.id}/participants`, { token: admin.token, body: { participant_ids: [bob.id] } });
    assert.equal(back.status, 200, back.text);
    const after = await n2.sendRest(admin.token, g.id, { content: 'after' });
    for (const ws of bobWs) await ws.next((f) => f.type === 'new_message' && f.data.id === after.body.data.id, 10000, 'after');
    await sleep(1500);  // a fill retries after 1 s: anything it would send comes meanwhile
    for (const [i, ws] of bobWs.entries()) {
      const got = ws.all((f) => f.type === 'new_message' && away.includes(f.data.id)).map((f) => f.data.content);
      assert.deepEqual(got, [], `bob's connection on node ${i + 1} was sent what was said while he was out`);
    }
    const { body } = await n2.http('GET', `/api/chat/offline-messages?last_check_time=${encodeURIComponent(before.body.data.created_at)}`, { token: bob.token });
    assert.ok(!body.data.messages.some((m) => away.includes(m.id)), 'nor by offline sync');
    for (const ws of bobWs) ws.close();
  });

  it('Redis restarted: every node degrades then recovers, and clients miss nothing', async () => {
    const [alice, bob, carol] = await nodes[0].registerMany(3);
    const thread = await nodes[0].createDirect(alice, bob);
    const aliceWs = await nodes[0].connect(alice);
    const bobWs = await nodes[1].connect(bob);
    const carolWs = await nodes[2].connect(carol);
    const first = await aliceWs.sendMessage({ thread_id: thread.id, content: 'r1' });
    await bobWs.next((f) => f.type === 'new_message' && f.data.id === first.id, 5000);
    cluster.redis.stopSync();
    let group;
    try {
      for (const n of nodes) assert.equal((await waitHealth(n, false)).bus.state, 'degraded');
      for (let i = 2; i <= 4; i++) await aliceWs.sendMessage({ thread_id: thread.id, content: `r${i}` });
      // A group made meanwhile: its thread_created reached only Alice's node.
      group = await nodes[0].createGroup(alice, [bob, carol], 'made while Redis was down');
      cluster.redis.start();
      for (const n of nodes) await waitHealth(n, true, 30000);
      // Bob's node lost its subscription: it re-reads his threads from the store.
      assert.deepEqual(await seqsAt(bobWs, thread.id, 4), [1, 2, 3, 4]);
      await aliceWs.sendMessage({ thread_id: thread.id, content: 'r5' });
      assert.deepEqual(await seqsAt(bobWs, thread.id, 5), [1, 2, 3, 4, 5]);
      // The members on the other nodes are told of the group all the same, once.
      for (const ws of [bobWs, carolWs]) {
        const created = await ws.next((f) => f.type === 'thread_created' && f.thread.id === group.id, 15000, 'thread_created after the outage');
        assert.equal(created.thread.title, 'made while Redis was down');
        assert.equal(created.thread.participants.length, 3);
      }
      await sleep(500);
      for (const ws of [aliceWs, bobWs, carolWs])
        assert.equal(ws.all((f) => f.type === 'thread_created' && f.thread.id === group.id).length, 1, 'thread_created once');
    } finally {
      await restoreRedis();
    }
  });

  it('a node killed with -9 mid-burst: its clients resume on another node and nothing acknowledged is lost', async () => {
    const victim = nodes[2];
    const [alice, bob] = await nodes[0].registerMany(2);
    const thread = await nodes[0].createDirect(alice, bob);
    const aliceWs = await victim.connect(alice);
    const bobWs = await nodes[0].connect(bob);
    const acked = [];
    aliceWs.ws.on('message', (data) => {
      try { const f = JSON.parse(data.toString()); if (f.type === 'message_sent') acked.push(f.data); } catch { /* ignore */ }
    });
    for (let i = 1; i <= 200; i++) aliceWs.send({ type: 'send_message', thread_id: thread.id, content: `k${i}`, client_msg_id: `k-${i}` });
    const deadline = Date.now() + 10000;
    while (acked.length < 20 && Date.now() < deadline) await sleep(5);
    await victim.kill9();
    try {
      assert.ok(acked.length >= 20, `some sends were acknowledged before the kill (${acked.length})`);

      // Alice resumes on another node; her next message makes Bob's node see any gap.
      const aliceAgain = await nodes[1].connect(alice);
      const next = await aliceAgain.sendMessage({ thread_id: thread.id, content: 'after the kill' });
      const history = await nodes[0].history(bob.token, thread.id);
      assert.deepEqual(history.map((m) => m.seq), range(1, history.length), 'gapless');
      for (const m of acked) assert.ok(history.some((h) => h.id === m.id), `acknowledged ${m.seq} survived`);
      assert.deepEqual(await seqsAt(bobWs, thread.id, next.seq), range(1, next.seq), 'Bob got every stored message once, in order');
    } finally {
      await restoreNode(2);
    }
  });

  it('a node stopped with SIGTERM: its clients get 1001, its users go offline at the others after the grace, unless back elsewhere', async () => {
    const victim = nodes[2];
    const [alice, carol, dave] = await nodes[0].registerMany(3);
    await nodes[0].createDirect(alice, carol);
    await nodes[0].createDirect(alice, dave);
    const aliceWs = await nodes[0].connect(alice);
    const carolWs = await victim.connect(carol);
    const daveWs = await victim.connect(dave);
    await aliceWs.next((f) => f.type === 'presence' && f.user_id === carol.id && f.online, 5000, 'carol online');
    await aliceWs.next((f) => f.type === 'presence' && f.user_id === dave.id && f.online, 5000, 'dave online');
    const heartbeats = () => cluster.redis.cli('--scan', '--pattern', 'parley:node:*').split('\n').filter(Boolean).sort();
    // A node killed by an earlier test leaves its key until it expires (3 s).
    let before = heartbeats();
    for (let i = 0; i < 50 && before.length !== 3; i++) { await sleep(100); before = heartbeats(); }
    assert.equal(before.length, 3, `three nodes heartbeat: ${before}`);
    victim.child.kill('SIGTERM');
    try {
      // Bounded: a node that never exits is the failure this test looks for.
      let timer;
      const exit = await Promise.race([victim.exited,
        new Promise((resolve) => { timer = setTimeout(resolve, 15000, null); })]);
      clearTimeout(timer);
      assert.ok(exit, `the node did not exit within 15 s of SIGTERM\n${victim.logTail()}`);
      const { code } = exit;
      assert.equal(code, 0, victim.logTail());
      assert.equal((await carolWs.waitClose(5000)).code, 1001);
      assert.equal((await daveWs.waitClose(5000)).code, 1001);
      // Dave's app reconnects half a second later, to another node: within
      // the grace (the stopped node's heartbeat lasts 3 s more), so he never goes offline.
      await sleep(500);
      await nodes[1].connect(dave);
      const off = await aliceWs.next((f) => f.type === 'presence' && f.user_id === carol.id && !f.online, 10000, 'carol offline after her node stopped');
      assert.equal(off.online, false);
      let after = heartbeats();
      for (let i = 0; i < 50 && after.length !== 2; i++) { await sleep(100); after = heartbeats(); }
      assert.equal(after.length, 2, `the stopped node's heartbeat key expired: ${before} -> ${after}`);
      assert.deepEqual(aliceWs.all((f) => f.type === 'presence' && f.user_id === dave.id && !f.online), [],
        'dave, back on another node within the grace, was never announced offline');
      // It left with its events published: its removal makes no node resync
      // its sessions (a killed node's does: multinode_resync.test.mjs).
      const id = /event=bus_subscribed .*node_id=([0-9a-f]+)/.exec(victim.log.join('\n'))?.[1];
      assert.ok(id, 'the stopped node logged its id');
      await sleep(1500);  // a resync would come within a second of the removal
      for (const n of [nodes[0], nodes[1]]) {
        assert.deepEqual(n.log.filter((l) => l.includes('event=bus_resync_node_gone') && l.includes(`gone=${id}`)), [],
          'no resync for a node that stopped on purpose');
      }
    } finally {
      if (running(victim)) await victim.kill9();
      victim.child = null;
      await restoreNode(2);
    }
  });

  it("a killed node's users go offline at the others (its heartbeat expires)", async () => {
    const victim = nodes[2];
    const [alice, carol] = await nodes[0].registerMany(2);
    await nodes[0].createDirect(alice, carol);
    const aliceWs = await nodes[0].connect(alice);
    await victim.connect(carol);
    await aliceWs.next((f) => f.type === 'presence' && f.user_id === carol.id && f.online, 5000, 'carol online');
    await victim.kill9();
    try {
      const off = await aliceWs.next((f) => f.type === 'presence' && f.user_id === carol.id && !f.online, 10000, 'carol offline after her node died');
      assert.equal(off.online, false);
    } finally {
      await restoreNode(2);
    }
  });
});
