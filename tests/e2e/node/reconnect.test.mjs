// Reconnect and catch up: subscribe_thread with since_seq replays exactly the
// missed messages as new_message frames, then thread_subscribed, then live.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startServer, sleep, newUuid, assertWsError, rawUpgrade } from './harness.mjs';

const newMessagesIn = (ws, threadId) =>
  ws.all((f) => f.type === 'new_message' && f.data.thread_id === threadId).map((f) => f.data);

// Frames of a thread (new_message and thread_subscribed), in arrival order.
const threadTimeline = (ws, threadId) => ws.all((f) =>
  (f.type === 'new_message' && f.data.thread_id === threadId) || (f.type === 'thread_subscribed' && f.thread_id === threadId));

describe('reconnect with subscribe_thread since_seq', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('replays exactly the missed messages in order, then thread_subscribed, then live ones, none twice', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    let bobWs = await server.connect(bob);

    // Bob sees 1..3 live.
    const first = [];
    first.push(await aliceWs.sendMessage({ username: bob.username, content: 'm1' }));
    const threadId = first[0].thread_id;
    for (let i = 2; i <= 3; i++) first.push(await aliceWs.sendMessage({ thread_id: threadId, content: `m${i}` }));
    for (const m of first) await bobWs.next((f) => f.type === 'new_message' && f.data.id === m.id, 5000, `m${m.seq}`);
    const lastSeen = 3;
    bobWs.close();
    await bobWs.waitClose();

    // 4..8 while Bob is away.
    const missed = [];
    for (let i = 4; i <= 8; i++) missed.push(await aliceWs.sendMessage({ thread_id: threadId, content: `m${i}` }));

    bobWs = await server.connect(bob);
    const subscribed = await bobWs.request({ type: 'subscribe_thread', thread_id: threadId, since_seq: lastSeen });
    assert.equal(subscribed.type, 'thread_subscribed', `subscribe_thread answered ${JSON.stringify(subscribed)}`);
    assert.equal(subscribed.thread_id, threadId);
    assert.equal(subscribed.last_seq, 8, 'last_seq is the last seq of the thread');

    const replayed = newMessagesIn(bobWs, threadId);
    assert.deepEqual(replayed.map((m) => m.seq), [4, 5, 6, 7, 8], 'the missed messages, in order, before thread_subscribed');
    assert.deepEqual(replayed.map((m) => m.id), missed.map((m) => m.id));
    assert.deepEqual(replayed.map((m) => m.content), ['m4', 'm5', 'm6', 'm7', 'm8']);

    // Live after the subscription.
    const live = [];
    for (let i = 9; i <= 10; i++) live.push(await aliceWs.sendMessage({ thread_id: threadId, content: `m${i}` }));
    for (const m of live) await bobWs.next((f) => f.type === 'new_message' && f.data.id === m.id, 5000, `live m${m.seq}`);
    await bobWs.expectNone(() => false, 300);

    const timeline = threadTimeline(bobWs, threadId);
    const order = timeline.map((f) => (f.type === 'thread_subscribed' ? 'S' : f.data.seq));
    assert.deepEqual(order, [4, 5, 6, 7, 8, 'S', 9, 10], 'replay, then thread_subscribed, then live, each once');
  });

  it('since_seq 0 replays the whole thread', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const m1 = await aliceWs.sendMessage({ username: bob.username, content: 'one' });
    await aliceWs.sendMessage({ thread_id: m1.thread_id, content: 'two' });

    const bobWs = await server.connect(bob);
    const reply = await bobWs.request({ type: 'subscribe_thread', thread_id: m1.thread_id, since_seq: 0 });
    assert.equal(reply.type, 'thread_subscribed');
    assert.equal(reply.last_seq, 2);
    assert.deepEqual(newMessagesIn(bobWs, m1.thread_id).map((m) => m.content), ['one', 'two']);
  });

  it('since_seq equal to the last seq replays nothing', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const m1 = await aliceWs.sendMessage({ username: bob.username, content: 'only' });
    const bobWs = await server.connect(bob);
    const reply = await bobWs.request({ type: 'subscribe_thread', thread_id: m1.thread_id, since_seq: 1 });
    assert.equal(reply.type, 'thread_subscribed');
    assert.equal(reply.last_seq, 1);
    assert.equal(newMessagesIn(bobWs, m1.thread_id).length, 0, 'nothing replayed');
  });

  it('since_seq past the last seq replays nothing and answers the thread\'s last_seq, not the client\'s number', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const m1 = await aliceWs.sendMessage({ username: bob.username, content: 'one' });
    await aliceWs.sendMessage({ thread_id: m1.thread_id, content: 'two' });
    const bobWs = await server.connect(bob);
    const reply = await bobWs.request({ type: 'subscribe_thread', thread_id: m1.thread_id, since_seq: 1000 });
    assert.equal(reply.type, 'thread_subscribed');
    assert.equal(reply.last_seq, 2, 'the thread has two messages');
    assert.equal(newMessagesIn(bobWs, m1.thread_id).length, 0, 'nothing replayed');
    // Live delivery goes on after it: the next message is past last_seq.
    const m3 = await aliceWs.sendMessage({ thread_id: m1.thread_id, content: 'three' });
    const live = await bobWs.next((f) => f.type === 'new_message' && f.data.id === m3.id, 5000, 'the next message live');
    assert.equal(live.data.seq, 3);
  });

  it('messages sent while the subscription is being served are neither lost nor doubled', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const m1 = await aliceWs.sendMessage({ username: bob.username, content: 'r1' });
    const threadId = m1.thread_id;
    // More than one replay page (500), so the replay is likely still running
    // when the racing messages commit (the assertions hold either way). Sent
    // in bursts: seqs follow send order on one connection.
    const backlogSize = 540;
    const backlog = [m1];
    for (let i = 2; i <= backlogSize; i += 60) {
      const burst = [];
      for (let j = i; j < i + 60 && j <= backlogSize; j++) burst.push(aliceWs.sendMessage({ thread_id: threadId, content: `r${j}` }, 10000));
      backlog.push(...await Promise.all(burst));
    }
    const total = backlogSize + 20;

    const bobWs = await server.connect(bob);
    // Subscribe from 0, then let Alice send while the replay runs. The ping
    // behind the subscribe is a barrier: its pong means the server has read
    // the subscribe frame. Without it a message could commit before the
    // server reads that frame; it would go out live, ahead of the replay
    // (docs/protocol.md), and seq order would depend on scheduling.
    const subscribe = bobWs.request({ type: 'subscribe_thread', thread_id: threadId, since_seq: 0 }, 20000);
    await bobWs.ping();
    const racing = [];
    for (let i = backlogSize + 1; i <= total; i++) racing.push(aliceWs.sendMessage({ thread_id: threadId, content: `r${i}` }, 10000));
    const subscribed = await subscribe;
    const raced = await Promise.all(racing);
    assert.equal(subscribed.type, 'thread_subscribed');

    const allIds = [...backlog, ...raced].map((m) => m.id);
    for (let i = 0; i < total; i++) {
      if (newMessagesIn(bobWs, threadId).length >= total) break;
      await bobWs.next((f) => f.type === 'new_message' && f.data.thread_id === threadId, 5000, 'the remaining messages').catch(() => {});
    }
    await bobWs.expectNone(() => false, 300);

    const seen = newMessagesIn(bobWs, threadId);
    const seqs = seen.map((m) => m.seq);
    assert.deepEqual(seqs, Array.from({ length: total }, (_, i) => i + 1), 'every message exactly once, in seq order');
    assert.deepEqual(new Set(seen.map((m) => m.id)), new Set(allIds));

    // thread_subscribed separates replay (<= last_seq) from live (> last_seq).
    const timeline = threadTimeline(bobWs, threadId);
    const cut = timeline.findIndex((f) => f.type === 'thread_subscribed');
    const before = timeline.slice(0, cut).map((f) => f.data.seq);
    const afterSub = timeline.slice(cut + 1).map((f) => f.data.seq);
    assert.ok(before.every((s) => s <= subscribed.last_seq), `replayed seqs ${before} are <= last_seq ${subscribed.last_seq}`);
    assert.ok(afterSub.every((s) => s > subscribed.last_seq), `live seqs ${afterSub} are > last_seq ${subscribed.last_seq}`);
  });

  it('a message the client sends during the replay of its thread is answered in its seq place', async () => {
    // message_sent stands for the sender's own message in the thread's
    // order: it must not overtake the older messages still being replayed.
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    await server.sendBacklog(alice, thread.id, 1200);
    const bobWs = await server.connect(bob);
    const subscribe = bobWs.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 }, 30000);
    await bobWs.ping();  // the server has read the subscribe: the replay runs
    const mine = await bobWs.sendMessage({ thread_id: thread.id, content: 'mine' }, 30000);
    const subscribed = await subscribe;
    assert.equal(mine.seq, 1201);
    // 1200 when the replay ended before the send committed (then there was no race to lose).
    assert.ok([1200, 1201].includes(subscribed.last_seq), `last_seq ${subscribed.last_seq}`);
    const timeline = bobWs.all((f) => (f.type === 'new_message' && f.data.thread_id === thread.id) || f.type === 'message_sent');
    const at = timeline.findIndex((f) => f.type === 'message_sent');
    assert.deepEqual(timeline.slice(0, at).map((f) => f.data.seq), Array.from({ length: 1200 }, (_, i) => i + 1),
      'every older message, in order, before the answer');
    assert.equal(timeline.length, 1201, 'nothing after it, and never its own new_message');
  });

  it('unsubscribe_thread answers thread_unsubscribed with last_seq', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const m1 = await aliceWs.sendMessage({ username: bob.username, content: 'x' });
    const bobWs = await server.connect(bob);
    await bobWs.request({ type: 'subscribe_thread', thread_id: m1.thread_id });
    const reply = await bobWs.request({ type: 'unsubscribe_thread', thread_id: m1.thread_id });
    assert.equal(reply.type, 'thread_unsubscribed', `unsubscribe_thread answered ${JSON.stringify(reply)}`);
    assert.equal(reply.thread_id, m1.thread_id);
    assert.equal(reply.last_seq, 1);
  });

  it('a reconnecting client that subscribes every thread with its last seq fills every gap across threads', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const aliceWs = await server.connect(alice);
    const carolWs = await server.connect(carol);
    const a1 = await aliceWs.sendMessage({ username: bob.username, content: 'from alice 1' });
    const c1 = await carolWs.sendMessage({ username: bob.username, content: 'from carol 1' });

    let bobWs = await server.connect(bob);
    const lastSeen = new Map([[a1.thread_id, 1], [c1.thread_id, 1]]);
    bobWs.close();
    await bobWs.waitClose();

    for (let i = 2; i <= 4; i++) await aliceWs.sendMessage({ thread_id: a1.thread_id, content: `from alice ${i}` });
    for (let i = 2; i <= 3; i++) await carolWs.sendMessage({ thread_id: c1.thread_id, content: `from carol ${i}` });

    bobWs = await server.connect(bob);
    for (const [threadId, seq] of lastSeen) {
      const r = await bobWs.request({ type: 'subscribe_thread', thread_id: threadId, since_seq: seq });
      assert.equal(r.type, 'thread_subscribed');
    }
    assert.deepEqual(newMessagesIn(bobWs, a1.thread_id).map((m) => m.content), ['from alice 2', 'from alice 3', 'from alice 4']);
    assert.deepEqual(newMessagesIn(bobWs, c1.thread_id).map((m) => m.content), ['from carol 2', 'from carol 3']);
  });

  it('a long gap (250 missed messages) is replayed completely, not one page of it', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const aliceWs = await server.connect(alice);
    for (let i = 0; i < 250; i += 25) {
      await Promise.all(Array.from({ length: 25 }, (_, j) => aliceWs.sendMessage({ thread_id: thread.id, content: `gap ${i + j}` }, 15000)));
    }
    const bobWs = await server.connect(bob);
    const reply = await bobWs.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 }, 20000);
    assert.equal(reply.type, 'thread_subscribed');
    assert.equal(reply.last_seq, 250);
    const seqs = newMessagesIn(bobWs, thread.id).map((m) => m.seq);
    assert.deepEqual(seqs, Array.from({ length: 250 }, (_, i) => i + 1), 'all 250, in order, once');
  });

  it('subscribes of a thread longer than a replay page, several at once, replay each message once', async () => {
    // A client whose reconnect logic and whose open conversation both
    // subscribe (or a Socket.IO catch-up and the client's own subscribe):
    // the replays run side by side, page by page (500 a page).
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    await server.sendBacklog(alice, thread.id, 1200);
    const bobWs = await server.connect(bob);
    const first = bobWs.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 }, 30000);
    const second = bobWs.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 20 }, 30000);
    const third = bobWs.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 }, 30000);
    for (const reply of await Promise.all([first, second, third])) assert.equal(reply.last_seq, 1200);
    const seqs = newMessagesIn(bobWs, thread.id).map((m) => m.seq);
    assert.equal(seqs.length, 1200, 'each message once');
    // Replays from different seqs may interleave (docs/protocol.md): once each, order aside.
    assert.deepEqual([...seqs].sort((x, y) => x - y), Array.from({ length: 1200 }, (_, i) => i + 1), 'every message');
  });
});


