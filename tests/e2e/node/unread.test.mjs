// Unread counts and marking read: REST unread-count, thread listing,
// POST mark-read and the WebSocket mark_as_read all agree.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, sleep } from './harness.mjs';

async function unread(server, user) {
  const res = await server.http('GET', '/api/chat/unread-count', { token: user.token });
  assert.equal(res.status, 200, `unread-count answered ${res.status}: ${res.text}`);
  const data = res.body.data;
  assert.equal(typeof data.unread_count, 'number', 'data.unread_count is a number');
  assert.ok(Array.isArray(data.threads), 'data.threads is a list');
  const perThread = new Map(data.threads.map((t) => [t.thread_id, t.unread_count]));
  const sum = data.threads.reduce((s, t) => s + t.unread_count, 0);
  assert.equal(data.unread_count, sum, 'the total is the sum of the per-thread counts');
  return { total: data.unread_count, perThread };
}

async function listedUnread(server, user, threadId) {
  const res = await server.http('GET', '/api/chat/threads', { token: user.token });
  assert.equal(res.status, 200);
  const t = res.body.data.threads.find((x) => x.id === threadId);
  assert.ok(t, `thread ${threadId} listed`);
  return t.unread_count;
}

// Polls (bounded) until the unread count of a thread reaches the expected value.
async function waitUnread(server, user, threadId, expected, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
    last = (await unread(server, user)).perThread.get(threadId) ?? 0;
    if (last === expected) return;
    await sleep(50);
  }
  assert.equal(last, expected, `unread count of the thread settles at ${expected}`);
}

