// Moderation (CONTRACT.md section 8): `parley user disable | enable |
// revoke-tokens` run in another process while the server runs, and message
// delete and edit over WebSocket, REST and Socket.IO. The real binary on
// 127.0.0.1, Node's `ws` and the official socket.io-client.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { startServer, sleep, assertHttpError, assertWsError, PARLEY_BIN, TEST_STORE } from './harness.mjs';

// The server polls account changes every second by default; CONTRACT: within
// 2 s. These servers poll every 200 ms (--account-poll-ms), so a change is
// seen well inside that; the bound below, measured from the moment the
// command has finished (its own start-up is not the server's delay), leaves
// room for a loaded CI machine and still fails a server that only notices at
// the next connect or on a slow (default 1 s) poll plus the contract's 2 s.
const NOTICE_MS = 2000;
const POLL_ARGS = ['--account-poll-ms', '200'];
const CLOSE_BOUND_MS = 4000;

async function closedWithin(client, ms) {
  const started = Date.now();
  const info = await client.waitClose(ms + 1000);
  return { ...info, afterMs: Date.now() - started };
}

describe('account moderation from the command line', () => {
  let server;
  before(async () => { server = await startServer({ args: POLL_ARGS }); });
  after(async () => { await server?.stop(); });

  it('disable closes live connections with 4403 within 2 s, refuses the tokens and the login; enable restores login', async () => {
    const alice = await server.register();
    const bob = await server.register();
    const devices = [await server.connect(alice), await server.connect(alice, { via: 'frame' })];
    const bystander = await server.connect(bob);

    const { stdout, stderr } = await server.cli(['user', 'disable', alice.username]);
    const started = Date.now();
    assert.match(stdout, /disabled user/);
    assert.match(stderr, new RegExp(`event=audit action=user_disable actor=cli:\\S+ target_user_id=${alice.id}`));
    for (const d of devices) {
      const info = await d.waitClose(CLOSE_BOUND_MS + 1000);
      assert.equal(info.code, 4403, `close code ${info.code} "${info.reason}"`);
      assert.ok(Date.now() - started <= CLOSE_BOUND_MS, `closed ${Date.now() - started} ms after the command`);
      assertWsError(assert, d.all((f) => f.type === 'error').at(-1), 'account_disabled');
    }
    assert.ok(bystander.isOpen, 'another user stays connected');
    await bystander.ping();

    assertHttpError(assert, await server.http('GET', '/api/users/me', { token: alice.token }), 401, 'account_disabled');
    const upgrade = await server.tryUpgrade(`/ws?token=${encodeURIComponent(alice.token)}`);
    assert.equal(upgrade.status, 401, 'the upgrade with the old token is refused');
    const login = await server.http('POST', '/api/auth/login', { body: { username: alice.username, password: alice.password } });
    assertHttpError(assert, login, 403, 'account_disabled');
    // Her messages stay: a thread with bob still shows them to bob.

    await server.cli(['user', 'enable', alice.username]);
    const again = await server.http('POST', '/api/auth/login', { body: { username: alice.username, password: alice.password } });
    assert.equal(again.status, 200, again.text);
    const fresh = await server.connect(again.body.data.token);
    await fresh.ping();
    assert.equal((await server.http('GET', '/api/users/me', { token: alice.token })).status, 200,
      'enable lifts the lock on tokens that were never revoked');
  });

  it('a disabled user\'s messages stay in the thread', async () => {
    const [carol, dave] = await server.registerMany(2);
    const thread = await server.createDirect(carol, dave);
    const sent = await server.sendRest(carol.token, thread.id, { content: 'before the ban' });
    assert.equal(sent.status, 201);
    await server.cli(['user', 'disable', carol.username]);
    const history = await server.history(dave.token, thread.id);
    assert.deepEqual(history.map((m) => m.content), ['before the ban']);
    // `parley token` prints no token the server would refuse.
    const refused = await server.cli(['token', carol.username]).then(() => null, (e) => e);
    assert.ok(refused, 'parley token refuses a disabled account');
    assert.match(refused.stderr, /account_disabled: the account \S+ is disabled/);
    await server.cli(['user', 'enable', carol.username]);
    const { stdout } = await server.cli(['token', carol.username]);
    assert.equal((await server.http('GET', '/api/users/me', { token: stdout.trim() })).status, 200, 'enabled: the token works');
  });

  it('revoke-tokens closes connections using old tokens within 2 s; old tokens get 401, a new login works', async () => {
    const erin = await server.register();
    const ws = await server.connect(erin);
    await server.cli(['user', 'revoke-tokens', erin.username]);
    const started = Date.now();
    const info = await ws.waitClose(CLOSE_BOUND_MS + 1000);
    assert.equal(info.code, 4403);
    assert.ok(Date.now() - started <= CLOSE_BOUND_MS, `closed ${Date.now() - started} ms after the command`);
    assertWsError(assert, ws.all((f) => f.type === 'error').at(-1), 'token_revoked');

    assertHttpError(assert, await server.http('GET', '/api/users/me', { token: erin.token }), 401, 'token_revoked');
    const viaFrame = await server.connect(erin, { via: 'none' });
    viaFrame.send({ type: 'auth', token: erin.token });
    assertWsError(assert, await viaFrame.nextOfType('error'), 'token_revoked');
    assert.equal((await viaFrame.waitClose()).code, 4401);

    // Logging in right after (the same second) gives a token that works.
    const login = await server.http('POST', '/api/auth/login', { body: { username: erin.username, password: erin.password } });
    assert.equal(login.status, 200, login.text);
    const token = login.body.data.token;
    assert.equal((await server.http('GET', '/api/users/me', { token })).status, 200);
    const fresh = await server.connect(token);
    await sleep(NOTICE_MS);
    assert.ok(fresh.isOpen, 'a connection with a token issued after the revocation stays open');
    await fresh.ping();
  });

  // Tokens are issued with iat no earlier than the last revocation, which
  // lies a second ahead: a second revocation in that same second must move
  // past it, or the token of a login between the two would survive it.
  it('a second revoke-tokens right after a login refuses that login\'s token, in the same second too', async () => {
    const fay = await server.register();
    while (Date.now() % 1000 > 100) await sleep(5);  // the whole sequence inside one second, most runs
    await server.cli(['user', 'revoke-tokens', fay.username]);
    const login = await server.http('POST', '/api/auth/login', { body: { username: fay.username, password: fay.password } });
    assert.equal(login.status, 200, login.text);
    const token = login.body.data.token;
    assert.equal((await server.http('GET', '/api/users/me', { token })).status, 200, 'the login after the first revocation works');
    await server.cli(['user', 'revoke-tokens', fay.username]);
    assertHttpError(assert, await server.http('GET', '/api/users/me', { token }), 401, 'token_revoked');
    const after = await server.http('POST', '/api/auth/login', { body: { username: fay.username, password: fay.password } });
    assert.equal((await server.http('GET', '/api/users/me', { token: after.body.data.token })).status, 200,
      'a login after the second revocation works');
  });

  // The right password is not a failed login, also on a disabled account: an
  // app that keeps retrying saved credentials must not lock the account (or
  // its school's address) past `enable`.
  it('logins with the right password to a disabled account are no failures: after enable, login works at once', async () => {
    const gus = await server.register();
    await server.cli(['user', 'disable', gus.username]);
    for (let i = 0; i < 12; i++) {
      const r = await server.http('POST', '/api/auth/login', { body: { username: gus.username, password: gus.password } });
      assertHttpError(assert, r, 403, 'account_disabled', `login ${i + 1} while disabled`);
    }
    await server.cli(['user', 'enable', gus.username]);
    const login = await server.http('POST', '/api/auth/login', { body: { username: gus.username, password: gus.password } });
    assert.equal(login.status, 200, login.text);
    // A wrong password to a disabled account still counts.
    await server.cli(['user', 'disable', gus.username]);
    const statuses = [];
    for (let i = 0; i < 11; i++)
      statuses.push((await server.http('POST', '/api/auth/login', { body: { username: gus.username, password: 'wrong-password' } })).status);
    assert.deepEqual(statuses, [...Array(10).fill(401), 429], 'wrong passwords are counted (--login-failures-per-account 10)');
  });

  it('unknown users are an error and change nothing', async () => {
    await assert.rejects(server.cli(['user', 'disable', 'nobody_here']), (err) => {
      assert.match(err.stderr, /user_not_found/);
      return true;
    });
  });

  it('on PostgreSQL, disable, enable and revoke-tokens need only --database (no data dir, no secret)', { skip: TEST_STORE !== 'postgres' }, async () => {
    const carol = await server.register();
    const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-admin-'));  // an operator's home: no ./data here
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PARLEY_')));
    const run = (args) => new Promise((resolve) => {
      execFile(PARLEY_BIN, [...args, '--database', server.database, carol.username], { cwd: elsewhere, env },
        (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
    });
    try {
      for (const cmd of ['disable', 'enable', 'revoke-tokens']) {
        const r = await run(['user', cmd]);
        assert.equal(r.code, 0, `user ${cmd}: ${r.stderr}`);
      }
      assert.equal((await server.http('GET', '/api/users/me', { token: carol.token })).status, 401, 'the revocation took effect');
      assert.deepEqual(fs.readdirSync(elsewhere), [], 'no data dir was made');
    } finally {
      fs.rmSync(elsewhere, { recursive: true, force: true });
    }
  });
});

describe('message delete and edit', () => {
  let server;
  before(async () => { server = await startServer({ args: ['--edit-window', '3'] }); });
  after(async () => { await server?.stop(); });

  async function group() {
    const [admin, bob, carol, outsider] = await server.registerMany(4);
    const thread = await server.createGroup(admin, [bob, carol]);
    return { admin, bob, carol, outsider, thread };
  }

  it('the sender edits: every participant\'s devices get message_edited, history shows it', async () => {
    const { admin, bob, carol, thread } = await group();
    const bob1 = await server.connect(bob);
    const bob2 = await server.connect(bob);
    const adminWs = await server.connect(admin);
    const carolWs = await server.connect(carol);
    const m = await bob1.sendMessage({ thread_id: thread.id, content: 'helo', client_msg_id: 'e1' });

    const reply = await bob1.request({ type: 'edit_message', message_id: m.id, content: 'hello' });
    assert.equal(reply.type, 'message_edited', JSON.stringify(reply));
    assert.equal(reply.data.content, 'hello');
    assert.equal(reply.data.seq, m.seq);
    assert.ok(reply.data.edited_at, 'edited_at is set');
    assert.equal(m.change_no, undefined, 'a message never edited has no change number');
    assert.ok(Number.isSafeInteger(reply.data.change_no) && reply.data.change_no > 0, `the edit's number: ${reply.data.change_no}`);
    for (const c of [bob2, adminWs, carolWs]) {
      const ev = await c.next((f) => f.type === 'message_edited' && f.data.id === m.id);
      assert.equal(ev.data.content, 'hello');
      assert.equal(ev.data.thread_id, thread.id);
      assert.equal(ev.data.edited_at, reply.data.edited_at);
      assert.equal(ev.data.change_no, reply.data.change_no, 'every copy names the same change');
    }
    await bob1.expectNone((f) => f.type === 'message_edited', 300, 'a second message_edited on the editing connection');
    const history = await server.history(carol.token, thread.id);
    const stored = history.find((x) => x.id === m.id);
    assert.equal(stored.content, 'hello');
    assert.equal(stored.edited_at, reply.data.edited_at);
    assert.equal(stored.deleted, undefined);
    assert.equal(stored.change_no, reply.data.change_no, 'history names the last change');

    // REST PATCH does the same.
    const patched = await server.http('PATCH', `/api/chat/messages/${m.id}`, { token: bob.token, body: { content: 'hello!' } });
    assert.equal(patched.status, 200, patched.text);
    assert.equal(patched.body.data.content, 'hello!');
    assert.ok(patched.body.data.change_no > reply.data.change_no, 'a later change, a higher number');
    for (const c of [bob1, bob2, adminWs, carolWs]) {
      const ev = await c.next((f) => f.type === 'message_edited' && f.data.content === 'hello!');
      assert.equal(ev.data.id, m.id);
      assert.equal(ev.data.change_no, patched.body.data.change_no);
    }
  });

  it('edits sent back to back on one connection are stored and answered in order: the last one wins', async () => {
    const { bob, carol, thread } = await group();
    const bobWs = await server.connect(bob);
    const carolWs = await server.connect(carol);
    const m = await bobWs.sendMessage({ thread_id: thread.id, content: 'draft' });
    const edits = Array.from({ length: 20 }, (_, i) => `edit ${i + 1}`);
    edits.forEach((content, i) => bobWs.send({ type: 'edit_message', message_id: m.id, content, request_id: `e${i + 1}` }));
    await bobWs.next((f) => f.type === 'message_edited' && f.request_id === 'e20', 10000, 'the last answer');
    const answers = bobWs.all((f) => f.type === 'message_edited' && f.request_id);
    assert.deepEqual(answers.map((f) => f.data.content), edits, 'answers in request order, each with its own text');
    const stored = (await server.history(carol.token, thread.id)).find((x) => x.id === m.id);
    assert.equal(stored.content, 'edit 20', 'history holds the last edit');
    await carolWs.next((f) => f.type === 'message_edited' && f.data.content === 'edit 20', 5000, 'the last edit at Carol');
    await sleep(300);
    assert.equal(carolWs.all((f) => f.type === 'message_edited').at(-1).data.content, 'edit 20', "Carol's last frame shows the message as it is");
  });

  it('an edit and a delete carry the message\'s status as history has it: read ticks never go back', async () => {
    const { admin, bob, carol, thread } = await group();
    const adminWs = await server.connect(admin);
    const m1 = await server.sendRest(admin.token, thread.id, { content: 'one' });
    const m2 = await server.sendRest(admin.token, thread.id, { content: 'two' });
    for (const reader of [bob, carol]) {
      const marked = await server.http('POST', `/api/chat/mark-read/${thread.id}`, { token: reader.token });
      assert.equal(marked.status, 200, marked.text);
    }
    const edited = await server.http('PATCH', `/api/chat/messages/${m1.body.data.id}`, { token: admin.token, body: { content: 'one!' } });
    assert.equal(edited.status, 200, edited.text);
    assert.equal(edited.body.data.status, 'read');
    const deleted = await server.http('DELETE', `/api/chat/messages/${m2.body.data.id}`, { token: admin.token });
    assert.equal(deleted.status, 200, deleted.text);
    assert.equal(deleted.body.data.status, 'read');
    // message_edited carries the whole message, which replaces the client's copy.
    const ev = await adminWs.next((f) => f.type === 'message_edited');
    assert.equal(ev.data.status, 'read', JSON.stringify(ev.data));
    // A system message is not anyone's to edit, and the answer says why.
    const [dave] = await server.registerMany(1);
    const add = await server.http('POST', `/api/chat/threads/${thread.id}/participants`, { token: admin.token, body: { participant_ids: [dave.id] } });
    assert.equal(add.status, 200, add.text);
    const history = await server.history(admin.token, thread.id);
    const notice = history.find((x) => x.message_type === 'system');
    assert.ok(notice, 'the addition left a notice');
    const refused = await server.http('PATCH', `/api/chat/messages/${notice.id}`, { token: admin.token, body: { content: 'x' } });
    assert.equal(refused.status, 403);
    assert.match(refused.body.message, /system messages/);
    // Nor to delete, not even by an admin: the record of who joined stays whole.
    const kept = await server.http('DELETE', `/api/chat/messages/${notice.id}`, { token: admin.token });
    assert.equal(kept.status, 403, kept.text);
    assert.match(kept.body.message, /system messages cannot be deleted/);
    const after = (await server.history(admin.token, thread.id)).find((x) => x.id === notice.id);
    assert.equal(after.content, notice.content);
    assert.equal(after.deleted ?? false, false);
  });

  it('a thread admin deletes: a tombstone with its seq, message_deleted everywhere, history and offline sync show it', async () => {
    const { admin, bob, carol, thread } = await group();
    const bob1 = await server.connect(bob);
    const bob2 = await server.connect(bob);
    const carolWs = await server.connect(carol);
    const first = await bob1.sendMessage({ thread_id: thread.id, content: 'something rude' });
    const second = await bob1.sendMessage({ thread_id: thread.id, content: 'still here' });

    const res = await server.http('DELETE', `/api/chat/messages/${first.id}`, { token: admin.token });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.data.deleted, true);
    assert.equal(res.body.data.content, '');
    assert.equal(res.body.data.seq, first.seq);
    assert.ok(res.body.data.change_no > 0, `the deletion's number: ${res.body.data.change_no}`);
    for (const c of [bob1, bob2, carolWs]) {
      const ev = await c.next((f) => f.type === 'message_deleted');
      assert.deepEqual({ thread_id: ev.thread_id, message_id: ev.message_id, seq: ev.seq, change_no: ev.change_no },
        { thread_id: thread.id, message_id: first.id, seq: first.seq, change_no: res.body.data.change_no });
    }
    const history = await server.history(carol.token, thread.id);
    const seqs = history.map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    const tomb = history.find((m) => m.id === first.id);
    assert.equal(tomb.deleted, true);
    assert.equal(tomb.content, '');
    assert.equal(tomb.seq, first.seq);
    assert.equal(tomb.change_no, res.body.data.change_no);
    assert.equal(history.find((m) => m.id === second.id).content, 'still here');
    const offline = await server.http('GET', '/api/chat/offline-messages?last_check_time=1970-01-01T00:00:00Z', { token: carol.token });
    assert.equal(offline.status, 200);
    const inSync = offline.body.data.messages.find((m) => m.id === first.id);
    assert.equal(inSync.deleted, true);
    assert.equal(inSync.content, '');

    // The sender deletes their own over WebSocket; the reply is message_deleted.
    const reply = await bob1.request({ type: 'delete_message', message_id: second.id });
    assert.equal(reply.type, 'message_deleted');
    assert.equal(reply.message_id, second.id);
    assert.ok(reply.change_no > res.body.data.change_no, 'the second deletion numbered after the first');
    await carolWs.next((f) => f.type === 'message_deleted' && f.message_id === second.id);
    await bob2.next((f) => f.type === 'message_deleted' && f.message_id === second.id);
    // Editing a tombstone is refused.
    assertWsError(assert, await bob1.request({ type: 'edit_message', message_id: second.id, content: 'x' }), 'message_deleted');
  });

  it('a deleted message leaves the unread counts: the badge and the thread list count only what is left to read', async () => {
    const { admin, bob, carol, thread } = await group();
    const rude = (await server.sendRest(bob.token, thread.id, { content: 'something rude' })).body.data;
    await server.sendRest(bob.token, thread.id, { content: 'still here' });
    const unread = async (user) => {
      const res = await server.http('GET', '/api/chat/unread-count', { token: user.token });
      assert.equal(res.status, 200, res.text);
      const list = await server.http('GET', '/api/chat/threads', { token: user.token });
      const listed = list.body.data.threads.find((t) => t.id === thread.id).unread_count;
      return { total: res.body.data.unread_count, thread: res.body.data.threads.find((t) => t.thread_id === thread.id).unread_count, listed };
    };
    assert.deepEqual(await unread(carol), { total: 2, thread: 2, listed: 2 });
    assert.equal((await server.http('DELETE', `/api/chat/messages/${rude.id}`, { token: admin.token })).status, 200);
    assert.deepEqual(await unread(carol), { total: 1, thread: 1, listed: 1 }, 'the tombstone is not unread');
    assert.deepEqual(await unread(admin), { total: 1, thread: 1, listed: 1 });
  });

  it('a participant who is neither sender nor admin, and a non-participant, get forbidden and change nothing', async () => {
    const { admin, bob, carol, outsider, thread } = await group();
    const bobWs = await server.connect(bob);
    const carolWs = await server.connect(carol);
    const m = await bobWs.sendMessage({ thread_id: thread.id, content: 'mine' });

    assertWsError(assert, await carolWs.request({ type: 'delete_message', message_id: m.id }), 'forbidden');
    assertWsError(assert, await carolWs.request({ type: 'edit_message', message_id: m.id, content: 'theirs' }), 'forbidden');
    assertHttpError(assert, await server.http('DELETE', `/api/chat/messages/${m.id}`, { token: outsider.token }), 403, 'forbidden');
    assertHttpError(assert, await server.http('PATCH', `/api/chat/messages/${m.id}`, { token: outsider.token, body: { content: 'x' } }), 403, 'forbidden');
    // An admin may delete but not edit someone else's message.
    assertHttpError(assert, await server.http('PATCH', `/api/chat/messages/${m.id}`, { token: admin.token, body: { content: 'x' } }), 403, 'forbidden');
    assertHttpError(assert, await server.http('DELETE', '/api/chat/messages/not-a-uuid', { token: bob.token }), 403, 'forbidden');
    assertHttpError(assert, await server.http('PATCH', `/api/chat/messages/${m.id}`, { token: bob.token, body: { content: '   ' } }), 400, 'empty_content');

    const history = await server.history(bob.token, thread.id);
    const stored = history.find((x) => x.id === m.id);
    assert.equal(stored.content, 'mine');
    assert.equal(stored.edited_at, null);
    await carolWs.expectNone((f) => f.type === 'message_deleted' || f.type === 'message_edited', 300);
  });

  it('an edit after the window is refused (--edit-window 3)', async () => {
    const { bob, thread } = await group();
    const sent = await server.sendRest(bob.token, thread.id, { content: 'old news' });
    await sleep(3500);
    const res = await server.http('PATCH', `/api/chat/messages/${sent.body.data.id}`, { token: bob.token, body: { content: 'new' } });
    assertHttpError(assert, res, 403, 'edit_window_passed');
  });

  it('Socket.IO clients get message_edited and message_deleted as events', async () => {
    const { bob, carol, thread } = await group();
    const socket = io(server.baseUrl, { auth: { token: carol.token }, reconnection: false, forceNew: true, timeout: 5000 });
    const events = [];
    socket.onAny((event, ...args) => {
      const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
      events.push({ event, data: args[0] });
      if (ack) ack({ received: true });
    });
    try {
      await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('connect_error', reject); });
      const sent = await server.sendRest(bob.token, thread.id, { content: 'sio' });
      const id = sent.body.data.id;
      assert.equal((await server.http('PATCH', `/api/chat/messages/${id}`, { token: bob.token, body: { content: 'sio!' } })).status, 200);
      assert.equal((await server.http('DELETE', `/api/chat/messages/${id}`, { token: bob.token })).status, 200);
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && !events.some((e) => e.event === 'message_deleted')) await sleep(50);
      const edited = events.find((e) => e.event === 'message_edited');
      assert.ok(edited, `events: ${events.map((e) => e.event).join(',')}`);
      assert.equal(edited.data.id, id);
      assert.equal(edited.data.content, 'sio!');
      const deleted = events.find((e) => e.event === 'message_deleted');
      assert.ok(deleted, `events: ${events.map((e) => e.event).join(',')}`);
      assert.ok(deleted.data.change_no > edited.data.change_no, `the deletion numbered after the edit: ${JSON.stringify(deleted.data)}`);
      assert.deepEqual(deleted.data, { thread_id: thread.id, message_id: id, seq: sent.body.data.seq, change_no: deleted.data.change_no });
    } finally {
      socket.close();
    }
  });
});