// The `auth` frame's `subscribe` list: replays that begin in the same step as
// the connection's registration, so that a busy thread's live messages wait
// behind them. A subscribe_thread sent once connection_established came can
// be overtaken by the thread's next message.
describe('auth frame with a subscribe list', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  // Opens a WebSocket with no token and sends `auth` carrying `extra`.
  async function authWith(user, extra) {
    const ws = await server.connect(user, { via: 'none' });
    ws.send({ type: 'auth', token: user.token, request_id: 'auth-1', ...extra });
    return ws;
  }

  it('replays a busy thread from since_seq before any of its live messages, each once, in seq order', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const first = await aliceWs.sendMessage({ username: bob.username, content: 'hello' });
    const threadId = first.thread_id;
    // 40 messages Bob misses, then a stream while he reconnects.
    for (let i = 0; i < 40; i++) aliceWs.send({ type: 'send_message', thread_id: threadId, content: `away ${i}`, request_id: `away-${i}` });
    await aliceWs.next((f) => f.request_id === 'away-39', 10000, 'the last missed message');
    const streamed = 300;
    let sent = 0;
    const stream = (async () => {
      const deadline = Date.now() + 20000;
      while (sent < streamed && Date.now() < deadline) {
        for (let k = 0; k < 3 && sent < streamed; k++, sent++)
          aliceWs.send({ type: 'send_message', thread_id: threadId, content: `live ${sent}`, request_id: `live-${sent}` });
        await sleep(2);
      }
    })();
    await sleep(30);  // the thread is busy before Bob comes back
    const bobWs = await authWith(bob, { subscribe: [{ thread_id: threadId, since_seq: 1, request_id: 'sub-1' }] });
    const established = await bobWs.nextOfType('connection_established', 5000);
    assert.equal(established.request_id, 'auth-1');
    const subscribed = await bobWs.next((f) => f.request_id === 'sub-1', 10000, 'thread_subscribed');
    assert.equal(subscribed.type, 'thread_subscribed', JSON.stringify(subscribed));
    assert.equal(subscribed.thread_id, threadId);
    await stream;
    assert.equal(sent, streamed, 'the stream was sent whole');
    const last = 1 + 40 + streamed;
    await bobWs.next((f) => f.type === 'new_message' && f.data.seq === last, 15000, `seq ${last}`);
    const seqs = newMessagesIn(bobWs, threadId).map((m) => m.seq);
    const want = Array.from({ length: last - 1 }, (_, i) => i + 2);
    assert.deepEqual(seqs, want, 'every message after since_seq once, in seq order');
    // thread_subscribed follows the replay: everything up to its last_seq came before it.
    const timeline = threadTimeline(bobWs, threadId).map((f) => (f.type === 'thread_subscribed' ? 'S' : f.data.seq));
    const at = timeline.indexOf('S');
    assert.ok(at >= 40, `thread_subscribed came after the 40 missed messages (at ${at})`);
    assert.equal(timeline[at - 1], subscribed.last_seq, 'its last_seq is the last message before it');
  });

  it('answers each entry as subscribe_thread does, by its own request_id; a refused entry leaves the rest', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const aliceWs = await server.connect(alice);
    const m1 = await aliceWs.sendMessage({ username: bob.username, content: 'one' });
    await aliceWs.sendMessage({ thread_id: m1.thread_id, content: 'two' });
    const other = await aliceWs.sendMessage({ username: carol.username, content: 'not for bob' });
    const carolWs = await server.connect(carol);
    const fromCarol = await carolWs.sendMessage({ username: bob.username, content: 'from carol' });
    const bobWs = await authWith(bob, {
      subscribe: [
        { thread_id: other.thread_id, since_seq: 0, request_id: 'theirs' },
        { thread_id: m1.thread_id, since_seq: 0, request_id: 'mine' },
        { thread_id: fromCarol.thread_id, request_id: 'no-since' },
      ],
    });
    await bobWs.nextOfType('connection_established', 5000);
    const refused = await bobWs.next((f) => f.request_id === 'theirs', 5000, 'the refusal');
    assert.equal(refused.type, 'error');
    assert.equal(refused.code, 'forbidden');
    const mine = await bobWs.next((f) => f.request_id === 'mine', 5000, 'thread_subscribed');
    assert.equal(mine.type, 'thread_subscribed');
    assert.equal(mine.last_seq, 2);
    const noSince = await bobWs.next((f) => f.request_id === 'no-since', 5000, 'thread_subscribed without since_seq');
    assert.equal(noSince.type, 'thread_subscribed');
    assert.equal(noSince.last_seq, 1);
    assert.deepEqual(newMessagesIn(bobWs, m1.thread_id).map((m) => m.content), ['one', 'two']);
    assert.equal(newMessagesIn(bobWs, fromCarol.thread_id).length, 0, 'without since_seq nothing is replayed');
    assert.equal(newMessagesIn(bobWs, other.thread_id).length, 0, 'nothing of a thread Bob is not in');
    await bobWs.ping();
  });

  it('a renewal (auth on an authenticated connection) with a list is refused invalid_field; the connection and its token stay', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);
    const m1 = await aliceWs.sendMessage({ username: bob.username, content: 'one' });
    await bobWs.next((f) => f.type === 'new_message' && f.data.id === m1.id, 5000, 'the live message');
    bobWs.send({ type: 'auth', token: bob.token, request_id: 'renew', subscribe: [{ thread_id: m1.thread_id, since_seq: 0, request_id: 'again' }] });
    const refused = await bobWs.next((f) => f.request_id === 'renew', 5000, 'the refusal');
    assertWsError(assert, refused, 'invalid_field', 'a list in a renewal');
    assert.match(refused.message, /subscribe_thread/);
    await bobWs.expectNone((f) => f.request_id === 'again', 300, 'an answer to the entry');
    const renewed = await bobWs.request({ type: 'auth', token: bob.token });
    assert.equal(renewed.type, 'auth_renewed', 'the same renewal without a list goes through');
    await bobWs.ping();
  });

  for (const [what, subscribe, message] of [
    ['not an array', { thread_id: newUuid() }, /field subscribe must be an array/],
    ['an entry that is not an object', ['x'], /field subscribe\[0\] must be an object/],
    ['an entry with a bad thread id', [{ thread_id: 'nope', since_seq: 0 }], /^subscribe\[0\]: .*thread_id/],
    ['an entry with a bad since_seq', [{ thread_id: newUuid(), since_seq: -1 }], /^subscribe\[0\]: .*since_seq/],
    ['an entry with a bad request_id', [{ thread_id: newUuid(), request_id: {} }], /subscribe\[0\]\.request_id/],
    ['more than 500 entries', Array.from({ length: 501 }, () => ({ thread_id: newUuid(), since_seq: 0 })), /at most 500 entries/],
    ['a thread listed twice', ((id) => [{ thread_id: id, since_seq: 0 }, { thread_id: id, since_seq: 3 }])(newUuid()),
      /field subscribe\[1\]\.thread_id is listed twice/],
  ]) {
    it(`a subscribe list that is ${what} makes the auth frame bad: invalid_field, close 4401, nothing begun`, async () => {
      const [bob] = await server.registerMany(1);
      const ws = await authWith(bob, { subscribe });
      const error = await ws.next((f) => f.request_id === 'auth-1', 5000, 'the refusal');
      assertWsError(assert, error, 'invalid_field', what);
      assert.match(error.message, message);
      const closed = await ws.waitClose(5000);
      assert.equal(closed.code, 4401);
      assert.equal(ws.all((f) => f.type === 'connection_established').length, 0);
    });
  }

  it('past the rate limit, the first entry refused answers rate_limited and the rest is not run; the connection stays', async () => {
    const limited = await startServer({ args: ['--rate-burst', '20', '--rate-per-second', '1'] });
    try {
      const [bob] = await limited.registerMany(1);
      const ws = await limited.connect(bob, { via: 'none' });
      const subscribe = Array.from({ length: 30 }, (_, i) => ({ thread_id: newUuid(), since_seq: 0, request_id: `e${i}` }));
      ws.send({ type: 'auth', token: bob.token, request_id: 'auth-1', subscribe });
      await ws.nextOfType('connection_established', 5000);
      // The auth frame took one token: entries 0-18 run (each refused: not Bob's threads), 19 is refused by the limit.
      for (let i = 0; i < 19; i++) assertWsError(assert, await ws.next((f) => f.request_id === `e${i}`, 5000, `e${i}`), 'forbidden', `e${i}`);
      assertWsError(assert, await ws.next((f) => f.request_id === 'e19', 5000, 'e19'), 'rate_limited', 'e19');
      await ws.expectNone((f) => /^e(2\d)$/.test(f.request_id ?? ''), 500, 'an answer to an entry after the refused one');
      await sleep(1100);
      await ws.ping();
      assert.equal(limited.log.filter((l) => l.includes('event=session_close')).length, 0, 'no close');
    } finally {
      await limited.stop();
    }
  });

  it('an auth frame with a list sent before the first auth is answered is refused invalid_field', async () => {
    const [bob] = await server.registerMany(1);
    const { socket } = await rawUpgrade(server.port, '/ws');
    // Both frames in one write: the server reads the second while the first's token is checked.
    const frame = (text) => {
      const payload = Buffer.from(text);
      const mask = crypto.randomBytes(4);
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      return Buffer.concat([Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]), mask, payload]);
    };
    let text = '';
    socket.on('data', (d) => { text += d.toString('latin1'); });
    socket.write(Buffer.concat([
      frame(JSON.stringify({ type: 'auth', token: bob.token, request_id: 'first' })),
      frame(JSON.stringify({ type: 'auth', token: bob.token, request_id: 'second', subscribe: [{ thread_id: newUuid() }] })),
    ]));
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && !(text.includes('"second"') && text.includes('connection_established'))) await sleep(20);
    socket.destroy();
    assert.match(text, /"type":"error","request_id":"second","code":"invalid_field"/);
    assert.match(text, /"type":"connection_established"/);
  });
});
