// Only participants may read, send to, subscribe to or signal in a thread.
// A non-participant gets exactly the answer an unknown thread id gets, so
// nothing leaks about threads they are not in.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, newUuid, assertHttpError, assertWsError, sleep, TEST_STORE } from './harness.mjs';

describe('a non-participant is refused, like an unknown thread', () => {
  let server, alice, bob, carol, thread, carolWs, aliceWs, bobWs;
  const unknownThread = newUuid();

  before(async () => {
    server = await startServer();
    [alice, bob, carol] = await server.registerMany(3);
    thread = await server.createDirect(alice, bob);
    aliceWs = await server.connect(alice);
    bobWs = await server.connect(bob);
    carolWs = await server.connect(carol);
    await aliceWs.sendMessage({ thread_id: thread.id, content: 'private between alice and bob' });
  });
  after(async () => { await server?.stop(); });

  // Asserts both frames are the same forbidden error (same code and message).
  function assertSameForbidden(real, unknown, what) {
    assertWsError(assert, real, 'forbidden', `${what} on a thread of others`);
    assertWsError(assert, unknown, 'forbidden', `${what} on an unknown thread`);
    assert.equal(real.message, unknown.message, `${what}: the error message does not tell the two apart`);
  }

  function assertSameHttp(real, unknown, what) {
    assertHttpError(assert, real, 403, 'forbidden', `${what} on a thread of others`);
    assertHttpError(assert, unknown, 403, 'forbidden', `${what} on an unknown thread`);
    assert.deepEqual(real.body, unknown.body, `${what}: same body for both`);
  }

  it('WebSocket send_message', async () => {
    const real = await carolWs.request({ type: 'send_message', thread_id: thread.id, content: 'let me in' });
    const unknown = await carolWs.request({ type: 'send_message', thread_id: unknownThread, content: 'let me in' });
    assertSameForbidden(real, unknown, 'send_message');
    await bobWs.expectNone((f) => f.type === 'new_message' && f.data.content === 'let me in', 300, "the intruder's message");
  });

  it('WebSocket subscribe_thread (and nothing is replayed)', async () => {
    const real = await carolWs.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 });
    const unknown = await carolWs.request({ type: 'subscribe_thread', thread_id: unknownThread, since_seq: 0 });
    assertSameForbidden(real, unknown, 'subscribe_thread');
    assert.equal(carolWs.all((f) => f.type === 'new_message').length, 0, 'no message of the thread reached Carol');
  });

  it('WebSocket call signalling', async () => {
    const realCall = await carolWs.request({ type: 'call_offer', thread_id: thread.id, payload: { sdp: 'x' } });
    const unknownCall = await carolWs.request({ type: 'call_offer', thread_id: unknownThread, payload: { sdp: 'x' } });
    assertSameForbidden(realCall, unknownCall, 'call_offer');
    await aliceWs.expectNone((f) => f.type === 'call_offer', 300, 'a relayed call_offer from a non-participant');
  });

  it('WebSocket mark_as_read', async () => {
    const real = await carolWs.request({ type: 'mark_as_read', thread_id: thread.id });
    const unknown = await carolWs.request({ type: 'mark_as_read', thread_id: unknownThread });
    assertSameForbidden(real, unknown, 'mark_as_read');
    await aliceWs.expectNone((f) => f.type === 'read_receipt' && f.user_id === carol.id, 300, "Carol's read_receipt");
  });

  it('REST GET thread', async () => {
    const real = await server.http('GET', `/api/chat/threads/${thread.id}`, { token: carol.token });
    const unknown = await server.http('GET', `/api/chat/threads/${unknownThread}`, { token: carol.token });
    assertSameHttp(real, unknown, 'GET /api/chat/threads/:id');
  });

  it('REST history', async () => {
    const real = await server.http('GET', `/api/chat/threads/${thread.id}/messages`, { token: carol.token });
    const unknown = await server.http('GET', `/api/chat/threads/${unknownThread}/messages`, { token: carol.token });
    assertSameHttp(real, unknown, 'GET messages');
  });

  it('REST send', async () => {
    const real = await server.sendRest(carol.token, thread.id, { content: 'rest intruder' });
    const unknown = await server.sendRest(carol.token, unknownThread, { content: 'rest intruder' });
    assertSameHttp(real, unknown, 'POST messages');
    const history = await server.history(alice.token, thread.id);
    assert.ok(history.every((m) => m.sender_id !== carol.id), 'nothing of Carol was stored');
  });

  it('REST add participant (cannot add herself)', async () => {
    const real = await server.http('POST', `/api/chat/threads/${thread.id}/participants`, { token: carol.token, body: { participant_ids: [carol.id] } });
    const unknown = await server.http('POST', `/api/chat/threads/${unknownThread}/participants`, { token: carol.token, body: { participant_ids: [carol.id] } });
    assertSameHttp(real, unknown, 'POST participants');
    const t = await server.http('GET', `/api/chat/threads/${thread.id}`, { token: alice.token });
    assert.equal(t.body.data.participants.length, 2, 'the thread still has two participants');
  });

  it('REST remove participant (a member, or a path that names no user)', async () => {
    for (const who of [alice.id, 'xyz']) {
      const real = await server.http('DELETE', `/api/chat/threads/${thread.id}/participants/${who}`, { token: carol.token });
      const unknown = await server.http('DELETE', `/api/chat/threads/${unknownThread}/participants/${who}`, { token: carol.token });
      assertSameHttp(real, unknown, `DELETE participants/${who}`);
      assert.equal(real.status, 403, real.text);
    }
  });

  it('REST mark-read', async () => {
    const real = await server.http('POST', `/api/chat/mark-read/${thread.id}`, { token: carol.token });
    const unknown = await server.http('POST', `/api/chat/mark-read/${unknownThread}`, { token: carol.token });
    assertSameHttp(real, unknown, 'POST mark-read');
  });

  it("the thread is absent from the outsider's listing and offline messages", async () => {
    const list = await server.http('GET', '/api/chat/threads', { token: carol.token });
    assert.equal(list.status, 200);
    assert.ok(!list.body.data.threads.some((t) => t.id === thread.id), 'not listed for Carol');
    const off = await server.http('GET', '/api/chat/offline-messages?last_check_time=2000-01-01T00:00:00Z', { token: carol.token });
    assert.equal(off.status, 200);
    assert.ok(!off.body.data.messages.some((m) => m.thread_id === thread.id), 'no offline message of the thread');
  });

  it('the participants still work, and the outsider connection stays open', async () => {
    await carolWs.ping();
    const m = await bobWs.sendMessage({ thread_id: thread.id, content: 'still fine' });
    await aliceWs.next((f) => f.type === 'new_message' && f.data.id === m.id, 5000, 'message at Alice');
    await carolWs.expectNone((f) => f.type === 'new_message', 300, 'any message at Carol');
  });
});

