// The files of deploy/ work as shipped (docs/deploy.md), on loopback:
// - parley@.service passes `systemd-analyze verify`, and its command line with
//   the settings of parley.env.example starts a node on PostgreSQL and Redis;
// - compose.yaml's parley command and environment start a node the same way,
//   on the port haproxy.cfg sends to;
// - haproxy.cfg (its servers pointed at two real nodes, its address at
//   loopback) passes WebSocket clients through to both nodes, a DM crosses
//   them, and when a node stops, clients reconnect through HAProxy to the other.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ChatClient, PARLEY_BIN, REPO_ROOT, sleep } from './harness.mjs';
import { Cluster, clusterSkip } from './cluster.mjs';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
const read = (name) => fs.readFileSync(path.join(DEPLOY, name), 'utf8');
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function httpGet(port, urlPath) {
  const res = await fetch(`http://127.0.0.1:${port}${urlPath}`);
  const text = await res.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, body, text };
}

// A process started from a deployment file's command line; stopped by PID.
class Proc {
  constructor(cmd, args, env) {
    this.output = '';
    this.child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    for (const s of [this.child.stdout, this.child.stderr]) s.on('data', (c) => { this.output += c; });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }
  async waitHealthy(port, timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs;
    let last = null;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null) break;
      try { last = await httpGet(port, '/health'); } catch { /* not listening yet */ }
      if (last?.status === 200 && last.body?.bus?.ok) return last.body;
      await sleep(100);
    }
    assert.fail(`no healthy node on :${port}: ${JSON.stringify(last?.body)}\n${this.output.slice(-2000)}`);
  }
  async stop() {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15000);
    await this.exited;
    clearTimeout(timer);
  }
}

// Every PARLEY_* setting a deployment file names must be one `parley serve` reads.
const serveHelp = () => execFileSync(PARLEY_BIN, ['serve', '--help'], { encoding: 'utf8' });
function assertKnownSettings(keys, where) {
  const help = serveHelp();
  for (const key of keys) assert.ok(help.includes(`Env:${key}`), `${where} sets ${key}, which parley serve does not read`);
}

function envWithout(prefix) {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith(prefix)));
}

