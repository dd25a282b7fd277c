// Safe retries: a repeated client_msg_id from the same sender in the same
// thread returns the original message and stores nothing new.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './harness.mjs';

describe('safe retries with client_msg_id', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('WebSocket: the same client_msg_id twice returns the same id and seq, and history has it once', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);
    const first = await aliceWs.sendMessage({ username: bob.username, content: 'retry me', client_msg_id: 'retry-1' });
    const second = await aliceWs.sendMessage({ thread_id: first.thread_id, content: 'retry me', client_msg_id: 'retry-1' });
    assert.equal(second.id, first.id, 'the retry returns the original message id');
    assert.equal(second.seq, first.seq, 'the retry returns the original seq');
    assert.equal(second.client_msg_id, 'retry-1');

    const history = await server.history(alice.token, first.thread_id);
    assert.deepEqual(history.map((m) => m.id), [first.id], 'history holds the message once');

    await bobWs.next((f) => f.type === 'new_message' && f.data.id === first.id, 5000, 'the message at Bob');
    await bobWs.expectNone((f) => f.type === 'new_message', 500, 'a second new_message for the retried message');

    const next = await aliceWs.sendMessage({ thread_id: first.thread_id, content: 'after the retry' });
    assert.equal(next.seq, first.seq + 1, 'the retry consumed no seq');
  });

  // A retry publishes its original again (a node may have died before
  // delivering it); a connection takes it only if it was sent some of the
  // thread and not this message. These connections were each sent it, or
  // nothing of the thread since they opened: none gets it twice or out of order.
  it('a retry sends nothing again to connections that have the message or nothing of the thread, nor to the sender', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);
    const sent = [];
    for (let i = 1; i <= 3; i++) sent.push(await aliceWs.sendMessage({ thread_id: thread.id, content: `m${i}`, client_msg_id: `r-${i}` }));
    await bobWs.next((f) => f.type === 'new_message' && f.data.seq === 3, 5000, 'the third message at Bob');
    // A second device of Bob's, up to date: its subscribe replays nothing.
    const bobTablet = await server.connect(bob);
    const subscribed = await bobTablet.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 3 });
    assert.equal(subscribed.type, 'thread_subscribed');
    // Alice retries the first message twice, on her connection and over REST.
    const retried = await aliceWs.sendMessage({ thread_id: thread.id, content: 'm1', client_msg_id: 'r-1' });
    assert.equal(retried.id, sent[0].id);
    const rest = await server.sendRest(alice.token, thread.id, { content: 'm1', client_msg_id: 'r-1' });
    assert.equal(rest.status, 200);
    const after = await aliceWs.sendMessage({ thread_id: thread.id, content: 'm4' });
    assert.equal(after.seq, 4);
    await bobWs.next((f) => f.type === 'new_message' && f.data.seq === 4, 5000, 'the fourth message at Bob');
    await bobTablet.next((f) => f.type === 'new_message' && f.data.seq === 4, 5000, 'the fourth message at the tablet');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const seqs = (c) => c.all((f) => f.type === 'new_message').map((f) => f.data.seq);
    assert.deepEqual(seqs(bobWs), [1, 2, 3, 4], 'the phone: each once, in order');
    assert.deepEqual(seqs(bobTablet), [4], 'the tablet: only what came after it caught up, nothing refilled');
    assert.deepEqual(seqs(aliceWs), [], 'the sender: message_sent only');
  });

  // A device whose answer was lost reconnects, subscribes from 0 and retries
  // its unanswered send at once: the retry's message_sent takes its seq's
  // place after the older messages the replay is still sending. Sent ahead
  // of them, a client that resumes from the highest seq it has seen would,
  // after one more drop, never get them.
  it('a retry answered during a replay of its thread comes in seq order, after the older messages', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    await server.sendBacklog(bob, thread.id, 900);
    const stored = await server.sendRest(alice.token, thread.id, { content: 'answer lost', client_msg_id: 'lost-answer' });
    assert.equal(stored.status, 201, stored.text);
    const ws = await server.connect(alice);
    ws.send({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0, request_id: 'sub' });
    ws.send({ type: 'send_message', thread_id: thread.id, content: 'answer lost', client_msg_id: 'lost-answer', request_id: 'retry' });
    await ws.next((f) => f.request_id === 'sub', 20000, 'thread_subscribed');
    const order = ws.all((f) => f.type === 'new_message' || f.request_id === 'retry')
      .map((f) => (f.type === 'new_message' ? f.data.seq : `answer ${f.data?.seq}`));
    const at = order.indexOf('answer 901');
    assert.ok(at >= 0, `the retry was answered with the original: ${order.slice(-3)}`);
    assert.deepEqual(order.slice(0, at), Array.from({ length: 900 }, (_, i) => i + 1), 'seqs 1-900 first, in order');
  });

  it('WebSocket: a retry by username (thread created on first use) returns the original', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const first = await aliceWs.sendMessage({ username: bob.username, content: 'hello', client_msg_id: 'by-name' });
    const second = await aliceWs.sendMessage({ username: bob.username, content: 'hello', client_msg_id: 'by-name' });
    assert.equal(second.id, first.id);
    assert.equal(second.thread_id, first.thread_id);
    assert.equal((await server.history(bob.token, first.thread_id)).length, 1);
  });

  it('WebSocket: concurrent duplicates on two connections of the sender store one message', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const ws1 = await server.connect(alice);
    const ws2 = await server.connect(alice);
    const attempts = [];
    for (let i = 0; i < 5; i++) {
      attempts.push(ws1.sendMessage({ thread_id: thread.id, content: 'racy', client_msg_id: 'race-1' }));
      attempts.push(ws2.sendMessage({ thread_id: thread.id, content: 'racy', client_msg_id: 'race-1' }));
    }
    const results = await Promise.all(attempts);
    assert.equal(new Set(results.map((m) => m.id)).size, 1, 'every attempt answers the same message');
    assert.equal((await server.history(bob.token, thread.id)).length, 1, 'stored once');
  });

  it('REST: the second POST with the same client_msg_id answers 200 with the original, not 201', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const body = { content: 'rest retry', client_msg_id: 'rest-1' };
    const r1 = await server.sendRest(alice.token, thread.id, body);
    assert.equal(r1.status, 201, `first POST: ${r1.text}`);
    const r2 = await server.sendRest(alice.token, thread.id, body);
    assert.equal(r2.status, 200, `second POST should answer 200: ${r2.text}`);
    assert.equal(r2.body.data.id, r1.body.data.id, 'same message id');
    assert.equal(r2.body.data.seq, r1.body.data.seq, 'same seq');
    assert.equal((await server.history(alice.token, thread.id)).length, 1, 'history holds it once');
  });

  it('WebSocket then REST with the same client_msg_id: one message', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const viaWs = await aliceWs.sendMessage({ username: bob.username, content: 'cross', client_msg_id: 'cross-1' });
    const viaRest = await server.sendRest(alice.token, viaWs.thread_id, { content: 'cross', client_msg_id: 'cross-1' });
    assert.equal(viaRest.status, 200, `REST retry of a WebSocket message: ${viaRest.text}`);
    assert.equal(viaRest.body.data.id, viaWs.id);
    assert.equal((await server.history(alice.token, viaWs.thread_id)).length, 1);
  });

  it('the same client_msg_id from two different senders makes two messages', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const r1 = await server.sendRest(alice.token, thread.id, { content: 'from alice', client_msg_id: 'shared-id' });
    const r2 = await server.sendRest(bob.token, thread.id, { content: 'from bob', client_msg_id: 'shared-id' });
    assert.equal(r1.status, 201);
    assert.equal(r2.status, 201, `another sender's message with the same client_msg_id is new: ${r2.text}`);
    assert.notEqual(r2.body.data.id, r1.body.data.id);
    assert.equal((await server.history(alice.token, thread.id)).length, 2);
  });

  it('the same client_msg_id in two different threads makes two messages', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const t1 = await server.createDirect(alice, bob);
    const t2 = await server.createDirect(alice, carol);
    const r1 = await server.sendRest(alice.token, t1.id, { content: 'to bob', client_msg_id: 'same' });
    const r2 = await server.sendRest(alice.token, t2.id, { content: 'to carol', client_msg_id: 'same' });
    assert.equal(r1.status, 201);
    assert.equal(r2.status, 201, `same client_msg_id in another thread is new: ${r2.text}`);
    assert.notEqual(r2.body.data.id, r1.body.data.id);
  });

  it('messages without client_msg_id are never merged', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const a = await aliceWs.sendMessage({ username: bob.username, content: 'same text' });
    const b = await aliceWs.sendMessage({ thread_id: a.thread_id, content: 'same text' });
    assert.notEqual(a.id, b.id);
    assert.equal(b.seq, a.seq + 1);
  });
});