// A replay is sent page by page, paced by the client's reading: a change made
// meanwhile must not reach the client before the copy the replay (or a live
// message held behind it) still carries, or the client keeps the old text.
describe('a delete or edit made while a replay is under way', () => {
  let server;
  before(async () => { server = await startServer({ args: ['--max-outbound-bytes', '1048576'] }); });
  after(async () => { await server?.stop(); });

  it('reaches the client after the replayed copy, so it ends deleted or edited', async () => {
    const [alice, bob] = await server.registerMany(2);
    const dm = await server.createDirect(alice, bob);
    const aliceWs = await server.connect(alice);
    const big = '😀'.repeat(3990);  // about 16 KB a message: 300 of them outrun a 1 MiB queue
    const sent = [];
    for (let batch = 0; batch < 6; batch++) {
      const acks = [];
      for (let i = 0; i < 50; i++) acks.push(aliceWs.sendMessage({ thread_id: dm.id, content: `${big} #${batch * 50 + i}` }, 20000));
      sent.push(...await Promise.all(acks));
    }
    const bySeq = new Map(sent.map((m) => [m.seq, m]));
    const deleted = bySeq.get(290), edited = bySeq.get(295);

    const bobWs = await server.connect(bob);
    bobWs.send({ type: 'subscribe_thread', thread_id: dm.id, since_seq: 0, request_id: 'catch-up' });
    bobWs.ws._socket.pause();  // Bob stops reading: the replay waits for his queue to drain
    await sleep(800);
    assert.equal((await server.http('DELETE', `/api/chat/messages/${deleted.id}`, { token: alice.token })).status, 200);
    const patched = await server.http('PATCH', `/api/chat/messages/${edited.id}`, { token: alice.token, body: { content: 'EDITED' } });
    assert.equal(patched.status, 200, patched.text);
    const live = await aliceWs.sendMessage({ thread_id: dm.id, content: 'live, then taken down' });
    assert.equal((await server.http('DELETE', `/api/chat/messages/${live.id}`, { token: alice.token })).status, 200);
    bobWs.ws._socket.resume();

    await bobWs.next((f) => f.request_id === 'catch-up', 30000, 'thread_subscribed');
    await bobWs.next((f) => f.type === 'message_deleted' && f.message_id === live.id, 10000, 'the live message\'s deletion');
    // What Bob's client shows for a message: the last frame about it wins.
    const lastAbout = (m) => {
      const about = bobWs.all((f) => (f.type === 'new_message' || f.type === 'message_edited') ? f.data?.id === m.id
        : f.type === 'message_deleted' && f.message_id === m.id);
      assert.ok(about.length > 0, `Bob heard of seq ${m.seq}`);
      return about.at(-1);
    };
    const shows = (f) => {
      if (f.type === 'message_deleted' || f.data.deleted) return 'deleted';
      return f.data.content.length > 40 ? `the old text (${f.data.content.length} characters)` : f.data.content;
    };
    assert.equal(shows(lastAbout(deleted)), 'deleted', 'the message deleted during the replay');
    assert.equal(shows(lastAbout(edited)), 'EDITED', 'the message edited during the replay');
    assert.equal(shows(lastAbout(live)), 'deleted', 'the live message held behind the replay, then deleted');
  });
});

