// A connection gets every message committed after it connected, also when
// the first one to reach it is not the first committed. On several nodes
// that happens: node A is cut off from Redis, so its messages (seq 1, 2)
// never reach node B's reader as events; then a message sent on B (seq 3)
// is the first the reader gets. It used to set the reader's start at 3, and
// nothing ever brought 1 and 2 (a resync re-reads only after the last seq
// sent). Now the first message is held and a fill reads what came before it
// since the connection began. Messages from before the connection are not
// sent: they are the client's to ask for with since_seq.
//
// Needs Debian's postgresql (tests/db/pg.sh) and redis-server.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sleep } from './harness.mjs';
import { cuttablePair, clusterSkip as skip } from './cluster.mjs';

const newMessages = (client, threadId) => client.all((f) => f.type === 'new_message' && f.data.thread_id === threadId);

async function waitSeqs(client, threadId, n, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (newMessages(client, threadId).length < n && Date.now() < deadline) await sleep(50);
  return newMessages(client, threadId).map((f) => f.data.seq);
}

describe('the first message a connection gets on a thread, across two nodes', { skip }, () => {
  let nodeA;
  let nodeB;
  let proxy;
  cuttablePair('first', (pair) => ({ nodeA, nodeB, proxy } = pair));

  it('a reader whose first event is a later seq still gets the earlier ones sent since it connected, and none from before', async () => {
    const [ann, bea, rex] = await nodeA.registerMany(3);
    const thread = await nodeA.createGroup(ann, [bea, rex]);
    // Before the reader connects: history, not for live delivery.
    const annWs = await nodeA.connect(ann);
    await annWs.sendMessage({ thread_id: thread.id, content: 'old', client_msg_id: 'old' });
    await sleep(1200);  // older than the one-second allowance for other nodes' clocks

    const rexWs = await nodeB.connect(rex);
    const beaWs = await nodeB.connect(bea);
    await proxy.cut();  // node A's events no longer reach node B
    await annWs.sendMessage({ thread_id: thread.id, content: 'a1', client_msg_id: 'a1' });
    await annWs.sendMessage({ thread_id: thread.id, content: 'a2', client_msg_id: 'a2' });
    await beaWs.sendMessage({ thread_id: thread.id, content: 'b3', client_msg_id: 'b3' });

    const seqs = await waitSeqs(rexWs, thread.id, 3);
    assert.deepEqual(seqs, [2, 3, 4], 'seqs 2 and 3 from node A (cut off), then 4 from node B, each once, in order; not seq 1 from before');
    assert.deepEqual(newMessages(rexWs, thread.id).map((f) => f.data.content), ['a1', 'a2', 'b3']);
    await sleep(300);
    assert.equal(newMessages(rexWs, thread.id).length, 3, 'nothing more, nothing twice');
    await proxy.start();
  });

  // The fill for the first message skips what predates the connection, and
  // must not count it as sent: a subscribe_thread that asks for it then (the
  // client catching up after a reconnect) still gets it.
  it('history skipped by the first message\'s fill still comes with a later subscribe_thread', async () => {
    const [ann, bea, rex] = await nodeA.registerMany(3);
    const thread = await nodeA.createGroup(ann, [bea, rex]);
    const annWs = await nodeA.connect(ann);
    for (const c of ['old1', 'old2', 'old3']) await annWs.sendMessage({ thread_id: thread.id, content: c });
    await sleep(1200);  // older than the one-second allowance for other nodes' clocks

    const rexWs = await nodeB.connect(rex);
    const beaWs = await nodeB.connect(bea);
    await beaWs.sendMessage({ thread_id: thread.id, content: 'live' });
    assert.deepEqual(await waitSeqs(rexWs, thread.id, 1), [4], 'the live message, alone: not the history before the connection');
    const subscribed = await rexWs.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 });
    assert.equal(subscribed.type, 'thread_subscribed');
    assert.equal(subscribed.last_seq, 4);
    assert.deepEqual(newMessages(rexWs, thread.id).map((f) => f.data.content), ['live', 'old1', 'old2', 'old3'],
      'the history it asked for, each once (the live message not again)');
  });

  // The one-second allowance for other nodes' clocks used to send again, as
  // new_message, everything stored in the second before the connection
  // opened (messages the reader had read, on the same node or another). What
  // reached the reader's node before it connected is history now, whatever
  // its creation time says.
  it('messages that reached the node in the second before the connection are not sent again with its first message', async () => {
    for (const [what, writerNode] of [['same node', () => nodeB], ['other node', () => nodeA]]) {
      const [ann, rex] = await nodeA.registerMany(2);
      const thread = await nodeA.createDirect(ann, rex);
      const annWs = await writerNode().connect(ann);
      // Ann's other device, on node B: it hears the ten when node B has them.
      const annOnB = await nodeB.connect(ann);
      for (let i = 1; i <= 10; i++) await annWs.sendMessage({ thread_id: thread.id, content: `read ${i}` });
      const marked = await nodeB.http('POST', `/api/chat/mark-read/${thread.id}`, { token: rex.token });
      assert.equal(marked.status, 200, marked.text);
      await annOnB.next((f) => f.type === 'new_message' && f.data.thread_id === thread.id && f.data.seq === 10, 5000,
        `${what}: the ten reached node B`);
      annOnB.close();
      const rexWs = await nodeB.connect(rex);
      await sleep(100);
      await annWs.sendMessage({ thread_id: thread.id, content: 'new' });
      await rexWs.next((f) => f.type === 'new_message' && f.data.content === 'new', 5000, `${what}: the new message`);
      await sleep(500);
      assert.deepEqual(newMessages(rexWs, thread.id).map((f) => f.data.seq), [11], `${what}: only the new message, not the ten before the connection`);
      annWs.close(); rexWs.close();
    }
  });

  // A reader that connects to a busy thread and subscribes at once: its
  // first live message begins a fill of the second before it connected,
  // which ran beside the replay it asked for and sent its seqs (below or
  // above since_seq) after newer ones, even after thread_subscribed. The
  // fill now stops once the client's replay begins.
  it('subscribe_thread right after connecting to a busy thread: every seq after since_seq once, in order, none at or below it', { timeout: 90000 }, async () => {
    const [ann, bea, rex] = await nodeA.registerMany(3);
    const thread = await nodeA.createGroup(ann, [bea, rex]);
    // Four connections at under 200 frames a second each (the default limit:
    // faster, they were refused or closed for flooding after its burst).
    const senders = [await nodeA.connect(ann), await nodeA.connect(bea), await nodeA.connect(ann), await nodeA.connect(bea)];
    let sent = 0;
    let stop = false;
    const traffic = (async () => {
      const until = Date.now() + 40000;
      while (!stop && sent < 12000 && Date.now() < until) {
        for (const s of senders) { s.send({ type: 'send_message', thread_id: thread.id, content: `m${sent}` }); sent++; }
        await sleep(6);
      }
    })();
    try {
      await sleep(1500);  // a few hundred messages of history
      const failures = [];
      for (let trial = 0; trial < 8; trial++) {
        const [last] = (await nodeB.http('GET', `/api/chat/threads/${thread.id}/messages?limit=1`, { token: rex.token })).body.data.messages;
        const since = Math.max(0, last.seq - 200);
        const reader = await nodeB.connect(rex);
        reader.send({ type: 'subscribe_thread', thread_id: thread.id, since_seq: since });
        await sleep(1500);
        reader.close();
        const frames = reader.all((f) => (f.type === 'new_message' && f.data.thread_id === thread.id) || f.type === 'thread_subscribed');
        // What went out before the server read the subscribe (live, or the
        // fill of the first live message) is the documented exception; from
        // the replay's first message on, seqs only go up, past since_seq.
        const seqs = frames.filter((f) => f.type === 'new_message').map((f) => f.data.seq);
        const problems = [];
        const start = seqs.indexOf(since + 1);
        const after = seqs.slice(Math.max(0, start));
        if (start < 0) problems.push(`no seq ${since + 1}`);
        if (after.some((q) => q <= since)) problems.push(`${after.filter((q) => q <= since).length} at or below since_seq ${since} after the replay began`);
        const back = after.findIndex((q, i) => i > 0 && q <= after[i - 1]);
        if (back > 0) problems.push(`seq ${after[back - 1]} then ${after[back]}`);
        if (new Set(seqs).size !== seqs.length) problems.push('a seq twice');
        if (!frames.some((f) => f.type === 'thread_subscribed')) problems.push('no thread_subscribed');
        if (problems.length) failures.push(`trial ${trial}: ${problems.join('; ')}`);
      }
      assert.ok(sent > 1000, `the thread was busy: ${sent} sent`);
      assert.deepEqual(senders.flatMap((s) => s.all((f) => f.type === 'error').map((f) => f.code)), [], 'no send refused');
      assert.deepEqual(failures, []);
    } finally {
      stop = true;
      await traffic;
    }
  });
});
