// `parley migrate-store --from sqlite:DIR --to postgres://…`: an installation
// filled through the real server on SQLite, stopped, copied, and served from
// PostgreSQL must answer the same through the API (history, seq, unread
// counts, read and delivery marks, logins, retried client_msg_ids); a copy
// stopped half-way (test setting, then kill -9) resumes without doubling
// anything; running it again is harmless; it refuses a data dir a server
// holds, a target that holds other data, and a column both stores have that
// it does not copy, changing nothing.
//
// Needs the test PostgreSQL (PARLEY_TEST_PG_STATE): registered as
// e2e.pg.node.migrate_store only.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ParleyServer, PARLEY_BIN, freshDatabaseUrl, randomId, sleep } from './harness.mjs';

// Runs `parley migrate-store`; resolves {code, stdout, stderr} (never rejects on exit codes).
function migrateStore(dataDir, url, { batchRows = 1000, env = {}, timeoutMs = 60000 } = {}) {
  return new Promise((resolve) => {
    execFile(PARLEY_BIN, ['migrate-store', '--from', `sqlite:${dataDir}`, '--to', url, '--batch-rows', String(batchRows)],
      { timeout: timeoutMs, env: { ...process.env, ...env } },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }));
  });
}

function psql(url, sql) {
  return execFileSync('psql', ['-qtA', '-v', 'ON_ERROR_STOP=1', url, '-c', sql], { encoding: 'utf8', timeout: 30000 }).trim();
}

// A server on SQLite whatever PARLEY_TEST_STORE says: the source of a copy.
async function startSqliteServer(secret) {
  const server = new ParleyServer({ secret, database: 'unused' });
  server.database = null;
  await server.start();
  return server;
}

async function startPgServer(secret, database) {
  const server = new ParleyServer({ secret, database });
  await server.start();
  return server;
}

async function login(server, user) {
  const res = await server.http('POST', '/api/auth/login', { body: { username: user.username, password: user.password } });
  assert.equal(res.status, 200, `login of ${user.username} answered ${res.status}: ${res.text}`);
  return res.body.data;
}

// Everything a user sees that the copy must keep, in a comparable form.
async function snapshot(server, users, threadIds) {
  const out = {};
  for (const u of users) {
    const me = await login(server, u);
    const token = me.token;
    const list = await server.http('GET', '/api/chat/threads', { token });
    assert.equal(list.status, 200);
    const unread = await server.http('GET', '/api/chat/unread-count', { token });
    assert.equal(unread.status, 200);
    out[u.username] = {
      user: me.user,
      threads: list.body.data.threads.map((t) => ({
        id: t.id, type: t.type, title: t.title, unread_count: t.unread_count, last_seq: t.last_seq,
        last_message: t.last_message?.id ?? null,
      })),
      unread: unread.body.data,
    };
  }
  const owner = (await login(server, users[0])).token;
  for (const id of threadIds) {
    const t = await server.http('GET', `/api/chat/threads/${id}`, { token: owner });
    assert.equal(t.status, 200, `GET thread ${id}: ${t.text}`);
    const parts = t.body.data.participants.map((p) => ({
      user_id: p.user_id ?? p.id, is_admin: p.is_admin, last_read_seq: p.last_read_seq,
      last_delivered_seq: p.last_delivered_seq,
    })).sort((a, b) => a.user_id.localeCompare(b.user_id));
    out[`thread ${id}`] = { participants: parts, history: await server.history(owner, id) };
  }
  return out;
}

