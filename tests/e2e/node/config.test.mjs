// Running the server: the CLI around `serve`, the Origin allow-list,
// disabling metrics, and settings from the environment.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { startServer, randomId, PARLEY_BIN, TEST_STORE, REPO_ROOT } from './harness.mjs';

// Runs `parley ARGS` to completion; resolves {code, stdout, stderr} whatever the exit code.
function parley(args, { env = {} } = {}) {
  return new Promise((resolve) => {
    const e = { ...process.env, ...env };
    for (const k of Object.keys(e)) if (k.startsWith('PARLEY_') && k !== 'PARLEY_BIN' && !(k in env)) delete e[k];
    execFile(PARLEY_BIN, args, { timeout: 20000, env: e }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe('server configuration', () => {
  const servers = [];
  const start = async (opts) => { const s = await startServer(opts); servers.push(s); return s; };
  after(async () => { for (const s of servers) await s.stop(); });

  it('`parley user add` creates a user who can log in, by username and by phone', async () => {
    const server = await start();
    const username = `cli_${randomId(4)}`;
    const phone = `+1555${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
    await server.cli(['user', 'add', '--username', username, '--password', 'cli-password-1', '--full-name', 'Cli Made', '--role', 'teacher', '--phone', phone]);
    const byName = await server.http('POST', '/api/auth/login', { body: { username, password: 'cli-password-1' } });
    assert.equal(byName.status, 200, byName.text);
    assert.equal(byName.body.data.user.full_name, 'Cli Made');
    assert.equal(byName.body.data.user.role, 'teacher');
    const byPhone = await server.http('POST', '/api/auth/login', { body: { phone_number: phone, password: 'cli-password-1' } });
    assert.equal(byPhone.status, 200, byPhone.text);
  });

  it('`parley user add --phone` keys the number by its digits, as registration does', async () => {
    const server = await start();
    const digits = String(Math.floor(Math.random() * 1e7)).padStart(7, '0');
    const username = `cli_${randomId(4)}`;
    await server.cli(['user', 'add', '--username', username, '--password', 'cli-password-1', '--full-name', 'Cli Phone',
      '--phone', `+1 (555) ${digits}`]);
    const byPhone = await server.http('POST', '/api/auth/login', { body: { phone_number: `1-555-${digits}`, password: 'cli-password-1' } });
    assert.equal(byPhone.status, 200, byPhone.text);
    assert.equal(byPhone.body.data.user.phone_number, `+1 (555) ${digits}`, 'kept as typed');
    const again = await server.cli(['user', 'add', '--username', `${username}_2`, '--password', 'cli-password-1',
      '--full-name', 'Cli Phone 2', '--phone', `+1555${digits}`]).then(() => null, (err) => err);
    assert.ok(again, 'a second spelling of the number is refused');
    assert.match(again.stderr, /phone_taken/);
    const rest = await server.http('POST', '/api/auth/register',
      { body: { username: `${username}_3`, password: 'cli-password-1', full_name: 'Rest', phone_number: `1 555 ${digits}` } });
    assert.equal(rest.status, 409, rest.text);
    assert.equal(rest.body.code, 'phone_taken');
  });

  it('`parley user add` is quiet: one line of result, the data dir on stderr, --json for the token', async () => {
    const server = await start();
    const username = `quiet_${randomId(4)}`;
    const { stdout, stderr } = await server.cli(['user', 'add', '--username', username, '--password', 'cli-password-1',
      '--full-name', 'Quiet One', '--role', 'parent']);
    assert.match(stdout, new RegExp(`^created user ${username} \\(parent\\) id [0-9a-f-]{36}\n$`), stdout);
    const where = server.database ? /^parley: database postgres:\/\/[^@\s]+\n$/ : new RegExp(`^parley: data dir ${server.dataDir}\n$`);
    assert.match(stderr, where, 'where it acted, and no store open/close log lines');

    const json = await server.cli(['user', 'add', '--username', `${username}_j`, '--password', 'cli-password-1',
      '--full-name', 'Json One', '--json']);
    const out = JSON.parse(json.stdout);
    assert.equal(out.user.username, `${username}_j`);
    assert.equal(out.user.role, 'member', 'no --role: the default role');
    assert.equal((await server.http('GET', '/api/users/me', { token: out.token })).status, 200, 'the token works');
  });

  it('admin commands refuse a data dir that does not exist, unless --create', async () => {
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-nodir-'));
    try {
      const dir = path.join(parent, 'data');
      const args = ['user', 'add', '--data-dir', dir, '--username', `nodir_${randomId(4)}`, '--password', 'cli-password-1', '--full-name', 'No Dir'];
      const refused = await parley(args);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, new RegExp(`^parley: no_data_dir: no data dir at ${dir} \\(pass the server's --data-dir`, 'm'));
      assert.equal(refused.stdout, '');
      assert.ok(!fs.existsSync(dir), 'nothing was created');
      const token = await parley(['token', 'someone', '--data-dir', dir]);
      assert.equal(token.code, 1);
      assert.ok(!fs.existsSync(dir), 'token created nothing either');
      // Only `user add` has --create: the others do not point at it.
      for (const cmd of [['token', 'someone'], ['user', 'disable', 'someone'], ['user', 'revoke-tokens', 'someone']]) {
        const r = await parley([...cmd, '--data-dir', dir]);
        assert.equal(r.code, 1, `${cmd.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /^parley: no_data_dir: /m, cmd.join(' '));
        assert.doesNotMatch(r.stderr, /--create/, `${cmd.join(' ')} offers no --create`);
      }
      const tokenCreate = await parley(['token', 'someone', '--create', '--data-dir', dir]);
      assert.equal(tokenCreate.code, 2, `token takes no --create (a new store has no users): ${tokenCreate.stderr}`);
      assert.match(tokenCreate.stderr, /--create/);
      assert.ok(!fs.existsSync(dir), 'token --create made nothing');

      // An existing directory with no store in it (the server's parent dir,
      // an empty mount) is refused the same way, and left as it was.
      const empty = path.join(parent, 'empty');
      fs.mkdirSync(empty);
      for (const cmd of [['user', 'add', ...args.slice(2).map((a) => (a === dir ? empty : a))], ['token', 'someone', '--data-dir', empty], ['migrate', '--data-dir', empty]]) {
        const r = await parley(cmd);
        assert.equal(r.code, 1, `${cmd[0]}: ${r.stderr}`);
        assert.match(r.stderr, new RegExp(`^parley: no_database: no store \\(parley.db\\) in the data dir ${empty}`, 'm'), cmd[0]);
        assert.deepEqual(fs.readdirSync(empty), [], `${cmd[0]} wrote nothing`);
      }

      const created = await parley([...args, '--create']);
      assert.equal(created.code, 0, created.stderr);
      assert.match(created.stderr, new RegExp(`^parley: data dir ${dir} \\(new\\)$`, 'm'));
      assert.ok(fs.existsSync(path.join(dir, 'jwt_secret')), 'a new store with its secret');
    } finally {
      fs.rmSync(parent, { recursive: true, force: true });
    }
  });

  it('the generated jwt_secret is whole and private; an empty or cut-short one is refused, not used or replaced', async () => {
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-secret-'));
    try {
      const dir = path.join(parent, 'data');
      const add = () => parley(['user', 'add', '--data-dir', dir, '--create', '--username', `s_${randomId(5)}`,
        '--password', 'cli-password-1', '--full-name', 'Secret Test']);
      const first = await add();
      assert.equal(first.code, 0, first.stderr);
      const file = path.join(dir, 'jwt_secret');
      assert.match(fs.readFileSync(file, 'utf8'), /^[0-9a-f]{64}\n$/);
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('jwt_secret')), ['jwt_secret'], 'no temporary file left beside it');

      // What a crash or a full disk in the middle of writing it used to leave.
      for (const [what, text] of [['empty', ''], ['a newline only', '\n'], ['cut short', 'a3f09c1e77b2']]) {
        fs.writeFileSync(file, text, { mode: 0o600 });
        const refused = await add();
        assert.equal(refused.code, 1, `${what}: ${refused.stdout}${refused.stderr}`);
        assert.match(refused.stderr, new RegExp(`^parley: bad_jwt_secret: ${file} `, 'm'), what);
        assert.equal(refused.stderr.split('\n').filter((l) => l.includes('jwt_secret')).length, 1, `${what}: one error line: ${refused.stderr}`);
        assert.equal(fs.readFileSync(file, 'utf8'), text, `${what}: the file is left for the operator to look at`);
      }
      const token = await parley(['token', 'nobody', '--data-dir', dir]);
      assert.equal(token.code, 1);
      assert.match(token.stderr, /bad_jwt_secret/);
    } finally {
      fs.rmSync(parent, { recursive: true, force: true });
    }
  });

  it('roles: any text by default (the contract\'s free text); --roles / PARLEY_ROLES restrict them, for registration too', async () => {
    const server = await start({ args: ['--roles', 'teacher,parent,nurse'] });
    // On PostgreSQL the data dir holds no store: the server's database is named too.
    const store = server.database ? ['--database', server.database] : [];
    const add = (role, extra = []) => parley(['user', 'add', '--data-dir', server.dataDir, ...store, '--username', `r_${randomId(5)}`,
      '--password', 'cli-password-1', '--full-name', 'Role Test', '--role', role, ...extra]);
    // `parley user add` has its own --roles: an administrator creates the
    // roles the server's registration may not offer.
    assert.equal((await add('principal')).code, 0, 'any role by default');
    const wizard = await add('wizard', ['--roles', 'nurse,teacher']);
    assert.equal(wizard.code, 1);
    assert.match(wizard.stderr, /^parley: invalid_role: role must be one of: nurse, teacher$/m);
    assert.equal((await add('nurse', ['--roles', 'nurse,teacher'])).code, 0);
    const envOnly = (role) => parley(['user', 'add', '--data-dir', server.dataDir, ...store, '--username', `r_${randomId(5)}`,
      '--password', 'cli-password-1', '--full-name', 'Env Role', '--role', role], { env: { PARLEY_ROLES: 'nurse' } });
    assert.equal((await envOnly('nurse')).code, 0);
    assert.equal((await envOnly('teacher')).code, 1, 'PARLEY_ROLES restricts too');

    // The server's list (--roles teacher,parent,nurse) applies to POST /api/auth/register.
    const ok = await server.http('POST', '/api/auth/register', { body: { username: `r_${randomId(5)}`, password: 'pw-12345678', full_name: 'N', role: 'nurse' } });
    assert.equal(ok.status, 201, ok.text);
    const bad = await server.http('POST', '/api/auth/register', { body: { username: `r_${randomId(5)}`, password: 'pw-12345678', full_name: 'S', role: 'student' } });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.body.code, 'invalid_role');
    assert.match(bad.body.message, /teacher, parent, nurse/);
    // Naming none would give `member`, which is not among them: refused too.
    const none = await server.http('POST', '/api/auth/register', { body: { username: `r_${randomId(5)}`, password: 'pw-12345678', full_name: 'M' } });
    assert.equal(none.status, 400, none.text);
    assert.equal(none.body.code, 'invalid_role');
    assert.match(none.body.message, /^a role is required: one of: teacher, parent, nurse$/);
    // /health names them, for a sign-up form to offer.
    assert.deepEqual((await server.http('GET', '/health')).body.roles, ['teacher', 'parent', 'nurse']);

    // Without --roles, registration takes any role text.
    const open = await start();
    const free = await open.http('POST', '/api/auth/register', { body: { username: `r_${randomId(5)}`, password: 'pw-12345678', full_name: 'P', role: 'principal' } });
    assert.equal(free.status, 201, free.text);
    assert.equal(free.body.data.user.role, 'principal');
    assert.equal((await open.http('GET', '/health')).body.roles, undefined, 'no list: any role');
  });

  it('serve refuses a Socket.IO ping interval or timeout of 0, below or past an hour, from a flag or the environment', async () => {
    const dataDir = path.join(os.tmpdir(), `parley-never-${randomId(4)}`);
    const cases = [
      [['--socketio-ping-interval', '0'], {}, '--socketio-ping-interval', '0'],
      [['--socketio-ping-interval=-5'], {}, '--socketio-ping-interval', '-5'],
      [['--socketio-ping-interval', '3600001'], {}, '--socketio-ping-interval', '3600001'],
      [['--socketio-ping-timeout', '0'], {}, '--socketio-ping-timeout', '0'],
      // Below the server's one-second sweep, pings would come late: every client would time out.
      [['--socketio-ping-interval', '500'], {}, '--socketio-ping-interval', '500'],
      [['--socketio-ping-timeout', '999'], {}, '--socketio-ping-timeout', '999'],
      [[], { PARLEY_SOCKETIO_PING_TIMEOUT: '0' }, '--socketio-ping-timeout', '0'],
      [[], { PARLEY_SOCKETIO_PING_INTERVAL: '-1' }, '--socketio-ping-interval', '-1'],
    ];
    for (const [args, env, flag, value] of cases) {
      const r = await parley(['serve', '--port', '0', '--data-dir', dataDir, ...args], { env });
      const what = `${args.join(' ')} ${JSON.stringify(env)}`;
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^parley: bad_arguments: ${flag}: Value ${value} not in range 1000 to 3600000 \\(parley serve --help\\)\n$`), what);
    }
    assert.ok(!fs.existsSync(dataDir), 'refused before anything was made');
  });

  it('the `parley` command line: unknown commands are named, help shows only what applies', async () => {
    const foo = await parley(['foo']);
    assert.equal(foo.code, 2);
    assert.match(foo.stderr, /^parley: unknown command 'foo' \(commands: serve, user, token, [a-z, -]*version; parley --help\)$/m);
    const userFoo = await parley(['user', 'foo']);
    assert.equal(userFoo.code, 2);
    assert.match(userFoo.stderr, /^parley: unknown command 'user foo' \(commands: add, disable, enable, revoke-tokens; parley user --help\)$/m);

    // A wrong or missing argument: one line naming the help to read, exit 2 (not CLI11's two lines and 106).
    for (const [args, what] of [[['user', 'disable'], /username is required/], [['serve', '--port', 'abc'], /--port/],
      [['check', '--bogus'], /--bogus/], [['user'], /subcommand is required/], [['backup'], /--to is required/]]) {
      const r = await parley(args);
      assert.equal(r.code, 2, `parley ${args.join(' ')}: ${r.stderr}`);
      const lines = r.stderr.split('\n').filter(Boolean);
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], /^parley: bad_arguments: /);
      assert.match(lines[0], what);
      assert.match(lines[0], new RegExp(`\\(parley ${args[0]}( disable)? --help\\)$`));
    }

    const serveHelp = await parley(['serve', '--help']);
    assert.equal(serveHelp.code, 0);
    assert.match(serveHelp.stdout, /--no-metrics/);
    assert.doesNotMatch(serveHelp.stdout, /\{false\}|\{true\}/, serveHelp.stdout);

    const addHelp = await parley(['user', 'add', '--help']);
    assert.equal(addHelp.code, 0);
    for (const own of ['--username', '--password', '--full-name', '--role', '--roles', '--phone', '--data-dir', '--create', '--json']) {
      assert.match(addHelp.stdout, new RegExp(own), `user add --help lists ${own}`);
    }
    for (const foreign of ['--port', '--bind', '--max-frame-bytes', '--jwt-public-key', '--no-metrics', '--threads']) {
      assert.doesNotMatch(addHelp.stdout, new RegExp(`${foreign}\\b`), `user add --help does not list ${foreign}`);
    }
  });

  it('--jwt-public-key takes a file or the PEM text itself; a file that cannot be read stops the start', async () => {
    const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = publicKey.export({ type: 'spki', format: 'pem' });
    const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
    const es256 = (claims) => {
      const head = `${b64({ alg: 'ES256', typ: 'JWT' })}.${b64(claims)}`;
      const sig = crypto.sign('sha256', Buffer.from(head), { key: privateKey, dsaEncoding: 'ieee-p1363' });
      return `${head}.${sig.toString('base64url')}`;
    };
    const keyFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'parley-key-')), 'provider.pem');
    fs.writeFileSync(keyFile, pem);
    for (const [what, opts] of [['a file', { args: ['--jwt-public-key', keyFile] }],
      ['the PEM text in PARLEY_JWT_PUBLIC_KEY', { env: { PARLEY_JWT_PUBLIC_KEY: pem } }]]) {
      const server = await start(opts);
      const sub = crypto.randomUUID();
      const token = es256({ sub, email: `p_${randomId(6)}@example.org`, exp: Math.floor(Date.now() / 1000) + 600 });
      const me = await server.http('GET', '/api/users/me', { token });
      assert.equal(me.status, 200, `${what}: ${me.text}`);
      assert.equal(me.body.data.id, sub, `${what}: the provider's user is provisioned`);
    }
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-key-data-'));
    const missing = await parley(['serve', '--port', '0', '--data-dir', dataDir, '--jwt-public-key', `${keyFile}.missing`]);
    assert.equal(missing.code, 1, `a missing key file stops the start: ${missing.stdout}${missing.stderr}`);
    assert.match(missing.stdout + missing.stderr, /--jwt-public-key/);
  });

  it('every flag of parley and parley-cli that the docs name is one a command of theirs takes', async (t) => {
    // The sanitizer pass builds parley without parley-cli (scripts/test.sh); a
    // check of the docs needs no sanitizer.
    const cliBin = path.join(path.dirname(PARLEY_BIN), 'parley-cli');
    if (!fs.existsSync(cliBin)) return t.skip('parley-cli is not built here');
    // The options and subcommands that `BIN WORDS --help` lists, and those of every subcommand.
    const flags = new Set();
    const walk = async (bin, words) => {
      const out = await new Promise((resolve) => execFile(bin, [...words, '--help'], { timeout: 20000 },
        (err, stdout) => resolve(stdout)));
      for (const m of out.matchAll(/--[a-z][a-z0-9-]*/g)) flags.add(m[0]);
      const subs = out.split('\nSubcommands:\n')[1] ?? '';
      for (const m of subs.matchAll(/^ {2}([a-z][a-z-]*) /gm)) await walk(bin, [...words, m[1]]);
    };
    await walk(PARLEY_BIN, []);
    await walk(cliBin, []);
    assert.ok(flags.has('--max-frame-bytes') && flags.has('--pretty') && flags.has('--to'), 'the help was read');

    // Flags of other tools the docs also show: the scripts', Docker Compose's and pg_restore's.
    const others = new Set(['--test', '--fuzz', '--sanitize', '--scale', '--clean', '--data-only']);
    const missing = [];
    for (const doc of ['README.md', 'docs/protocol.md', 'docs/operations.md', 'docs/deploy.md', 'docs/security.md',
      'docs/moderation.md', 'docs/webhooks.md', 'docs/webapp.md']) {
      const text = fs.readFileSync(path.join(REPO_ROOT, doc), 'utf8');
      for (const span of text.matchAll(/`([^`\n]+)`/g)) {
        for (const m of span[1].matchAll(/(?:^|[\s(\[])(--[a-z][a-z0-9-]*)/g)) {
          if (!flags.has(m[1]) && !others.has(m[1])) missing.push(`${doc}: ${m[1]} in \`${span[1]}\``);
        }
      }
    }
    assert.deepEqual(missing, [], 'flags the docs name that no command takes');
  });

  it('`parley version` names the allocator: jemalloc, except in a sanitizer build', async () => {
    const r = await parley(['version']);
    assert.equal(r.code, 0, r.stderr);
    const sanitized = Boolean(process.env.ASAN_OPTIONS || process.env.TSAN_OPTIONS);
    assert.match(r.stdout, sanitized ? /^parley \d+\.\d+\.\d+\nallocator: system\n$/
      : /^parley \d+\.\d+\.\d+\nallocator: jemalloc 5\.\S+\n$/, r.stdout);
  });

  // The server was given its secret, so its data dir has no jwt_secret file:
  // an admin command run without the secret must not make one and sign
  // tokens that server refuses (a "token mismatch").
  it('`parley token` and `user add --json` beside a server given its secret refuse to sign with a new one', async () => {
    const server = await start();
    const u = await server.register();
    const store = server.database ? ['--database', server.database] : [];
    const add = (name, extra = []) => parley(['user', 'add', '--username', name, '--password', 'cli-password-1',
      '--full-name', 'No Secret', ...extra, '--data-dir', server.dataDir, ...store]);
    const plain = await add(`nosecret_${randomId(4)}`);
    assert.equal(plain.code, 0, `user add shows no token, so needs no secret: ${plain.stderr}`);
    for (const args of [['token', u.username], ['user', 'add', '--username', `nosecret_${randomId(4)}`,
      '--password', 'cli-password-1', '--full-name', 'No Secret', '--json']]) {
      const r = await parley([...args, '--data-dir', server.dataDir, ...store]);
      assert.equal(r.code, 1, `${args[0]}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /no_jwt_secret: .*--jwt-secret or PARLEY_JWT_SECRET/);
      assert.equal(r.stdout, '', 'no token printed');
    }
    assert.ok(!fs.existsSync(path.join(server.dataDir, 'jwt_secret')), 'no secret file was made');
    if (server.database) {
      // On PostgreSQL, run where there is no data dir at all: the secret is
      // what is missing, and no data dir is made for one.
      const nowhere = path.join(os.tmpdir(), `parley-nodir-${randomId(6)}`);
      for (const args of [['token', u.username], ['user', 'add', '--username', `nosecret_${randomId(4)}`,
        '--password', 'cli-password-1', '--full-name', 'No Secret', '--json', '--create']]) {
        const r = await parley([...args, '--data-dir', nowhere, ...store]);
        assert.equal(r.code, 1, `${args[0]}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, /^parley: no_jwt_secret: .*--jwt-secret or PARLEY_JWT_SECRET/m, r.stderr);
        assert.doesNotMatch(r.stderr, /\(new\)/, 'no new data dir announced');
        assert.ok(!fs.existsSync(nowhere), 'nothing made');
      }
    }
    const { stdout } = await server.cli(['token', u.username]);
    assert.equal((await server.http('GET', '/api/users/me', { token: stdout.trim() })).status, 200, 'with the secret it works');
  });

  it('`parley token --ttl` issues a token that expires', async () => {
    const server = await start();
    const u = await server.register();
    // exp is the issuing second plus the ttl, so a token lives between
    // ttl - 1 and ttl seconds: with --ttl 1 one issued late in a second was
    // already expired when a slow (sanitizer) build asked with it.
    const { stdout } = await server.cli(['token', u.username, '--ttl', '3']);
    const token = stdout.trim();
    assert.equal((await server.http('GET', '/api/users/me', { token })).status, 200, 'valid at first');
    await new Promise((r) => setTimeout(r, 3100));
    const later = await server.http('GET', '/api/users/me', { token });
    assert.equal(later.status, 401, 'expired after its ttl');
    assert.equal(later.body.code, 'token_expired');
  });

  it('--allowed-origins refuses other browser Origins at the upgrade and admits listed ones and non-browsers', async () => {
    const server = await start({ args: ['--allowed-origins', 'http://good.example'] });
    const u = await server.register();
    const bad = await server.tryUpgrade(`/ws?token=${u.token}`, { headers: { Origin: 'http://evil.example' } });
    if (bad.opened) bad.client.terminate();
    assert.ok(!bad.opened, 'a foreign Origin must not open a WebSocket');
    assert.equal(bad.status, 403, `a foreign Origin is refused with 403, got ${bad.status}`);
    const good = await server.connect(u, { headers: { Origin: 'http://good.example' } });
    await good.ping();
    const none = await server.connect(u);
    await none.ping();
    // The server's own origin (its web app; a mobile client sends the URL's
    // own origin) needs no listing, on WebSocket and Engine.IO alike.
    for (const own of [`http://127.0.0.1:${server.port}`, `https://127.0.0.1:${server.port}`]) {
      const same = await server.connect(u, { headers: { Origin: own } });
      await same.ping();
      same.close();
    }
    const poll = await server.http('GET', '/socket.io/?EIO=4&transport=polling', { headers: { Origin: `http://127.0.0.1:${server.port}` } });
    assert.equal(poll.status, 200, `same-origin polling: ${poll.text}`);
    const foreignPoll = await server.http('GET', '/socket.io/?EIO=4&transport=polling', { headers: { Origin: 'http://evil.example' } });
    assert.equal(foreignPoll.status, 403);
    // Behind a proxy: the Host it passes on, a default port written or not.
    for (const [origin, host] of [['https://chat.example', 'chat.example:443'], ['https://chat.example:443', 'chat.example'],
      ['http://chat.example', 'CHAT.example:80']]) {
      const res = await server.http('GET', '/socket.io/?EIO=4&transport=polling', { headers: { Origin: origin, Host: host } });
      assert.equal(res.status, 200, `${origin} with Host ${host}: ${res.text}`);
    }
    const proxiedOther = await server.http('GET', '/socket.io/?EIO=4&transport=polling',
      { headers: { Origin: 'https://chat.example:8443', Host: 'chat.example' } });
    assert.equal(proxiedOther.status, 403, 'a Host without the port the page used is another origin');
    // Another port of the same host is another origin.
    const otherPort = await server.tryUpgrade(`/ws?token=${u.token}`, { headers: { Origin: `http://127.0.0.1:${server.port + 1}` } });
    if (otherPort.opened) otherPort.client.terminate();
    assert.equal(otherPort.status, 403, 'another port is refused');
  });

  it('--no-metrics disables GET /metrics', async () => {
    const server = await start({ args: ['--no-metrics'] });
    const res = await server.http('GET', '/metrics');
    assert.equal(res.status, 404);
  });

  it('port, bind, data dir and secret can come from PARLEY_* environment variables', async () => {
    const server = await start({ viaEnv: true });
    const u = await server.register();
    assert.equal((await server.http('GET', '/api/users/me', { token: u.token })).status, 200);
    const { stdout } = await server.cli(['token', u.username]);
    assert.equal((await server.http('GET', '/api/users/me', { token: stdout.trim() })).status, 200,
      'a token minted with the same secret by the CLI works: the env secret was used');
    // On PostgreSQL with a given secret the data dir has nothing to hold.
    if (TEST_STORE === 'sqlite') assert.ok(fs.readdirSync(server.dataDir).length > 0, 'the data went to PARLEY_DATA_DIR');
  });

  it('without a secret one is generated, persisted, and tokens survive a restart', async () => {
    const server = await start({ secret: null });
    const u = await server.register();
    await server.restart();
    const me = await server.http('GET', '/api/users/me', { token: u.token });
    assert.equal(me.status, 200, `a token from before the restart still works: ${me.text}`);
  });

  it('/metrics parley_connections and /health follow the open connections', async () => {
    const server = await start();
    const u = await server.register();
    const sample = async () => {
      const res = await server.http('GET', '/metrics');
      const m = res.text.match(/^parley_connections(?:\{[^}]*\})? (\d+(?:\.\d+)?)$/m);
      assert.ok(m, 'a parley_connections sample');
      return Number(m[1]);
    };
    const settle = async (expected) => {
      let value;
      for (let i = 0; i < 50; i++) {
        value = await sample();
        if (value === expected) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(value, expected, 'parley_connections');
    };
    await settle(0);
    const clients = [await server.connect(u), await server.connect(u), await server.connect(u)];
    await settle(3);
    const health = await server.http('GET', '/health');
    assert.ok(JSON.stringify(health.body).match(/connection[a-z_]*":\s*3\b/), `/health counts 3 connections: ${health.text}`);
    for (const c of clients) { c.close(); await c.waitClose(); }
    await settle(0);
  });

  it('HTTP keep-alive: many requests on one connection', async () => {
    const server = await start();
    const u = await server.register();
    const http = await import('node:http');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set();
    try {
      for (let i = 0; i < 20; i++) {
        const status = await new Promise((resolve, reject) => {
          const req = http.request({ host: '127.0.0.1', port: server.port, path: '/api/users/me', agent,
            headers: { Authorization: `Bearer ${u.token}` } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
          req.on('socket', (s) => sockets.add(s));
          req.on('error', reject);
          req.setTimeout(5000, () => req.destroy(new Error('timeout')));
          req.end();
        });
        assert.equal(status, 200, `request ${i + 1}`);
      }
      assert.equal(sockets.size, 1, 'all requests reused one connection');
    } finally {
      agent.destroy();
    }
  });
});
