// The sync of edits and deletions made while a client was away
// (docs/protocol.md, "Edits and deletions missed while away"): the `auth`
// frame's (or the Socket.IO CONNECT's) `changes_after`, the messages
// changed since sent as they are now, then `changes_synced` with the mark
// to give next time. The real binary on 127.0.0.1, Node's `ws` and the
// official socket.io-client.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { startServer, sleep, assertWsError } from './harness.mjs';

const CHANGE_TYPES = new Set(['message_edited', 'message_deleted']);

// Opens a connection authenticated by an `auth` frame carrying `changes_after`
// (undefined: the key is left out).
async function connectSyncing(server, user, changesAfter) {
  const client = await server.connect(user, { via: 'none' });
  const frame = { type: 'auth', token: user.token };
  if (changesAfter !== undefined) frame.changes_after = changesAfter;
  client.send(frame);
  client.established = await client.nextOfType('connection_established');
  return client;
}

// The frames up to and including changes_synced, which must come within the bound.
async function syncedFrames(client, timeoutMs = 10000) {
  const synced = await client.nextOfType('changes_synced', timeoutMs);
  const frames = client.all(() => true);
  return { synced, before: frames.slice(0, frames.indexOf(synced)) };
}

function changeMark(synced) {
  assert.ok(Number.isSafeInteger(synced.change_mark) && synced.change_mark >= 0, JSON.stringify(synced));
  return synced.change_mark;
}

async function edit(client, messageId, content) {
  const reply = await client.request({ type: 'edit_message', message_id: messageId, content });
  assert.equal(reply.type, 'message_edited', JSON.stringify(reply));
  return reply.data;
}

async function remove(client, messageId) {
  const reply = await client.request({ type: 'delete_message', message_id: messageId });
  assert.equal(reply.type, 'message_deleted', JSON.stringify(reply));
}