describe('migrate-store: SQLite to PostgreSQL', () => {
  const secret = `mig-${randomId(16)}`;
  let source;       // stopped SQLite server (data dir kept)
  let users;        // [alice, bob, carol, dave] with passwords
  let dm, group;
  let onSqlite;     // snapshot on SQLite
  let retried;      // a message sent with a client_msg_id
  let davesLogin;   // the disabled account's login answer on SQLite
  let target;       // the PostgreSQL database of the first copy
  let daveReadSeq;  // how far dave had read the group when he left it

  before(async () => {
    source = await startSqliteServer(secret);
    users = await source.registerMany(4);
    const [alice, bob, carol, dave] = users;
    dm = await source.createDirect(alice, bob);
    group = await source.createGroup(alice, [bob, carol, dave], 'Physics 101');
    const ca = await source.connect(alice);
    const cb = await source.connect(bob);
    for (let i = 0; i < 12; i++) {
      const m = await ca.sendMessage({ thread_id: i % 3 ? group.id : dm.id, content: `hello ${i} ✓ 😀`, client_msg_id: `c-${i}` });
      if (i === 5) retried = m;
    }
    for (let i = 0; i < 5; i++) {
      const res = await source.sendRest(carol.token, group.id, { content: `from carol ${i}`, client_msg_id: `carol-${i}` });
      assert.equal(res.status, 201);
    }
    await source.sendRest(bob.token, dm.id, { content: 'line one\nline two\ttab "quoted" \\ back' });
    // Bob reads the DM up to seq 3 and acknowledges delivery of the group's messages.
    assert.equal((await source.http('POST', `/api/chat/mark-read/${dm.id}?up_to_seq=3`, { token: bob.token })).status, 200);
    const groupHistory = await source.history(bob.token, group.id);
    cb.send({ type: 'message_received', message_id: groupHistory[6].id });
    await ca.next((f) => f.type === 'message_delivered' && f.message_id === groupHistory[6].id, 5000,
      'message_delivered for the acknowledged message');
    // Carol reads the group entirely over WebSocket.
    const cc = await source.connect(carol);
    const read = await cc.request({ type: 'mark_as_read', thread_id: group.id });
    assert.notEqual(read.type, 'error', `mark_as_read: ${JSON.stringify(read)}`);
    await cb.ping();
    // Moderation state: a deleted message (its tombstone) and a disabled account.
    const deleted = await source.http('DELETE', `/api/chat/messages/${groupHistory[2].id}`, { token: alice.token });
    assert.equal(deleted.status, 200, `DELETE answered ${deleted.status}: ${deleted.text}`);
    // Dave reads the group, then leaves it: his marks stay with the thread (former_marks).
    const daveRead = await source.http('POST', `/api/chat/mark-read/${group.id}`, { token: dave.token });
    assert.equal(daveRead.status, 200, daveRead.text);
    daveReadSeq = daveRead.body.data.last_read_seq;
    const left = await source.http('DELETE', `/api/chat/threads/${group.id}/participants/${dave.id}`, { token: dave.token });
    assert.equal(left.status, 200, left.text);
    await source.cli(['user', 'disable', dave.username]);
    davesLogin = await source.http('POST', '/api/auth/login', { body: { username: dave.username, password: dave.password } });
    assert.equal(davesLogin.status, 403, `a disabled account's login: ${davesLogin.text}`);
    // The marks are written by the group commit: wait (bounded) until they read back.
    for (let i = 0; i < 60; i++) {
      onSqlite = await snapshot(source, users.slice(0, 3), [dm.id, group.id]);
      const bobThread = onSqlite[`thread ${group.id}`].participants.find((p) => p.user_id === bob.id);
      if (bobThread.last_delivered_seq >= groupHistory[6].seq) break;
      await sleep(50);
    }
    const bobThread = onSqlite[`thread ${group.id}`].participants.find((p) => p.user_id === bob.id);
    assert.ok(bobThread.last_delivered_seq >= groupHistory[6].seq, 'the delivery mark was stored before the copy');
    await source.stop({ removeData: false });
  });

  after(async () => {
    await source?.stop();
  });

  it('copies everything; a PostgreSQL server then answers exactly as the SQLite one did', async () => {
    target = freshDatabaseUrl();
    const run = await migrateStore(source.dataDir, target, { batchRows: 3 });
    assert.equal(run.code, 0, `migrate-store failed: ${run.stderr}`);
    assert.match(run.stdout, /users 4\b/);
    assert.match(run.stdout, /messages 19\b/);
    assert.match(run.stdout, /2 threads with equal message count and max seq/);
    assert.match(run.stderr, /migrate-store: messages 19\/19 \(100%\)/, 'progress on stderr');
    assert.equal(psql(target, `SELECT last_read_seq FROM former_marks WHERE user_id = '${users[3].id}'`), String(daveReadSeq),
      'the marks of a member who left are copied');

    const pg = await startPgServer(secret, target);
    try {
      const after = await snapshot(pg, users.slice(0, 3), [dm.id, group.id]);
      assert.deepEqual(after, onSqlite, 'users, threads, unread counts, read/delivery marks and history are identical');
      assert.ok(after[`thread ${group.id}`].history[2].deleted, 'the deleted message is still a tombstone');
      const dave = users[3];
      const davePg = await pg.http('POST', '/api/auth/login', { body: { username: dave.username, password: dave.password } });
      assert.equal(davePg.status, davesLogin.status, 'the disabled account stays disabled');
      assert.deepEqual(davePg.body, davesLogin.body);
      // A token issued by the SQLite server still works (same secret).
      assert.equal((await pg.http('GET', '/api/users/me', { token: users[0].token })).status, 200);
      // A retry of a message stored before the copy is recognised, not stored twice.
      const again = await pg.sendRest(users[0].token, retried.thread_id, { content: retried.content, client_msg_id: 'c-5' });
      assert.equal(again.status, 200, `retry answered ${again.status}: ${again.text}`);
      assert.equal(again.body.data.id, retried.id);
      // New messages continue the thread's seq, later than everything copied.
      const lastBefore = onSqlite[`thread ${group.id}`].history.at(-1);
      const fresh = await pg.sendRest(users[2].token, group.id, { content: 'after the move' });
      assert.equal(fresh.status, 201);
      assert.equal(fresh.body.data.seq, lastBefore.seq + 1);
      assert.ok(Date.parse(fresh.body.data.created_at) >= Date.parse(lastBefore.created_at));
    } finally {
      await pg.stop();
    }
  });

  it('running it again changes nothing and says so; a target from another source is refused', async () => {
    const counts = psql(target, 'SELECT (SELECT COUNT(*) FROM users) || \',\' || (SELECT COUNT(*) FROM messages)');
    // The server above added one message: the check now reports the difference.
    const again = await migrateStore(source.dataDir, target);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /copy_mismatch: messages: 19 rows in the source, 20 in the target/);
    assert.equal(psql(target, 'SELECT (SELECT COUNT(*) FROM users) || \',\' || (SELECT COUNT(*) FROM messages)'), counts);

    const other = new ParleyServer({ secret, database: 'unused' });
    other.database = null;
    await other.start();
    await other.register();
    await other.stop({ removeData: false });
    try {
      const refused = await migrateStore(other.dataDir, target);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /target_other_source/);
      assert.equal(psql(target, 'SELECT (SELECT COUNT(*) FROM users) || \',\' || (SELECT COUNT(*) FROM messages)'), counts);
    } finally {
      await other.stop();
    }
  });

  it('refuses a data dir a server holds, and a database that already holds other data', async () => {
    const running = await startSqliteServer(secret);
    try {
      await running.register();
      const locked = await migrateStore(running.dataDir, freshDatabaseUrl());
      assert.equal(locked.code, 1);
      assert.match(locked.stderr, /data_dir_locked/);
    } finally {
      await running.stop();
    }

    const used = await startPgServer(secret, freshDatabaseUrl());
    try {
      await used.register();
    } finally {
      await used.stop();
    }
    const refused = await migrateStore(source.dataDir, used.database);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /target_not_empty: the target database already holds data \(1 users\)/);
    assert.equal(psql(used.database, 'SELECT COUNT(*) FROM users'), '1', 'nothing was copied');
    assert.equal(psql(used.database, 'SELECT COUNT(*) FROM messages'), '0');

    const bad = await migrateStore(source.dataDir, 'mysql://x');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid_config/);
  });

  // The copy's fingerprint summed microsecond times, which overflows SQLite's
  // SUM past about 5,000 threads; and a member's marks are one row per
  // membership, keyed by when it began (three key columns to page through).
  it('copies a store of 5,500 threads, and every membership\'s marks of one member', async () => {
    const dirs = [];
    const seeded = (users, groupSize) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-mig-many-'));
      dirs.push(dir);
      execFileSync(PARLEY_BIN, ['seed', '--data-dir', dir, '--users', String(users), '--group-size', String(groupSize)],
        { timeout: 60000, stdio: 'ignore' });
      return dir;
    };
    try {
      const many = seeded(11000, 2);
      const url = freshDatabaseUrl();
      const run = await migrateStore(many, url, { timeoutMs: 120000 });
      assert.equal(run.code, 0, `migrate-store failed: ${run.stderr}`);
      assert.equal(psql(url, 'SELECT COUNT(*) FROM threads'), '5500');

      const small = seeded(3, 3);
      const thread = '00000000-0000-4000-9000-000000000000';
      // Times of different lengths: paged as text, "80" would come after "700".
      const times = [9, 80, 700, 6000, 50000, 400000, 3000000];
      const rows = times.map((t, k) => `('${thread}', '00000000-0000-4000-8000-000000000000', ${t}, ${k + 1}, ${k + 1})`);
      execFileSync('sqlite3', [path.join(small, 'parley.db'),
        `INSERT INTO former_marks (thread_id, user_id, joined_at, last_read_seq, last_delivered_seq) VALUES ${rows.join(', ')}`], { timeout: 30000 });
      const url2 = freshDatabaseUrl();
      const paged = await migrateStore(small, url2, { batchRows: 2 });
      assert.equal(paged.code, 0, `migrate-store failed: ${paged.stderr}`);
      assert.equal(psql(url2, "SELECT string_agg(joined_at || ':' || last_read_seq, ',' ORDER BY joined_at) FROM former_marks"),
        times.map((t, k) => `${t}:${k + 1}`).join(','), 'seven rows, paged two at a time');
    } finally {
      for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to leave behind a column both stores have but it does not copy; a SQLite-only one is named', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-mig-schema-'));
    try {
      execFileSync(PARLEY_BIN, ['seed', '--data-dir', dir, '--users', '3', '--group-size', '3'], { timeout: 30000, stdio: 'ignore' });
      execFileSync('sqlite3', [path.join(dir, 'parley.db'), 'ALTER TABLE users ADD COLUMN nickname TEXT; ALTER TABLE users ADD COLUMN mood TEXT'],
        { timeout: 30000 });
      const url = freshDatabaseUrl();
      execFileSync(PARLEY_BIN, ['migrate', '--database', url, '--data-dir', dir], { timeout: 30000, stdio: 'ignore' });
      psql(url, 'ALTER TABLE users ADD COLUMN nickname TEXT');
      const refused = await migrateStore(dir, url);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /schema_mismatch: column users\.nickname exists in both stores but migrate-store does not copy it/);
      assert.equal(psql(url, 'SELECT COUNT(*) FROM users'), '0', 'nothing was copied');

      psql(url, 'ALTER TABLE users DROP COLUMN nickname');
      const copied = await migrateStore(dir, url);
      assert.equal(copied.code, 0, copied.stderr);
      assert.match(copied.stdout, /not copied: users\.mood \(PostgreSQL has no such column\)/);
      assert.match(copied.stdout, /users 3\b/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('migrate-store: interrupted and resumed', () => {
  const secret = `mig-${randomId(16)}`;
  let source;
  let users;
  let threads;
  let total = 0;

  before(async () => {
    source = await startSqliteServer(secret);
    users = await source.registerMany(6);
    threads = [await source.createGroup(users[0], users.slice(1), 'big')];
    for (let i = 1; i < 6; i++) threads.push(await source.createDirect(users[0], users[i]));
    // 600 messages over six threads, sent with a window of 50 in flight.
    const c = await source.connect(users[0]);
    for (let burst = 0; burst < 12; burst++) {
      const sends = [];
      for (let i = 0; i < 50; i++) {
        const n = burst * 50 + i;
        sends.push(c.sendMessage({ thread_id: threads[n % threads.length].id, content: `m${n} ${'x'.repeat(n % 40)}`, client_msg_id: `b-${n}` }, 20000));
      }
      await Promise.all(sends);
      total += sends.length;
    }
    await source.stop({ removeData: false });
  });

  after(async () => { await source?.stop(); });

  it('stops half-way, is killed, resumes, and ends with the same data as one uninterrupted copy', async () => {
    const url = freshDatabaseUrl();
    // 1. Stopped after 40 batches of 10 rows (users, threads and participants are 12 of them).
    const stopped = await migrateStore(source.dataDir, url, { batchRows: 10, env: { PARLEY_TEST_MIGRATE_STOP_AFTER_BATCHES: '40' } });
    assert.equal(stopped.code, 1);
    assert.match(stopped.stderr, /copy_stopped/);
    const partial = Number(psql(url, 'SELECT COUNT(*) FROM messages'));
    assert.ok(partial > 0 && partial < total, `a partial copy (${partial} of ${total} messages)`);
    assert.equal(partial % 10, 0, 'only whole batches are in the target');

    // 2. Killed with SIGKILL while copying one row per transaction (20 ms
    // apart, test setting, so the kill lands before the end).
    const child = spawn(PARLEY_BIN, ['migrate-store', '--from', `sqlite:${source.dataDir}`, '--to', url, '--batch-rows', '1'],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PARLEY_TEST_MIGRATE_BATCH_PAUSE_MS: '20' } });
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 10000);
      child.stderr.on('data', (d) => {
        const copied = [...String(d).matchAll(/messages (\d+)\/\d+/g)].map((m) => Number(m[1]));
        if (copied.some((n) => n > partial)) { clearTimeout(timer); resolve(); }
      });
    });
    child.kill('SIGKILL');
    await exited;
    const afterKill = Number(psql(url, 'SELECT COUNT(*) FROM messages'));
    assert.ok(afterKill > partial && afterKill < total, `the killed run left ${afterKill} messages (${partial} before it)`);

    // 3. Resumed to the end: exact counts, nothing doubled.
    const resumed = await migrateStore(source.dataDir, url, { batchRows: 10 });
    assert.equal(resumed.code, 0, `resume failed: ${resumed.stderr}`);
    assert.match(resumed.stdout, /resumed/);
    assert.match(resumed.stdout, new RegExp(`messages ${total}\\b`));
    assert.equal(Number(psql(url, 'SELECT COUNT(*) FROM messages')), total);
    assert.equal(psql(url, 'SELECT COUNT(*) FROM (SELECT thread_id, seq FROM messages GROUP BY 1, 2 HAVING COUNT(*) > 1) d'), '0');

    // 4. Once more: nothing to copy, the check passes again.
    const twice = await migrateStore(source.dataDir, url);
    assert.equal(twice.code, 0, `second run failed: ${twice.stderr}`);
    assert.match(twice.stdout, new RegExp(`messages ${total} \\(0 copied now\\)`));

    // 5. The same as one uninterrupted copy, through the API of a server on each.
    const straight = freshDatabaseUrl();
    const one = await migrateStore(source.dataDir, straight);
    assert.equal(one.code, 0, one.stderr);
    const a = await startPgServer(secret, url);
    const b = await startPgServer(secret, straight);
    try {
      for (const t of threads) {
        const ha = await a.history(users[0].token, t.id);
        const hb = await b.history(users[0].token, t.id);
        assert.equal(ha.length, hb.length);
        assert.deepEqual(ha, hb, `thread ${t.id}: same history`);
        assert.deepEqual(ha.map((m) => m.seq), ha.map((_, i) => i + 1), 'seq gapless from 1');
      }
      const ua = await a.http('GET', '/api/chat/unread-count', { token: users[1].token });
      const ub = await b.http('GET', '/api/chat/unread-count', { token: users[1].token });
      assert.deepEqual(ua.body, ub.body);
      assert.ok(ua.body.data.unread_count > 0);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  // A disable that waited on the copy's SQLite lock used to go through the
  // moment the copy ended: locked in the old store only, reported done.
  it('a tool that writes beside a server is refused while the copy runs, and changes neither store', async () => {
    const url = freshDatabaseUrl();
    // Batches of 25 rows, 250 ms apart (test setting): the copy ends some
    // seconds after its first messages, about when SQLite's 5 s busy wait
    // would; the refusal must come at once all the same.
    const child = spawn(PARLEY_BIN, ['migrate-store', '--from', `sqlite:${source.dataDir}`, '--to', url, '--batch-rows', '25'],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PARLEY_TEST_MIGRATE_BATCH_PAUSE_MS: '250' } });
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    try {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 10000);
        child.stderr.on('data', (d) => { if (/messages \d+\/\d+/.test(String(d))) { clearTimeout(timer); resolve(); } });
      });
      // Users are copied by now: a disable that went through would be lost.
      const started = Date.now();
      const disable = await source.cli(['user', 'disable', users[5].username], { timeoutMs: 30000 }).then(() => null, (e) => e);
      assert.ok(disable, 'the disable was refused while the copy runs');
      assert.match(`${disable.stderr}`, /^parley: store_copy_running: parley migrate-store \(pid \d+\) is copying/m, disable.stderr);
      assert.ok(Date.now() - started < 3000, `refused at once, not after a wait (${Date.now() - started} ms)`);
      const done = await exited;
      assert.equal(done.code, 0, 'the copy finished');
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    assert.equal(psql(url, `SELECT disabled FROM users WHERE username = '${users[5].username}'`), '0', 'not disabled in PostgreSQL');
    const sqlite = execFileSync('sqlite3', [path.join(source.dataDir, 'parley.db'),
      `SELECT disabled FROM users WHERE username = '${users[5].username}'`], { encoding: 'utf8', timeout: 30000 }).trim();
    assert.equal(sqlite, '0', 'nor in SQLite');
  });

  it('an interrupted copy does not resume from a source that changed since (a server ran on it)', async () => {
    const url = freshDatabaseUrl();
    const stopped = await migrateStore(source.dataDir, url, { batchRows: 10, env: { PARLEY_TEST_MIGRATE_STOP_AFTER_BATCHES: '5' } });
    assert.equal(stopped.code, 1);
    assert.match(stopped.stderr, /copy_stopped/);
    const before = psql(url, 'SELECT COUNT(*) FROM threads');
    // The old server started again on its data dir: one more message moves a thread's last_seq.
    await source.start();
    try {
      const sent = await source.sendRest(users[0].token, threads[0].id, { content: 'after the interrupted copy' });
      assert.equal(sent.status, 201, sent.text);
    } finally {
      await source.stop({ removeData: false });
    }
    const resumed = await migrateStore(source.dataDir, url, { batchRows: 10 });
    assert.equal(resumed.code, 1, `resumed: ${resumed.stdout}`);
    assert.match(resumed.stderr, /source_changed/);
    assert.equal(psql(url, 'SELECT COUNT(*) FROM threads'), before, 'nothing changed in the target');
  });
});