describe('unread counts and mark-read', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('counts messages from others per thread, and the thread listing agrees', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const t1 = await server.createDirect(alice, bob);
    const t2 = await server.createDirect(carol, bob);
    for (let i = 0; i < 3; i++) assert.equal((await server.sendRest(alice.token, t1.id, { content: `a${i}` })).status, 201);
    for (let i = 0; i < 2; i++) assert.equal((await server.sendRest(carol.token, t2.id, { content: `c${i}` })).status, 201);

    const bobUnread = await unread(server, bob);
    assert.equal(bobUnread.perThread.get(t1.id), 3, 'three unread from Alice');
    assert.equal(bobUnread.perThread.get(t2.id), 2, 'two unread from Carol');
    assert.equal(bobUnread.total, 5);
    assert.equal(await listedUnread(server, bob, t1.id), 3, 'thread listing shows the same count');
    assert.equal(await listedUnread(server, bob, t2.id), 2);

    const aliceUnread = await unread(server, alice);
    assert.equal(aliceUnread.perThread.get(t1.id) ?? 0, 0, 'own messages are never unread');
  });

  it('POST mark-read zeroes one thread only and answers with thread_id and user_id', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const t1 = await server.createDirect(alice, bob);
    const t2 = await server.createDirect(carol, bob);
    await server.sendRest(alice.token, t1.id, { content: 'one' });
    await server.sendRest(alice.token, t1.id, { content: 'two' });
    await server.sendRest(carol.token, t2.id, { content: 'three' });

    const res = await server.http('POST', `/api/chat/mark-read/${t1.id}`, { token: bob.token });
    assert.equal(res.status, 200, `mark-read answered ${res.status}: ${res.text}`);
    assert.equal(res.body.status, 'success');
    assert.equal(res.body.thread_id, t1.id, 'top-level thread_id');
    assert.equal(res.body.user_id, bob.id, 'top-level user_id');

    const after = await unread(server, bob);
    assert.equal(after.perThread.get(t1.id) ?? 0, 0, 'the marked thread has no unread');
    assert.equal(after.perThread.get(t2.id), 1, 'the other thread keeps its unread');
    assert.equal(after.total, 1);
    assert.equal(await listedUnread(server, bob, t1.id), 0);
  });

  it('new messages after mark-read count again', async () => {
    const [alice, bob] = await server.registerMany(2);
    const t = await server.createDirect(alice, bob);
    await server.sendRest(alice.token, t.id, { content: 'before' });
    await server.http('POST', `/api/chat/mark-read/${t.id}`, { token: bob.token });
    await server.sendRest(alice.token, t.id, { content: 'after 1' });
    await server.sendRest(alice.token, t.id, { content: 'after 2' });
    assert.equal((await unread(server, bob)).perThread.get(t.id), 2);
  });

  it('WebSocket mark_as_read with up_to_seq marks a prefix, sends a read_receipt, and REST agrees', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);
    const m1 = await aliceWs.sendMessage({ username: bob.username, content: 'r1' });
    for (let i = 2; i <= 5; i++) await aliceWs.sendMessage({ thread_id: m1.thread_id, content: `r${i}` });
    await waitUnread(server, bob, m1.thread_id, 5);

    bobWs.send({ type: 'mark_as_read', thread_id: m1.thread_id, up_to_seq: 3 });
    const receipt = await aliceWs.next((f) => f.type === 'read_receipt', 5000, 'read_receipt at Alice');
    assert.equal(receipt.thread_id, m1.thread_id);
    assert.equal(receipt.user_id, bob.id);
    assert.equal(receipt.seq, 3);
    await waitUnread(server, bob, m1.thread_id, 2);
    assert.equal(await listedUnread(server, bob, m1.thread_id), 2);

    bobWs.send({ type: 'mark_as_read', thread_id: m1.thread_id });
    const all = await aliceWs.next((f) => f.type === 'read_receipt', 5000, 'second read_receipt at Alice');
    assert.equal(all.seq, 5, 'without up_to_seq everything is read');
    await waitUnread(server, bob, m1.thread_id, 0);
  });

  // A REST client that sends up_to_seq as the WebSocket frame carries it, in
  // the body, marks that prefix: it was ignored, and the whole thread read.
  it('POST mark-read takes up_to_seq from the query or the JSON body', async () => {
    const [alice, bob] = await server.registerMany(2);
    const t = await server.createDirect(alice, bob);
    for (let i = 1; i <= 5; i++) await server.sendRest(alice.token, t.id, { content: `p${i}` });

    const byBody = await server.http('POST', `/api/chat/mark-read/${t.id}`, { token: bob.token, body: { up_to_seq: 2 } });
    assert.equal(byBody.status, 200, byBody.text);
    assert.equal(byBody.body.data.last_read_seq, 2, 'the body\'s up_to_seq is honoured');
    assert.equal((await unread(server, bob)).perThread.get(t.id), 3);

    const byQuery = await server.http('POST', `/api/chat/mark-read/${t.id}?up_to_seq=4`, { token: bob.token });
    assert.equal(byQuery.body.data.last_read_seq, 4);
    assert.equal((await unread(server, bob)).perThread.get(t.id), 1);

    for (const body of [{ up_to_seq: '5' }, { up_to_seq: -1 }, { up_to_seq: 1.5 }, '{"up_to_seq":']) {
      const bad = await server.http('POST', `/api/chat/mark-read/${t.id}`, { token: bob.token, body });
      assert.equal(bad.status, 400, `${JSON.stringify(body)}: ${bad.text}`);
      assert.equal(bad.body.code, typeof body === 'string' ? 'invalid_json' : 'invalid_field');
    }
    // With the query giving the mark, a malformed body is still refused.
    const badWithQuery = await server.http('POST', `/api/chat/mark-read/${t.id}?up_to_seq=5`, { token: bob.token, body: '{bad json' });
    assert.equal(badWithQuery.status, 400, badWithQuery.text);
    assert.equal((await unread(server, bob)).perThread.get(t.id), 1, 'a refused mark-read changes nothing');

    const all = await server.http('POST', `/api/chat/mark-read/${t.id}`, { token: bob.token, body: {} });
    assert.equal(all.body.data.last_read_seq, 5, 'without up_to_seq everything is read');
  });

  it('mark_as_read accepts the chatId alias', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);
    const m = await aliceWs.sendMessage({ username: bob.username, content: 'alias' });
    bobWs.send({ type: 'mark_as_read', chatId: m.thread_id });
    await aliceWs.next((f) => f.type === 'read_receipt' && f.thread_id === m.thread_id, 5000, 'read_receipt');
    await waitUnread(server, bob, m.thread_id, 0);
  });

  it('REST mark-read also sends a read_receipt to the other participants', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const m = await aliceWs.sendMessage({ username: bob.username, content: 'read me' });
    const res = await server.http('POST', `/api/chat/mark-read/${m.thread_id}`, { token: bob.token });
    assert.equal(res.status, 200);
    const receipt = await aliceWs.next((f) => f.type === 'read_receipt', 5000, 'read_receipt at Alice');
    assert.equal(receipt.user_id, bob.id);
    assert.equal(receipt.seq, 1);
  });

  it('marking read never moves backwards', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);
    const m = await aliceWs.sendMessage({ username: bob.username, content: 'x1' });
    await aliceWs.sendMessage({ thread_id: m.thread_id, content: 'x2' });
    await server.http('POST', `/api/chat/mark-read/${m.thread_id}`, { token: bob.token });
    bobWs.send({ type: 'mark_as_read', thread_id: m.thread_id, up_to_seq: 1 });
    await bobWs.ping();
    await sleep(200);
    assert.equal((await unread(server, bob)).perThread.get(m.thread_id) ?? 0, 0, 'an older up_to_seq does not unread messages');
  });

  it('a group counts per participant', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const group = await server.createGroup(alice, [bob, carol]);
    // System messages of the group's creation, if any, are counted before we start.
    const countOf = async (u) => (await unread(server, u)).perThread.get(group.id) ?? 0;
    const base = { alice: await countOf(alice), carol: await countOf(carol) };
    await server.sendRest(alice.token, group.id, { content: 'g1' });
    await server.sendRest(bob.token, group.id, { content: 'g2' });
    await server.http('POST', `/api/chat/mark-read/${group.id}`, { token: bob.token });
    assert.equal((await unread(server, bob)).perThread.get(group.id) ?? 0, 0, 'Bob read everything');
    assert.equal((await unread(server, carol)).perThread.get(group.id), base.carol + 2, 'Carol has both unread');
    assert.equal(await countOf(alice), base.alice + 1, "Alice has Bob's message unread");
  });

  // Joining sets a member's marks to the thread's end without their reading
  // anything; those marks stay with the thread when they leave, and counted
  // for every message they made what nobody read show as read.
  it("a member added and removed without reading leaves no read or delivered ticks on what came before", async () => {
    const [alice, bob, xena] = await server.registerMany(3);
    const group = await server.createGroup(alice, [bob]);
    for (const content of ['m1', 'm2', 'm3']) await server.sendRest(alice.token, group.id, { content });
    const statuses = async () => (await server.history(alice.token, group.id))
      .filter((m) => /^m\d$/.test(m.content)).map((m) => `${m.content}:${m.status}`);
    assert.deepEqual(await statuses(), ['m1:sent', 'm2:sent', 'm3:sent']);
    const path = `/api/chat/threads/${group.id}/participants`;
    assert.equal((await server.http('POST', path, { token: alice.token, body: { participant_ids: [xena.id] } })).status, 200);
    await server.sendRest(alice.token, group.id, { content: 'm4' });
    assert.equal((await server.http('POST', `/api/chat/mark-read/${group.id}`, { token: xena.token })).status, 200);
    assert.equal((await server.http('DELETE', `${path}/${xena.id}`, { token: alice.token })).status, 200);
    assert.deepEqual(await statuses(), ['m1:sent', 'm2:sent', 'm3:sent', 'm4:read'],
      'what xena read stays read; what came before she joined was read by nobody');
    // Said while she was out, then she is added and removed again: her
    // second membership's marks do not reach back over the time between.
    for (const content of ['m5', 'm6']) await server.sendRest(alice.token, group.id, { content });
    assert.equal((await server.http('POST', path, { token: alice.token, body: { participant_ids: [xena.id] } })).status, 200);
    assert.equal((await server.http('DELETE', `${path}/${xena.id}`, { token: alice.token })).status, 200);
    assert.deepEqual(await statuses(), ['m1:sent', 'm2:sent', 'm3:sent', 'm4:read', 'm5:sent', 'm6:sent'],
      'nobody read what was said while xena was out');
  });
});
