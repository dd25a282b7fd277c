// A node whose subscription to Redis broke re-reads, for each of its
// connections, what the others stored meanwhile (a `resync`). That must also
// cover the threads a connection had not been sent anything on yet: a thread
// it only subscribed to, one whose history predates the connection, and a
// direct thread created during the cut. Before the fix a resync re-read only
// the threads a connection had already been sent messages on, so these
// messages never reached it live (until another message came to the thread).
// And a re-read of a thread the user has left since stops at the store's
// refusal instead of retrying for good.
//
// Needs Debian's postgresql (tests/db/pg.sh) and redis-server; skipped when
// either is missing.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomId, sleep } from './harness.mjs';
import { Cluster, clusterSkip as skip, waitBus } from './cluster.mjs';

const contents = (client, threadId) =>
  client.all((f) => f.type === 'new_message' && (!threadId || f.data.thread_id === threadId)).map((f) => f.data.content);

// Waits until a client has been sent `want` (new_message contents, in order) on a thread.
async function waitContents(client, threadId, want, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (contents(client, threadId).length < want.length && Date.now() < deadline) await sleep(50);
  assert.deepEqual(contents(client, threadId), want, what);
}

describe('a resync after a Redis cut covers threads a connection had been sent nothing on', { skip }, () => {
  const cluster = new Cluster({ secret: `resync-${randomId(16)}` });
  let nodeA;
  let nodeB;
  let proxy;

  before(async () => {
    ({ nodeA, nodeB, proxy } = await cluster.startCuttablePair());
  });
  after(async () => {
    await cluster.stop();
  });

  it('messages stored on node B while node A was off the bus reach A\'s connections once it is back', async () => {
    const [sender, reader, subscriber, newcomer] = await nodeB.registerMany(4);
    const old = await nodeB.createDirect(sender, reader);
    const subscribed = await nodeB.createDirect(sender, subscriber);
    const senderWs = await nodeB.connect(sender);
    await senderWs.sendMessage({ thread_id: old.id, content: 'history' });
    await senderWs.sendMessage({ thread_id: subscribed.id, content: 'history' });
    // Older than the connections by more than the margin for other nodes'
    // clocks: history, which the client reads itself, not a live message.
    await sleep(1200);

    const readerWs = await nodeA.connect(reader);
    const subscriberWs = await nodeA.connect(subscriber);
    const newcomerWs = await nodeA.connect(newcomer);
    const sub = await subscriberWs.request({ type: 'subscribe_thread', thread_id: subscribed.id });
    assert.equal(sub.type, 'thread_subscribed');

    await proxy.cut();
    await waitBus(nodeA, false);
    await senderWs.sendMessage({ thread_id: old.id, content: 'during 1' });
    await senderWs.sendMessage({ thread_id: old.id, content: 'during 2' });
    await senderWs.sendMessage({ thread_id: subscribed.id, content: 'during' });
    const dm = await senderWs.sendMessage({ username: newcomer.username, content: 'hello newcomer' });
    await proxy.start();
    await waitBus(nodeA, true);

    await waitContents(readerWs, old.id, ['during 1', 'during 2'], 'a thread whose history predates the connection');
    await waitContents(subscriberWs, subscribed.id, ['during'], 'a thread the connection subscribed to');
    await waitContents(newcomerWs, dm.thread_id, ['hello newcomer'], 'a direct thread created during the cut');

    // And live delivery carries on from there, each message once.
    await senderWs.sendMessage({ thread_id: old.id, content: 'after' });
    await waitContents(readerWs, old.id, ['during 1', 'during 2', 'after'], 'live again after the resync');
    await sleep(1500);  // a fill retries after 1 s: a duplicate would come meanwhile
    assert.deepEqual(contents(readerWs), ['during 1', 'during 2', 'after'], 'nothing twice, no history');
    assert.deepEqual(contents(subscriberWs), ['during']);
    assert.deepEqual(contents(newcomerWs), ['hello newcomer']);
  });

  // A resync re-reads every thread the connection was sent messages on,
  // including one its user has since been removed from. The store refuses
  // that read (not a participant); before the fix the fill took the refusal
  // for an outage and retried it every second for as long as the connection
  // lived (one event=gap_fill_failed line each time).
  it('the fill of a thread the user was removed from stops at the refusal', async () => {
    const [admin, carol] = await nodeB.registerMany(2);
    const group = await nodeB.createGroup(admin, [carol]);
    const adminWs = await nodeB.connect(admin);
    const carolWs = await nodeA.connect(carol);
    await adminWs.sendMessage({ thread_id: group.id, content: 'before the removal' });
    await waitContents(carolWs, group.id, ['before the removal'], 'carol on node A has the thread');
    const removed = await nodeB.http('DELETE', `/api/chat/threads/${group.id}/participants/${carol.id}`, { token: admin.token });
    assert.equal(removed.status, 200, removed.text);

    await proxy.cut();
    await waitBus(nodeA, false);
    await proxy.start();
    await waitBus(nodeA, true);
    const about = (event) => nodeA.log.filter((l) => l.includes(`event=${event}`) && l.includes(`thread_id=${group.id}`));
    const deadline = Date.now() + 10000;
    while (about('gap_fill_stopped').length === 0 && about('gap_fill_failed').length < 3 && Date.now() < deadline) await sleep(100);
    await sleep(2500);  // a retry comes each second
    assert.deepEqual(about('gap_fill_failed'), [], 'the refused fill is not retried');
    assert.equal(about('gap_fill_stopped').length, 1, nodeA.logTail());
    assert.ok(carolWs.isOpen, 'the connection itself goes on');
  });
});
