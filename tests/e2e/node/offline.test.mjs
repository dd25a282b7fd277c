// GET /api/chat/offline-messages: chaining the returned last_check_time never
// skips or repeats a message, even when many messages share a millisecond.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, ISO_RE, sleep } from './harness.mjs';

async function offline(server, token, since) {
  const res = await server.http('GET', `/api/chat/offline-messages?last_check_time=${encodeURIComponent(since)}`, { token });
  assert.equal(res.status, 200, `offline-messages answered ${res.status}: ${res.text}`);
  const data = res.body.data;
  assert.ok(Array.isArray(data.messages), 'data.messages is a list');
  assert.equal(data.count, data.messages.length, 'data.count is the number of messages returned');
  assert.equal(typeof data.last_check_time, 'string', 'data.last_check_time is a string');
  assert.match(data.last_check_time, ISO_RE, `last_check_time is ISO 8601: ${data.last_check_time}`);
  return data;
}

// Chains calls until one returns nothing (bounded); returns every message in order.
async function drain(server, token, since, maxCalls = 200) {
  const got = [];
  let cursor = since;
  for (let call = 0; call < maxCalls; call++) {
    const data = await offline(server, token, cursor);
    cursor = data.last_check_time;
    if (data.messages.length === 0) return { messages: got, cursor, calls: call + 1 };
    got.push(...data.messages);
  }
  throw new Error(`offline-messages still returning messages after ${maxCalls} chained calls`);
}

// Sends n messages as one burst of frames (no waiting in between) and resolves the acks.
function burst(ws, threadId, n, prefix) {
  const acks = [];
  for (let i = 0; i < n; i++) acks.push(ws.sendMessage({ thread_id: threadId, content: `${prefix} ${i}`, client_msg_id: `${prefix}-${i}` }, 15000));
  return Promise.all(acks);
}