// The reply to a connection's own edit comes from the worker that wrote it;
// a later change's event comes through the bus and may overtake it (here the
// reply is held back 3 s by a test setting). The editing device must still
// end on the message as it is: its reply is followed by the newer change.
describe("a later change overtaking a connection's own edit reply", () => {
  let server;
  before(async () => { server = await startServer({ env: { PARLEY_TEST_MODERATION_REPLY_PAUSE_MS: '3000' } }); });
  after(async () => { await server?.stop(); });

  it('the editing device gets its reply, then the newer deletion or edit again, and ends on it', async () => {
    const [admin, bob] = await server.registerMany(2);
    const thread = await server.createGroup(admin, [bob]);
    const phone = await server.connect(bob);
    const tablet = await server.connect(bob);
    const about = (ws, id) => ws.all((f) => (f.type === 'message_edited' ? f.data?.id === id
      : f.type === 'message_deleted' && f.message_id === id));
    const shows = (f) => (f.type === 'message_deleted' || f.data.deleted ? 'deleted' : f.data.content);
    // Waits (bounded) until `ws` heard `n` frames about message `id`; the
    // assertions after it say which.
    const heard = async (ws, id, n) => {
      const end = Date.now() + 8000;
      while (about(ws, id).length < n && Date.now() < end) await sleep(50);
    };
    const editOn = (ws, id, content) => ws.next((f) => f.type === 'message_edited' && f.data?.id === id && f.data.content === content,
      5000, `the edit "${content}" on another device`);

    // The admin deletes while Bob's edit reply is held back.
    const m1 = await phone.sendMessage({ thread_id: thread.id, content: 'one' });
    phone.send({ type: 'edit_message', message_id: m1.id, content: 'one, edited', request_id: 'e1' });
    await editOn(tablet, m1.id, 'one, edited');  // the edit committed; its reply waits
    const del = await server.http('DELETE', `/api/chat/messages/${m1.id}`, { token: admin.token });
    assert.equal(del.status, 200, del.text);
    await phone.next((f) => f.request_id === 'e1', 8000, 'the edit reply');
    await heard(phone, m1.id, 3);
    const phoneFrames = about(phone, m1.id);
    assert.deepEqual(phoneFrames.map((f) => f.type), ['message_deleted', 'message_edited', 'message_deleted'],
      'the deletion came first, then the reply, then the deletion again');
    assert.equal(shows(phoneFrames.at(-1)), 'deleted');

    // Bob's two devices edit the same message at once: each ends on the later edit.
    const m2 = await phone.sendMessage({ thread_id: thread.id, content: 'two' });
    phone.send({ type: 'edit_message', message_id: m2.id, content: 'from the phone', request_id: 'p' });
    await editOn(tablet, m2.id, 'from the phone');  // committed first
    tablet.send({ type: 'edit_message', message_id: m2.id, content: 'from the tablet', request_id: 't' });
    await phone.next((f) => f.request_id === 'p', 8000, "the phone's reply");
    await tablet.next((f) => f.request_id === 't', 8000, "the tablet's reply");
    const end = Date.now() + 8000;
    while (Date.now() < end && ![phone, tablet].every((ws) => shows(about(ws, m2.id).at(-1)) === 'from the tablet')) await sleep(50);
    const stored = (await server.history(admin.token, thread.id)).find((x) => x.id === m2.id);
    assert.equal(stored.content, 'from the tablet');
    for (const [name, ws] of [['phone', phone], ['tablet', tablet]]) {
      assert.equal(shows(about(ws, m2.id).at(-1)), 'from the tablet', `the ${name} ends on the message as stored`);
    }
  });
});
