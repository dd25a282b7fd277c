// Settings from a file (`--config`, PARLEY_CONFIG) beside flags and the
// environment (docs/operations.md, "Configuration"): flags beat the
// environment, which beats the file, which beats the defaults; `parley config
// check` prints the effective settings with secrets masked and exits 1 on an
// unknown key or a bad value; `serve` runs with what the file says.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { startServer, freshDatabaseUrl, PARLEY_BIN, TEST_STORE } from './harness.mjs';

// Runs `parley ARGS` with only the PARLEY_* variables given; resolves {code, stdout, stderr}.
function parley(args, { env = {}, cwd = undefined } = {}) {
  return new Promise((resolve) => {
    const e = { ...process.env, ...env };
    for (const k of Object.keys(e)) if (k.startsWith('PARLEY_') && k !== 'PARLEY_BIN' && !(k in env)) delete e[k];
    execFile(PARLEY_BIN, args, { timeout: 20000, env: e, cwd }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

// The `key = value  # source` lines of `config check`, as {key: {value, source}}.
function settings(stdout) {
  const out = {};
  for (const line of stdout.split('\n')) {
    const m = line.match(/^([a-z0-9-]+) = (.*?)  # (.*)$/);
    if (m) out[m[1]] = { value: m[2], source: m[3] };
  }
  return out;
}

describe('configuration file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-config-'));
  const servers = [];
  after(async () => {
    for (const s of servers) await s.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const write = (name, text) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    return p;
  };

  it('precedence: flags > environment > file > defaults; secrets are masked', async () => {
    const file = write('precedence.toml', [
      '# every kind of value',
      'port = 3100',
      'bind = "127.0.0.9"',
      'max_content_chars = 50',
      'shutdown-timeout = 20',
      'jwt-secret = "file-secret-value-0123456789abcdef"',
      'database = "postgres://parley:hunter2@127.0.0.1:5432/parley"',
      'allowed-origins = ["https://a.example", "https://b.example"]',
      '[serve]',
      'idle-timeout = 90',
      '[migrate]',
      'log-level = "debug"',
    ].join('\n'));
    const r = await parley(['config', 'check', '--config', file, '--max-content-chars', '70'],
      { env: { PARLEY_PORT: '3200', PARLEY_MAX_CONTENT_CHARS: '60', PARLEY_SHUTDOWN_TIMEOUT: '', PARLEY_BIND: '' } });
    assert.equal(r.code, 0, r.stderr);
    const s = settings(r.stdout);
    assert.deepEqual(s.port, { value: '3200', source: 'env PARLEY_PORT' });
    assert.deepEqual(s['max-content-chars'], { value: '70', source: 'flag' });
    assert.deepEqual(s['shutdown-timeout'], { value: '20', source: 'file' });
    assert.deepEqual(s.bind, { value: '"127.0.0.9"', source: 'file' });
    assert.deepEqual(s['idle-timeout'], { value: '90', source: 'file' }, 'a [serve] section applies to serve');
    assert.deepEqual(s['allowed-origins'], { value: '["https://a.example", "https://b.example"]', source: 'file' });
    assert.deepEqual(s['rate-per-second'], { value: '200', source: 'default' });
    assert.deepEqual(s['jwt-secret'], { value: '"***"', source: 'file' });
    assert.deepEqual(s.database, { value: '"postgres://parley:***@127.0.0.1:5432/parley"', source: 'file' });
    assert.ok(!r.stdout.includes('file-secret-value') && !r.stdout.includes('hunter2'), 'no secret is printed');

    // libpq also takes the password as a query parameter: masked the same way.
    const query = await parley(['config', 'check', '--database', 'postgres://parley@127.0.0.1:5432/parley?sslmode=disable&password=hunter3']);
    assert.equal(query.code, 0, query.stderr);
    assert.deepEqual(settings(query.stdout).database, { value: '"postgres://parley@127.0.0.1:5432/parley?sslmode=disable&password=***"', source: 'flag' });
    assert.ok(!query.stdout.includes('hunter3'), 'no secret is printed');

    const defaults = await parley(['config', 'check']);
    assert.equal(defaults.code, 0, defaults.stderr);
    assert.deepEqual(settings(defaults.stdout)['shutdown-timeout'], { value: '10', source: 'default' });
    assert.deepEqual(settings(defaults.stdout)['wal-checkpoint-pages'], { value: '16000', source: 'default' });
    const viaEnv = await parley(['config', 'check'], { env: { PARLEY_CONFIG: file } });
    assert.deepEqual(settings(viaEnv.stdout)['shutdown-timeout'], { value: '20', source: 'file' }, 'PARLEY_CONFIG names the file');
  });

  it("the command's own section beats the top level; a key the command lacks in its section is refused; config check's output reads back", async () => {
    const both = write('both.toml', 'shutdown-timeout = 5\nport = 3101\n[serve]\nshutdown-timeout = 20\n');
    const r = await parley(['config', 'check', '--config', both]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(settings(r.stdout)['shutdown-timeout'], { value: '20', source: 'file' }, '[serve] wins over the top level');
    assert.deepEqual(settings(r.stdout).port, { value: '3101', source: 'file' }, 'the top level still applies');

    const stray = await parley(['config', 'check', '--config', write('stray.toml', '[serve]\nto = "x"\n')]);
    assert.equal(stray.code, 1, stray.stdout);
    assert.match(stray.stderr, /unknown_setting: .*'to' is not a setting of serve/);

    const defaults = await parley(['config', 'check']);
    assert.equal(defaults.code, 0, defaults.stderr);
    const again = await parley(['config', 'check', '--config', write('roundtrip.toml', defaults.stdout)]);
    assert.equal(again.code, 0, `the printed settings as a file: ${again.stderr}`);
    assert.deepEqual(settings(again.stdout)['allowed-origins'], settings(defaults.stdout)['allowed-origins']);

    // A masked secret read back is refused, by config check and by serve: a
    // server signing with "***" would take tokens anyone can make.
    const secret = await parley(['config', 'check', '--jwt-secret', 'a'.repeat(32)]);
    assert.equal(secret.code, 0, secret.stderr);
    const masked = write('masked.toml', secret.stdout.replace(/^data-dir = .*$/m, `data-dir = ${JSON.stringify(path.join(dir, 'masked'))}`));
    assert.match(fs.readFileSync(masked, 'utf8'), /^jwt-secret = "\*\*\*"/m);
    for (const cmd of [['config', 'check'], ['serve', '--port', '0', '--bind', '127.0.0.1']]) {
      const refused = await parley([...cmd, '--config', masked], { cwd: dir });
      assert.equal(refused.code, 1, `${cmd[0]}: ${refused.stdout}`);
      assert.match(refused.stderr, /^parley: bad_jwt_secret: .*"\*\*\*", the mask/m, cmd[0]);
    }
    assert.ok(!fs.existsSync(path.join(dir, 'masked')), 'serve made no data dir');
    const short = await parley(['serve', '--port', '0', '--bind', '127.0.0.1', '--data-dir', path.join(dir, 'short'), '--jwt-secret', 'hunter2'], { cwd: dir });
    assert.equal(short.code, 1);
    assert.match(short.stderr, /^parley: bad_jwt_secret: .*has 7 characters, fewer than 32/m);
    // A command that signs nothing (an emergency lock-out) is not held up by the secret.
    const disable = await parley(['user', 'disable', 'someone', '--data-dir', path.join(dir, 'no-such-dir'), '--jwt-secret', 'hunter2'], { cwd: dir });
    assert.equal(disable.code, 1);
    assert.match(disable.stderr, /^parley: no_data_dir: /m, 'refused for its data dir, not for the secret');
  });

  it("a group's section ([user]) speaks for each of its commands, below the command's own; every section's keys are checked", async () => {
    const store = path.join(dir, 'userstore');
    const group = write('group.toml', `[user]\ndata-dir = ${JSON.stringify(store)}\n`);
    // From the test's own directory: a command that fell back to ./data writes there, not into the checkout.
    const add = await parley(['user', 'add', '--config', group, '--create', '--username', 'mallory', '--password', 'password123', '--full-name', 'M'], { cwd: dir });
    assert.equal(add.code, 0, add.stderr);
    assert.ok(fs.existsSync(path.join(store, 'parley.db')), '[user] data-dir reached `user add`');
    const disable = await parley(['user', 'disable', '--config', group, 'mallory'], { cwd: dir });
    assert.equal(disable.code, 0, disable.stderr);
    assert.match(disable.stdout, /disabled user mallory/);

    const own = write('own.toml', `[user]\ndata-dir = ${JSON.stringify(store)}\n[enable]\ndata-dir = ${JSON.stringify(path.join(dir, 'elsewhere'))}\n`);
    const enable = await parley(['user', 'enable', '--config', own, 'mallory'], { cwd: dir });
    assert.equal(enable.code, 1, `[enable] wins over [user]: ${enable.stdout}`);
    assert.match(enable.stderr, /elsewhere/);

    // config check reads [serve]: a [config] section, or serve's settings under [check] (parley check's), are never read.
    for (const [name, text, section] of [['config-section.toml', '[config]\nport = 3000\n', 'config'], ['check-port.toml', '[check]\nport = 3000\n', 'check']]) {
      const r = await parley(['config', 'check', '--config', write(name, text)], { cwd: dir });
      assert.equal(r.code, 1, `${name}: ${r.stdout}`);
      assert.match(r.stderr, new RegExp(`unknown_setting: .*'port' is not a setting of ${section}`), name);
    }
    const stray = write('stray-user.toml', '[user]\nport = 3000\n');
    for (const args of [['config', 'check'], ['user', 'enable', 'mallory'], ['backup', '--to', path.join(dir, 'b')]]) {
      const r = await parley([...args, '--config', stray], { cwd: dir });
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
      assert.match(r.stderr, /unknown_setting: .*'port' is not a setting of user/, args.join(' '));
    }
  });

  it('the database and Redis URLs come from PARLEY_DATABASE and PARLEY_REDIS, like every setting; the _URL names still work', async () => {
    const pg = 'postgres://parley:hunter2@127.0.0.1:5432/parley', redis = 'redis://127.0.0.1:6390';
    const contract = await parley(['config', 'check'], { env: { PARLEY_DATABASE: pg, PARLEY_REDIS: redis } });
    assert.equal(contract.code, 0, contract.stderr);
    assert.deepEqual(settings(contract.stdout).database, { value: '"postgres://parley:***@127.0.0.1:5432/parley"', source: 'env PARLEY_DATABASE' });
    assert.deepEqual(settings(contract.stdout).redis, { value: `"${redis}"`, source: 'env PARLEY_REDIS' });

    const older = await parley(['config', 'check'], { env: { PARLEY_DATABASE_URL: pg, PARLEY_REDIS_URL: redis } });
    assert.equal(older.code, 0, older.stderr);
    assert.deepEqual(settings(older.stdout).database, { value: '"postgres://parley:***@127.0.0.1:5432/parley"', source: 'env PARLEY_DATABASE_URL' });
    assert.deepEqual(settings(older.stdout).redis, { value: `"${redis}"`, source: 'env PARLEY_REDIS_URL' });

    const both = await parley(['config', 'check'], { env: { PARLEY_REDIS: redis, PARLEY_REDIS_URL: 'redis://127.0.0.1:6391' } });
    assert.deepEqual(settings(both.stdout).redis, { value: `"${redis}"`, source: 'env PARLEY_REDIS' }, "the flag's own name wins");
  });

  it('config check exits 1 on an unknown key, a bad value, an unknown section or a missing file', async () => {
    const cases = [
      ['unknown.toml', 'port = 3000\nprot = 3001\n', /unknown_setting: .*unknown setting 'prot'/],
      ['badvalue.toml', 'port = "three thousand"\n', /bad_setting: .*'port'/],
      ['range.toml', 'shutdown-timeout = 0\n', /bad_setting: .*'shutdown-timeout'/],
      ['walpages.toml', 'wal-checkpoint-pages = 10\n', /bad_setting: .*'wal-checkpoint-pages'/],
      ['ping.toml', 'socketio-ping-interval = 0\n', /bad_setting: .*'socketio-ping-interval'.*not in range 1000 to 3600000/],
      ['pingtimeout.toml', '[serve]\nsocketio-ping-timeout = -1\n', /bad_setting: .*socketio-ping-timeout'.*not in range 1000 to 3600000/],
      ['choice.toml', 'registration = "sometimes"\n', /bad_setting: .*'registration'/],
      // Values that would start a server nobody can use: tokens dead on
      // issue, every connection closed at once, every body refused...
      ['ttl.toml', 'token-ttl = 0\n', /bad_setting: .*'token-ttl'/],
      ['idle.toml', 'idle-timeout = -1\n', /bad_setting: .*'idle-timeout'/],
      ['frame.toml', 'max-frame-bytes = 0\n', /bad_setting: .*'max-frame-bytes'/],
      ['content.toml', 'max-content-chars = 0\n', /bad_setting: .*'max-content-chars'/],
      ['burst.toml', 'rate-burst = -1\n', /bad_setting: .*'rate-burst'/],
      ['rate.toml', 'rate-per-second = 0\n', /bad_setting: .*'rate-per-second'.*must be a number above 0/],
      ['outbound.toml', 'max-outbound-bytes = 0\n', /bad_setting: .*'max-outbound-bytes'/],
      ['conns.toml', 'max-connections-per-user = 0\n', /bad_setting: .*'max-connections-per-user'/],
      ['logins.toml', 'login-failures-per-account = -1\n', /bad_setting: .*'login-failures-per-account'/],
      ['threads.toml', 'threads = -3\n', /bad_setting: .*'threads'/],
      // serve's listener would refuse it; config check says so first.
      ['bind.toml', 'bind = "not an ip"\n', /bad_setting: .*'bind'.*not an IPv4 or IPv6 address/],
      ['section.toml', '[nonsense]\nport = 3000\n', /unknown_setting: .*\[nonsense\]/],
      // Read as the value `"/srv/parley`, it would start a new store beside the real one.
      ['quote.toml', '[serve]\ndata-dir = "/srv/parley\n', /bad_setting: .*quote\.toml:2: the value opens " and does not close it/],
      ['squote.toml', "log-level = 'info\n", /bad_setting: .*squote\.toml:1: the value opens ' and does not close it/],
      // What serve would refuse at start is refused here too.
      ['loglevel.toml', 'log-level = "verbose"\n', /bad_setting: unknown log level verbose/],
      ['https.toml', 'webhook-url = "https://hooks.example/p"\nwebhook-secret = "s"\n', /invalid_webhook_url/],
      ['nosecret.toml', 'webhook-url = "http://127.0.0.1:9/p"\n', /invalid_config: .*webhook-secret/],
    ];
    for (const [name, text, expected] of cases) {
      const r = await parley(['config', 'check', '--config', write(name, text)]);
      assert.equal(r.code, 1, `${name}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, expected, name);
      assert.equal(r.stdout, '', `${name}: nothing printed as settings`);
    }
    const missing = await parley(['config', 'check', '--config', path.join(dir, 'absent.toml')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /config_unreadable/);
    const badFlag = await parley(['config', 'check', '--shutdown-timeout', 'soon']);
    assert.equal(badFlag.code, 1, badFlag.stderr);
    const zeroRate = await parley(['config', 'check', '--rest-rate-per-second', '0']);
    assert.equal(zeroRate.code, 1, zeroRate.stderr);
    assert.match(zeroRate.stderr, /--rest-rate-per-second: must be a number above 0 and at most 1e12: 0/);
    for (const bind of ['127.0.0.1', '::1', 'fe80::1%lo', '0.0.0.0']) {
      const ok = await parley(['config', 'check', '--bind', bind]);
      assert.equal(ok.code, 0, `--bind ${bind}: ${ok.stderr}`);
    }
    // A burst is a number of frames, but written as a number with a fraction it was always taken.
    for (const burst of ['1000.0', '1e3', '2.5']) {
      const ok = await parley(['config', 'check', '--rate-burst', burst, '--rest-rate-burst', burst]);
      assert.equal(ok.code, 0, `burst ${burst}: ${ok.stderr}`);
    }
    const halfBurst = await parley(['config', 'check', '--rate-burst', '0.5']);
    assert.equal(halfBurst.code, 1, halfBurst.stderr);
    assert.match(halfBurst.stderr, /--rate-burst: must be a number from 1 to 1000000000: 0\.5/);

    // serve refuses to start on a bad file.
    const serve = await parley(['serve', '--port', '0', '--data-dir', path.join(dir, 'never'), '--config', path.join(dir, 'unknown.toml')]);
    assert.equal(serve.code, 1);
    assert.match(serve.stderr, /unknown setting 'prot'/);
    assert.ok(!fs.existsSync(path.join(dir, 'never')), 'nothing was created');
  });

  it('serve runs with the file; the environment and flags override it', async () => {
    // port = 1 would fail to bind: the harness's --port 0 flag must win.
    const file = write('serve.toml', 'port = 1\nmax-content-chars = 12\n');
    const server = await startServer({ args: ['--config', file], env: { PARLEY_MAX_CONTENT_CHARS: '' } });
    servers.push(server);
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const long = await server.sendRest(alice.token, thread.id, { content: 'thirteen char' });
    assert.equal(long.status, 400, long.text);
    assert.equal(long.body.code, 'content_too_long');
    assert.equal((await server.sendRest(alice.token, thread.id, { content: 'twelve chars' })).status, 201);
    await server.stop({ removeData: false });

    const second = await startServer({ args: ['--config', file], env: { PARLEY_MAX_CONTENT_CHARS: '20' }, dataDir: server.dataDir, secret: server.secret, database: server.database });
    servers.push(second);
    assert.equal((await second.sendRest(alice.token, thread.id, { content: 'thirteen char' })).status, 201, 'the environment beats the file');
  });

  it('on PostgreSQL, a password given as a query parameter of --database reaches neither /health nor the log', { skip: TEST_STORE !== 'postgres' }, async () => {
    // The test database trusts loopback: libpq sends the password, nobody checks it.
    const secret = 'query-password-hunter4';
    const server = await startServer({ database: `${freshDatabaseUrl()}?sslmode=disable&password=${secret}` });
    servers.push(server);
    const health = await server.http('GET', '/health');
    assert.equal(health.status, 200, health.text);
    assert.match(health.body.storage.kind, /^postgres:\/\/.*password=\*\*\*/);
    assert.ok(!health.text.includes(secret), `/health is public: ${health.text}`);
    await server.stop({ removeData: false });
    assert.ok(server.log.some((l) => l.includes('event=store_open')), server.logTail());
    assert.deepEqual(server.log.filter((l) => l.includes(secret)), [], 'no log line holds the password');
  });
});
