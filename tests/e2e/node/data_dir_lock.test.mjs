// One server per data dir (issue 8, bug 1): a second `serve` on a data dir in
// use exits at once naming the holder's PID; `user add` and `token` work
// beside the running server (they only read or insert users, through
// SQLite's own locking) without disturbing its sends; `seed`, which writes
// threads and messages, and `migrate`, which may rewrite them, refuse; and a
// kill -9 releases the lock.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, execFile } from 'node:child_process';
import { startServer, PARLEY_BIN, HOST, randomId } from './harness.mjs';
import { TEST_STORE } from './harness.mjs';

// Runs `parley serve` on dataDir; resolves {code, stderr} when it exits, or
// {code: 'running'} after timeoutMs (then it is killed).
function secondServe(dataDir, secret, timeoutMs = 10000) {
  return new Promise((resolve) => {
    const child = spawn(PARLEY_BIN, ['serve', '--port', '0', '--bind', HOST, '--data-dir', dataDir, '--jwt-secret', secret],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (c) => { stderr += c; });
    child.stdout.resume();
    const timer = setTimeout(() => { child.kill('SIGKILL'); resolve({ code: 'running', stderr }); }, timeoutMs);
    child.once('exit', (code) => { clearTimeout(timer); resolve({ code, stderr }); });
  });
}

// Only with SQLite: the data dir lock is SQLite's (with --database the database's own locking applies).
describe('the data dir is locked by the server that serves it', { skip: TEST_STORE !== 'sqlite' }, () => {
  let server, alice, bob, dm;

  before(async () => {
    server = await startServer();
    [alice, bob] = await server.registerMany(2);
    dm = await server.createDirect(alice, bob);
  });
  after(async () => { await server?.stop(); });

  it('a second serve on the same data dir exits non-zero at once, naming the holder', async () => {
    const second = await secondServe(server.dataDir, server.secret);
    assert.notEqual(second.code, 'running', 'the second server kept running');
    assert.notEqual(second.code, 0);
    assert.match(second.stderr, /data_dir_locked/);
    assert.match(second.stderr, new RegExp(`pid ${server.child.pid}\\b`));
    // The first one is untouched.
    assert.equal((await server.sendRest(alice.token, dm.id, { content: 'still here' })).status, 201);
  });

  it('user add and token work beside the running server and disturb nothing', async () => {
    const before = await server.history(alice.token, dm.id);
    const name = `cli_${randomId(4)}`;
    const added = await server.cli(['user', 'add', '--username', name, '--password', 'cli-password-1', '--full-name', 'Cli User']);
    assert.match(added.stdout, new RegExp(name));
    // Sends keep working while and after the offline command wrote.
    for (let i = 0; i < 5; i++) {
      assert.equal((await server.sendRest(alice.token, dm.id, { content: `m${i}` })).status, 201);
    }
    const { stdout } = await server.cli(['token', name]);
    const token = stdout.trim();
    const me = await server.http('GET', '/api/users/me', { token });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.body.data.username, name);
    const login = await server.http('POST', '/api/auth/login', { body: { username: name, password: 'cli-password-1' } });
    assert.equal(login.status, 200, login.text);
    const after = await server.history(alice.token, dm.id);
    assert.deepEqual(after.map((m) => m.seq), [...before.map((m) => m.seq), ...[1, 2, 3, 4, 5].map((k) => before.length + k)]);
  });

  it('seed refuses while the server holds the data dir', async () => {
    await assert.rejects(server.cli(['seed', '--users', '4', '--group-size', '2']), (err) => {
      assert.notEqual(err.code, 0);
      assert.match(err.stderr, /data_dir_locked/);
      return true;
    });
    // Nothing was written: no bench users.
    const res = await server.http('GET', '/api/users?search=bench_', { token: alice.token });
    assert.equal(res.body.data.users.length, 0);
  });

  it('migrate refuses while the server holds the data dir, and a data dir that does not exist; works once the server stopped', async () => {
    const migrate = (dataDir) => new Promise((resolve) => {
      execFile(PARLEY_BIN, ['migrate', '--data-dir', dataDir], (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
    });
    const locked = await migrate(server.dataDir);
    assert.equal(locked.code, 1, `${locked.stdout}${locked.stderr}`);
    assert.match(locked.stderr, /^parley: data_dir_locked: /m);
    const missing = path.join(os.tmpdir(), `parley-no-such-dir-${randomId(4)}`);
    const wrongDir = await migrate(missing);
    assert.equal(wrongDir.code, 1, `${wrongDir.stdout}${wrongDir.stderr}`);
    assert.match(wrongDir.stderr, /^parley: no_data_dir: /m);
    assert.equal(fs.existsSync(missing), false, 'no new data dir was made');
    await server.stop({ removeData: false });
    const stopped = await migrate(server.dataDir);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stdout, /^migrated sqlite:/);
    await server.start();
    assert.equal((await server.sendRest(alice.token, dm.id, { content: 'after migrate' })).status, 201);
  });

  it('kill -9 releases the lock: the next serve starts', async () => {
    await server.kill9();
    await server.start();
    assert.equal((await server.sendRest(alice.token, dm.id, { content: 'after restart' })).status, 201);
  });
});