describe('a member removed and added again while connected', () => {
  let server, alice, bob;
  before(async () => {
    server = await startServer();
    [alice, bob] = await server.registerMany(2);
  });
  after(async () => { await server?.stop(); });

  it('is not sent, as new messages, what was said while out; what comes after the return arrives live', async () => {
    const group = await server.createGroup(alice, [bob]);
    const bobWs = await server.connect(bob);
    const aliceWs = await server.connect(alice);
    await aliceWs.sendMessage({ thread_id: group.id, content: 'before' });
    await bobWs.next((f) => f.type === 'new_message' && f.data.content === 'before', 5000, 'bob gets the first message');
    const removed = await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${bob.id}`, { token: alice.token });
    assert.equal(removed.status, 200, removed.text);
    await bobWs.next((f) => f.type === 'new_message' && f.data.message_type === 'system', 5000, 'the removal notice');
    for (const content of ['away 1', 'away 2', 'away 3']) await aliceWs.sendMessage({ thread_id: group.id, content });
    const added = await server.http('POST', `/api/chat/threads/${group.id}/participants`, { token: alice.token, body: { participant_ids: [bob.id] } });
    assert.ok(added.status === 200 || added.status === 201, added.text);
    await aliceWs.sendMessage({ thread_id: group.id, content: 'welcome back' });
    await bobWs.next((f) => f.type === 'new_message' && f.data.content === 'welcome back', 5000, 'live again after the return');
    const away = bobWs.all((f) => f.type === 'new_message' && /^away /.test(f.data.content));
    assert.deepEqual(away.map((f) => f.data.content), [], 'nothing said while bob was out is pushed to him');
    const history = await server.history(bob.token, group.id);
    assert.ok(history.some((m) => m.content === 'away 2'), 'it is in the history bob may read');
    bobWs.close(); aliceWs.close();
  });

  // A receipt's audience is read once its mark committed: one read from the
  // member list as the mark was asked told the removed how far others read
  // after they left (the wait for the reader's lock and the write between).
  it('one removed while others mark the group read hears of no reading past the removal', async () => {
    const server = await startServer({ args: ['--rate-per-second', '100000', '--rate-burst', '100000'] });
    const [alice, bob] = await server.registerMany(2);
    const readers = await Promise.all([1, 2, 3].map(() => server.connect(bob)));
    const aliceWs = await server.connect(alice);
    const leaks = [];
    for (let round = 0; round < 15; round++) {
      const xavier = await server.register();
      const group = await server.createGroup(alice, [bob, xavier]);
      const xWs = await server.connect(xavier);
      let stop = false;
      const pump = async () => {
        for (let i = 0; i < 300 && !stop; i++) await aliceWs.sendMessage({ thread_id: group.id, content: `m${i}` }, 10000);
      };
      const mark = async (ws) => {
        for (let i = 0; i < 600 && !stop; i++) await ws.request({ type: 'mark_as_read', thread_id: group.id }, 10000);
      };
      const running = [pump(), ...readers.map(mark)];
      await sleep(20 + (round % 4) * 15);
      const removed = await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${xavier.id}`, { token: alice.token });
      assert.equal(removed.status, 200, removed.text);
      await sleep(80);
      stop = true;
      await Promise.all(running);
      await aliceWs.ping();
      await xWs.ping();
      const frames = xWs.all();
      const at = frames.findIndex((f) => f.type === 'new_message' && f.data.message_type === 'system' &&
        f.data.content.includes(`removed ${xavier.username}`));
      assert.ok(at >= 0, `round ${round}: the removal notice reaches xavier`);
      const noticeSeq = frames[at].data.seq;
      for (const f of frames.slice(at + 1)) {
        if (f.type === 'new_message' || (f.type === 'read_receipt' && f.seq >= noticeSeq))
          leaks.push(`round ${round}: ${f.type} seq ${f.data?.seq ?? f.seq} after the notice (seq ${noticeSeq})`);
      }
      xWs.close();
    }
    await server.stop();
    assert.deepEqual(leaks, []);
  });

  it('one added while the group is busy is sent nothing stored before the addition', async () => {
    // A message committed just before the addition has its fan-out run
    // after the member list already holds the new member: it must still go
    // only to those who were in when it was stored (their joined_at).
    // Its own server: four pumps of up to 300 frames a round for ten rounds
    // pass the default limit (a burst of 1000) when a loaded machine slows
    // the addition down and the pumps run longer.
    const server = await startServer({ args: ['--rate-per-second', '100000', '--rate-burst', '100000'] });
    const [alice, bob] = await server.registerMany(2);
    const senders = await Promise.all([1, 2, 3, 4].map(() => server.connect(alice)));
    for (let round = 0; round < 10; round++) {
      const carol = await server.register();
      const carolWs = await server.connect(carol);
      const group = await server.createGroup(alice, [bob]);
      let stop = false;
      const pump = async (ws, tag) => {
        for (let i = 0; i < 300 && !stop; i++) await ws.sendMessage({ thread_id: group.id, content: `${tag} ${i}` }, 10000);
      };
      const pumps = senders.map((ws, k) => pump(ws, `s${k}`));
      await new Promise((r) => setTimeout(r, 60));
      const added = await server.http('POST', `/api/chat/threads/${group.id}/participants`, { token: alice.token, body: { participant_ids: [carol.id] } });
      assert.ok(added.status === 200 || added.status === 201, added.text);
      // Her read mark is the thread's last seq when the addition committed
      // (the notice saying so is stored after it, so messages may come between).
      const thread = await server.http('GET', `/api/chat/threads/${group.id}`, { token: carol.token });
      assert.equal(thread.status, 200, thread.text);
      const carolThere = thread.body.data.participants.find((p) => p.user_id === carol.id);
      const before = carolThere.last_read_seq;
      assert.ok(before > 0, `the group was busy when carol was added (read mark ${before})`);
      // PostgreSQL keeps a second of slack for nodes' clocks (protocol.md): what
      // was stored in the second before the addition may reach her there.
      const slackMs = TEST_STORE === 'postgres' ? 1000 : 0;
      const joinedMs = Date.parse(carolThere.joined_at);
      await new Promise((r) => setTimeout(r, 60));
      stop = true;
      await Promise.all(pumps);
      // Whatever carol was sent live comes before this, her own send's answer.
      await carolWs.sendMessage({ thread_id: group.id, content: 'carol here' }, 10000);
      const early = carolWs.all((f) => f.type === 'new_message' && f.data.thread_id === group.id && f.data.seq <= before &&
        (slackMs === 0 || Date.parse(f.data.created_at) < joinedMs - slackMs));
      assert.deepEqual(early.map((f) => f.data.seq), [], `round ${round}: nothing up to seq ${before} (the addition) is sent to carol`);
      const notice = carolWs.all((f) => f.type === 'new_message' && f.data.message_type === 'system' && f.data.content.includes(carol.username));
      assert.equal(notice.length, 1, 'the addition notice reaches her');
      carolWs.close();
    }
    for (const ws of senders) ws.close();
    await server.stop();
  });
});