describe('deploy/: the shipped deployment files', { skip: clusterSkip }, () => {
  const cluster = new Cluster();
  const procs = [];
  const dirs = [];
  before(async () => { await cluster.start({ size: 2 }); });
  after(async () => {
    for (const p of procs) await p.stop().catch(() => {});
    await cluster.stop();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });
  const tmp = (name) => { const d = fs.mkdtempSync(path.join(os.tmpdir(), `parley-deploy-${name}-`)); dirs.push(d); return d; };

  it('parley@.service verifies, and its command line with parley.env.example serves', { skip: !have('systemd-analyze') && 'systemd-analyze is not installed' }, async () => {
    const unit = read('parley@.service');
    const port = await freePort();
    const dir = tmp('systemd');
    // The binary where this build has it; the unit as shipped otherwise.
    const unitFile = path.join(dir, `parley@${port}.service`);
    fs.writeFileSync(unitFile, unit.replaceAll('/usr/local/bin/parley', PARLEY_BIN));
    const verify = spawnSync('systemd-analyze', ['verify', '--man=no', unitFile], { encoding: 'utf8' });
    assert.equal(verify.status, 0, `systemd-analyze verify: ${verify.stdout}${verify.stderr}`);

    const exec = unit.match(/^ExecStart=(.*)$/m)?.[1];
    assert.ok(exec, 'the unit has an ExecStart line');
    const [bin, ...args] = exec.replaceAll('/var/lib/parley/%i', path.join(dir, 'data')).replaceAll('%i', String(port)).split(/\s+/);
    assert.equal(bin, '/usr/local/bin/parley');

    const settings = Object.fromEntries(read('parley.env.example').split('\n')
      .filter((l) => /^[A-Z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    assertKnownSettings(Object.keys(settings), 'parley.env.example');
    assert.ok(settings.PARLEY_DATABASE && settings.PARLEY_REDIS && settings.PARLEY_JWT_SECRET,
      'the example names the database, Redis and the shared secret');
    // This machine's PostgreSQL, Redis and secret; loopback instead of every interface.
    Object.assign(settings, {
      PARLEY_DATABASE: cluster.databaseUrl, PARLEY_REDIS: cluster.redis.url,
      PARLEY_JWT_SECRET: cluster.secret, PARLEY_BIND: '127.0.0.1',
    });
    const node = new Proc(PARLEY_BIN, args, { ...envWithout('PARLEY_'), ...settings });
    procs.push(node);
    const health = await node.waitHealthy(port);
    assert.match(health.storage.kind, /^postgres/, 'the node serves from PostgreSQL');
    await node.stop();
    assert.equal(node.child.exitCode, 0, 'SIGTERM (systemd\'s KillSignal) ends it with 0');
  });

  it('compose.yaml\'s parley command and environment serve, on the port haproxy.cfg uses', async () => {
    const compose = read('compose.yaml');
    const service = compose.slice(compose.indexOf('\n  parley:'));
    const command = JSON.parse(service.match(/^\s+command: (\[.*\])$/m)[1]);
    const envBlock = service.slice(service.indexOf('environment:')).split('\n').slice(1);
    const env = {};
    for (const line of envBlock) {
      const m = line.match(/^\s{6}(PARLEY_[A-Z_]+): (.*)$/);
      if (!m) { if (/^\s{6}#/.test(line)) continue; else break; }
      env[m[1]] = m[2];
    }
    assertKnownSettings(Object.keys(env), 'compose.yaml');
    assert.deepEqual(Object.keys(env).sort(), ['PARLEY_DATABASE', 'PARLEY_JWT_SECRET', 'PARLEY_REDIS']);

    const composePort = command[command.indexOf('--port') + 1];
    assert.match(read('haproxy.cfg'), new RegExp(`server-template parley \\d+ parley:${composePort} `),
      'HAProxy sends to the port the containers listen on');

    const port = await freePort();
    const dir = tmp('compose');
    const args = command.map((a, i) => (command[i - 1] === '--bind' ? '127.0.0.1'
      : command[i - 1] === '--port' ? String(port)
        : command[i - 1] === '--data-dir' ? path.join(dir, 'data') : a));
    const node = new Proc(PARLEY_BIN, args, {
      ...envWithout('PARLEY_'), PARLEY_DATABASE: cluster.databaseUrl,
      PARLEY_REDIS: cluster.redis.url, PARLEY_JWT_SECRET: cluster.secret,
    });
    procs.push(node);
    const health = await node.waitHealthy(port);
    assert.match(health.storage.kind, /^postgres/);
    await node.stop();
    assert.equal(node.child.exitCode, 0);
  });

  it('haproxy.cfg passes WebSockets to every node and fails over when one stops', { skip: !have('haproxy') && 'haproxy is not installed' }, async () => {
    const [a, b] = cluster.nodes;
    const lbPort = await freePort();
    const dir = tmp('haproxy');
    // As shipped, but listening on loopback and with two fixed servers in
    // place of the Docker DNS template (checked every 300 ms for the test).
    // HAProxy refuses to start when the descriptor limit is below about two
    // per connection of its maxconn (compose.yaml raises it for the lb
    // container); here maxconn fits this machine's hard limit instead.
    const hardLimit = Number(execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim()) || 4096;
    const shipped = read('haproxy.cfg');
    assert.match(shipped, /^\s*maxconn 200000$/m);
    let cfg = shipped
      .replace(/^\s*maxconn 200000$/m, `    maxconn ${Math.max(256, Math.floor((hardLimit - 200) / 2))}`)
      .replace(/^\s*bind :80$/m, `    bind 127.0.0.1:${lbPort}`)
      .replace(/^resolvers docker\n(?:[ \t]+.*\n)+/m, '')
      .replace(/^\s*server-template .*$/m,
        `    server parley1 127.0.0.1:${a.port} check inter 300ms fall 2 rise 1\n`
        + `    server parley2 127.0.0.1:${b.port} check inter 300ms fall 2 rise 1`);
    assert.ok(cfg.includes(`bind 127.0.0.1:${lbPort}`) && cfg.includes('server parley2'), 'the config was adapted');
    const cfgFile = path.join(dir, 'haproxy.cfg');
    fs.writeFileSync(cfgFile, cfg);
    const check = spawnSync('haproxy', ['-c', '-f', cfgFile], { encoding: 'utf8' });
    assert.equal(check.status, 0, `haproxy -c: ${check.stdout}${check.stderr}`);
    const lb = new Proc('haproxy', ['-db', '-f', cfgFile], process.env);
    procs.push(lb);
    let health = null;
    for (let i = 0; i < 100 && health?.status !== 200; i++) {
      try { health = await httpGet(lbPort, '/health'); } catch { await sleep(100); }
    }
    assert.equal(health?.status, 200, `GET /health through HAProxy\n${lb.output}`);
    await sleep(700);  // both servers checked up

    const users = await a.registerMany(4);
    const open = async (user) => {
      const client = await ChatClient.open(`ws://127.0.0.1:${lbPort}/ws?token=${encodeURIComponent(user.token)}`);
      await client.nextOfType('connection_established');
      return client;
    };
    const clients = [];
    for (const u of users) clients.push(await open(u));
    const count = async (node) => (await node.http('GET', '/health')).body.connections;
    const [onA, onB] = [await count(a), await count(b)];
    assert.ok(onA >= 1 && onB >= 1, `leastconn spread 4 clients over both nodes (${onA} on a, ${onB} on b)`);

    // A DM from every user to the next arrives, wherever each one landed.
    for (let i = 0; i < users.length; i++) {
      const to = users[(i + 1) % users.length];
      await clients[i].sendMessage({ username: to.username, content: `hop ${i}` });
      const got = await clients[(i + 1) % users.length].next((f) => f.type === 'new_message' && f.data?.content === `hop ${i}`);
      assert.equal(got.data.sender_id, users[i].user.id);
    }

    // Node a stops: its clients are closed (1001) and reconnect through HAProxy to b.
    const closedOnA = clients.map((c) => c.closed);
    await a.stop({ removeData: false });
    await Promise.race([Promise.any(closedOnA), sleep(5000)]);
    await sleep(1000);  // two failed checks: a is down
    const again = [];
    for (const u of users) {
      let client = null;
      for (let tries = 0; tries < 20 && !client; tries++) {
        client = await open(u).catch(() => null);
        if (!client) await sleep(250);
      }
      assert.ok(client, `${u.username} reconnected through HAProxy`);
      again.push(client);
    }
    assert.equal(await count(b), onB + users.length, 'every new client is on b');
    for (const c of [...clients, ...again]) c.ws.terminate();
  });
});
