// Group fan-out: three participants with two connections each, messages sent
// concurrently by everyone; every connection sees every message exactly once,
// in seq order, and seq is gapless from 1.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import WebSocket from 'ws';
import { startServer, sleep, REPO_ROOT } from './harness.mjs';

const PER_CONNECTION = 6;  // 3 users x 2 connections x 6 = 36 messages

describe('group fan-out', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('a REST-created group of three delivers each message exactly once per connection, in seq order', async () => {
    const users = await server.registerMany(3);
    const [admin, ...members] = users;
    const thread = await server.createGroup(admin, members, 'fan-out');
    assert.equal(thread.type, 'group');
    assert.equal(thread.participants.length, 3, 'the group has its three participants');

    const conns = [];
    for (const user of users) {
      for (let k = 0; k < 2; k++) conns.push({ user, k, ws: await server.connect(user) });
    }

    // Everyone sends at once: no awaiting between sends.
    const pending = [];
    for (const c of conns) {
      for (let i = 0; i < PER_CONNECTION; i++) {
        pending.push(c.ws.sendMessage({
          thread_id: thread.id, content: `${c.user.username}#${c.k} message ${i}`, client_msg_id: `${c.k}-${i}`,
        }, 15000).then((m) => ({ conn: c, message: m })));
      }
    }
    const sent = await Promise.all(pending);
    const total = conns.length * PER_CONNECTION;
    assert.equal(sent.length, total);

    // A group may open with system messages (creation); ours follow them without gaps.
    const base = thread.last_seq ?? 0;
    const seqs = sent.map((s) => s.message.seq).sort((a, b) => a - b);
    assert.deepEqual(seqs, Array.from({ length: total }, (_, i) => base + i + 1),
      `seq is gapless ${base + 1}..${base + total} with no duplicates`);
    const allIds = new Set(sent.map((s) => s.message.id));
    assert.equal(allIds.size, total, 'every message has its own id');

    for (const c of conns) {
      const own = sent.filter((s) => s.conn === c).map((s) => s.message.id);
      const othersCount = total - own.length;
      // Wait (bounded) until this connection has seen every message of the others.
      for (let i = 0; i < othersCount; i++) {
        await c.ws.next((f) => f.type === 'new_message' && f.data.thread_id === thread.id, 10000,
          `new_message ${i + 1}/${othersCount} on ${c.user.username}#${c.k}`);
      }
      await c.ws.expectNone((f) => f.type === 'new_message', 50);
    }
    // Let any stray duplicate arrive before counting.
    await new Promise((r) => setTimeout(r, 300));

    for (const c of conns) {
      const label = `${c.user.username}#${c.k}`;
      const live = c.ws.all((f) => f.type === 'new_message' && f.data.thread_id === thread.id).map((f) => f.data);
      const acked = c.ws.all((f) => f.type === 'message_sent').map((f) => f.data);
      const ownIds = new Set(sent.filter((s) => s.conn === c).map((s) => s.message.id));

      assert.equal(acked.length, PER_CONNECTION, `${label}: one message_sent per own message`);
      assert.ok(live.every((m) => !ownIds.has(m.id)), `${label}: no new_message for its own messages`);
      assert.equal(live.length, total - PER_CONNECTION, `${label}: exactly one new_message per message of the others`);
      assert.equal(new Set(live.map((m) => m.id)).size, live.length, `${label}: no message twice`);

      const liveSeqs = live.map((m) => m.seq);
      for (let i = 1; i < liveSeqs.length; i++) {
        assert.ok(liveSeqs[i] > liveSeqs[i - 1], `${label}: new_message seqs strictly increase, got ${liveSeqs.join(',')}`);
      }
      const union = new Set([...live.map((m) => m.id), ...acked.map((m) => m.id)]);
      assert.deepEqual([...union].sort(), [...allIds].sort(), `${label}: sees every message of the thread`);
    }

    const history = await server.history(members[1].token, thread.id);
    const textMessages = history.filter((m) => m.message_type !== 'system');
    assert.equal(textMessages.length, total, 'history holds every message once');
    assert.equal(history.length, base + total, 'history holds nothing else');
    const histSeqs = history.map((m) => m.seq);
    assert.deepEqual(histSeqs, Array.from({ length: histSeqs.length }, (_, i) => i + 1), 'history seqs are gapless from 1');
  });

  it('a user outside the group receives nothing of it', async () => {
    const [admin, member, outsider] = await server.registerMany(3);
    const thread = await server.createGroup(admin, [member], 'private');
    const outsiderWs = await server.connect(outsider);
    const memberWs = await server.connect(member);
    const adminWs = await server.connect(admin);
    const m = await adminWs.sendMessage({ thread_id: thread.id, content: 'members only' });
    await memberWs.next((f) => f.type === 'new_message' && f.data.id === m.id, 5000, 'message at member');
    await outsiderWs.expectNone((f) => f.type === 'new_message', 500, 'new_message at a non-participant');
  });

  it('a participant added later receives new messages live without reconnecting', async () => {
    const [admin, member, late] = await server.registerMany(3);
    const thread = await server.createGroup(admin, [member], 'late joiner');
    const lateWs = await server.connect(late);
    const adminWs = await server.connect(admin);

    const add = await server.http('POST', `/api/chat/threads/${thread.id}/participants`,
      { token: admin.token, body: { participant_ids: [late.id] } });
    assert.ok(add.status === 200 || add.status === 201, `adding a participant answered ${add.status}: ${add.text}`);

    const m = await adminWs.sendMessage({ thread_id: thread.id, content: 'welcome!' });
    const got = await lateWs.next((f) => f.type === 'new_message' && f.data.id === m.id, 5000, 'message at the new participant');
    assert.equal(got.data.content, 'welcome!');
  });

  it('a removed participant stops receiving live messages', async () => {
    const [admin, member, leaving] = await server.registerMany(3);
    const thread = await server.createGroup(admin, [member, leaving], 'shrinking');
    const leavingWs = await server.connect(leaving);
    const adminWs = await server.connect(admin);

    const del = await server.http('DELETE', `/api/chat/threads/${thread.id}/participants/${leaving.id}`, { token: admin.token });
    assert.equal(del.status, 200, `removing a participant answered ${del.status}: ${del.text}`);
    leavingWs.frames.forEach((e) => { e.consumed = true; });  // whatever came before the removal

    await adminWs.sendMessage({ thread_id: thread.id, content: 'after you left' });
    await leavingWs.expectNone((f) => f.type === 'new_message' && f.data.content === 'after you left', 500,
      'new_message at a removed participant');
    const refused = await leavingWs.request({ type: 'send_message', thread_id: thread.id, content: 'can I still post?' });
    assert.equal(refused.type, 'error');
    assert.equal(refused.code, 'forbidden', 'a removed participant can no longer send');
  });

  // A parent's tablet was off while the teacher removed them from the class
  // group. It reconnects and catches up as every client does (subscribe_thread
  // from its last seq): it gets what was said up to the removal and the
  // notice of it, then `forbidden`. Before, the catch-up was refused outright
  // and the tablet never heard of the removal. And a connected client that
  // acknowledges what it gets is not answered an error for the notice.
  it('a member removed while a device was off: its catch-up brings what came up to the removal, then forbidden', async () => {
    const [admin, carol, parent] = await server.registerMany(3);
    const thread = await server.createGroup(admin, [carol, parent], 'class 4b');
    const phone = await server.connect(parent);
    const first = await server.sendRest(carol.token, thread.id, { content: 'seen on the tablet' });
    const seen = first.body.data.seq;
    const before = (await server.sendRest(carol.token, thread.id, { content: 'before the removal' })).body.data;
    const del = await server.http('DELETE', `/api/chat/threads/${thread.id}/participants/${parent.id}`, { token: admin.token });
    assert.equal(del.status, 200, del.text);
    await server.sendRest(carol.token, thread.id, { content: 'after the removal' });
    const read = await server.http('POST', `/api/chat/mark-read/${thread.id}?up_to_seq=${before.seq}`, { token: admin.token });
    assert.equal(read.status, 200, read.text);
    const notice = `${admin.username} removed ${parent.username}`;

    // The phone was connected: the notice came live, and its receipt is no error.
    const live = await phone.next((f) => f.type === 'new_message' && f.data.content === notice, 5000, 'the notice, live');
    phone.send({ type: 'message_received', message_id: live.data.id, request_id: 'ack-notice' });
    await phone.expectNone((f) => f.type === 'error', 700, 'an error for the receipt of the notice');
    const foreign = await phone.request({ type: 'message_received', message_id: before.id.replace(/^./, (c) => (c === '0' ? '1' : '0')) });
    assert.equal(foreign.type, 'error', 'an id this connection was not sent is still refused');

    const tablet = await server.connect(parent);
    const reply = await tablet.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: seen });
    assert.equal(reply.type, 'error');
    assert.equal(reply.code, 'forbidden');
    const replayed = tablet.all((f) => f.type === 'new_message' && f.data.thread_id === thread.id).map((f) => f.data);
    assert.deepEqual(replayed.map((m) => m.content), ['before the removal', notice]);
    assert.equal(replayed[0].status, 'sent', 'how far the group read since is not for the parent');
    const again = await tablet.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: replayed[1].seq });
    assert.equal(again.code, 'forbidden', 'nothing past the removal');
    await tablet.expectNone((f) => f.type === 'new_message' && f.data.content === 'after the removal', 300, 'a message after the removal');
  });

  it('a former member\'s catch-up from 0 is only their time in the group: not the history before they joined', async () => {
    const [admin, carol, dave] = await server.registerMany(3);
    const thread = await server.createGroup(admin, [carol], 'class 5a');
    await server.sendRest(carol.token, thread.id, { content: 'before dave joined' });
    const add = await server.http('POST', `/api/chat/threads/${thread.id}/participants`, { token: admin.token, body: { participant_ids: [dave.id] } });
    assert.equal(add.status, 200, add.text);
    await server.sendRest(carol.token, thread.id, { content: 'while dave was in' });
    const del = await server.http('DELETE', `/api/chat/threads/${thread.id}/participants/${dave.id}`, { token: admin.token });
    assert.equal(del.status, 200, del.text);
    const ws = await server.connect(dave);
    const reply = await ws.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 });
    assert.equal(reply.code, 'forbidden');
    assert.deepEqual(ws.all((f) => f.type === 'new_message').map((f) => f.data.content),
      [`${admin.username} added ${dave.username}`, 'while dave was in', `${admin.username} removed ${dave.username}`]);

    // Added back, he is a member: from 0, the whole history, as GET …/messages gives it.
    const back = await server.http('POST', `/api/chat/threads/${thread.id}/participants`, { token: admin.token, body: { participant_ids: [dave.id] } });
    assert.equal(back.status, 200, back.text);
    const again = await server.connect(dave);
    const sub = await again.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 });
    assert.equal(sub.type, 'thread_subscribed', JSON.stringify(sub));
    const history = (await server.http('GET', `/api/chat/threads/${thread.id}/messages`, { token: dave.token })).body.data.messages;
    assert.deepEqual(again.all((f) => f.type === 'new_message').map((f) => f.data.seq), history.map((m) => m.seq));
    assert.equal(history[0].content, 'before dave joined');
  });

  // The web app's client (web/src/parley-client.js, in Node with ws): the
  // thread list that drops a group the user was removed from can come back
  // before the catch-up's replay of it. The replay must not give the group
  // its position back, or every reconnect would ask for it again (and from
  // 0, its whole history).
  it('the web app\'s client, told to forget a group during its replay, does not ask for it again', async () => {
    globalThis.WebSocket ??= WebSocket;
    const { ParleyClient } = await import(pathToFileURL(path.join(REPO_ROOT, 'web', 'src', 'parley-client.js')).href);
    const [admin, bob] = await server.registerMany(2);
    const thread = await server.createGroup(admin, [bob], 'replayed while forgotten');
    const first = (await server.sendRest(admin.token, thread.id, { content: 'seen' })).body.data;
    await server.sendRest(admin.token, thread.id, { content: 'missed' });
    const del = await server.http('DELETE', `/api/chat/threads/${thread.id}/participants/${bob.id}`, { token: admin.token });
    assert.equal(del.status, 200, del.text);
    const c = new ParleyClient({ baseUrl: server.baseUrl, token: bob.token });
    const sent = [];
    const frames = [];
    const send = c.sendFrame.bind(c);
    c.sendFrame = (f) => { sent.push(f); return send(f); };
    c.addEventListener('frame', (e) => {
      frames.push(e.detail);
      // The list came first: the app forgets the group right after the catch-up asked for it.
      if (e.detail.type === 'connection_established' && frames.length === 1) c.forget(thread.id);
    });
    const until = async (pred, what, ms = 10000) => {
      for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) if (pred()) return;
      assert.fail(`waited in vain for ${what}; frames: ${JSON.stringify(frames.slice(-4))}`);
    };
    try {
      c.track(thread.id, first.seq);
      c.connect();
      await until(() => frames.some((f) => f.type === 'error' && f.code === 'forbidden'), 'the refusal after the replay');
      assert.ok(frames.some((f) => f.type === 'new_message' && f.data.content === 'missed'), 'the replay came');
      assert.equal(c.cursors.has(thread.id), false, 'no position back for the forgotten group');
      const before = sent.length;
      c.ws.close();
      await until(() => frames.filter((f) => f.type === 'connection_established').length === 2, 'the reconnection');
      await sleep(300);
      assert.deepEqual(sent.slice(before).filter((f) => f.type === 'subscribe_thread'), [], 'nothing asked again');
    } finally {
      c.disconnect();
    }
  });

  it('the last admin leaving makes the longest-standing member admin, and says so', async () => {
    const [admin, first, later, newcomer] = await server.registerMany(4);
    const thread = await server.createGroup(admin, [first], 'handover');
    await sleep(5);
    const path = `/api/chat/threads/${thread.id}/participants`;
    const add = await server.http('POST', path, { token: admin.token, body: { participant_ids: [later.id] } });
    assert.equal(add.status, 200, add.text);
    const adminWs = await server.connect(admin);

    const left = await server.http('DELETE', `${path}/${admin.id}`, { token: admin.token });
    assert.equal(left.status, 200, left.text);
    const t = await server.http('GET', `/api/chat/threads/${thread.id}`, { token: later.token });
    const admins = t.body.data.participants.filter((p) => p.is_admin).map((p) => p.user_id);
    assert.deepEqual(admins, [first.id], 'the member there longest is admin now');
    const told = await adminWs.next((f) => f.type === 'new_message' && f.data.message_type === 'system' &&
      f.data.content === `${first.username} is now an admin`, 5000, 'the handover, at the one who left');
    const history = await server.history(later.token, thread.id);
    assert.equal(history.at(-1).id, told.data.id, 'the handover is the last message');

    const byNewAdmin = await server.http('POST', path, { token: first.token, body: { participant_ids: [newcomer.id] } });
    assert.equal(byNewAdmin.status, 200, `the new admin adds people: ${byNewAdmin.text}`);
    const byMember = await server.http('DELETE', `${path}/${newcomer.id}`, { token: later.token });
    assert.equal(byMember.status, 403, 'a member still cannot remove others');
  });

  it('REST and WebSocket senders interleaved concurrently still get gapless seqs', async () => {
    const [a, b, c] = await server.registerMany(3);
    const thread = await server.createGroup(a, [b, c], 'mixed');
    const base = thread.last_seq ?? 0;
    const aWs = await server.connect(a);
    const cWs = await server.connect(c);
    const jobs = [];
    for (let i = 0; i < 15; i++) {
      jobs.push(aWs.sendMessage({ thread_id: thread.id, content: `ws a ${i}` }, 15000));
      jobs.push(server.sendRest(b.token, thread.id, { content: `rest b ${i}` }).then((r) => {
        assert.equal(r.status, 201, r.text);
        return r.body.data;
      }));
    }
    const sent = await Promise.all(jobs);
    const seqs = sent.map((m) => m.seq).sort((x, y) => x - y);
    assert.deepEqual(seqs, Array.from({ length: 30 }, (_, i) => base + i + 1), 'gapless, no duplicates');
    for (let i = 0; i < 30; i++) {
      await cWs.next((f) => f.type === 'new_message' && f.data.thread_id === thread.id, 10000, `message ${i + 1}/30 at Carol`);
    }
    const atCarol = cWs.all((f) => f.type === 'new_message' && f.data.thread_id === thread.id).map((f) => f.data.seq);
    assert.deepEqual(atCarol, seqs, 'Carol sees all 30 in seq order');
  });
});