describe('edits and deletions missed while away', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('a client with no mark yet is given one; coming back with it, it gets what changed meanwhile, then a new mark', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const direct = await server.createDirect(alice, bob);
    const others = await server.createDirect(alice, carol);  // not bob's
    const a = await server.connect(alice);
    const sent = [];
    for (let i = 0; i < 4; i++) sent.push(await a.sendMessage({ thread_id: direct.id, content: `m${i}` }));
    const notBobs = await a.sendMessage({ thread_id: others.id, content: 'for carol' });
    // An edit from before the first mark is not sent again with the next one.
    await edit(a, sent[3].id, 'm3, edited before bob had a mark');

    let b = await connectSyncing(server, bob, null);
    const first = await syncedFrames(b);
    const mark1 = changeMark(first.synced);
    assert.deepEqual(first.before.filter((f) => CHANGE_TYPES.has(f.type)), [], 'no mark given: nothing is resent');
    b.close();
    await b.closed;

    // While bob is away.
    const edited = await edit(a, sent[0].id, 'm0, edited while bob was away');
    await remove(a, sent[1].id);
    await edit(a, sent[2].id, 'm2, first edit');
    const edited2 = await edit(a, sent[2].id, 'm2, second edit');
    await edit(a, notBobs.id, 'carol only');

    b = await connectSyncing(server, bob, mark1);
    const second = await syncedFrames(b);
    const mark2 = changeMark(second.synced);
    assert.ok(mark2 > mark1, `the mark moves on: ${mark1} -> ${mark2}`);
    const changes = second.before.filter((f) => CHANGE_TYPES.has(f.type));
    // Each message once, as it is now, and nothing of a thread bob is not in.
    assert.equal(changes.length, 3, JSON.stringify(changes));
    const byId = new Map(changes.map((f) => [f.type === 'message_edited' ? f.data.id : f.message_id, f]));
    assert.equal(byId.get(sent[0].id)?.type, 'message_edited');
    assert.equal(byId.get(sent[0].id).data.content, edited.content);
    assert.equal(byId.get(sent[0].id).data.thread_id, direct.id);
    assert.ok(byId.get(sent[0].id).data.edited_at, 'edited_at is set');
    assert.deepEqual(
      { type: byId.get(sent[1].id)?.type, thread_id: byId.get(sent[1].id)?.thread_id, seq: byId.get(sent[1].id)?.seq },
      { type: 'message_deleted', thread_id: direct.id, seq: sent[1].seq });
    assert.equal(byId.get(sent[2].id)?.data?.content, edited2.content, 'the last edit, not the first');
    assert.ok(!byId.has(notBobs.id), 'a change in a thread bob is not in is not his');
    assert.ok(!byId.has(sent[3].id), 'a change before the mark is not sent again');
    b.close();
    await b.closed;

    // Nothing changed since: the mark comes back alone.
    b = await connectSyncing(server, bob, mark2);
    const third = await syncedFrames(b);
    assert.ok(changeMark(third.synced) >= mark2);
    assert.deepEqual(third.before.filter((f) => CHANGE_TYPES.has(f.type)), []);
    // Live changes still come as they happen.
    const live = await edit(a, sent[0].id, 'm0, edited live');
    const ev = await b.next((f) => f.type === 'message_edited' && f.data.id === sent[0].id);
    assert.equal(ev.data.content, live.content);
    b.close();

    // A mark past the server's (a store restored from an older backup) is
    // not given back: the server's own level is, which covers the live edit.
    const ahead = await connectSyncing(server, bob, mark2 + 1_000_000);
    const aheadSync = await syncedFrames(ahead);
    assert.ok(changeMark(aheadSync.synced) > mark2 && changeMark(aheadSync.synced) < mark2 + 1_000_000,
      `mark ${aheadSync.synced.change_mark} after ${mark2} and the live edit`);
    ahead.close();

    // A connection whose token is in the URL asks with ?changes_after=.
    const viaUrl = await server.connect(bob, { path: `/ws?changes_after=${mark1}` });
    const urlSync = await syncedFrames(viaUrl);
    assert.deepEqual(urlSync.before.filter((f) => CHANGE_TYPES.has(f.type)).map((f) => f.type).sort(),
      ['message_deleted', 'message_edited', 'message_edited'], 'the same changes as over the auth frame');
    viaUrl.close();
    const fresh = await server.connect(bob, { path: '/ws?changes_after=null' });
    changeMark((await syncedFrames(fresh)).synced);
    fresh.close();
    const refused = await server.tryUpgrade(`/ws?token=${encodeURIComponent(bob.token)}&changes_after=-3`);
    assert.equal(refused.status, 400, JSON.stringify(refused));
    assert.equal(refused.body?.code, 'invalid_field');
    // Without a token in the URL or a header it belongs in the auth frame.
    const tokenless = await server.tryUpgrade(`/ws?changes_after=${mark1}`);
    assert.equal(tokenless.status, 400, JSON.stringify(tokenless));
    assert.equal(tokenless.body?.code, 'invalid_field');
    assert.match(tokenless.body?.message ?? '', /auth frame/);

    // Without changes_after there is no sync and no mark.
    const plain = await connectSyncing(server, bob, undefined);
    await plain.ping();
    await plain.expectNone((f) => f.type === 'changes_synced' || CHANGE_TYPES.has(f.type), 500, 'a sync nobody asked for');
    plain.close();
    a.close();
  });

  it('more changes than a page: all of them, each once, before the mark', async () => {
    const [alice, bob] = await server.registerMany(2);
    const direct = await server.createDirect(alice, bob);
    let b = await connectSyncing(server, bob, null);
    const mark1 = changeMark((await syncedFrames(b)).synced);
    b.close();
    await b.closed;
    const N = 450;  // past two of the server's pages of 200
    await server.sendBacklog(alice, direct.id, N, 'page');
    const history = await server.history(alice.token, direct.id);
    assert.equal(history.length, N);
    const editors = [await server.connect(alice), await server.connect(alice)];
    for (let i = 0; i < N; i += 100) {
      await Promise.all(history.slice(i, i + 100).map((m, j) =>
        editors[(i / 100) % 2].request({ type: 'edit_message', message_id: m.id, content: `${m.content}, edited` }, 20000)
          .then((r) => assert.equal(r.type, 'message_edited', JSON.stringify(r)))));
    }
    for (const e of editors) e.close();

    b = await connectSyncing(server, bob, mark1);
    const { synced, before } = await syncedFrames(b, 30000);
    const edits = before.filter((f) => f.type === 'message_edited');
    assert.equal(edits.length, N);
    assert.equal(new Set(edits.map((f) => f.data.id)).size, N, 'each message once');
    for (const f of edits) assert.match(f.data.content, /^page \d+, edited$/);
    assert.ok(changeMark(synced) >= mark1 + N);
    b.close();
  });

  it('changes_synced comes after a change it covers that waits behind a replay of its thread', async () => {
    // A server with a small outbound bound: a replay pauses as soon as the
    // client stops reading, and the change waits behind it.
    const small = await startServer({ args: ['--max-outbound-bytes', '262144'] });
    try {
      const [alice, bob] = await small.registerMany(2);
      const group = await small.createGroup(alice, [bob]);
      const a = await small.connect(alice);
      const early = await a.sendMessage({ thread_id: group.id, content: 'the bus leaves at 8' });
      let b = await connectSyncing(small, bob, null);
      const mark1 = changeMark((await syncedFrames(b)).synced);
      b.close();
      await b.closed;
      // While bob is away: 150 long messages (about 600 KB) and an edit of the early one.
      const long = 'x'.repeat(3900);
      for (let i = 0; i < 150; i += 50) {
        await Promise.all(Array.from({ length: 50 }, (_, j) => a.sendMessage({ thread_id: group.id, content: `${i + j} ${long}` }, 20000)));
      }
      await edit(a, early.id, 'the bus leaves at 9');

      b = await small.connect(bob, { via: 'none' });
      b.send({ type: 'auth', token: bob.token, changes_after: mark1,
        subscribe: [{ thread_id: group.id, since_seq: early.seq }] });
      b.ws._socket.pause();  // the replay stalls at its budget, the edit held behind it
      await sleep(1000);
      b.ws._socket.resume();
      const { before } = await syncedFrames(b, 20000);
      const edits = before.filter((f) => f.type === 'message_edited' && f.data.id === early.id);
      assert.equal(edits.length, 1, 'the edit the mark covers comes before the mark');
      assert.equal(edits[0].data.content, 'the bus leaves at 9');
      // It waited behind the replay of its thread: after its messages.
      assert.equal(before.filter((f) => f.type === 'new_message' && f.data.thread_id === group.id).length, 150);
      assert.ok(before.indexOf(edits[0]) > before.findLastIndex((f) => f.type === 'new_message'), 'after the replay');
      b.close();
      a.close();
    } finally {
      await small.stop();
    }
  });

  it('a long thread\'s edits held behind its replay do not overflow the outbound bound when the replay ends', async () => {
    const small = await startServer({ args: ['--max-outbound-bytes', '262144'] });
    try {
      const [alice, bob] = await small.registerMany(2);
      const group = await small.createGroup(alice, [bob]);
      let b = await connectSyncing(small, bob, null);
      const mark1 = changeMark((await syncedFrames(b)).synced);
      b.close();
      await b.closed;
      // 400 messages of 1.6 KB, each edited while bob is away: 650 KB of
      // edits, more than twice the bound.
      const N = 400;
      const text = 'y'.repeat(1600);
      const writers = [await small.connect(alice), await small.connect(alice)];
      const sent = [];
      for (let i = 0; i < N; i += 100) {
        sent.push(...await Promise.all(Array.from({ length: 100 }, (_, j) =>
          writers[(i / 100) % 2].sendMessage({ thread_id: group.id, content: `${i + j} ${text}` }, 20000))));
      }
      for (let i = 0; i < N; i += 100) {
        await Promise.all(sent.slice(i, i + 100).map((m, j) =>
          writers[(i / 100) % 2].request({ type: 'edit_message', message_id: m.id, content: `${i + j} edited ${text}` }, 20000)));
      }
      for (const w of writers) w.close();

      // The replay of the whole thread stalls while bob reads nothing; the
      // sync's copies wait behind it.
      b = await small.connect(bob, { via: 'none' });
      b.send({ type: 'auth', token: bob.token, changes_after: mark1, subscribe: [{ thread_id: group.id, since_seq: 0 }] });
      b.ws._socket.pause();
      await sleep(1000);
      b.ws._socket.resume();
      const { before } = await syncedFrames(b, 30000);
      assert.ok(b.isOpen, `still open: ${JSON.stringify(b.closeInfo)}`);
      const edits = before.filter((f) => f.type === 'message_edited');
      assert.equal(new Set(edits.map((f) => f.data.id)).size, N, 'every edit, before the mark');
      assert.equal(before.filter((f) => f.type === 'new_message').length, N, 'the replay whole');
      b.close();
    } finally {
      await small.stop();
    }
  });

  it('while connected, the mark moves on as changes come live: the next connection is not sent them again', async () => {
    // Marks are given at most every 300 ms here (10 s by default).
    const quick = await startServer({ env: { PARLEY_TEST_CHANGE_MARK_MS: '300' } });
    try {
      const [alice, bob] = await quick.registerMany(2);
      const direct = await quick.createDirect(alice, bob);
      const a = await quick.connect(alice);
      const m = await a.sendMessage({ thread_id: direct.id, content: 'at 9' });
      const b = await connectSyncing(quick, bob, null);
      const mark1 = changeMark((await syncedFrames(b)).synced);
      await edit(a, m.id, 'at 10');
      await b.next((f) => f.type === 'message_edited' && f.data.content === 'at 10');
      // A later mark, after the live edit.
      const later = await b.next((f) => f.type === 'changes_synced' && f.change_mark > mark1, 10000, 'a newer mark');
      const frames = b.all(() => true);
      assert.ok(frames.indexOf(later) > frames.findIndex((f) => f.type === 'message_edited'), 'after the edit it covers');
      // Nothing changed since: no newer mark comes.
      await b.expectNone((f) => f.type === 'changes_synced' && f.change_mark > later.change_mark, 1000, 'a mark with no change');
      b.close();
      await b.closed;
      const again = await connectSyncing(quick, bob, later.change_mark);
      const { before } = await syncedFrames(again);
      assert.deepEqual(before.filter((f) => CHANGE_TYPES.has(f.type)), [], 'the live edit is not sent again');
      again.close();
      // A client that asked for no sync is given no marks.
      const plain = await quick.connect(bob);
      await edit(a, m.id, 'at 11');
      await plain.next((f) => f.type === 'message_edited' && f.data.content === 'at 11');
      await plain.expectNone((f) => f.type === 'changes_synced', 1000, 'a mark nobody asked for');
      plain.close();
      a.close();
    } finally {
      await quick.stop();
    }
  });

  it('a bad changes_after is refused with invalid_field and closes (4401), authenticating nothing; a renewal cannot carry one', async () => {
    const [alice] = await server.registerMany(1);
    for (const bad of [-1, 1.5, '12', true, { n: 1 }, 2 ** 53]) {
      const c = await server.connect(alice, { via: 'none' });
      const reply = await c.request({ type: 'auth', token: alice.token, changes_after: bad });
      assertWsError(assert, reply, 'invalid_field', `changes_after ${JSON.stringify(bad)}`);
      assert.match(reply.message, /changes_after/);
      // As any auth frame that cannot be read: closed, not authenticated.
      const closed = await c.waitClose();
      assert.equal(closed.code, 4401, JSON.stringify(closed));
      assert.ok(!c.all((f) => f.type === 'connection_established').length, 'never established');
    }
    // 5.0 is the integer 5 (clients that keep numbers as doubles).
    const ok = await connectSyncing(server, alice, 5.0);
    changeMark((await syncedFrames(ok)).synced);
    const renewal = await ok.request({ type: 'auth', token: alice.token, changes_after: 0 });
    assertWsError(assert, renewal, 'invalid_field');
    assert.match(renewal.message, /changes_after/);
    await ok.ping();  // the connection stays
    ok.close();
  });

  it('Socket.IO: changes_after in the CONNECT auth, changes_synced as an event; a bad one is a connect_error', async () => {
    const [alice, bob] = await server.registerMany(2);
    const direct = await server.createDirect(alice, bob);
    const a = await server.connect(alice);
    const m = await a.sendMessage({ thread_id: direct.id, content: 'hello' });

    const open = (auth) => {
      const socket = io(server.baseUrl, { auth, reconnection: false, forceNew: true, timeout: 5000 });
      const events = [];
      socket.onAny((name, ...args) => events.push({ name, data: args[0] }));
      return { socket, events };
    };
    const until = async (events, pred, ms = 10000) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        const hit = events.find(pred);
        if (hit) return hit;
        await sleep(20);
      }
      throw new Error(`not within ${ms} ms; got ${JSON.stringify(events.map((e) => e.name))}`);
    };

    let s = open({ token: bob.token, changes_after: null, catch_up: false });
    const mark1 = (await until(s.events, (e) => e.name === 'changes_synced')).data.change_mark;
    assert.ok(Number.isSafeInteger(mark1));
    s.socket.close();

    const edited = await edit(a, m.id, 'hello, edited');
    s = open({ token: bob.token, changes_after: mark1, catch_up: false });
    const synced = await until(s.events, (e) => e.name === 'changes_synced');
    assert.ok(synced.data.change_mark > mark1);
    const changes = s.events.slice(0, s.events.indexOf(synced)).filter((e) => e.name === 'message_edited');
    assert.equal(changes.length, 1, JSON.stringify(s.events.map((e) => e.name)));
    assert.equal(changes[0].data.id, m.id);
    assert.equal(changes[0].data.content, edited.content);
    s.socket.close();

    const badSocket = io(server.baseUrl, { auth: { token: bob.token, changes_after: 'x' }, reconnection: false, forceNew: true, timeout: 5000 });
    const err = await new Promise((resolve, reject) => {
      badSocket.on('connect_error', resolve);
      badSocket.on('connect', () => reject(new Error('connected with a bad changes_after')));
    });
    assert.equal(err.data?.code, 'invalid_field');
    assert.match(err.message, /changes_after/);
    badSocket.close();
    a.close();
  });
});