describe('offline messages', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('50 messages sent in a burst come back exactly once over chained calls, own messages excluded', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);
    const start = new Date(Date.now() - 60_000).toISOString();

    const own = await burst(bobWs, thread.id, 3, 'bob');  // Bob's own: never offline for Bob
    const sent = await burst(aliceWs, thread.id, 50, 'alice');
    const perMs = new Map();
    for (const m of sent) perMs.set(m.created_at, (perMs.get(m.created_at) || 0) + 1);
    // Not an assertion on the server, just a note that the test did stress same-millisecond chaining.
    const crowded = Math.max(...perMs.values());

    const { messages } = await drain(server, bob.token, start);
    const ids = messages.map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, 'no message repeated across chained calls');
    assert.deepEqual(new Set(ids), new Set(sent.map((m) => m.id)),
      `exactly Alice's 50 messages (largest same-millisecond group: ${crowded})`);
    assert.ok(messages.every((m) => m.sender_id === alice.id), 'none of Bob\'s own messages');
    assert.ok(!ids.some((id) => own.some((m) => m.id === id)), 'own messages excluded');
  });

  it('a page stops at about 1 MiB of content and the chain still returns every message once', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const aliceWs = await server.connect(alice);
    const start = new Date(Date.now() - 60_000).toISOString();
    // 300 messages of 4,000 bytes: 1.2 MB, past one page's content.
    const text = (i) => `${String(i).padStart(4, '0')} ${'x'.repeat(3995)}`;
    const sent = [];
    for (let i = 0; i < 300; i += 50) {
      const acks = [];
      for (let k = i; k < i + 50; k++) acks.push(aliceWs.sendMessage({ thread_id: thread.id, content: text(k), client_msg_id: `big-${k}` }, 15000));
      sent.push(...await Promise.all(acks));
    }
    const first = await offline(server, bob.token, start);
    assert.equal(first.has_more, true, 'more than one page of content');
    const bytes = first.messages.reduce((n, m) => n + m.content.length, 0);
    assert.ok(bytes <= (1 << 20) && first.messages.length < 300, `the first page holds ${first.messages.length} messages, ${bytes} bytes`);
    const { messages } = await drain(server, bob.token, start);
    assert.deepEqual(messages.map((m) => m.id), sent.map((m) => m.id), 'every message, once, in order');
  });

  it('chaining while messages are being sent skips nothing and repeats nothing', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const aliceWs = await server.connect(alice);
    let cursor = new Date(Date.now() - 1000).toISOString();

    const seen = [];
    let sending = true;
    const sender = (async () => {
      const all = [];
      for (let round = 0; round < 5; round++) {
        all.push(...await burst(aliceWs, thread.id, 10, `round${round}`));
        await sleep(5);
      }
      sending = false;
      return all;
    })();
    for (let call = 0; call < 2000 && sending; call++) {
      const data = await offline(server, bob.token, cursor);
      seen.push(...data.messages);
      cursor = data.last_check_time;
    }
    const sent = await sender;
    const rest = await drain(server, bob.token, cursor);
    seen.push(...rest.messages);

    const ids = seen.map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, 'no message repeated');
    assert.deepEqual(new Set(ids), new Set(sent.map((m) => m.id)), 'no message skipped');
  });

  it('after draining, a chained call returns only what is new', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const aliceWs = await server.connect(alice);
    await burst(aliceWs, thread.id, 5, 'old');
    const { cursor } = await drain(server, bob.token, new Date(Date.now() - 60_000).toISOString());

    const fresh = await burst(aliceWs, thread.id, 4, 'new');
    const next = await offline(server, bob.token, cursor);
    assert.deepEqual(next.messages.map((m) => m.id).sort(), fresh.map((m) => m.id).sort(), 'only the 4 new messages');
    const after = await offline(server, bob.token, next.last_check_time);
    assert.equal(after.count, 0, 'nothing more');
  });

  it('a last_check_time ahead of the server\'s clock skips nothing sent later', async () => {
    // A client whose clock runs an hour ahead: the cursor it gets back must
    // not be its own future time, or every chained call would miss what is
    // sent until then.
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    await server.sendRest(alice.token, thread.id, { content: 'before' });
    const ahead = new Date(Date.now() + 3600_000).toISOString();
    const first = await offline(server, bob.token, ahead);
    assert.equal(first.count, 0);
    assert.ok(Date.parse(first.last_check_time) <= Date.now() + 1000, `cursor ${first.last_check_time} is not in the future`);
    const later = await server.sendRest(alice.token, thread.id, { content: 'after' });
    const next = await offline(server, bob.token, first.last_check_time);
    assert.deepEqual(next.messages.map((m) => m.id), [later.body.data.id]);
  });

  it('leaves out what was said in a group before the caller joined, as live delivery does', async () => {
    const [alice, bob, dave] = await server.registerMany(3);
    const start = new Date(Date.now() - 60_000).toISOString();
    const group = await server.createGroup(alice, [bob]);
    await server.sendRest(alice.token, group.id, { content: 'before dave joined' });
    const add = await server.http('POST', `/api/chat/threads/${group.id}/participants`, { token: alice.token, body: { participant_ids: [dave.id] } });
    assert.equal(add.status, 200, add.text);
    await server.sendRest(alice.token, group.id, { content: 'after dave joined' });
    const { messages } = await drain(server, dave.token, start);
    const texts = messages.map((m) => m.content);
    assert.ok(!texts.includes('before dave joined'), JSON.stringify(texts));
    assert.ok(texts.includes('after dave joined'), JSON.stringify(texts));
    assert.ok(messages.some((m) => m.message_type === 'system'), 'the notice of his joining is his');
  });

  it('a member removed and added back within a second is not given a message twice, nor what was said while out', async () => {
    // After the re-add, nothing before it may qualify again (PostgreSQL once
    // kept the second before a join, and repeated the message).
    const [alice, bob] = await server.registerMany(2);
    const dm = await server.createDirect(alice, bob);
    await server.sendRest(alice.token, dm.id, { content: 'older, in the direct thread' });
    const group = await server.createGroup(alice, [bob]);
    const m = (await server.sendRest(alice.token, group.id, { content: 'said once' })).body.data;
    const first = await offline(server, bob.token, new Date(Date.now() - 60_000).toISOString());
    assert.ok(first.messages.some((x) => x.id === m.id));
    const out = await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${bob.id}`, { token: alice.token });
    assert.equal(out.status, 200, out.text);
    const away = (await server.sendRest(alice.token, group.id, { content: 'while bob was out' })).body.data;
    const second = await offline(server, bob.token, first.last_check_time);
    assert.deepEqual(second.messages.map((x) => x.content), [`${alice.username} removed ${bob.username}`],
      'only the notice of his removal');
    const back = await server.http('POST', `/api/chat/threads/${group.id}/participants`, { token: alice.token, body: { participant_ids: [bob.id] } });
    assert.equal(back.status, 200, back.text);
    const { messages } = await drain(server, bob.token, second.last_check_time);
    assert.ok(!messages.some((x) => x.id === m.id), `not again: ${JSON.stringify(messages.map((x) => x.content))}`);
    assert.ok(!messages.some((x) => x.id === away.id), 'nothing said while he was out');
    assert.ok(messages.some((x) => x.message_type === 'system' && /added/.test(x.content)), 'the notice of his return');
  });

  // A parent whose phone was off while the teacher removed them from a class
  // group: what was said before the removal was theirs, as was its notice,
  // and a device that was online got both live. Before the fix the thread's
  // messages vanished from offline messages with the membership.
  it('a member removed while offline still gets what was said before, the removal notice last, nothing after', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const group = await server.createGroup(alice, [bob, carol]);
    const start = new Date(Date.now() - 60_000).toISOString();
    const said = (await server.sendRest(carol.token, group.id, { content: 'before the removal' })).body.data;
    const out = await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${bob.id}`, { token: alice.token });
    assert.equal(out.status, 200, out.text);
    await server.sendRest(carol.token, group.id, { content: 'after the removal' });
    const read = await server.http('POST', `/api/chat/mark-read/${group.id}?up_to_seq=${said.seq}`, { token: alice.token });
    assert.equal(read.status, 200, read.text);
    const { messages, cursor } = await drain(server, bob.token, start);
    const texts = messages.filter((m) => m.thread_id === group.id && m.message_type !== 'system' || /removed/.test(m.content))
      .map((m) => m.content);
    assert.deepEqual(texts, ['before the removal', `${alice.username} removed ${bob.username}`]);
    const notice = messages.find((m) => /removed/.test(m.content));
    assert.equal(notice.message_type, 'system');
    assert.equal(messages.find((m) => m.id === said.id).status, 'sent',
      'how far the group read after he left is not his to learn (alice read it since)');
    const again = await offline(server, bob.token, cursor);
    assert.equal(again.count, 0, 'nothing twice');
    await server.sendRest(carol.token, group.id, { content: 'later still' });
    assert.equal((await offline(server, bob.token, cursor)).count, 0, 'nothing of the thread after his removal');
    const history = await server.http('GET', `/api/chat/threads/${group.id}/messages`, { token: bob.token });
    assert.equal(history.status, 403, 'the thread itself is no longer his to read');
  });

  it('covers every thread of the caller and no thread of others', async () => {
    const [alice, bob, carol, dave] = await server.registerMany(4);
    const start = new Date(Date.now() - 60_000).toISOString();
    const t1 = await server.createDirect(alice, bob);
    const group = await server.createGroup(carol, [bob]);
    const t3 = await server.createDirect(carol, dave);  // Bob is not in this one
    const a = await server.sendRest(alice.token, t1.id, { content: 'dm to bob' });
    const c = await server.sendRest(carol.token, group.id, { content: 'group hello' });
    const x = await server.sendRest(carol.token, t3.id, { content: 'not for bob' });
    assert.equal(x.status, 201);

    const { messages } = await drain(server, bob.token, start);
    const userMessages = messages.filter((m) => m.message_type !== 'system');
    assert.deepEqual(new Set(userMessages.map((m) => m.id)), new Set([a.body.data.id, c.body.data.id]));
    assert.ok(messages.every((m) => m.thread_id !== t3.id), 'nothing of a thread Bob is not in');
  });

  it('last_check_time is read as ISO 8601 with its offset, with or without milliseconds', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const sent = (await server.sendRest(alice.token, thread.id, { content: 'timezones' })).body.data;
    const at = Date.parse(sent.created_at);
    // The same instants written in +02:00 and without milliseconds.
    const inPlusTwo = (ms) => {
      const d = new Date(ms + 2 * 3600_000);
      return `${d.toISOString().slice(0, 19)}+02:00`;
    };
    const before = await offline(server, bob.token, inPlusTwo(at - 5000));
    assert.ok(before.messages.some((m) => m.id === sent.id), `5 s before, written ${inPlusTwo(at - 5000)}: included`);
    const afterwards = await offline(server, bob.token, inPlusTwo(at + 5000));
    assert.ok(!afterwards.messages.some((m) => m.id === sent.id), `5 s after, written ${inPlusTwo(at + 5000)}: excluded`);
    const noMillis = await offline(server, bob.token, new Date(at - 5000).toISOString().slice(0, 19) + 'Z');
    assert.ok(noMillis.messages.some((m) => m.id === sent.id), 'without milliseconds: included');
    // Put into the URL unencoded, as `?last_check_time=${t}` does: its "+" arrives as a space.
    for (const [ms, included] of [[at - 5000, true], [at + 5000, false]]) {
      const raw = await server.http('GET', `/api/chat/offline-messages?last_check_time=${inPlusTwo(ms)}`, { token: bob.token });
      assert.equal(raw.status, 200, `unencoded ${inPlusTwo(ms)}: ${raw.text}`);
      assert.equal(raw.body.data.messages.some((m) => m.id === sent.id), included, `unencoded ${inPlusTwo(ms)}`);
    }
    // Python's str(datetime), a space between date and time, quoted by an HTTP library as it goes: %20 and a bare +.
    const spaced = inPlusTwo(at - 5000).replace('T', '%20');
    const pyStr = await server.http('GET', `/api/chat/offline-messages?last_check_time=${spaced}`, { token: bob.token });
    assert.equal(pyStr.status, 200, `${spaced}: ${pyStr.text}`);
    assert.ok(pyStr.body.data.messages.some((m) => m.id === sent.id), spaced);
  });

  it('a bad or missing last_check_time is a 400', async () => {
    const [alice] = await server.registerMany(1);
    const bad = await server.http('GET', '/api/chat/offline-messages?last_check_time=yesterday', { token: alice.token });
    assert.equal(bad.status, 400, `unparseable last_check_time: ${bad.text}`);
    assert.equal(bad.body.status, 'error');
    assert.equal(bad.body.code, 'invalid_field');
  });

  it('needs a token', async () => {
    const res = await server.http('GET', '/api/chat/offline-messages?last_check_time=2020-01-01T00:00:00Z');
    assert.equal(res.status, 401);
    assert.equal(res.body.code, 'unauthorized');
  });
});