describe("a user's phone number is for those in a thread they opened, last_seen for those who share one", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('a stranger finds the user (name, role) without them; a contact and the user see them', async () => {
    const phone = `+44 7700 ${String(Math.floor(Math.random() * 1e6)).padStart(6, '0')}`;
    const [teacher, parent, stranger] = [
      await server.register({ phone_number: phone, role: 'teacher' }),
      await server.register(),
      await server.register(),
    ];
    await server.createDirect(teacher, parent);
    // last_seen set: the teacher was online and went offline.
    const ws = await server.connect(teacher);
    ws.close();
    const deadline = Date.now() + 10000;
    let seen;
    while (Date.now() < deadline) {
      seen = (await server.http('GET', `/api/users/${teacher.id}`, { token: parent.token })).body.data;
      if (seen.last_seen) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(seen.phone_number, phone, 'a contact sees the number');
    assert.ok(seen.last_seen, 'a contact sees last_seen');

    const byId = await server.http('GET', `/api/users/${teacher.id}`, { token: stranger.token });
    assert.equal(byId.status, 200, byId.text);
    assert.equal(byId.body.data.username, teacher.username);
    assert.equal(byId.body.data.role, 'teacher');
    assert.equal(byId.body.data.phone_number, null, 'no number for a stranger');
    assert.equal(byId.body.data.last_seen, null, 'no last_seen for a stranger');
    const found = await server.http('GET', `/api/users?search=${teacher.username}`, { token: stranger.token });
    const hit = found.body.data.users.find((u) => u.id === teacher.id);
    assert.ok(hit, 'the stranger finds the teacher to write to');
    assert.equal(hit.phone_number, null);
    assert.equal(hit.last_seen, null);
    const asContact = await server.http('GET', `/api/users?search=${teacher.username}`, { token: parent.token });
    assert.equal(asContact.body.data.users.find((u) => u.id === teacher.id).phone_number, phone);
    const self = await server.http('GET', `/api/users?search=${teacher.username}`, { token: teacher.token });
    assert.equal(self.body.data.users.find((u) => u.id === teacher.id).phone_number, phone, 'the user sees their own');
  });

  // Anyone may open a thread with anyone: were sharing one enough, a group of
  // every user a search finds would hand over every number.
  it('a phone number goes only to those in a thread its owner opened, not to whoever opens one with them', async () => {
    const phoneOf = () => `+44 7700 ${String(Math.floor(Math.random() * 1e6)).padStart(6, '0')}`;
    const [teacher, parent, mallory] = [
      await server.register({ phone_number: phoneOf(), role: 'teacher' }),
      await server.register({ phone_number: phoneOf() }),
      await server.register({ phone_number: phoneOf() }),
    ];
    const numberOf = async (viewer, user) => {
      const r = await server.http('GET', `/api/users/${user.id}`, { token: viewer.token });
      assert.equal(r.status, 200, r.text);
      return r.body.data.phone_number;
    };
    await server.createDirect(mallory, teacher);
    await server.createGroup(mallory, [teacher, parent]);
    assert.equal(await numberOf(mallory, teacher), null, 'a direct thread mallory opened shows her no number');
    assert.equal(await numberOf(mallory, parent), null, 'nor does a group she made of them');
    const search = await server.http('GET', `/api/users?search=${parent.username}`, { token: mallory.token });
    assert.equal(search.body.data.users.find((u) => u.id === parent.id).phone_number, null, 'nor a search');
    assert.equal(await numberOf(teacher, mallory), mallory.user.phone_number, 'mallory showed hers by opening them');
    assert.equal(await numberOf(parent, teacher), null, 'members of a group neither opened see no number');
    await server.createGroup(teacher, [parent]);
    assert.equal(await numberOf(parent, teacher), teacher.user.phone_number, "the teacher's own group shows hers");
    assert.equal(await numberOf(teacher, parent), null, 'but not the parent\'s, who was added');
  });
});
