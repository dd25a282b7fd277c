// parley-cli, the terminal client, against the real server: login and the
// saved config, listen (exactly the messages, once, in order), send and its
// errors, threads, history, catching up on what was sent while listen was
// not running, reconnecting by itself through a connection cut, exit codes.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile as execFileCb } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startServer, PARLEY_BIN, HOST, UUID_RE, newUuid, sleep, listenOnTestPort, TEST_STORE, mintToken } from './harness.mjs';

const CLI_BIN = path.join(path.dirname(PARLEY_BIN), 'parley-cli');

// ---------------------------------------------------------------------------
// Running parley-cli. Every child is killed when this process exits.

const liveChildren = new Set();
process.on('exit', () => { for (const c of liveChildren) { try { c.kill('SIGKILL'); } catch { /* gone */ } } });

// The environment must not point the client at anything but our server.
function cliEnv(home) {
  const env = { ...process.env, HOME: home, XDG_CONFIG_HOME: path.join(home, 'xdg') };
  delete env.PARLEY_SERVER;
  delete env.PARLEY_TOKEN;
  return env;
}

// A running parley-cli: collects stdout lines and stderr text as they come.
class CliProcess {
  // `ignoring`: a signal the client starts with ignored (as under nohup).
  constructor(args, { home, input, ignoring } = {}) {
    this.args = args;
    this.stdoutText = '';
    this.stderrText = '';
    const [command, argv] = ignoring ? ['sh', ['-c', `trap "" ${ignoring}; exec "$@"`, 'sh', CLI_BIN, ...args]] : [CLI_BIN, args];
    this.child = spawn(command, argv, { stdio: ['pipe', 'pipe', 'pipe'], env: cliEnv(home) });
    liveChildren.add(this.child);
    this.child.stdout.setEncoding('utf8').on('data', (d) => { this.stdoutText += d; });
    this.child.stderr.setEncoding('utf8').on('data', (d) => { this.stderrText += d; });
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => { liveChildren.delete(this.child); resolve({ code, signal }); });
    });
    if (input !== undefined) this.child.stdin.end(input);
    else this.child.stdin.end();
  }

  get lines() { return this.stdoutText.split('\n').filter((l) => l.length > 0); }

  // Every stdout line parsed; each must be one JSON value.
  get frames() {
    return this.lines.map((l) => {
      try { return JSON.parse(l); } catch { assert.fail(`stdout line is not JSON: ${l}`); }
    });
  }

  describe() { return `parley-cli ${this.args.join(' ')}\n--- stdout:\n${this.stdoutText}\n--- stderr:\n${this.stderrText}`; }

  async waitFor(pred, what, timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (pred(this)) return;
      if (this.child.exitCode !== null) break;
      await sleep(20);
    }
    if (!pred(this)) assert.fail(`waited in vain for ${what}\n${this.describe()}`);
  }

  // listen says so on stderr once it is connected and has subscribed.
  ready(timeoutMs = 10000) { return this.waitFor((p) => /listening as /.test(p.stderrText), 'listen to be ready', timeoutMs); }

  async result(timeoutMs = 20000) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => { this.child.kill('SIGKILL'); reject(new Error(`timed out after ${timeoutMs} ms\n${this.describe()}`)); }, timeoutMs);
    });
    try {
      const { code, signal } = await Promise.race([this.exited, timeout]);
      return { code, signal, stdout: this.stdoutText, stderr: this.stderrText, lines: this.lines, proc: this };
    } finally {
      clearTimeout(timer);
    }
  }
}

// ---------------------------------------------------------------------------
// A TCP relay in front of the server, so a test can cut the client's
// connections without stopping the server.

class CuttableProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.refusing = false;
    this.server = net.createServer((client) => this.accept(client));
  }

  async listen() {
    this.port = await listenOnTestPort(this.server);
    return this;
  }

  get url() { return `http://${HOST}:${this.port}`; }

  accept(client) {
    if (this.refusing) { client.destroy(); return; }
    if (this.draining) {
      // What a server in its shutdown drain answers every new request or upgrade.
      const body = JSON.stringify({ status: 'error', code: 'shutting_down', message: 'the server is shutting down; connect again' });
      client.on('error', () => {});
      this.sockets.add(client);
      client.on('close', () => this.sockets.delete(client));
      client.end(`HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n` +
        `Connection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      return;
    }
    const upstream = net.connect(this.targetPort, HOST);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => { client.destroy(); upstream.destroy(); });
    }
    if (this.holding) {
      // After a first chunk that matches, the client's bytes wait (holdAfter).
      let matched = false;
      client.on('data', (chunk) => {
        if (matched) return this.held.push(() => { if (!upstream.destroyed) upstream.write(chunk); });
        matched = this.holding.test(String(chunk));
        if (!upstream.destroyed) upstream.write(chunk);
      });
    } else if (this.dropRequest) {
      // Drops the connection carrying the nth request that matches (counted over all connections).
      client.on('data', (chunk) => {
        if (this.dropRequest.re.test(String(chunk)) && ++this.dropRequest.seen === this.dropRequest.nth) {
          client.destroy();
          upstream.destroy();
          return;
        }
        if (!upstream.destroyed) upstream.write(chunk);
      });
    } else {
      client.pipe(upstream);
    }
    upstream.pipe(client);
  }

  // On a connection whose first bytes match `re`, what the client sends next
  // waits until release(): the server answers the request, and hears nothing more.
  holdAfter(re) { this.holding = re; this.held = []; return this; }

  release() {
    for (const write of this.held.splice(0)) write();
    this.holding = null;
  }

  // Drops the connection of the nth request matching `re` (its first bytes), as a server restarting at that moment would.
  dropNth(re, nth) { this.dropRequest = { re, nth, seen: 0 }; return this; }

  // Drops every open connection and refuses new ones until resume().
  cut() {
    this.refusing = true;
    for (const s of this.sockets) s.destroy();
  }

  resume() { this.refusing = false; this.draining = false; }

  // Drops every open connection and answers new ones as a draining server does, until resume().
  drain() {
    this.draining = true;
    for (const s of this.sockets) s.destroy();
  }

  close() {
    this.cut();
    return new Promise((resolve) => this.server.close(resolve));
  }
}

async function closedPort() {
  const srv = net.createServer();
  const port = await listenOnTestPort(srv);
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

const newMessages = (frames) => frames.filter((f) => f.type === 'new_message').map((f) => f.data);

// ---------------------------------------------------------------------------

describe('parley-cli', () => {
  let server, alice, bob, home, aliceCfg, bobCfg, threadId;

  // Runs parley-cli as alice or bob (their saved configs) to completion.
  const cli = (args, opts = {}) => new CliProcess(args, { home, ...opts }).result(opts.timeoutMs);
  const asAlice = (args, opts) => cli(['--config', aliceCfg, ...args], opts);
  const asBob = (args, opts) => cli(['--config', bobCfg, ...args], opts);
  const bobListen = (args) => new CliProcess(['--config', bobCfg, 'listen', ...args], { home });

  const aliceSends = async (text) => {
    const r = await asAlice(['send', '--to', bob.username, text]);
    assert.equal(r.code, 0, `send "${text}"\n${r.proc.describe()}`);
    return JSON.parse(r.lines[0]);
  };

  before(async () => {
    assert.ok(fs.existsSync(CLI_BIN), `parley-cli not found at ${CLI_BIN} (build the parley-cli target)`);
    server = await startServer();
    [alice, bob] = await server.registerMany(2);
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-cli-e2e-'));
    aliceCfg = path.join(home, 'alice', 'cli.json');
    bobCfg = path.join(home, 'bob', 'cli.json');
  });

  after(async () => {
    await server?.stop();
    if (home) fs.rmSync(home, { recursive: true, force: true });
  });

  it('login saves a private config, and whoami uses it', async () => {
    const r = await cli(['--server', server.baseUrl, '--config', aliceCfg, 'login',
      '--username', alice.username, '--password', alice.password]);
    assert.equal(r.code, 0, r.proc.describe());
    assert.equal(r.lines.length, 1, 'login prints one line');
    const user = JSON.parse(r.lines[0]);
    assert.equal(user.id, alice.id);
    assert.equal(user.username, alice.username);

    const mode = fs.statSync(aliceCfg).mode & 0o777;
    assert.equal(mode, 0o600, `config file mode is ${mode.toString(8)}`);
    const saved = JSON.parse(fs.readFileSync(aliceCfg, 'utf8'));
    assert.equal(saved.server, server.baseUrl);
    assert.equal(typeof saved.token, 'string');
    assert.equal(saved.user.id, alice.id);

    // Bob's password comes on stdin (not a terminal), as a script would pass it.
    const b = await cli(['--server', server.baseUrl, '--config', bobCfg, 'login', '--username', bob.username],
      { input: `${bob.password}\n` });
    assert.equal(b.code, 0, b.proc.describe());

    // No --server or --token: both come from the saved login.
    const me = await asBob(['whoami']);
    assert.equal(me.code, 0, me.proc.describe());
    assert.equal(JSON.parse(me.lines[0]).id, bob.id);
  });

  it('an empty password (an empty stdin) is said here, exit 64, not sent', async () => {
    const r = await cli(['--config', path.join(home, 'empty.json'), '--server', server.baseUrl, 'login', '--username', alice.username], { input: '\n' });
    assert.equal(r.code, 64, r.proc.describe());
    assert.match(r.stderr, /^parley-cli: missing_password: no password given/m);
    const flag = await cli(['--config', path.join(home, 'empty.json'), '--server', server.baseUrl, 'login', '--username', alice.username, '--password', '']);
    assert.equal(flag.code, 64, flag.proc.describe());
    assert.match(flag.stderr, /^parley-cli: missing_password: --password is empty$/m);
  });

  it('a wrong password is the server\'s error on stderr, exit 1', async () => {
    const r = await cli(['--server', server.baseUrl, '--config', path.join(home, 'x.json'), 'login',
      '--username', alice.username, '--password', 'not-the-password']);
    assert.equal(r.code, 1, r.proc.describe());
    assert.match(r.stderr, /^parley-cli: invalid_credentials: /m);
    assert.equal(r.stdout, '', 'nothing on stdout');
    assert.ok(!fs.existsSync(path.join(home, 'x.json')), 'a failed login saves nothing');
  });

  it('listen prints exactly the messages sent while it runs, in seq order', async () => {
    const listen = bobListen(['--exit-after', '3', '--timeout', '20']);
    await listen.ready();
    const sent = [];
    for (const text of ['first', 'second', 'third']) sent.push(await aliceSends(text));
    assert.deepEqual(sent.map((m) => m.seq), [1, 2, 3], 'send prints the stored message');
    assert.match(sent[0].thread_id, UUID_RE);
    threadId = sent[0].thread_id;

    const r = await listen.result();
    assert.equal(r.code, 0, r.proc.describe());
    const got = newMessages(listen.frames);
    assert.deepEqual(got.map((m) => m.content), ['first', 'second', 'third'], r.proc.describe());
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3]);
    assert.deepEqual(got.map((m) => m.id), sent.map((m) => m.id));
    assert.ok(got.every((m) => m.thread_id === threadId));
    assert.doesNotMatch(r.stdout, /listening as/, 'status stays on stderr');
  });

  it('send to a thread that is not yours, or a malformed id, fails with the server\'s code', async () => {
    const foreign = await asAlice(['send', '--thread', newUuid(), 'hello?']);
    assert.equal(foreign.code, 1, foreign.proc.describe());
    assert.match(foreign.stderr, /^parley-cli: forbidden: /m);
    assert.equal(foreign.stdout, '');

    // A malformed id is the client's own clear error (a bad command line), not the server's forbidden.
    const malformed = await asAlice(['send', '--thread', 'not-a-thread', 'hello?']);
    assert.equal(malformed.code, 64, malformed.proc.describe());
    assert.match(malformed.stderr, /^parley-cli: invalid_thread_id: 'not-a-thread' is not a thread id/m);
    assert.equal(malformed.stdout, '');
  });

  it('threads lists the direct thread', async () => {
    const r = await asBob(['threads']);
    assert.equal(r.code, 0, r.proc.describe());
    const threads = r.proc.frames;
    assert.equal(threads.length, 1, r.stdout);
    assert.equal(threads[0].id, threadId);
    assert.equal(threads[0].type, 'direct');
    assert.equal(threads[0].last_seq, 3);
    assert.deepEqual(threads[0].participants.map((p) => p.user_id).sort(), [alice.id, bob.id].sort());
  });

  it('history prints the messages oldest first, and honours --limit/--before', async () => {
    const all = await asBob(['history', threadId]);
    assert.equal(all.code, 0, all.proc.describe());
    assert.deepEqual(all.proc.frames.map((m) => [m.seq, m.content]), [[1, 'first'], [2, 'second'], [3, 'third']]);

    const page = await asBob(['history', threadId, '--limit', '1', '--before', '3']);
    assert.equal(page.code, 0, page.proc.describe());
    assert.deepEqual(page.proc.frames.map((m) => m.seq), [2]);
  });

  it('listen catches up on what was sent while it was not running, and repeats nothing', async () => {
    const first = bobListen(['--exit-after', '1', '--timeout', '20']);
    await first.ready();
    await aliceSends('gap 1');
    const r1 = await first.result();
    assert.equal(r1.code, 0, r1.proc.describe());
    assert.deepEqual(newMessages(first.frames).map((m) => m.content), ['gap 1']);
    const saved = JSON.parse(fs.readFileSync(bobCfg, 'utf8'));
    assert.equal(saved.positions?.[bob.id]?.[threadId], 4, `position saved on exit: ${JSON.stringify(saved.positions)}`);

    for (const text of ['gap 2', 'gap 3', 'gap 4']) await aliceSends(text);  // nobody listening

    const second = bobListen(['--exit-after', '3', '--timeout', '20']);
    const r2 = await second.result();
    assert.equal(r2.code, 0, r2.proc.describe());
    const got = newMessages(second.frames);
    assert.deepEqual(got.map((m) => m.content), ['gap 2', 'gap 3', 'gap 4'], r2.proc.describe());
    assert.deepEqual(got.map((m) => m.seq), [5, 6, 7]);

    // Caught up: a third run has nothing to print, and --timeout ends it with 3.
    const third = bobListen(['--timeout', '1.5']);
    const r3 = await third.result();
    assert.equal(r3.code, 3, r3.proc.describe());
    assert.match(r3.stderr, /timeout/);
    assert.deepEqual(newMessages(third.frames), [], 'nothing printed twice');
  });

  it('listen reconnects by itself after its connection is cut, and fills the gap', async () => {
    const proxy = await new CuttableProxy(server.port).listen();
    try {
      const listen = new CliProcess(['--config', bobCfg, '--server', proxy.url, 'listen', '--exit-after', '3', '--timeout', '25'], { home });
      await listen.ready();
      await aliceSends('before the cut');
      await listen.waitFor((p) => p.stdoutText.includes('before the cut'), 'the first message');

      proxy.cut();
      await aliceSends('during the cut 1');
      await aliceSends('during the cut 2');
      await listen.waitFor((p) => /reconnecting/.test(p.stderrText), 'a reconnect attempt');
      proxy.resume();

      const r = await listen.result();
      assert.equal(r.code, 0, r.proc.describe());
      assert.deepEqual(newMessages(listen.frames).map((m) => m.content),
        ['before the cut', 'during the cut 1', 'during the cut 2'], r.proc.describe());
      assert.ok((r.stderr.match(/listening as /g) || []).length >= 2, `connected again\n${r.stderr}`);
    } finally {
      await proxy.close();
    }
  });

  it('listen and send ride out a server restarting (503 shutting_down), and send says when an id names other text', async () => {
    const proxy = await new CuttableProxy(server.port).listen();
    try {
      const listen = new CliProcess(['--config', bobCfg, '--server', proxy.url, 'listen', '--exit-after', '3', '--timeout', '25'], { home });
      await listen.ready();
      await aliceSends('before the restart');
      await listen.waitFor((p) => p.stdoutText.includes('before the restart'), 'the first message');
      const threadId = newMessages(listen.frames)[0].thread_id;
      proxy.drain();
      const send = new CliProcess(['--config', aliceCfg, '--server', proxy.url, 'send', '--to', bob.username, 'during the restart'], { home });
      // A thread named by a prefix is looked up through the restart too.
      const byPrefix = new CliProcess(['--config', aliceCfg, '--server', proxy.url, 'send', '--thread', threadId.slice(0, 8),
        'by prefix during the restart'], { home });
      await listen.waitFor((p) => /shutting down/.test(p.stderrText), 'a reconnect refused by the drain');
      await sleep(800);
      proxy.resume();
      for (const s of [send, byPrefix]) {
        const sent = await s.result();
        assert.equal(sent.code, 0, sent.proc.describe());
        assert.match(sent.stderr, /trying again with the same client_msg_id cli-/, sent.proc.describe());
      }
      const r = await listen.result();
      assert.equal(r.code, 0, r.proc.describe());
      const got = newMessages(listen.frames).map((m) => m.content);
      assert.equal(got[0], 'before the restart', r.proc.describe());
      assert.deepEqual(got.slice(1).sort(), ['by prefix during the restart', 'during the restart'], r.proc.describe());
    } finally {
      await proxy.close();
    }
    const id = `cli-reuse-${Date.now()}`;
    const first = await asAlice(['send', '--to', bob.username, '--client-msg-id', id, 'first text']);
    assert.equal(first.code, 0, first.proc.describe());
    const again = await asAlice(['send', '--to', bob.username, '--client-msg-id', id, 'first text']);
    assert.equal(again.code, 0, `a retry of the same text answers the stored message\n${again.proc.describe()}`);
    assert.equal(JSON.parse(again.lines[0]).id, JSON.parse(first.lines[0]).id);
    const other = await asAlice(['send', '--to', bob.username, '--client-msg-id', id, 'other text']);
    assert.equal(other.code, 1, other.proc.describe());
    assert.match(other.stderr, /^parley-cli: client_msg_id_reused: .*nothing new was stored/m);
    assert.equal(other.stdout, '', 'the stored message is not printed as if sent');
  });

  it('a --server port past 65535 is refused, not wrapped onto another port', async () => {
    // Five digits, past 65535, and modulo 65536 this server's port.
    const r = await asBob(['--server', `http://${HOST}:${65536 + (server.port % 1000)}`, 'whoami']);
    assert.equal(r.code, 64, r.proc.describe());
    assert.match(r.stderr, /^parley-cli: invalid_server: .*1 to 65535/m);
  });

  it('listen exits 0 on SIGINT, SIGTERM and SIGHUP', async () => {
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
      const listen = bobListen([]);
      await listen.ready();
      listen.child.kill(signal);
      const r = await listen.result(5000);
      assert.equal(r.code, 0, `${signal}\n${r.proc.describe()}`);
    }
  });

  it('listen started with SIGHUP ignored (nohup) keeps running when its terminal closes', async () => {
    const listen = new CliProcess(['--config', bobCfg, 'listen'], { home, ignoring: 'HUP' });
    await listen.ready();
    listen.child.kill('SIGHUP');
    await sleep(700);
    assert.equal(listen.child.exitCode, null, `still running after SIGHUP\n${listen.describe()}`);
    await aliceSends('after the hangup');
    await listen.waitFor((p) => p.stdoutText.includes('after the hangup'), 'a message after the hangup');
    listen.child.kill('SIGTERM');
    const r = await listen.result(5000);
    assert.equal(r.code, 0, r.proc.describe());
  });

  it('a renewal the server did not answer is tried again within seconds, not after the token ran out', async () => {
    const cfg = path.join(home, 'renewing.json');
    const login = await cli(['--server', server.baseUrl, '--config', cfg, 'login', '--username', bob.username, '--password', bob.password]);
    assert.equal(login.code, 0, login.proc.describe());
    // The saved expiry says 5 s from now (the token itself lives a week): the renewal is due in 4 s.
    const saved = JSON.parse(fs.readFileSync(cfg, 'utf8'));
    saved.expires_at = new Date(Date.now() + 5000).toISOString();
    fs.writeFileSync(cfg, JSON.stringify(saved));
    const proxy = await new CuttableProxy(server.port).listen();
    try {
      const listen = new CliProcess(['--config', cfg, '--server', proxy.url, 'listen', '--timeout', '30'], { home });
      await listen.ready();
      proxy.cut();
      await listen.waitFor((p) => /cannot renew the token/.test(p.stderrText), 'a renewal that failed', 10000);
      proxy.resume();
      const renewedAt = Date.now();
      await listen.waitFor(() => JSON.parse(fs.readFileSync(cfg, 'utf8')).token !== saved.token, 'the renewed token saved', 8000);
      assert.ok(Date.now() - renewedAt < 8000);
      assert.match(listen.stderrText, /retrying in [1-9] s/, listen.describe());
      listen.child.kill('SIGTERM');
      assert.equal((await listen.result(5000)).code, 0, listen.describe());
    } finally {
      await proxy.close();
    }
  });

  it('a --config file that is not a login file (notes, a package.json) is not written over by listen', async () => {
    for (const [name, text] of [['notes.txt', 'important notes\nline 2\n'], ['package.json', '{"name":"my-app","version":"1.0.0"}\n']]) {
      const file = path.join(home, name);
      fs.writeFileSync(file, text);
      const listen = new CliProcess(['--config', file, '--token', bob.token, '--server', server.baseUrl, 'listen', '--timeout', '1.5'], { home });
      const r = await listen.result();
      assert.equal(r.code, 3, r.proc.describe());
      assert.equal(fs.readFileSync(file, 'utf8'), text, `${name} as it was`);
      assert.match(r.stderr, new RegExp(`not saving positions to .*${name.replace('.', '\\.')}`), r.proc.describe());
    }
  });

  // ---- positions survive a crash (kill -9) and a closed terminal (SIGHUP)

  const savedPosition = () => {
    try { return JSON.parse(fs.readFileSync(bobCfg, 'utf8')).positions?.[bob.id]?.[threadId]; } catch { return undefined; }
  };

  // Alice sends `n` messages to the thread over REST, back to back; resolves the last seq.
  const burst = async (n, label) => {
    let last;
    for (let i = 1; i <= n; i++) {
      const res = await server.http('POST', `/api/chat/threads/${threadId}/messages`,
        { token: alice.token, body: { content: `${label} ${i}`, client_msg_id: newUuid() } });
      assert.equal(res.status, 201, res.text);
      last = res.body.data.seq;
    }
    return last;
  };

  // A listen that must print nothing: everything was printed and saved before.
  const assertNothingRepeated = async (why) => {
    const again = bobListen(['--timeout', '1.5']);
    const r = await again.result();
    assert.equal(r.code, 3, r.proc.describe());
    assert.deepEqual(newMessages(again.frames).map((m) => m.content), [], `${why}: nothing printed twice`);
  };

  it('listen saves its position while it runs: after kill -9 a new listen repeats nothing', async () => {
    const listen = bobListen([]);
    await listen.ready();
    const last = await burst(8, 'burst');
    await listen.waitFor((p) => newMessages(p.frames).some((m) => m.seq === last), 'the burst to be printed');
    // Saved within the batch interval (200 ms) of the last one printed, with no exit needed.
    const deadline = Date.now() + 5000;
    while (savedPosition() !== last && Date.now() < deadline) await sleep(20);
    assert.equal(savedPosition(), last, `the saved position caught up with the burst\n${listen.describe()}`);
    listen.child.kill('SIGKILL');
    const r = await listen.result(5000);
    assert.equal(r.signal, 'SIGKILL');
    assert.deepEqual(newMessages(listen.frames).map((m) => m.content), Array.from({ length: 8 }, (_, i) => `burst ${i + 1}`));
    await assertNothingRepeated('after kill -9');
  });

  it('listen saves its position on SIGHUP (the terminal closed), at once', async () => {
    const listen = bobListen([]);
    await listen.ready();
    const last = await burst(6, 'hangup');
    await listen.waitFor((p) => newMessages(p.frames).some((m) => m.seq === last), 'the burst to be printed');
    listen.child.kill('SIGHUP');  // no waiting for the batch: the exit saves
    const r = await listen.result(5000);
    assert.equal(r.code, 0, r.proc.describe());
    assert.equal(savedPosition(), last, 'saved on SIGHUP');
    await assertNothingRepeated('after SIGHUP');
  });

  // ---- ids as printed, and the commands beyond send/listen

  it('history, send --thread and mark-read take the 8-character id prefix that threads --pretty prints', async () => {
    const table = await asBob(['--pretty', 'threads']);
    assert.equal(table.code, 0, table.proc.describe());
    const prefix = threadId.slice(0, 8);
    assert.match(table.stdout, new RegExp(`^${prefix}  direct`, 'm'), table.stdout);

    const full = await asBob(['history', threadId, '--limit', '3']);
    const short = await asBob(['history', prefix, '--limit', '3']);
    assert.equal(short.code, 0, short.proc.describe());
    assert.deepEqual(short.proc.frames, full.proc.frames);
    assert.equal(short.proc.frames.length, 3);

    const sent = await asAlice(['send', '--thread', prefix.toUpperCase(), 'by prefix']);
    assert.equal(sent.code, 0, sent.proc.describe());
    assert.equal(JSON.parse(sent.lines[0]).thread_id, threadId);
  });

  it('a prefix that is no thread of yours, or too short, is a clear local error', async () => {
    // A prefix of none of Bob's threads: flip the first hex digit of the one he has.
    const other = (parseInt(threadId[0], 16) ^ 8).toString(16) + threadId.slice(1, 8);
    const none = await asBob(['history', other]);
    assert.equal(none.code, 1, none.proc.describe());
    assert.match(none.stderr, new RegExp(`^parley-cli: no_such_thread: none of your threads has an id starting with ${other}`, 'm'));

    const tooShort = await asBob(['history', 'ab']);
    assert.equal(tooShort.code, 64, tooShort.proc.describe());
    assert.match(tooShort.stderr, /^parley-cli: invalid_thread_id: .*first 4 characters or more/m);
    // The help says the same length as the refusal.
    for (const cmd of [['history'], ['send'], ['mark-read'], ['group', 'add']]) {
      const help = await cli([...cmd, '--help']);
      assert.equal(help.code, 0, help.proc.describe());
      assert.match(help.stdout, /unique prefix of it \(4 characters or more\)/, help.proc.describe());
    }

    // A well-formed full id of a thread that is not Bob's stays the server's answer.
    const foreign = await asBob(['history', newUuid()]);
    assert.equal(foreign.code, 1, foreign.proc.describe());
    assert.match(foreign.stderr, /^parley-cli: forbidden: /m);
  });

  it('--pretty history shows each message\'s status; mark-read moves it to read', async () => {
    const mark = await asBob(['mark-read', threadId.slice(0, 8), '--up-to', '2']);
    assert.equal(mark.code, 0, mark.proc.describe());
    assert.deepEqual(JSON.parse(mark.lines[0]), { thread_id: threadId, user_id: bob.id, last_read_seq: 2 });

    const partly = await asAlice(['--pretty', 'history', threadId, '--limit', '200']);
    assert.equal(partly.code, 0, partly.proc.describe());
    assert.match(partly.lines[0], / #1 [a-z0-9_.]+: first {2}\(read\)$/, partly.stdout);
    assert.match(partly.lines[2], / #3 [a-z0-9_.]+: third {2}\(delivered\)$/, 'bob\'s listen acknowledged it, he has not read it');

    const all = await asBob(['mark-read', threadId]);
    assert.equal(all.code, 0, all.proc.describe());
    const last = JSON.parse(all.lines[0]).last_read_seq;
    assert.ok(last > 3, all.stdout);
    const after = await asAlice(['--pretty', 'history', threadId, '--limit', '200']);
    assert.ok(after.lines.every((l) => / {2}\(read\)$/.test(l)), after.stdout);

    const unread = await server.http('GET', '/api/chat/unread-count', { token: bob.token });
    assert.equal(unread.body.data.unread_count, 0, unread.text);
  });

  it('register creates an account and logs in; a role the server does not know is refused', async () => {
    const carolCfg = path.join(home, 'carol', 'cli.json');
    const username = `carol_${Math.random().toString(36).slice(2, 8)}`;
    const r = await cli(['--server', server.baseUrl, '--config', carolCfg, 'register',
      '--username', username, '--full-name', 'Carol Student', '--role', 'student'], { input: 'carol-password-1\n' });
    assert.equal(r.code, 0, r.proc.describe());
    const user = JSON.parse(r.lines[0]);
    assert.equal(user.username, username);
    assert.equal(user.role, 'student');
    const me = await cli(['--config', carolCfg, 'whoami']);
    assert.equal(me.code, 0, me.proc.describe());
    assert.equal(JSON.parse(me.lines[0]).id, user.id, 'the saved login is the new account');

    const bad = await cli(['--server', server.baseUrl, '--config', path.join(home, 'dan.json'), 'register',
      '--username', `dan_${Math.random().toString(36).slice(2, 8)}`, '--password', 'dan-password-1',
      '--full-name', 'Dan', '--role', 'r'.repeat(65)]);
    assert.equal(bad.code, 1, bad.proc.describe());
    assert.match(bad.stderr, /^parley-cli: invalid_field: role must be at most 64 bytes/m);

    const taken = await cli(['--server', server.baseUrl, '--config', path.join(home, 'dan.json'), 'register',
      '--username', username, '--password', 'carol-password-1', '--full-name', 'Again']);
    assert.equal(taken.code, 1, taken.proc.describe());
    assert.match(taken.stderr, /^parley-cli: username_taken: /m);
  });

  it('group create names members by username; group add adds more by username', async () => {
    const [carol, dave] = await server.registerMany(2);
    const created = await asBob(['group', 'create', '--title', 'Trip committee', '--members', `${alice.username},${carol.username}`]);
    assert.equal(created.code, 0, created.proc.describe());
    const group = JSON.parse(created.lines[0]);
    assert.equal(group.type, 'group');
    assert.equal(group.title, 'Trip committee');
    assert.deepEqual(group.participants.map((p) => p.user_id).sort(), [alice.id, bob.id, carol.id].sort());

    const added = await asBob(['group', 'add', group.id.slice(0, 8), dave.username]);
    assert.equal(added.code, 0, added.proc.describe());
    assert.ok(JSON.parse(added.lines[0]).participants.some((p) => p.user_id === dave.id), added.stdout);

    const nobody = await asBob(['group', 'add', group.id, 'no_such_user_x']);
    assert.equal(nobody.code, 1, nobody.proc.describe());
    assert.match(nobody.stderr, /^parley-cli: user_not_found: no user named "no_such_user_x"/m);

    // Lists as people type them: spaces after the commas, a comma in group add.
    const [erin, fay, gil] = await server.registerMany(3);
    const spaced = await asBob(['group', 'create', '--title', 'Spaced', '--members', `${alice.username}, ${erin.username} `]);
    assert.equal(spaced.code, 0, spaced.proc.describe());
    const spacedGroup = JSON.parse(spaced.lines[0]);
    assert.deepEqual(spacedGroup.participants.map((p) => p.user_id).sort(), [alice.id, bob.id, erin.id].sort());
    const commas = await asBob(['group', 'add', spacedGroup.id, `${fay.username}, ${gil.username}`]);
    assert.equal(commas.code, 0, commas.proc.describe());
    assert.deepEqual(JSON.parse(commas.lines[0]).participants.map((p) => p.user_id).sort(), [alice.id, bob.id, erin.id, fay.id, gil.id].sort());
    const none = await asBob(['group', 'add', spacedGroup.id, ' , ']);
    assert.equal(none.code, 64, none.proc.describe());
    assert.match(none.stderr, /^parley-cli: missing_field: name at least one user to add$/m);
    const to = await asBob(['send', '--to', ` ${erin.username}`, 'hello with a space']);
    assert.equal(to.code, 0, to.proc.describe());

    // A blank title (spaces, or a no-break space) is refused here, with
    // words that fit a required option; "" still makes a group without one.
    for (const title of ['   ', '\u00a0\u3000']) {
      const blank = await asBob(['group', 'create', '--title', title, '--members', alice.username]);
      assert.equal(blank.code, 64, blank.proc.describe());
      assert.match(blank.stderr, /^parley-cli: invalid_title: --title is blank: give the group a name, or --title "" for none$/m);
    }
    const untitled = await asBob(['group', 'create', '--title', '', '--members', alice.username]);
    assert.equal(untitled.code, 0, untitled.proc.describe());
    assert.equal(JSON.parse(untitled.lines[0]).title, null, 'a group without a title');

    // Only the group's admin may add: Alice is a member, not an admin.
    const notAdmin = await asAlice(['group', 'add', group.id, dave.username]);
    assert.equal(notAdmin.code, 1, notAdmin.proc.describe());
    assert.match(notAdmin.stderr, /^parley-cli: forbidden: /m);
  });

  it('listen hides presence unless --presence: a contact\'s one-shot commands do not flood it', async () => {
    const quiet = bobListen(['--timeout', '30']);
    const loud = bobListen(['--presence', '--timeout', '30']);
    await quiet.ready();
    await loud.ready();
    const isAlice = (f) => f.type === 'presence' && f.user_id === alice.id;
    // Alice's connection opens and closes: she goes offline 3 s later (and online
    // first, unless her last connection closed less than 3 s ago).
    await aliceSends('one-shot');
    await loud.waitFor((p) => p.frames.some((f) => isAlice(f) && f.online === false), 'alice going offline', 15000);
    await quiet.waitFor((p) => newMessages(p.frames).some((m) => m.content === 'one-shot'), 'the message');
    await sleep(300);  // the same frames reached both of Bob's connections
    quiet.child.kill('SIGTERM');
    loud.child.kill('SIGTERM');
    await quiet.result(5000);
    await loud.result(5000);
    assert.deepEqual(quiet.frames.filter((f) => f.type === 'presence'), [], quiet.describe());
  });

  it('a server that cannot be reached is exit 2; no login at all is exit 1', async () => {
    const port = await closedPort();
    const r = await asBob(['--server', `http://${HOST}:${port}`, 'whoami']);
    assert.equal(r.code, 2, r.proc.describe());
    assert.match(r.stderr, /^parley-cli: connection_failed: /m);

    const none = await cli(['--server', server.baseUrl, '--config', path.join(home, 'nobody.json'), 'threads']);
    assert.equal(none.code, 1, none.proc.describe());
    assert.match(none.stderr, /^parley-cli: not_logged_in: /m);

    // An expired token says how to go on, by where it came from: a new
    // login would not help one given with --token, which wins over it.
    const now = Math.floor(Date.now() / 1000);
    const expired = mintToken(server.secret, { sub: bob.id, username: bob.username, iat: now - 7200, exp: now - 3600 });
    const given = await cli(['--server', server.baseUrl, '--token', expired, '--config', path.join(home, 'nobody.json'), 'threads']);
    assert.equal(given.code, 1, given.proc.describe());
    assert.match(given.stderr, /^parley-cli: token_expired: .*\nparley-cli: the token given with --token is refused: pass a new one, or leave --token out/m);
    const savedCfg = path.join(home, 'expired.json');
    fs.writeFileSync(savedCfg, JSON.stringify({ server: server.baseUrl, token: expired, user: { username: bob.username } }), { mode: 0o600 });
    const saved = await cli(['--config', savedCfg, 'threads']);
    assert.equal(saved.code, 1, saved.proc.describe());
    assert.match(saved.stderr, new RegExp(`^parley-cli: token_expired: .*\nparley-cli: log in again: parley-cli login --username ${bob.username}$`, 'm'));
  });

  // Others' text reaches a terminal: escape sequences in it (clear the screen,
  // retitle the window, write the clipboard with OSC 52) or a carriage
  // return (overwrite what was printed) must show, not act.
  it('--pretty shows control characters in others\' messages, never sends them to the terminal', async () => {
    const hostile = 'look \x1b[2J\x1b]0;owned\x07 \x1b]52;c;cm0gLXJmIH4=\x07 fine\rFAKE\x7f \u009b31m end\nsecond line';
    const listen = new CliProcess(['--config', bobCfg, '--pretty', 'listen', '--exit-after', '1', '--timeout', '20'], { home });
    await listen.ready();
    const sent = await aliceSends(hostile);
    assert.equal(sent.content, hostile, 'stored exactly as sent');
    const live = await listen.result();
    assert.equal(live.code, 0, live.proc.describe());
    const history = await asBob(['--pretty', 'history', threadId, '--limit', '1']);
    assert.equal(history.code, 0, history.proc.describe());
    const threads = await asBob(['--pretty', 'threads']);
    assert.equal(threads.code, 0, threads.proc.describe());

    for (const [what, out] of [['listen', live.stdout], ['history', history.stdout], ['threads', threads.stdout]]) {
      assert.doesNotMatch(out, /[\x00-\x09\x0b-\x1f\x7f\u0080-\u009f]/, `${what} printed a control character: ${JSON.stringify(out)}`);
      if (what === 'threads') continue;  // a 40-byte preview of it
      assert.match(out, /look \^\[\[2J\^\[\]0;owned\^G \^\[\]52;c;cm0gLXJmIH4=\^G fine\^MFAKE\^\? <U\+009B>31m end/, what);
    }
    assert.match(live.stdout, /end\n {4}second line\n$/, 'a newline still starts an indented line');
    // JSON lines carry the text exactly, every control escaped (DEL and the
    // C1 controls too, which Boost.JSON leaves raw).
    const json = await asBob(['history', threadId, '--limit', '1']);
    assert.equal(JSON.parse(json.lines[0]).content, hostile);
    assert.doesNotMatch(json.stdout, /[\x00-\x09\x0b-\x1f\x7f\u0080-\u009f]/, `JSON output with a raw control: ${JSON.stringify(json.stdout)}`);
  });

  it('--pretty shows edits and deletions, as they happen in listen and in history', async () => {
    const listen = new CliProcess(['--config', bobCfg, '--pretty', 'listen', '--timeout', '20'], { home });
    await listen.ready();
    const typo = await aliceSends('see you at 9');
    const oops = await aliceSends('wrong thread, sorry');
    const edited = await server.http('PATCH', `/api/chat/messages/${typo.id}`, { token: alice.token, body: { content: 'see you at 10' } });
    assert.equal(edited.status, 200, edited.text);
    const deleted = await server.http('DELETE', `/api/chat/messages/${oops.id}`, { token: alice.token });
    assert.equal(deleted.status, 200, deleted.text);
    await listen.waitFor((p) => /was deleted/.test(p.stdoutText), 'the deletion');
    listen.child.kill('SIGTERM');
    await listen.result(5000);
    assert.match(listen.stdoutText, /: see you at 10 \(edited\)$/m, listen.describe());
    assert.match(listen.stdoutText, new RegExp(`^\\[[\\d:]+\\] #${threadId.slice(0, 8)} #${oops.seq} was deleted$`, 'm'), listen.describe());

    const history = await asBob(['--pretty', 'history', threadId, '--limit', '2']);
    assert.equal(history.code, 0, history.proc.describe());
    assert.match(history.lines[0], new RegExp(` #${typo.seq} [a-z0-9_.]+: see you at 10 \\(edited\\) {2}\\(\\w+\\)$`), history.stdout);
    assert.match(history.lines[1], new RegExp(` #${oops.seq} [a-z0-9_.]+: \\(deleted\\) {2}\\(\\w+\\)$`), history.stdout);
  });

  it('listen prints the edits and deletions made while it was not running, once', async () => {
    const keep = await aliceSends('the trip is on Friday');
    const drop = await aliceSends('my number is 555');
    const first = new CliProcess(['--config', bobCfg, '--pretty', 'listen', '--timeout', '20'], { home });
    await first.ready();
    first.child.kill('SIGTERM');
    assert.equal((await first.result(5000)).code, 0, first.describe());
    const saved = JSON.parse(fs.readFileSync(bobCfg, 'utf8')).positions?.[bob.id]?.$changes;
    assert.ok(Number.isSafeInteger(saved?.change_mark), `a change mark saved: ${JSON.stringify(saved)}`);

    // Nobody listening.
    const edited = await server.http('PATCH', `/api/chat/messages/${keep.id}`, { token: alice.token, body: { content: 'the trip is on Saturday' } });
    assert.equal(edited.status, 200, edited.text);
    assert.equal((await server.http('DELETE', `/api/chat/messages/${drop.id}`, { token: alice.token })).status, 200);
    // A message sent and edited meanwhile: printed once, as it is now.
    const fresh = await aliceSends('meet at the gate');
    assert.equal((await server.http('PATCH', `/api/chat/messages/${fresh.id}`, { token: alice.token, body: { content: 'meet at the main gate' } })).status, 200);

    const second = new CliProcess(['--config', bobCfg, '--pretty', 'listen', '--timeout', '20'], { home });
    await second.ready();
    await second.waitFor((p) => /was deleted/.test(p.stdoutText) && /on Saturday/.test(p.stdoutText) && /main gate/.test(p.stdoutText),
      'the missed changes');
    // One made live, just before listen stops: printed now, not again next time.
    const live = await server.http('PATCH', `/api/chat/messages/${keep.id}`, { token: alice.token, body: { content: 'the trip is on Sunday' } });
    assert.equal(live.status, 200, live.text);
    await second.waitFor((p) => /on Sunday/.test(p.stdoutText), 'the live edit');
    second.child.kill('SIGTERM');
    assert.equal((await second.result(5000)).code, 0, second.describe());
    assert.match(second.stdoutText, /: the trip is on Saturday \(edited\)$/m, second.describe());
    assert.match(second.stdoutText, new RegExp(`#${drop.seq} was deleted$`, 'm'), second.describe());
    assert.equal(second.stdoutText.match(/main gate/g)?.length, 1, `the new message once: ${second.describe()}`);
    assert.doesNotMatch(second.stdoutText, /changes_synced/, 'the mark is not printed');

    // The record as a listen from before change numbers wrote it ("id|edited_at",
    // "id|deleted"): what it names is the same change, not printed again.
    const config = JSON.parse(fs.readFileSync(bobCfg, 'utf8'));
    const record = config.positions[bob.id].$changes;
    const history = await server.history(bob.token, threadId);
    const legacy = record.printed.map((k) => {
      if (!k.includes('#')) return k;
      const [id] = k.split('#');
      const m = history.find((x) => x.id === id);
      return m?.deleted ? `${id}|deleted` : `${id}|${m?.edited_at}`;
    });
    assert.ok(legacy.some((k) => k.startsWith(`${keep.id}|`)), `the live edit is in the record: ${JSON.stringify(record)}`);
    record.printed = legacy;
    fs.writeFileSync(bobCfg, JSON.stringify(config));

    // Printed once: the next run has nothing of them.
    const third = new CliProcess(['--config', bobCfg, '--pretty', 'listen', '--timeout', '1.5'], { home });
    const r3 = await third.result();
    assert.equal(r3.code, 3, third.describe());
    assert.doesNotMatch(third.stdoutText, /on Saturday|on Sunday|was deleted|main gate/, third.describe());
  });

  // listen prints a thread's messages in seq order, holding back one that
  // comes before a missing one; an edit or deletion of a held message comes
  // while it waits. Its change must not be printed before it, and what is
  // printed last of it must be as it is now. The gap is made by holding the
  // CLI's subscribe_thread (its catch-up) in a proxy while the live frames flow.
  it('listen prints an edit or deletion of a message it holds behind a gap after that message, never before', async () => {
    const catchUp = bobListen(['--timeout', '1.5']);  // bob's position at the thread's last message
    await catchUp.result();
    await aliceSends('sent while bob is away');  // the gap
    const proxy = await new CuttableProxy(server.port).holdAfter(/^GET \/ws/).listen();
    try {
      const listen = new CliProcess(['--config', bobCfg, '--server', proxy.url, 'listen', '--timeout', '20'], { home });
      await listen.ready();
      await sleep(500);  // its changes_synced has come
      const kept = await aliceSends('see you at 9');
      const dropped = await aliceSends('wrong number');
      const edit = await server.http('PATCH', `/api/chat/messages/${kept.id}`, { token: alice.token, body: { content: 'see you at 10' } });
      assert.equal(edit.status, 200, edit.text);
      assert.equal((await server.http('DELETE', `/api/chat/messages/${dropped.id}`, { token: alice.token })).status, 200);
      await sleep(500);  // the live frames reach listen, which holds the messages behind the gap
      assert.equal(newMessages(listen.frames).filter((m) => m.id === kept.id || m.id === dropped.id).length, 0,
        `held behind the gap: ${listen.describe()}`);
      proxy.release();
      await listen.waitFor(() => newMessages(listen.frames).some((m) => m.id === dropped.id), 'the messages after the catch-up');
      await sleep(300);  // a change printed late would come now
      listen.child.kill('SIGTERM');
      assert.equal((await listen.result(5000)).code, 0, listen.describe());
      const about = (id) => listen.frames.filter((f) => (f.type === 'new_message' && f.data.id === id) ||
        (f.type === 'message_edited' && f.data.id === id) || (f.type === 'message_deleted' && f.message_id === id));
      const keptFrames = about(kept.id);
      assert.equal(keptFrames[0]?.type, 'new_message', `the message first, then its edit: ${listen.describe()}`);
      assert.equal(keptFrames.at(-1).data.content, 'see you at 10', `shown as it is now: ${listen.describe()}`);
      assert.equal(keptFrames.filter((f) => f.type === 'new_message').length, 1, 'printed once');
      const droppedFrames = about(dropped.id);
      assert.equal(droppedFrames[0]?.type, 'new_message', `the message first, then its deletion: ${listen.describe()}`);
      const last = droppedFrames.at(-1);
      assert.ok(last.type === 'message_deleted' || last.data.deleted === true, `shown deleted: ${listen.describe()}`);
    } finally {
      await proxy.close();
    }
  });

  it('--pretty threads shows a deleted last message as (deleted), an edited one with (edited)', async () => {
    const gone = await aliceSends('to be taken back');
    assert.equal((await server.http('DELETE', `/api/chat/messages/${gone.id}`, { token: alice.token })).status, 200);
    const deleted = await asBob(['--pretty', 'threads']);
    assert.match(deleted.stdout, new RegExp(`^${threadId.slice(0, 8)} .*[a-z0-9_.]+: \\(deleted\\)$`, 'm'), deleted.stdout);
    const fixed = await aliceSends('at 9');
    assert.equal((await server.http('PATCH', `/api/chat/messages/${fixed.id}`, { token: alice.token, body: { content: 'at 10' } })).status, 200);
    const edited = await asBob(['--pretty', 'threads']);
    assert.match(edited.stdout, new RegExp(`^${threadId.slice(0, 8)} .*: at 10 \\(edited\\)$`, 'm'), edited.stdout);
  });

  it('--pretty shows bidirectional overrides in others\' text as code points: they cannot reorder the line', async () => {
    await aliceSends('pay \u202Eevil\u202C here \u2067x\u2069');
    const history = await asBob(['--pretty', 'history', threadId, '--limit', '1']);
    assert.equal(history.code, 0, history.proc.describe());
    assert.match(history.stdout, /pay <U\+202E>evil<U\+202C> here <U\+2067>x<U\+2069>/, history.stdout);
    assert.doesNotMatch(history.stdout, /[\u202A-\u202E\u2066-\u2069]/);
  });

  it('send of a message the server refuses for its size is a refusal (exit 1), not retried as a lost connection', async () => {
    const started = Date.now();
    const r = await asAlice(['send', '--to', bob.username, '-'], { input: 'x'.repeat(70000) });
    assert.equal(r.code, 1, r.proc.describe());
    assert.match(r.stderr, /payload_too_large/, r.proc.describe());
    assert.doesNotMatch(r.stderr, /trying again|may have been stored/, r.proc.describe());
    assert.ok(Date.now() - started < 4000, `answered at once, not after retries (${Date.now() - started} ms)`);
  });

  it('listen shows its own removal from a group, and no error for the receipt the server no longer takes', async () => {
    const group = await server.createGroup(alice, [bob]);
    const listen = new CliProcess(['--config', bobCfg, '--pretty', 'listen', '--timeout', '20'], { home });
    await listen.ready();
    await server.sendRest(alice.token, group.id, { content: 'class starts at 8' });
    await listen.waitFor((p) => /class starts at 8/.test(p.stdoutText), 'the message');
    const removed = await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${bob.id}`, { token: alice.token });
    assert.equal(removed.status, 200, removed.text);
    await listen.waitFor((p) => new RegExp(`removed ${bob.username}`).test(p.stdoutText), 'the removal notice');
    await sleep(500);  // the receipt's refusal would come by now
    listen.child.kill('SIGTERM');
    await listen.result(5000);
    assert.doesNotMatch(listen.stdoutText + listen.stderrText, /error|forbidden/, listen.describe());
  });

  // Bob's listener is stopped while Alice writes to the group and then
  // removes him: the next run prints both and forgets the thread; the one
  // after asks for nothing. Before, each run said "cannot catch up on
  // thread …: forbidden" and printed neither.
  it('listen removed from a group while stopped prints what came up to the removal, then forgets the thread', async () => {
    const group = await server.createGroup(alice, [bob]);
    const first = new CliProcess(['--config', bobCfg, 'listen', '--timeout', '20'], { home });
    await first.ready();
    await server.sendRest(alice.token, group.id, { content: 'term starts monday' });
    await first.waitFor((p) => /term starts monday/.test(p.stdoutText), 'the message');
    first.child.kill('SIGTERM');
    await first.result(5000);

    await server.sendRest(alice.token, group.id, { content: 'bring the forms' });
    const removed = await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${bob.id}`, { token: alice.token });
    assert.equal(removed.status, 200, removed.text);
    await server.sendRest(alice.token, group.id, { content: 'not for bob' });

    const notice = `${alice.username} removed ${bob.username}`;
    const second = new CliProcess(['--config', bobCfg, 'listen', '--timeout', '20'], { home });
    await second.waitFor((p) => p.stdoutText.includes(notice) && /no longer a participant/.test(p.stderrText), 'the notice');
    second.child.kill('SIGTERM');
    await second.result(5000);
    const printed = second.stdoutText.split('\n').filter(Boolean).map((l) => JSON.parse(l))
      .filter((f) => f.type === 'new_message' && f.data.thread_id === group.id).map((f) => f.data.content);
    assert.deepEqual(printed, ['bring the forms', notice], second.describe());
    assert.doesNotMatch(second.stderrText, /cannot catch up/, second.describe());
    const saved = JSON.parse(fs.readFileSync(bobCfg, 'utf8'));
    assert.equal(saved.positions?.[bob.id]?.[group.id], undefined, 'the thread is forgotten');

    const third = new CliProcess(['--config', bobCfg, 'listen', '--timeout', '1.5'], { home });
    const r3 = await third.result();
    assert.equal(r3.code, 3, third.describe());
    assert.doesNotMatch(third.stderrText, /forbidden|no longer|cannot catch up/, third.describe());
  });

  // Removed and added back while listen was stopped, or removed while it
  // ran and added back after it stopped: the replay from the saved position
  // brings what was said while Bob was out (a member's history), which was
  // printed as news.
  it('listen removed from a group and added back prints the notices, not what was said while out', async () => {
    const contents = (p, group) => p.stdoutText.split('\n').filter(Boolean).map((l) => JSON.parse(l))
      .filter((f) => f.type === 'new_message' && f.data.thread_id === group.id).map((f) => f.data.content);
    const removedNote = `${alice.username} removed ${bob.username}`;
    const addedNote = `${alice.username} added ${bob.username}`;
    const remove = async (group) => {
      const r = await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${bob.id}`, { token: alice.token });
      assert.equal(r.status, 200, r.text);
    };
    const addBack = async (group) => {
      const r = await server.http('POST', `/api/chat/threads/${group.id}/participants`, { token: alice.token, body: { participant_ids: [bob.id] } });
      assert.equal(r.status, 200, r.text);
    };

    // 1. All of it while listen is stopped.
    const group = await server.createGroup(alice, [bob]);
    const first = new CliProcess(['--config', bobCfg, 'listen', '--exit-after', '1', '--timeout', '20'], { home });
    await first.ready();
    await server.sendRest(alice.token, group.id, { content: 'before' });
    assert.equal((await first.result()).code, 0, first.describe());
    await server.sendRest(alice.token, group.id, { content: 'missed while a member' });
    await remove(group);
    await server.sendRest(alice.token, group.id, { content: 'said while bob was out' });
    await addBack(group);
    await server.sendRest(alice.token, group.id, { content: 'welcome back' });
    const second = new CliProcess(['--config', bobCfg, 'listen', '--exit-after', '4', '--timeout', '20'], { home });
    assert.equal((await second.result()).code, 0, second.describe());
    assert.deepEqual(contents(second, group), ['missed while a member', removedNote, addedNote, 'welcome back'], second.describe());

    // 2. The removal seen by a listen that then stopped; added back after.
    const third = new CliProcess(['--config', bobCfg, 'listen', '--exit-after', '1', '--timeout', '20'], { home });
    await third.ready();
    await remove(group);
    assert.equal((await third.result()).code, 0, third.describe());
    assert.deepEqual(contents(third, group), [removedNote], third.describe());
    await server.sendRest(alice.token, group.id, { content: 'said while bob was out again' });
    await addBack(group);
    await server.sendRest(alice.token, group.id, { content: 'welcome back again' });
    const fourth = new CliProcess(['--config', bobCfg, 'listen', '--exit-after', '2', '--timeout', '20'], { home });
    assert.equal((await fourth.result()).code, 0, fourth.describe());
    assert.deepEqual(contents(fourth, group), [addedNote, 'welcome back again'], fourth.describe());

    // 3. Bob leaves a group he is the only admin of: his leaving and the
    // admin it made are both his news; the last one printed is the latter.
    const own = await server.createGroup(bob, [alice]);
    const fifth = new CliProcess(['--config', bobCfg, 'listen', '--exit-after', '2', '--timeout', '20'], { home });
    await fifth.ready();
    const left = await server.http('DELETE', `/api/chat/threads/${own.id}/participants/${bob.id}`, { token: bob.token });
    assert.equal(left.status, 200, left.text);
    assert.equal((await fifth.result()).code, 0, fifth.describe());
    assert.deepEqual(contents(fifth, own), [`${bob.username} left`, `${alice.username} is now an admin`], fifth.describe());
    await server.sendRest(alice.token, own.id, { content: 'said after bob left' });
    await addBack(own);
    await server.sendRest(alice.token, own.id, { content: 'welcome back to your group' });
    const sixth = new CliProcess(['--config', bobCfg, 'listen', '--exit-after', '2', '--timeout', '20'], { home });
    assert.equal((await sixth.result()).code, 0, sixth.describe());
    assert.deepEqual(contents(sixth, own), [addedNote, 'welcome back to your group'], sixth.describe());
  });

  it('a mistyped command is named, with the commands there are, exit 64', async () => {
    for (const [args, said] of [[['threds'], /^unknown command 'threds'; the commands are login, register, whoami, threads,/m],
      [['group', 'remove', 'x', 'y'], /^unknown command 'group remove'; the group commands are create, add$/m],
      [['--pretty', 'bogus'], /^unknown command 'bogus'/m]]) {
      const r = await asBob(args);
      assert.equal(r.code, 64, r.proc.describe());
      assert.match(r.stderr, said, r.proc.describe());
    }
    const none = await asBob([]);
    assert.equal(none.code, 64, none.proc.describe());
    assert.match(none.stderr, /A subcommand is required/, 'no command at all: CLI11 says so');
  });

  it('a negative --up-to, --timeout or --exit-after is refused in one short line, exit 64', async () => {
    for (const args of [['mark-read', threadId, '--up-to', '-1'], ['listen', '--timeout', '-5'], ['listen', '--exit-after', '-2'],
      ['history', threadId, '--before', '-5']]) {
      const r = await asBob(args);
      assert.equal(r.code, 64, r.proc.describe());
      assert.match(r.stderr, /^--[a-z-]+: Value -\d is negative: give 0 or more$/m, r.proc.describe());
      assert.ok(r.stderr.length < 120, `a short message, not DBL_MAX in full: ${r.stderr}`);
    }
    const limit = await asBob(['history', threadId, '--limit', '500']);
    assert.equal(limit.code, 64, limit.proc.describe());
    assert.match(limit.stderr, /^--limit: Value 500 not in range 1 to 200/m);
    const nan = await asBob(['listen', '--timeout', 'nan']);
    assert.equal(nan.code, 64, nan.proc.describe());
    assert.match(nan.stderr, /^--timeout: Value nan is not a number$/m);
  });

  it('a --timeout past any real wait (1e10, inf) waits, not "timeout passed" at once', async () => {
    for (const value of ['1e10', 'inf']) {
      const listen = bobListen(['--timeout', value]);
      await listen.ready();
      await sleep(300);
      assert.doesNotMatch(listen.stderrText, /timeout: .* passed/, `${value}: ${listen.describe()}`);
      listen.child.kill('SIGINT');
      assert.equal((await listen.exited).code, 0, `${value}: still running until SIGINT\n${listen.describe()}`);
    }
  });

  it('--config naming a directory is a clear config_error; Ctrl-C at the password prompt puts the terminal\'s echo back', async () => {
    const dir = path.join(home, 'a-directory');
    fs.mkdirSync(dir, { recursive: true });
    const r = await cli(['--config', dir, 'whoami']);
    assert.equal(r.code, 1, r.proc.describe());
    assert.match(r.stderr, /^parley-cli: config_error: .* is a directory/m);
    // A terminal of its own (a pseudo-terminal from Python's pty module).
    const script = [
      'import os, pty, termios, time, select, sys',
      'master, slave = pty.openpty()',
      'pid = os.fork()',
      'if pid == 0:',
      '    os.setsid()',
      '    import fcntl; fcntl.ioctl(slave, termios.TIOCSCTTY, 0)',
      '    os.dup2(slave, 0); os.dup2(slave, 1); os.dup2(slave, 2)',
      '    os.execv(sys.argv[1], ["parley-cli", "--config", sys.argv[2], "--server", sys.argv[3], "login", "--username", "nobody_x"])',
      'out = b""',
      'end = time.time() + 10',
      'while b"Password" not in out and time.time() < end:',
      '    if select.select([master], [], [], 0.1)[0]: out += os.read(master, 1000)',
      'os.write(master, b"\\x03")',
      '_, status = os.waitpid(pid, 0)',
      'print(b"Password" in out, os.WIFSIGNALED(status), bool(termios.tcgetattr(slave)[3] & termios.ECHO))',
    ].join('\n');
    const out = await new Promise((resolve) => execFileCb('python3', ['-c', script, CLI_BIN, path.join(home, 'tty.json'), server.baseUrl],
      { timeout: 20000 }, (err, stdout, stderr) => resolve(`${stdout}${stderr}${err ? err.message : ''}`)));
    assert.equal(out.trim(), 'True True True', `prompted, ended by SIGINT, echo back on: ${out}`);
  });
});

describe('parley-cli listen with short-lived tokens', () => {
  let server, home;
  before(async () => {
    server = await startServer({ args: ['--token-ttl', '6'] });
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-cli-ttl-'));
  });
  after(async () => {
    await server?.stop();
    if (home) fs.rmSync(home, { recursive: true, force: true });
  });

  it('renews its token before it expires: the connection stays open, and the saved login is renewed', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const cfg = path.join(home, 'bob.json');
    const login = await new CliProcess(['--server', server.baseUrl, '--config', cfg, 'login', '--username', bob.username,
      '--password', bob.password], { home }).result();
    assert.equal(login.code, 0, login.proc.describe());
    const before = JSON.parse(fs.readFileSync(cfg, 'utf8'));

    const listen = new CliProcess(['--config', cfg, 'listen', '--exit-after', '1', '--timeout', '30'], { home });
    await listen.ready();
    await sleep(8000);  // past the first token's 6 s (the server closes an expired connection at once)
    const fresh = await server.http('POST', '/api/auth/login', { body: { username: alice.username, password: alice.password } });
    assert.equal(fresh.status, 200, fresh.text);
    const sent = await server.http('POST', `/api/chat/threads/${thread.id}/messages`,
      { token: fresh.body.data.token, body: { content: 'after the first token expired' } });
    assert.equal(sent.status, 201, sent.text);
    const r = await listen.result();
    assert.equal(r.code, 0, r.proc.describe());
    assert.deepEqual(newMessages(listen.frames).map((m) => m.content), ['after the first token expired'], r.proc.describe());
    assert.doesNotMatch(r.stderr, /reconnecting|token_expired/, r.proc.describe());
    assert.equal((r.stderr.match(/listening as /g) || []).length, 1, `one connection throughout\n${r.stderr}`);

    const after = JSON.parse(fs.readFileSync(cfg, 'utf8'));
    assert.notEqual(after.token, before.token, 'the saved login holds the renewed token');
    assert.ok(Date.parse(after.expires_at) > Date.parse(before.expires_at));
    const me = await new CliProcess(['--config', cfg, 'whoami'], { home }).result();
    assert.equal(me.code, 0, `the renewed token works after the first expired\n${me.proc.describe()}`);
  });

  // A group's earlier messages are its history (`history`), not news: a
  // listener added to it used to replay them all from seq 0 as new messages.
  it('listen starts a group it is added to at the "added" notice, live and on its next run', async () => {
    const [teacher, carol, dan] = await server.registerMany(3);
    // This server's tokens last 6 s, and the steps below can take longer on a
    // loaded machine: the teacher's requests carry an hour's token.
    teacher.token = mintToken(server.secret, { sub: teacher.id });
    const cfg = path.join(home, 'dan.json');
    const login = await new CliProcess(['--server', server.baseUrl, '--config', cfg, 'login', '--username', dan.username,
      '--password', dan.password], { home }).result();
    assert.equal(login.code, 0, login.proc.describe());
    const groupWithHistory = async (title) => {
      const g = await server.createGroup(teacher, [carol], title);
      for (let i = 1; i <= 3; i++) {
        const r = await server.http('POST', `/api/chat/threads/${g.id}/messages`, { token: teacher.token, body: { content: `${title} before dan ${i}` } });
        assert.equal(r.status, 201, r.text);
      }
      return g;
    };
    const addDan = async (g) => {
      const r = await server.http('POST', `/api/chat/threads/${g.id}/participants`, { token: teacher.token, body: { participant_ids: [dan.id] } });
      assert.equal(r.status, 200, r.text);
    };

    const live = await groupWithHistory('class 4b');
    const listen = new CliProcess(['--config', cfg, 'listen', '--exit-after', '1', '--timeout', '20'], { home });
    await listen.ready();
    await addDan(live);
    const r1 = await listen.result();
    assert.equal(r1.code, 0, r1.proc.describe());
    const got1 = newMessages(listen.frames);
    assert.deepEqual(got1.map((m) => [m.seq, m.message_type]), [[4, 'system']], `the notice, not the history\n${r1.proc.describe()}`);

    const away = await groupWithHistory('class 5a');  // added while no listener runs
    await addDan(away);
    const after = await server.http('POST', `/api/chat/threads/${away.id}/messages`, { token: teacher.token, body: { content: 'welcome dan' } });
    assert.equal(after.status, 201, after.text);
    const next = new CliProcess(['--config', cfg, 'listen', '--exit-after', '2', '--timeout', '20'], { home });
    const r2 = await next.result();
    assert.equal(r2.code, 0, r2.proc.describe());
    const got2 = newMessages(next.frames);
    assert.deepEqual(got2.map((m) => [m.seq, m.message_type]), [[4, 'system'], [5, 'text']], r2.proc.describe());
    assert.equal(got2[1].content, 'welcome dan');

    // A direct thread started while no listener runs, its messages already
    // taken by Dan's phone: still new to the terminal, all of it.
    const phone = await server.connect(dan);
    const dm = await server.createDirect(teacher, dan);
    for (const text of ['dm 1', 'dm 2']) {
      const sent = await server.http('POST', `/api/chat/threads/${dm.id}/messages`, { token: teacher.token, body: { content: text } });
      assert.equal(sent.status, 201, sent.text);
      await phone.next((f) => f.type === 'new_message' && f.data.id === sent.body.data.id, 5000, text);
      phone.send({ type: 'message_received', message_id: sent.body.data.id });
    }
    for (let tries = 0; ; tries++) {
      const t = await server.http('GET', `/api/chat/threads/${dm.id}`, { token: dan.token });
      if (t.body?.data?.participants?.find((p) => p.user_id === dan.id)?.last_delivered_seq === 2) break;
      assert.ok(tries < 50, `the phone's receipts were not stored: ${t.text}`);
      await sleep(100);
    }
    const third = new CliProcess(['--config', cfg, 'listen', '--exit-after', '2', '--timeout', '20'], { home });
    const r3 = await third.result();
    assert.equal(r3.code, 0, r3.proc.describe());
    assert.deepEqual(newMessages(third.frames).map((m) => m.content), ['dm 1', 'dm 2'], r3.proc.describe());
    phone.close();
  });
});

// After `parley restore` from a backup, seqs past the backup's end are given
// again to new messages; listen's saved positions would skip them. The
// restored data dir has a new store_id (connection_established), and listen
// starts each thread again from its delivery mark there.
describe('parley-cli listen across a restore from a backup', { skip: TEST_STORE !== 'sqlite' && 'SQLite backups only' }, () => {
  const servers = [];
  let home;
  after(async () => {
    for (const s of servers) await s.stop();
    if (home) fs.rmSync(home, { recursive: true, force: true });
  });

  it('prints the messages sent on the restored server, though their seqs are ones it printed before', async () => {
    const secret = `restore-${crypto.randomBytes(16).toString('hex')}`;
    const server = await startServer({ secret });
    servers.push(server);
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-cli-restore-'));
    const cfg = path.join(home, 'bob.json');
    const login = await new CliProcess(['--server', server.baseUrl, '--config', cfg, 'login', '--username', bob.username,
      '--password', bob.password], { home }).result();
    assert.equal(login.code, 0, login.proc.describe());
    const listen = async (srv, n, what) => {
      const p = new CliProcess(['--config', cfg, '--server', srv.baseUrl, 'listen', '--exit-after', String(n), '--timeout', '20'], { home });
      if (n > 0) await p.ready();
      return p;
    };
    const send = async (srv, texts) => {
      for (const content of texts) assert.equal((await srv.sendRest(alice.token, thread.id, { content })).status, 201);
    };

    const first = await listen(server, 3);
    await send(server, ['pre 1', 'pre 2', 'pre 3']);
    assert.equal((await first.result()).code, 0, first.describe());
    const backup = path.join(home, 'b.db');
    const made = await new Promise((resolve) => execFileCb(PARLEY_BIN, ['backup', '--data-dir', server.dataDir, '--to', backup],
      (err, stdout, stderr) => resolve({ err, stderr })));
    assert.ifError(made.err);
    const second = await listen(server, 3);
    await send(server, ['lost 4', 'lost 5', 'lost 6']);  // not in the backup
    assert.equal((await second.result()).code, 0, second.describe());
    assert.deepEqual(newMessages(second.frames).map((m) => m.seq), [4, 5, 6]);
    await server.stop({ removeData: false });

    const restoredDir = path.join(home, 'restored');
    const restored = await new Promise((resolve) => execFileCb(PARLEY_BIN, ['restore', '--from', backup, '--data-dir', restoredDir],
      (err, stdout, stderr) => resolve({ err, stderr })));
    assert.ifError(restored.err);
    const again = await startServer({ secret, dataDir: restoredDir });
    servers.push(again);
    await send(again, ['after 1', 'after 2', 'after 3', 'after 4']);  // seqs 4..7 again

    // The thread list listen asks for on noticing the restore (its second)
    // fails once: the positions must still be reset when it reconnects.
    const proxy = await new CuttableProxy(again.port).dropNth(/^GET \/api\/chat\/threads /, 2).listen();
    try {
      const third = new CliProcess(['--config', cfg, '--server', proxy.url, 'listen', '--exit-after', '4', '--timeout', '20'], { home });
      const r = await third.result();
      assert.equal(r.code, 0, third.describe());
      assert.deepEqual(newMessages(third.frames).map((m) => m.content), ['after 1', 'after 2', 'after 3', 'after 4'], third.describe());
      assert.match(third.stderrText, /restored from a backup/);
      assert.equal(proxy.dropRequest.seen >= 2, true, `the request was dropped\n${third.describe()}`);
    } finally {
      await proxy.close();
    }
  });
});