// Membership changes while the thread is busy: a send is checked against the
// members when it arrives and committed a moment later, after the change
// may have committed. Who gets it is decided by the members at its commit.
describe('membership changes racing sends', () => {
  let server;
  // --fsync: slower commits, so sends queue up behind a membership change as on a busy server.
  before(async () => { server = await startServer({ args: ['--fsync'] }); });
  after(async () => { await server?.stop(); });

  it('a participant removed and added back while others send gets nothing committed after the removal until the next addition', async () => {
    const [admin, sender, member] = await server.registerMany(3);
    const thread = await server.createGroup(admin, [sender, member], 'revolving door');
    const memberWs = await server.connect(member);
    const senderWs = await server.connect(sender);
    const path = `/api/chat/threads/${thread.id}/participants`;
    let stop = false;
    let sent = 0;
    const sending = (async () => {
      // At most 900, about 500 a second: within the connection's rate limit (a burst of 1000).
      while (!stop && sent < 900) {
        for (let i = 0; i < 5; i++) senderWs.send({ type: 'send_message', thread_id: thread.id, content: `m${sent++}` });
        await sleep(10);
        if (sent % 200 === 0) await senderWs.next((f) => f.type === 'message_sent' && f.data.content === `m${sent - 1}`, 10000);
      }
    })();
    // Per removal: the thread's last seq once it had returned, and from when
    // to when the member was out (from its answer to the request adding them back).
    const outside = [];
    for (let round = 0; round < 10; round++) {
      await sleep(20);
      const del = await server.http('DELETE', `${path}/${member.id}`, { token: admin.token });
      assert.equal(del.status, 200, del.text);
      const from = Date.now();
      const t = await server.http('GET', `/api/chat/threads/${thread.id}`, { token: admin.token });
      await sleep(20);
      outside.push({ after: t.body.data.last_seq, from, to: Date.now() });
      const add = await server.http('POST', path, { token: admin.token, body: { participant_ids: [member.id] } });
      assert.equal(add.status, 200, add.text);
    }
    stop = true;
    await sending;
    // The sending loop may have taken the last ack already (its wait at every 200th).
    const lastAck = (f) => f.type === 'message_sent' && f.data.content === `m${sent - 1}`;
    if (senderWs.all(lastAck).length === 0) await senderWs.next(lastAck, 15000, 'the last ack');

    // What reached the member while out that was committed after the removal.
    const leaked = memberWs.frames.filter((e) => e.frame.type === 'new_message' && outside.some(
      (o) => e.at >= o.from && e.at < o.to && e.frame.data.seq > o.after)).map((e) => e.frame.data.seq);
    assert.deepEqual(leaked, [], 'messages delivered to a removed participant');
  });

  it('a participant removed while others send gets the notice of the removal and nothing committed after it', async () => {
    const late = [];
    const noticeMissing = [];
    for (let round = 0; round < 4; round++) {
      const [admin, sender, member] = await server.registerMany(3);
      const thread = await server.createGroup(admin, [sender, member], 'removal under load');
      const memberWs = await server.connect(member);
      const senderWs = await server.connect(sender);
      let sent = 0;
      let stop = false;
      // About 500 a second, before, during and after the removal.
      const sending = (async () => {
        while (!stop && sent < 400) {
          for (let i = 0; i < 5; i++) senderWs.send({ type: 'send_message', thread_id: thread.id, content: `m${sent++}` });
          await sleep(10);
        }
      })();
      await senderWs.next((f) => f.type === 'message_sent' && f.data.content === 'm20', 10000);
      const del = await server.http('DELETE', `/api/chat/threads/${thread.id}/participants/${member.id}`, { token: admin.token });
      assert.equal(del.status, 200, del.text);
      await sleep(150);
      stop = true;
      await sending;
      await senderWs.next((f) => f.type === 'message_sent' && f.data.content === `m${sent - 1}`, 15000, 'the last ack');
      await sleep(300);
      const history = await server.history(admin.token, thread.id);
      const notice = history.find((m) => m.message_type === 'system' && m.content === `${admin.username} removed ${member.username}`);
      assert.ok(notice, 'the removal is recorded');
      const got = memberWs.all((f) => f.type === 'new_message' && f.data.thread_id === thread.id).map((f) => f.data.seq);
      if (!got.includes(notice.seq)) noticeMissing.push(round);
      late.push(...got.filter((seq) => seq > notice.seq));
    }
    assert.deepEqual(noticeMissing, [], 'rounds where the removed member never got the notice');
    assert.deepEqual(late, [], 'messages committed after the removal notice that reached the removed member');
  });

  it('a participant added while others send gets, live, every message committed after joining', async () => {
    let missed = [];
    for (let round = 0; round < 6; round++) {
      const [admin, sender, late] = await server.registerMany(3);
      const thread = await server.createGroup(admin, [sender], 'joining a busy group');
      const lateWs = await server.connect(late);
      const senderWs = await server.connect(sender);
      // About 500 a second, before, during and after the addition.
      let sent = 0;
      const sending = (async () => {
        while (sent < 300) {
          for (let i = 0; i < 5; i++) senderWs.send({ type: 'send_message', thread_id: thread.id, content: `m${sent++}` });
          await sleep(10);
        }
      })();
      await senderWs.next((f) => f.type === 'message_sent' && f.data.content === 'm50', 10000);
      const add = await server.http('POST', `/api/chat/threads/${thread.id}/participants`,
        { token: admin.token, body: { participant_ids: [late.id] } });
      assert.equal(add.status, 200, add.text);
      await sending;
      const lastSeq = (await senderWs.next((f) => f.type === 'message_sent' && f.data.content === 'm299', 15000, 'the last ack')).data.seq;
      // Until the last one reached the new participant (bounded; what is
      // still missing then is reported below), not a fixed 500 ms.
      const hasLast = () => lateWs.all((f) => f.type === 'new_message' && f.data.seq === lastSeq).length > 0;
      for (let waited = 0; !hasLast() && waited < 10000; waited += 50) await sleep(50);
      const joined = Date.parse(add.body.data.participants.find((p) => p.user_id === late.id).joined_at);
      const got = new Set(lateWs.all((f) => f.type === 'new_message').map((f) => f.data.seq));
      const history = await server.history(admin.token, thread.id);
      missed = missed.concat(history.filter((m) => Date.parse(m.created_at) > joined && !got.has(m.seq)).map((m) => m.seq));
    }
    assert.deepEqual(missed, [], 'messages committed after the addition that the new participant never got');
  });
});
