// `parley backup`, `parley restore` and `parley check` (docs/operations.md):
// a backup taken while clients send restores to a data dir holding every
// message acknowledged before it began, and check passes there; check finds
// a seq gap made by hand with the sqlite3 CLI; restore refuses a data dir
// that is not empty, and a backup from a newer schema; a backup stopped by
// SIGTERM or SIGINT leaves no partial file, and one killed outright has its
// partial files removed by the next backup to that name. On PostgreSQL (PARLEY_TEST_STORE=postgres) check runs
// against the database and backup/restore point to pg_dump/pg_restore.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { startServer, sleep, freshDatabaseUrl, PARLEY_BIN, TEST_STORE } from './harness.mjs';

// Runs `parley ARGS`; resolves {code, stdout, stderr} whatever the exit code.
function parley(args) {
  return new Promise((resolve) => {
    execFile(PARLEY_BIN, args, { timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

function sqlite(dbPath, sql) {
  return new Promise((resolve, reject) => {
    execFile('sqlite3', [dbPath, sql], { timeout: 20000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)));
  });
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 60000 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd}: ${err.message}\n${stderr}`)) : resolve(stdout)));
  });
}

// PostgreSQL's client tools: Debian puts pg_dump and pg_restore on PATH
// through wrappers; the versioned directory has them too.
function pgTool(name) {
  try {
    const dir = fs.readdirSync('/usr/lib/postgresql').sort().pop();
    const p = `/usr/lib/postgresql/${dir}/bin/${name}`;
    if (fs.existsSync(p)) return p;
  } catch { /* fall back to PATH */ }
  return name;
}

const tmpDir = (tag) => fs.mkdtempSync(path.join(os.tmpdir(), `parley-${tag}-`));
const sqliteOnly = TEST_STORE === 'postgres' ? 'the SQLite store only (PostgreSQL: pg_dump)' : false;

describe('backup, restore and check', () => {
  const servers = [];
  const dirs = [];
  after(async () => {
    for (const s of servers) await s.stop();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('a backup taken under load restores every message acknowledged before it began, and check passes', { skip: sqliteOnly }, async () => {
    // A high frame limit: the senders go on for as long as the backup takes,
    // which on a loaded machine is longer than the default burst lasts.
    const server = await startServer({ args: ['--rate-per-second', '100000', '--rate-burst', '100000'] });
    servers.push(server);
    const users = await server.registerMany(3);
    const thread = await server.createGroup(users[0], users.slice(1));
    const clients = await Promise.all(users.map((u) => server.connect(u)));
    const acked = new Set();
    let running = true;
    const load = clients.map(async (ws, k) => {
      const pending = [];
      for (let i = 0; running && i < 3000; i++) {
        const cid = `c${k}-${i}`;
        pending.push(ws.sendMessage({ thread_id: thread.id, content: `load ${cid}`, client_msg_id: cid }, 20000)
          .then(() => acked.add(cid), () => {}));
        await sleep(2);
      }
      await Promise.all(pending);
    });
    for (let i = 0; i < 200 && acked.size < 30; i++) await sleep(50);  // a loaded machine may be slow to start
    const ackedBefore = new Set(acked);
    assert.ok(ackedBefore.size > 20, `load is running (${ackedBefore.size} acked)`);

    const dir = tmpDir('backup');
    dirs.push(dir);
    const file = path.join(dir, 'parley-backup.db');
    const backup = await parley(['backup', '--data-dir', server.dataDir, '--to', file]);
    assert.equal(backup.code, 0, `backup: ${backup.stderr}`);
    assert.match(backup.stdout, /^backup .*parley-backup\.db: \d+ users, \d+ threads, \d+ messages/);
    for (let i = 0; i < 200 && acked.size <= ackedBefore.size; i++) await sleep(50);
    assert.ok(acked.size > ackedBefore.size, 'the server kept acknowledging sends during and after the backup');
    running = false;
    await Promise.all(load);

    // The running server's own store checks clean too (check only reads).
    const live = await parley(['check', '--data-dir', server.dataDir]);
    assert.equal(live.code, 0, `check on the running server's data dir: ${live.stdout}${live.stderr}`);

    const restored = path.join(dir, 'restored');
    const restore = await parley(['restore', '--from', file, '--data-dir', restored]);
    assert.equal(restore.code, 0, `restore: ${restore.stderr}`);
    const check = await parley(['check', '--data-dir', restored]);
    assert.equal(check.code, 0, `check after restore: ${check.stdout}${check.stderr}`);
    assert.match(check.stdout, /^ok sqlite:.*; integrity and invariants hold\n$/);

    // A server on the restored data dir (same secret) serves the history.
    const second = await startServer({ dataDir: restored, secret: server.secret });
    servers.push(second);
    const history = await second.history(users[0].token, thread.id, { maxPages: 200 });
    const stored = new Set(history.map((m) => m.client_msg_id));
    const missing = [...ackedBefore].filter((cid) => !stored.has(cid));
    assert.deepEqual(missing, [], `acked before the backup began: ${ackedBefore.size}; restored: ${history.length}`);
    history.forEach((m, i) => assert.equal(m.seq, i + 1, 'restored seqs are gapless'));
  });

  it('the data dir, the database, the JWT secret and backups are for the server\'s user alone, whatever the umask', { skip: sqliteOnly }, async () => {
    const parent = tmpDir('modes');
    dirs.push(parent);
    fs.chmodSync(parent, 0o755);
    const dataDir = path.join(parent, 'data');  // made by the server, under this process's umask (022 here)
    const server = await startServer({ dataDir, secret: null });
    servers.push(server);
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    assert.equal((await server.sendRest(alice.token, thread.id, { content: 'not for other accounts on this machine' })).status, 201);
    const file = path.join(parent, 'backup.db');
    const backup = await parley(['backup', '--data-dir', dataDir, '--to', file]);
    assert.equal(backup.code, 0, backup.stderr);
    const restored = path.join(parent, 'restored');
    const restore = await parley(['restore', '--from', file, '--data-dir', restored]);
    assert.equal(restore.code, 0, restore.stderr);
    const paths = [dataDir, ...['parley.db', 'parley.db-wal', 'parley.db-shm', 'jwt_secret', 'LOCK'].map((f) => path.join(dataDir, f)),
      file, restored, path.join(restored, 'parley.db')];
    const open = paths.filter((p) => fs.existsSync(p) && (fs.statSync(p).mode & 0o077) !== 0)
      .map((p) => `${p} ${(fs.statSync(p).mode & 0o777).toString(8)}`);
    assert.deepEqual(open, [], 'password hashes and messages are not readable by other local users');
  });

  it('check finds a seq gap and a read mark out of range made with the sqlite3 CLI, and names the thread', { skip: sqliteOnly }, async () => {
    const server = await startServer();
    servers.push(server);
    const [alice, bob, carol] = await server.registerMany(3);
    const thread = await server.createDirect(alice, bob);
    const clean = await server.createGroup(alice, [bob]);
    const left = await server.createGroup(alice, [carol]);
    assert.equal((await server.sendRest(alice.token, left.id, { content: 'to carol' })).status, 201);
    const out = await server.http('DELETE', `/api/chat/threads/${left.id}/participants/${carol.id}`, { token: alice.token });
    assert.equal(out.status, 200, out.text);
    for (let i = 1; i <= 5; i++) {
      assert.equal((await server.sendRest(alice.token, thread.id, { content: `m${i}` })).status, 201);
      assert.equal((await server.sendRest(alice.token, clean.id, { content: `c${i}` })).status, 201);
    }
    const keyed = await server.createGroup(bob, [alice]);
    assert.equal((await server.sendRest(bob.token, keyed.id, { content: 'k', client_msg_id: 'k-1' })).status, 201);
    await server.stop({ removeData: false });
    const db = path.join(server.dataDir, 'parley.db');
    assert.equal((await parley(['check', '--data-dir', server.dataDir])).code, 0, 'clean before the edit');

    await sqlite(db, `DELETE FROM messages WHERE thread_id = '${thread.id}' AND seq = 3;`);
    const gap = await parley(['check', '--data-dir', server.dataDir]);
    assert.equal(gap.code, 1, gap.stdout);
    assert.match(gap.stdout, new RegExp(`problem seq_gap: thread ${thread.id}: .*seq 1\\.\\.5 \\(1 missing\\)`));
    assert.ok(!gap.stdout.includes(clean.id), 'the intact thread is not named');
    assert.match(gap.stdout, /^1 problem in sqlite:/m);

    await sqlite(db, `UPDATE participants SET last_read_seq = 42 WHERE thread_id = '${thread.id}' AND user_id = '${bob.id}';`);
    const json = await parley(['check', '--data-dir', server.dataDir, '--json']);
    assert.equal(json.code, 1);
    const report = JSON.parse(json.stdout);
    assert.equal(report.ok, false);
    assert.equal(report.messages, 12);  // 5 + 4 (one deleted) + k-1 + the two of `left`
    const kinds = report.problems.map((p) => `${p.kind}:${p.thread_id}`).sort();
    assert.deepEqual(kinds, [`read_mark_out_of_range:${thread.id}`, `seq_gap:${thread.id}`]);
    assert.equal(report.problems.find((p) => p.kind === 'read_mark_out_of_range').user_id, bob.id);

    // Ended at the removal's notice, seq 2; at 11 carol would be sent seqs 3..11 when they come.
    await sqlite(db, `UPDATE former_marks SET left_seq = 11 WHERE thread_id = '${left.id}' AND user_id = '${carol.id}';`);
    const end = await parley(['check', '--data-dir', server.dataDir]);
    assert.match(end.stdout, new RegExp(`problem membership_end_out_of_range: thread ${left.id}: a membership of user ${carol.id} ended at seq 11 outside 0\\.\\.2`));
    await sqlite(db, `UPDATE former_marks SET left_seq = 2 WHERE thread_id = '${left.id}' AND user_id = '${carol.id}';`);
    // A store of schema 12 (serve would migrate it): no ends to check, and no failure for want of the column.
    const copy = path.join(server.dataDir, 'v12');
    fs.mkdirSync(copy, { mode: 0o700 });
    await sqlite(db, `VACUUM INTO '${path.join(copy, 'parley.db')}';`);
    await sqlite(path.join(copy, 'parley.db'),
      'DROP INDEX former_marks_by_user; ALTER TABLE former_marks DROP COLUMN left_seq; PRAGMA user_version = 12;');
    const older = await parley(['check', '--data-dir', copy]);
    assert.doesNotMatch(older.stdout + older.stderr, /left_seq|membership_end|failed/, older.stdout + older.stderr);
    assert.match(older.stdout, /problem read_mark_out_of_range/, 'the other invariants are still checked');
    fs.rmSync(copy, { recursive: true, force: true });

    await sqlite(db, `UPDATE threads SET last_seq = 7 WHERE id = '${clean.id}';`);
    const mismatch = await parley(['check', '--data-dir', server.dataDir]);
    assert.match(mismatch.stdout, new RegExp(`problem last_seq_mismatch: thread ${clean.id}: last_seq is 7 but its highest message seq is 5`));
    assert.ok(!mismatch.stdout.includes(keyed.id), 'a message with its idempotency key is fine');

    // Without its key, a retry of k-1 would be stored a second time.
    await sqlite(db, 'DELETE FROM message_keys;');
    const unkeyed = await parley(['check', '--data-dir', server.dataDir]);
    assert.match(unkeyed.stdout, new RegExp(`problem message_key_missing: thread ${keyed.id}: message seq 1 has a client_msg_id`));

    // Messages filed under another thread's number would be missing from their own history.
    await sqlite(db, `UPDATE messages SET thread_no = (SELECT no FROM threads WHERE id = '${thread.id}') WHERE thread_id = '${clean.id}' AND seq = 3;`);
    const misfiled = await parley(['check', '--data-dir', server.dataDir]);
    assert.match(misfiled.stdout, new RegExp(`problem message_thread_number: thread ${clean.id}: 1 messages are filed under another thread's number`));
    assert.ok(!misfiled.stdout.includes(`message_thread_number: thread ${thread.id}`), 'the thread whose number was borrowed is not named');
    // The seq check reads a thread's messages as the store does (by number): its own history now lacks seq 3.
    assert.match(misfiled.stdout, new RegExp(`problem seq_gap: thread ${clean.id}: .*\\(1 missing\\)`));
    fs.rmSync(server.dataDir, { recursive: true, force: true });
  });

  it('check finds text that is not UTF-8, a schema version Parley did not write, more problems than it lists, and a damaged file', { skip: sqliteOnly }, async () => {
    const server = await startServer();
    servers.push(server);
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    for (let i = 1; i <= 3; i++) assert.equal((await server.sendRest(alice.token, thread.id, { content: `m${i}` })).status, 201);
    await server.stop({ removeData: false });
    const db = path.join(server.dataDir, 'parley.db');
    const check = () => parley(['check', '--data-dir', server.dataDir]);
    assert.equal((await check()).code, 0, 'clean before the edits');

    // Bytes that are not UTF-8 in a message and in a name: the server would
    // send them in frames every WebSocket client must reject.
    await sqlite(db, `UPDATE messages SET content = CAST(X'6869C328' AS TEXT) WHERE thread_id = '${thread.id}' AND seq = 2;
                      UPDATE users SET full_name = CAST(X'FF' AS TEXT) WHERE id = '${bob.id}';`);
    const text = await check();
    assert.equal(text.code, 1, text.stdout);
    assert.match(text.stdout, new RegExp(`problem invalid_utf8: thread ${thread.id}: message seq 2 has text that is not UTF-8`));
    assert.match(text.stdout, new RegExp(`problem invalid_utf8: user ${bob.id} has a name`));
    assert.match(text.stdout, /^2 problems in sqlite:/m);
    await sqlite(db, `UPDATE messages SET content = 'm2' WHERE thread_id = '${thread.id}' AND seq = 2;
                      UPDATE users SET full_name = 'Bob' WHERE id = '${bob.id}';`);
    assert.equal((await check()).code, 0, 'clean again');

    // user_version: 0 is not a schema Parley made; one past this binary's is a newer release's.
    const version = Number((await sqlite(db, 'PRAGMA user_version;')).trim());
    for (const [v, kind] of [[0, 'schema_version_missing'], [version + 1, 'schema_too_new']]) {
      await sqlite(db, `PRAGMA user_version = ${v};`);
      const r = await check();
      assert.equal(r.code, 1, `user_version ${v}: ${r.stdout}`);
      assert.match(r.stdout, new RegExp(`^problem ${kind}: `, 'm'));
    }
    await sqlite(db, `PRAGMA user_version = ${version};`);

    // Exactly 1,000 participants who are no users: all listed, no more said.
    const ghosts = (from, to) => sqlite(db, `WITH RECURSIVE n(i) AS (SELECT ${from} UNION ALL SELECT i + 1 FROM n WHERE i < ${to})
                      INSERT INTO participants (thread_id, user_id, joined_at) SELECT '${thread.id}', 'ghost-' || i, 0 FROM n;`);
    await ghosts(1, 1000);
    const exactly = await check();
    assert.match(exactly.stdout, /^1000 problems in sqlite:/m);
    // 1,200: the listing stops at 1,000 and the count says there are more.
    await ghosts(1001, 1200);
    const many = await check();
    assert.equal(many.code, 1);
    assert.equal(many.stdout.split('\n').filter((l) => l.startsWith('problem participant_without_user')).length, 1000);
    assert.match(many.stdout, /^1000 problems listed, and more not listed \(each query lists at most 1000\) in sqlite:/m);
    const json = JSON.parse((await parley(['check', '--data-dir', server.dataDir, '--json'])).stdout);
    assert.equal(json.capped, true);

    // A damaged file: a page of the messages' table overwritten. Said as
    // damage with what to do, never as an internal error.
    const pageSize = Number((await sqlite(db, 'PRAGMA page_size;')).trim());
    const root = Number((await sqlite(db, "SELECT rootpage FROM sqlite_master WHERE name = 'messages';")).trim());
    const fd = fs.openSync(db, 'r+');
    fs.writeSync(fd, Buffer.alloc(pageSize, 0x5a), 0, pageSize, (root - 1) * pageSize);
    fs.closeSync(fd);
    const damaged = await check();
    assert.equal(damaged.code, 1, damaged.stdout + damaged.stderr);
    assert.doesNotMatch(damaged.stdout + damaged.stderr, /internal_error/);
    assert.match(damaged.stdout + damaged.stderr, /problem integrity: |database_corrupt: .*restore the last backup/);
    // The schema's own page damaged: serve cannot even open the store, and says so in the same words.
    const fd1 = fs.openSync(db, 'r+');
    fs.writeSync(fd1, Buffer.alloc(pageSize - 100, 0x5a), 0, pageSize - 100, 100);
    fs.closeSync(fd1);
    const serve = await new Promise((resolve) => execFile(PARLEY_BIN, ['serve', '--data-dir', server.dataDir, '--port', '0', '--bind', '127.0.0.1'],
      { timeout: 20000 }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stderr })));
    assert.equal(serve.code, 1, serve.stderr);
    assert.match(serve.stderr, /database_corrupt: the database is damaged .*restore the last backup/);
    assert.doesNotMatch(serve.stderr, /internal_error/);
    fs.rmSync(server.dataDir, { recursive: true, force: true });
  });

  it('restore refuses a non-empty data dir (a running server\'s too) and a file that is not a backup', { skip: sqliteOnly }, async () => {
    const server = await startServer();
    servers.push(server);
    await server.registerMany(1);
    const dir = tmpDir('restore');
    dirs.push(dir);
    const file = path.join(dir, 'b.db');
    assert.equal((await parley(['backup', '--data-dir', server.dataDir, '--to', file])).code, 0);

    const before = fs.statSync(path.join(server.dataDir, 'parley.db')).mtimeMs;
    const onLive = await parley(['restore', '--from', file, '--data-dir', server.dataDir]);
    assert.equal(onLive.code, 1);
    assert.match(onLive.stderr, /parley: data_dir_not_empty: /);
    assert.equal(fs.statSync(path.join(server.dataDir, 'parley.db')).mtimeMs, before, 'the live database is untouched');

    const other = path.join(dir, 'other');
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, 'notes.txt'), 'keep me');
    const nonEmpty = await parley(['restore', '--from', file, '--data-dir', other]);
    assert.equal(nonEmpty.code, 1);
    assert.match(nonEmpty.stderr, /data_dir_not_empty: .*notes\.txt/);
    assert.deepEqual(fs.readdirSync(other), ['notes.txt'], 'nothing was added');

    const junk = path.join(dir, 'junk.db');
    fs.writeFileSync(junk, 'this is not a database');
    const bad = await parley(['restore', '--from', junk, '--data-dir', path.join(dir, 'fresh')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not_a_backup/);
    assert.ok(!fs.existsSync(path.join(dir, 'fresh', 'parley.db')));

    const again = await parley(['backup', '--data-dir', server.dataDir, '--to', file]);
    assert.equal(again.code, 1, 'an existing backup file is not overwritten');
    assert.match(again.stderr, /backup_exists/);

    // A data dir whose parley.db is empty (never served): no "success" with -1 counts.
    const empty = path.join(dir, 'empty');
    fs.mkdirSync(empty);
    fs.writeFileSync(path.join(empty, 'parley.db'), '');
    const nothing = await parley(['backup', '--data-dir', empty, '--to', path.join(dir, 'nothing.db')]);
    assert.equal(nothing.code, 1, `${nothing.stdout}${nothing.stderr}`);
    assert.match(nothing.stderr, /backup_failed: .*not a Parley database/);
    assert.ok(!fs.existsSync(path.join(dir, 'nothing.db')), 'no backup file');
  });

  it('a backup stopped by SIGTERM or SIGINT removes its partial files, says so and exits 1', { skip: sqliteOnly }, async () => {
    const server = await startServer();
    servers.push(server);
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    assert.equal((await server.sendRest(alice.token, thread.id, { content: 'before the ballast' })).status, 201);
    await server.stop({ removeData: false });
    dirs.push(server.dataDir);
    // 96 MiB at once through the sqlite3 CLI (through the server it would take
    // minutes): enough for the copy, its quick_check and its fsync to last
    // well past the moment its partial file appears.
    await sqlite(path.join(server.dataDir, 'parley.db'), 'CREATE TABLE ballast (b BLOB); WITH RECURSIVE n(i) AS '
      + '(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 96) INSERT INTO ballast SELECT randomblob(1048576) FROM n;');

    for (const signal of ['SIGTERM', 'SIGINT']) {
      const dir = tmpDir('backup-signal');
      dirs.push(dir);
      const file = path.join(dir, 'parley-backup.db');
      const child = spawn(PARLEY_BIN, ['backup', '--data-dir', server.dataDir, '--to', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => { stderr += d; });
      const exited = new Promise((resolve) => child.once('exit', (code, sig) => resolve({ code, sig })));
      let running = true;
      exited.then(() => { running = false; });
      let seen = [];
      for (let i = 0; running && i < 5000 && seen.length === 0; i++) {
        seen = fs.readdirSync(dir).filter((f) => f.includes('.partial-'));
        if (seen.length === 0) await sleep(2);
      }
      assert.ok(running && seen.length > 0, `${signal}: the backup was still copying when its partial file appeared (${stderr})`);
      child.kill(signal);
      const { code, sig } = await exited;
      assert.equal(code, 1, `${signal}: exit code (${sig}): ${stderr}`);
      assert.match(stderr, new RegExp(`^parley: backup_failed: stopped by ${signal}; the partial copy was removed and nothing was written to ${file}\n$`));
      assert.deepEqual(fs.readdirSync(dir), [], `${signal}: no partial file (${seen.join(', ')}) and no backup left`);
    }

    // A restore into a data dir it makes, stopped the same way, leaves no
    // data dir behind (nor its LOCK): the retry finds nothing in its way.
    const source = tmpDir('restore-signal-source');
    dirs.push(source);
    const backupFile = path.join(source, 'parley-backup.db');
    const made = await parley(['backup', '--data-dir', server.dataDir, '--to', backupFile]);
    assert.equal(made.code, 0, made.stderr);
    const parent = tmpDir('restore-signal');
    dirs.push(parent);
    const target = path.join(parent, 'data');
    const child = spawn(PARLEY_BIN, ['restore', '--data-dir', target, '--from', backupFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    let running = true;
    exited.then(() => { running = false; });
    let seen = [];
    for (let i = 0; running && i < 5000 && seen.length === 0; i++) {
      seen = fs.existsSync(target) ? fs.readdirSync(target).filter((f) => f.includes('.partial-')) : [];
      if (seen.length === 0) await sleep(2);
    }
    assert.ok(running && seen.length > 0, `the restore was still copying when its partial file appeared (${stderr})`);
    child.kill('SIGTERM');
    assert.equal(await exited, 1, stderr);
    assert.match(stderr, /^parley: restore_failed: stopped by SIGTERM/m);
    assert.ok(!fs.existsSync(target), `no data dir left behind: ${fs.existsSync(target) ? fs.readdirSync(target).join(', ') : ''}`);
  });

  it('a backup removes the partial files of backups to the same name whose process is gone, and no other', { skip: sqliteOnly }, async () => {
    const server = await startServer();
    servers.push(server);
    await server.registerMany(1);
    const dir = tmpDir('backup-stale');
    dirs.push(dir);
    const file = path.join(dir, 'parley-backup.db');
    // Far above any pid_max (at most 2^22): no such process. This test's own
    // pid stands for a backup still copying.
    const dead = 2000000000;
    const stale = [`parley-backup.db.partial-${dead}`, `parley-backup.db.partial-${dead}-journal`];
    const kept = [`parley-backup.db.partial-${process.pid}`, `parley-backup.db.partial-${process.pid}-journal`,
      `other.db.partial-${dead}`, `parley-backup.db.partial-${dead}.notes`, 'parley-backup.db.partial-x'];
    for (const f of [...stale, ...kept]) fs.writeFileSync(path.join(dir, f), 'x'.repeat(4096));

    const backup = await parley(['backup', '--data-dir', server.dataDir, '--to', file]);
    assert.equal(backup.code, 0, backup.stderr);
    assert.deepEqual(fs.readdirSync(dir).sort(), [...kept, 'parley-backup.db'].sort());
    for (const f of stale) assert.match(backup.stderr, new RegExp(`event=backup_stale_partial_removed file="${path.join(dir, f)}" pid=${dead}`));
  });

  it('a restore killed outright leaves partial files that serve refuses to start beside, and the next restore removes', { skip: sqliteOnly }, async () => {
    const server = await startServer();
    servers.push(server);
    await server.registerMany(2);
    const dir = tmpDir('restore-killed');
    dirs.push(dir);
    const file = path.join(dir, 'b.db');
    assert.equal((await parley(['backup', '--data-dir', server.dataDir, '--to', file])).code, 0);
    // What a restore killed by SIGKILL leaves: its lock file and its partial copy.
    const target = path.join(dir, 'restored');
    fs.mkdirSync(target);
    const dead = 2000000000;  // far above any pid_max: no such process
    for (const f of ['LOCK', `parley.db.partial-${dead}`, `parley.db.partial-${dead}-journal`]) fs.writeFileSync(path.join(target, f), 'x'.repeat(4096));
    const serve = await parley(['serve', '--port', '0', '--data-dir', target]);
    assert.equal(serve.code, 1, 'serve does not start an empty store beside an unfinished restore');
    assert.match(serve.stderr, /restore_unfinished/);
    assert.ok(!fs.existsSync(path.join(target, 'parley.db')), 'no database was created');
    for (const args of [['check', '--data-dir', target], ['backup', '--data-dir', target, '--to', path.join(dir, 'of-partial.db')]]) {
      const r = await parley(args);
      assert.equal(r.code, 1, `${args[0]}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /restore_unfinished/, `${args[0]} says what serve says`);
    }
    const retried = await parley(['restore', '--from', file, '--data-dir', target]);
    assert.equal(retried.code, 0, retried.stderr);
    assert.deepEqual(fs.readdirSync(target).filter((f) => f.includes('partial')), [], 'the stale partial files are gone');
    assert.equal((await parley(['check', '--data-dir', target])).code, 0);
  });

  it('restore refuses a backup from a newer schema than this binary knows, and leaves the data dir as it was', { skip: sqliteOnly }, async () => {
    const server = await startServer();
    servers.push(server);
    await server.registerMany(1);
    const dir = tmpDir('restore-newer');
    dirs.push(dir);
    const file = path.join(dir, 'b.db');
    assert.equal((await parley(['backup', '--data-dir', server.dataDir, '--to', file])).code, 0);
    // A backup made by a later Parley: its schema one step past this binary's.
    const version = Number((await sqlite(file, 'PRAGMA user_version;')).trim());
    assert.ok(version > 0, `a Parley database has a schema version (${version})`);
    await sqlite(file, `PRAGMA user_version = ${version + 1};`);

    const missing = path.join(dir, 'missing');
    const intoMissing = await parley(['restore', '--from', file, '--data-dir', missing]);
    assert.notEqual(intoMissing.code, 0, intoMissing.stdout);
    const lines = intoMissing.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one error line: ${intoMissing.stderr}`);
    assert.match(lines[0], new RegExp(`^parley: backup_too_new: .*schema version ${version + 1}.*\\b${version}\\b`));
    assert.equal(intoMissing.stdout, '', 'no "restored" line');
    assert.ok(!fs.existsSync(missing), 'a data dir that did not exist still does not');

    const empty = path.join(dir, 'empty');
    fs.mkdirSync(empty);
    const intoEmpty = await parley(['restore', '--from', file, '--data-dir', empty]);
    assert.notEqual(intoEmpty.code, 0);
    assert.match(intoEmpty.stderr, /backup_too_new/);
    assert.deepEqual(fs.readdirSync(empty), [], 'an empty data dir stays empty (no database, no LOCK)');
  });

  it('a restore that fails while writing (the file size limit) leaves no data dir behind, and a retry succeeds', { skip: sqliteOnly }, async () => {
    const server = await startServer();
    servers.push(server);
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    for (let i = 0; i < 50; i++) await server.sendRest(alice.token, thread.id, { content: `kept ${i} ${'x'.repeat(500)}` });
    const dir = tmpDir('restore-fail');
    dirs.push(dir);
    const file = path.join(dir, 'b.db');
    assert.equal((await parley(['backup', '--data-dir', server.dataDir, '--to', file])).code, 0);
    assert.ok(fs.statSync(file).size > 64 * 1024, 'the backup is larger than the limit below');
    const target = path.join(dir, 'restored');
    // 32 KiB per file: the copy fails part-way (SIGXFSZ ignored, so write() fails with EFBIG).
    const failed = await new Promise((resolve) => {
      execFile('bash', ['-c', 'trap "" XFSZ; ulimit -f 32; exec "$0" restore --from "$1" --data-dir "$2"', PARLEY_BIN, file, target],
        { timeout: 60000 }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stderr }));
    });
    assert.notEqual(failed.code, 0, 'the restore failed');
    assert.match(failed.stderr, /restore_failed/);
    assert.ok(!fs.existsSync(target), `the data dir it created is gone: ${fs.existsSync(target) ? fs.readdirSync(target) : ''}`);
    const retried = await parley(['restore', '--from', file, '--data-dir', target]);
    assert.equal(retried.code, 0, retried.stderr);
    assert.equal((await parley(['check', '--data-dir', target])).code, 0);
  });

  it('on PostgreSQL: check runs against the database; backup and restore point to pg_dump and pg_restore',
    { skip: TEST_STORE === 'postgres' ? false : 'PostgreSQL runs only (PARLEY_TEST_STORE=postgres)' }, async () => {
      const server = await startServer();
      servers.push(server);
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      for (let i = 1; i <= 3; i++) assert.equal((await server.sendRest(alice.token, thread.id, { content: `m${i}` })).status, 201);
      const check = await parley(['check', '--database', server.database, '--json']);
      assert.equal(check.code, 0, check.stdout + check.stderr);
      const report = JSON.parse(check.stdout);
      assert.equal(report.ok, true);
      assert.equal(report.messages, 3);
      assert.ok(!report.store.includes(':secret@') && report.store.startsWith('postgres'), report.store);
      const backup = await parley(['backup', '--database', server.database, '--to', path.join(os.tmpdir(), 'never.db')]);
      assert.equal(backup.code, 1);
      assert.match(backup.stderr, /pg_dump/);

      // The procedure docs/operations.md gives: pg_dump -Fc, then pg_restore into a new database.
      const dir = tmpDir('pgdump');
      dirs.push(dir);
      const dump = path.join(dir, 'parley.dump');
      await run(pgTool('pg_dump'), ['--format=custom', '--no-owner', '--file', dump, server.database]);
      const copy = freshDatabaseUrl();
      await run(pgTool('pg_restore'), ['--no-owner', '--exit-on-error', '--dbname', copy, dump]);
      const copied = await parley(['check', '--database', copy]);
      assert.equal(copied.code, 0, copied.stdout + copied.stderr);
      assert.match(copied.stdout, /: 2 users, 1 threads, 3 messages, 2 participants; integrity and invariants hold/);

      // A gap made by hand is found, and names the thread.
      await run('psql', ['--quiet', '--no-psqlrc', '--dbname', copy, '--command', `DELETE FROM messages WHERE thread_id = '${thread.id}' AND seq = 2`]);
      const gap = await parley(['check', '--database', copy]);
      assert.equal(gap.code, 1, gap.stdout);
      assert.match(gap.stdout, new RegExp(`problem seq_gap: thread ${thread.id}: `));

      // A commit clock set back by hand (new messages would sort before old ones).
      await run('psql', ['--quiet', '--no-psqlrc', '--dbname', copy, '--command', 'UPDATE commit_clock SET last_created_at = 0']);
      const behind = await parley(['check', '--database', copy]);
      assert.equal(behind.code, 1, behind.stdout);
      assert.match(behind.stdout, /problem commit_clock_behind: /);
    });

  // PostgreSQL's backups are restored with its own tools, so the store's
  // name (connection_established's store_id, which tells clients to drop
  // their saved positions and change marks) comes from what a restore
  // changes: the cluster, the database, the tables.
  it('on PostgreSQL: store_id is the same on every node and after a restart, and new after a restore, into a new database or over the same one',
    { skip: TEST_STORE === 'postgres' ? false : 'PostgreSQL runs only (PARLEY_TEST_STORE=postgres)' }, async () => {
      const storeIdOf = async (server, user) => {
        const ws = await server.connect(user);
        ws.close();
        return ws.established.store_id;
      };
      const server = await startServer();
      servers.push(server);
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      for (let i = 1; i <= 3; i++) assert.equal((await server.sendRest(alice.token, thread.id, { content: `m${i}` })).status, 201);
      const first = await storeIdOf(server, alice);
      assert.match(first ?? '', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'a store_id on PostgreSQL');
      const second = await startServer({ secret: server.secret, database: server.database });
      servers.push(second);
      assert.equal(await storeIdOf(second, bob), first, 'another node on the same database');
      await server.restart();
      assert.equal(await storeIdOf(server, alice), first, 'after a restart');

      const dir = tmpDir('pgid');
      dirs.push(dir);
      const dump = path.join(dir, 'parley.dump');
      await run(pgTool('pg_dump'), ['--format=custom', '--no-owner', '--file', dump, server.database]);
      const copy = freshDatabaseUrl();
      await run(pgTool('pg_restore'), ['--no-owner', '--exit-on-error', '--dbname', copy, dump]);
      const onCopy = await startServer({ secret: server.secret, database: copy });
      servers.push(onCopy);
      const copied = await storeIdOf(onCopy, alice);
      assert.ok(copied && copied !== first, `a restore into a new database: ${copied} after ${first}`);

      // Over the same database: its servers stopped, its tables made anew.
      await server.stop({ removeData: false });
      await second.stop({ removeData: false });
      await run(pgTool('pg_restore'), ['--no-owner', '--clean', '--if-exists', '--exit-on-error', '--dbname', server.database, dump]);
      const over = await startServer({ secret: server.secret, database: server.database });
      servers.push(over);
      const restored = await storeIdOf(over, alice);
      assert.ok(restored && restored !== first && restored !== copied, `a restore over the same database: ${restored}`);
      const history = await over.http('GET', `/api/chat/threads/${thread.id}/messages`, { token: alice.token });
      assert.equal(history.status, 200, history.text);
      assert.match(history.text, /"m3"/, 'the restored history is there');
    });
});
