// Test harness for Parley's end-to-end tests: starts the real binary on
// loopback with its own temporary data dir, talks to it over HTTP and
// WebSocket, and makes sure no server process outlives the test file.
//
// Only 127.0.0.1 is ever contacted. Every wait is bounded in time.

import { spawn, execFile, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..', '..');
export const PARLEY_BIN = process.env.PARLEY_BIN || path.join(REPO_ROOT, 'build', 'parley');
export const HOST = '127.0.0.1';

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

// The store every server of this run uses: 'sqlite' (default, a file in the
// server's data dir) or 'postgres' (PARLEY_TEST_STORE=postgres: a fresh
// database per server on the PostgreSQL that tests/db/pg.sh started, whose
// state dir is PARLEY_TEST_PG_STATE; CTest's parley_pg fixture sets both).
export const TEST_STORE = process.env.PARLEY_TEST_STORE || 'sqlite';
export const PG_SH = path.join(REPO_ROOT, 'tests', 'db', 'pg.sh');
// True when tests/db/pg.sh can start a PostgreSQL here (Debian's postgresql installed).
export function pgAvailable() {
  if (!fs.existsSync(PG_SH)) return false;
  try { return fs.readdirSync('/usr/lib/postgresql').length > 0; } catch { return false; }
}

// A new, empty database on the test PostgreSQL; returns its URL.
export function freshDatabaseUrl() {
  const state = process.env.PARLEY_TEST_PG_STATE;
  if (!state) throw new Error('PARLEY_TEST_PG_STATE is not set (start one: tests/db/pg.sh start DIR)');
  return execFileSync(PG_SH, ['createdb', state], { encoding: 'utf8', timeout: 30000 }).trim();
}

// PARLEY_TEST_PORTS=4200-4299: the servers and proxies the tests start
// listen on ports of that range (a shared machine's allowance), taken in
// turn and skipped when busy, instead of on any free port (the default).
const PORT_RANGE = (() => {
  const m = /^(\d+)-(\d+)$/.exec(process.env.PARLEY_TEST_PORTS || '');
  return m && Number(m[1]) <= Number(m[2]) ? { lo: Number(m[1]), hi: Number(m[2]) } : null;
})();
let portTurn = PORT_RANGE ? process.pid : 0;
// How many ports to try before giving up (1: any free port, no range).
export const PORT_TRIES = PORT_RANGE ? PORT_RANGE.hi - PORT_RANGE.lo + 1 : 1;
// The port to listen on next: 0 (any) without PARLEY_TEST_PORTS.
export function testPort() {
  if (!PORT_RANGE) return 0;
  return PORT_RANGE.lo + (portTurn++ % PORT_TRIES);
}

// Listens with a node net.Server on 127.0.0.1 (a port of PARLEY_TEST_PORTS
// when set); resolves the port.
export async function listenOnTestPort(server) {
  for (let i = 0; ; i++) {
    try {
      await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(testPort(), HOST, () => { server.off('error', reject); resolve(); });
      });
      return server.address().port;
    } catch (err) {
      if (err.code !== 'EADDRINUSE' || i + 1 >= PORT_TRIES) throw err;
    }
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
export const randomId = (bytes = 5) => crypto.randomBytes(bytes).toString('hex');
export const newUuid = () => crypto.randomUUID();

// ---------------------------------------------------------------------------
// Process bookkeeping: every spawned server is killed when this process exits,
// whatever the reason (failed assertion, uncaught error, signal).

const liveProcesses = new Set();

function killAllNow() {
  for (const child of liveProcesses) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
  liveProcesses.clear();
}
process.on('exit', killAllNow);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => { killAllNow(); process.exit(128 + (os.constants.signals[signal] || 0)); });
}

// ---------------------------------------------------------------------------
// Server

export class ParleyServer {
  // secret: null = pass none (the server generates and persists one).
  // viaEnv: pass port, bind, data dir and secret as PARLEY_* variables instead of flags.
  // database: a postgres:// URL to serve from; by default a fresh database
  // when TEST_STORE is 'postgres' (kept across restarts), else SQLite.
  constructor({ args = [], env = {}, secret, dataDir, viaEnv = false, database } = {}) {
    this.database = database || (TEST_STORE === 'postgres' ? freshDatabaseUrl() : null);
    this.extraArgs = args;
    this.extraEnv = env;
    this.viaEnv = viaEnv;
    this.secret = secret === null ? null : (secret || `test-secret-${randomId(16)}`);
    this.dataDir = dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'parley-e2e-'));
    this.ownsDataDir = !dataDir;
    this.child = null;
    this.port = 0;
    this.log = [];  // last lines of the server's stderr/stdout, for failure messages
    this.clients = new Set();
  }

  get baseUrl() { return `http://${HOST}:${this.port}`; }
  get wsBase() { return `ws://${HOST}:${this.port}`; }

  logTail(n = 40) { return this.log.slice(-n).join('\n'); }

  // Starts the server and resolves once it listens and GET /health answers 200.
  // With PARLEY_TEST_PORTS, a port of the range that another process holds
  // (a test's Redis, a server of another suite) is skipped: the next is tried.
  async start({ timeoutMs = 20000 } = {}) {
    for (let tries = 1; ; tries++) {
      try {
        return await this.startOnce({ timeoutMs });
      } catch (err) {
        if (tries >= PORT_TRIES || !/listen_failed: .*Address already in use/.test(err.message)) throw err;
        this.log.push('----- port taken: the next one -----');
      }
    }
  }

  async startOnce({ timeoutMs }) {
    if (!fs.existsSync(PARLEY_BIN)) {
      throw new Error(`parley binary not found at ${PARLEY_BIN} (set PARLEY_BIN or build it first)`);
    }
    const settings = { port: String(testPort()), bind: HOST, 'data-dir': this.dataDir };
    if (this.secret) settings['jwt-secret'] = this.secret;
    if (this.database) settings.database = this.database;
    const args = ['serve'];
    const env = { ...process.env };
    for (const key of ['PARLEY_PORT', 'PARLEY_BIND', 'PARLEY_DATA_DIR', 'PARLEY_JWT_SECRET', 'PARLEY_DATABASE_URL', 'PARLEY_DATABASE']) {
      delete env[key];
    }
    for (const [k, v] of Object.entries(settings)) {
      if (this.viaEnv) env[k === 'database' ? 'PARLEY_DATABASE_URL' : `PARLEY_${k.toUpperCase().replace('-', '_')}`] = v;
      else args.push(`--${k}`, v);
    }
    args.push('--log-level', 'info', ...this.extraArgs);
    // Tests register many users from 127.0.0.1; the per-address limit has its own test.
    if (!('PARLEY_REGISTRATIONS_PER_ADDRESS' in this.extraEnv)) env.PARLEY_REGISTRATIONS_PER_ADDRESS = '1000000';
    const child = spawn(PARLEY_BIN, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...env, ...this.extraEnv },
    });
    this.child = child;
    liveProcesses.add(child);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => { liveProcesses.delete(child); resolve({ code, signal }); });
    });

    const port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(
        `server did not log event=listening within ${timeoutMs} ms\n${this.logTail()}`)), timeoutMs);
      const onLine = (line) => {
        this.log.push(line);
        if (this.log.length > 2000) this.log.splice(0, this.log.length - 2000);
        if (line.includes('event=listening')) {
          const m = line.match(/\bport=(\d+)/);
          if (m) { clearTimeout(timer); resolve(Number(m[1])); }
        }
      };
      for (const stream of [child.stdout, child.stderr]) {
        let buf = '';
        stream.setEncoding('utf8');
        stream.on('data', (chunk) => {
          buf += chunk;
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) { onLine(buf.slice(0, nl)); buf = buf.slice(nl + 1); }
        });
      }
      child.once('error', (err) => { clearTimeout(timer); reject(err); });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`server exited during startup (code ${code}, signal ${signal})\n${this.logTail()}`));
      });
    });
    this.port = port;

    const deadline = Date.now() + timeoutMs;
    for (let attempt = 0; attempt < 200 && Date.now() < deadline; attempt++) {
      try {
        const res = await this.http('GET', '/health');
        if (res.status === 200) return this;
      } catch { /* not yet */ }
      await sleep(50);
    }
    throw new Error(`GET /health never answered 200\n${this.logTail()}`);
  }

  closeClients() {
    for (const c of this.clients) c.terminate();
    this.clients.clear();
  }

  // Graceful stop: SIGTERM, then SIGKILL if it has not exited after graceMs.
  async stop({ removeData = true, graceMs = 5000 } = {}) {
    this.closeClients();
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    this.child = null;
    if (removeData && this.ownsDataDir) fs.rmSync(this.dataDir, { recursive: true, force: true });
  }

  // Abrupt stop: kill -9, no chance to flush anything.
  async kill9() {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await this.exited;
    }
    this.child = null;
    this.closeClients();
  }

  // Starts again on the same data dir and secret (a new port).
  async restart() {
    if (this.child) await this.stop({ removeData: false });
    this.log.push('----- restart -----');
    return this.start();
  }

  // Runs another `parley` subcommand against this server's data dir and secret.
  cli(args, { timeoutMs = 20000 } = {}) {
    return new Promise((resolve, reject) => {
      execFile(PARLEY_BIN, [...args, '--data-dir', this.dataDir, ...(this.secret ? ['--jwt-secret', this.secret] : []),
        ...(this.database ? ['--database', this.database] : [])],
        { timeout: timeoutMs }, (err, stdout, stderr) => {
          if (err) reject(Object.assign(err, { stdout, stderr }));
          else resolve({ stdout, stderr });
        });
    });
  }

  // Plain HTTP request. body: object (sent as JSON), string or Buffer (sent as is);
  // localAddress: the loopback address to connect from.
  // Resolves {status, headers, text, body} where body is the parsed JSON or null.
  http(method, urlPath, { token, body, headers = {}, timeoutMs = 10000, localAddress } = {}) {
    const hdrs = { ...headers };
    let payload = null;
    if (body !== undefined) {
      payload = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      if (!Object.keys(hdrs).some((k) => k.toLowerCase() === 'content-type')) hdrs['Content-Type'] = 'application/json';
      hdrs['Content-Length'] = payload.length;
    }
    if (token) hdrs.Authorization = `Bearer ${token}`;
    return new Promise((resolve, reject) => {
      const req = http.request({ host: HOST, port: this.port, method, path: urlPath, headers: hdrs, agent: false, localAddress },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed = null;
            try { parsed = JSON.parse(text); } catch { /* not JSON */ }
            resolve({ status: res.statusCode, headers: res.headers, text, body: parsed });
          });
          res.on('error', reject);
        });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${urlPath} timed out after ${timeoutMs} ms`)));
      req.on('error', reject);
      if (payload) req.write(payload);
      req.end();
    });
  }

  // The value of a counter or gauge in GET /metrics (labels, if any, ignored);
  // throws when the server does not answer or does not export it.
  async metric(name) {
    const res = await this.http('GET', '/metrics');
    if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
    const m = res.text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+(?:\\.\\d+)?)$`, 'm'));
    if (!m) throw new Error(`metric ${name} is not in /metrics`);
    return Number(m[1]);
  }

  // ----- REST conveniences -------------------------------------------------

  // Registers a fresh user; resolves {token, user, username, password, expires_at}.
  async register(overrides = {}) {
    const username = overrides.username || `u_${randomId(5)}`;
    const password = overrides.password || `pw-${randomId(6)}`;
    const body = { username, password, full_name: `User ${username}`, role: 'student', ...overrides };
    const res = await this.http('POST', '/api/auth/register', { body });
    if (res.status !== 201) {
      throw new Error(`register ${username} answered ${res.status}: ${res.text}`);
    }
    const { token, user, expires_at } = res.body.data;
    return { token, user, username, password, expires_at, id: user.id };
  }

  async registerMany(n, overrides = {}) {
    const users = [];
    for (let i = 0; i < n; i++) users.push(await this.register(overrides));
    return users;
  }

  // Creates a thread over REST and returns its data (asserting 200/201).
  async createThread(token, body) {
    const res = await this.http('POST', '/api/chat/threads', { token, body });
    if (res.status !== 201 && res.status !== 200) {
      throw new Error(`POST /api/chat/threads answered ${res.status}: ${res.text}`);
    }
    return res.body.data;
  }

  async createDirect(userA, userB) {
    return this.createThread(userA.token, { type: 'direct', participant_ids: [userB.id] });
  }

  async createGroup(admin, members, title = `group ${randomId(3)}`) {
    return this.createThread(admin.token, { type: 'group', title, participant_ids: members.map((m) => m.id) });
  }

  // Full history of a thread, paged with after_seq (bounded), ascending seq.
  async history(token, threadId, { pageSize = 200, maxPages = 100 } = {}) {
    const all = [];
    let after = 0;
    for (let page = 0; page < maxPages; page++) {
      const res = await this.http('GET', `/api/chat/threads/${threadId}/messages?after_seq=${after}&limit=${pageSize}`, { token });
      if (res.status !== 200) throw new Error(`history of ${threadId} answered ${res.status}: ${res.text}`);
      const msgs = res.body.data.messages;
      all.push(...msgs);
      if (msgs.length < pageSize) return all;
      after = msgs[msgs.length - 1].seq;
    }
    throw new Error(`history of ${threadId}: more than ${maxPages} pages`);
  }

  async sendRest(token, threadId, body) {
    return this.http('POST', `/api/chat/threads/${threadId}/messages`, { token, body });
  }

  // Sends n messages from `user` into the thread, 100 at a time, over two
  // connections so that neither passes its rate limit (a burst of 1000).
  async sendBacklog(user, threadId, n, prefix = 'backlog') {
    const senders = [await this.connect(user), await this.connect(user)];
    for (let i = 0; i < n; i += 100) {
      await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, j) =>
        senders[(i / 100) % 2].sendMessage({ thread_id: threadId, content: `${prefix} ${i + j}` }, 20000)));
    }
    for (const ws of senders) ws.close();
  }

  // ----- WebSocket ---------------------------------------------------------

  // Opens a WebSocket as `user` (or with `token`).
  //   via: 'query' (default) | 'header' | 'frame' | 'none'
  //   path: '/ws' (default), '/api/v1/ws/chat', '/'
  // Resolves a ChatClient; unless via is 'none', waits for connection_established.
  async connect(userOrToken, { via = 'query', path: wsPath = '/ws', headers = {}, timeoutMs = 5000 } = {}) {
    const token = typeof userOrToken === 'string' ? userOrToken : userOrToken?.token;
    let url = `${this.wsBase}${wsPath}`;
    const hdrs = { ...headers };
    if (via === 'query') url += `${wsPath.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
    if (via === 'header') hdrs.Authorization = `Bearer ${token}`;
    const client = await ChatClient.open(url, { headers: hdrs, timeoutMs });
    this.clients.add(client);
    client.closed.then(() => this.clients.delete(client));
    if (via === 'frame') client.send({ type: 'auth', token });
    if (via !== 'none') {
      client.established = await client.next((f) => f.type === 'connection_established', timeoutMs);
    }
    return client;
  }

  // Attempts an upgrade that is expected to fail; resolves {status, body} of the HTTP answer,
  // or {opened: true, client} if it unexpectedly succeeded.
  async tryUpgrade(urlPath, { headers = {}, timeoutMs = 5000 } = {}) {
    try {
      const client = await ChatClient.open(`${this.wsBase}${urlPath}`, { headers, timeoutMs });
      this.clients.add(client);
      return { opened: true, client };
    } catch (err) {
      if (err.status) return { status: err.status, body: err.body };
      throw err;
    }
  }
}

// Starts a server; `opts.args` adds flags (e.g. ['--max-frame-bytes', '4096']).
// ---------------------------------------------------------------------------
// Raw WebSocket, for frames well-behaved clients (ws) refuse to send.

// Opens a WebSocket by hand; resolves {socket, rest} once the 101 arrived
// (rest: bytes read past the HTTP answer).
export function rawUpgrade(port, path) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, HOST);
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('no 101 within 5 s')); }, 5000);
    let buf = Buffer.alloc(0);
    socket.on('error', (e) => { clearTimeout(timer); reject(e); });
    socket.on('connect', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    const onData = (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.off('data', onData);
      const head = buf.subarray(0, end).toString();
      if (!head.startsWith('HTTP/1.1 101')) return reject(new Error(`upgrade refused: ${head}`));
      resolve({ socket, rest: buf.subarray(end + 4) });
    };
    socket.on('data', onData);
  });
}

// A masked client frame (payload under 126 bytes).
export function clientFrame(opcode, payload) {
  const mask = crypto.randomBytes(4);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i] ^= mask[i & 3];
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | masked.length]), mask, masked]);
}

export async function startServer(opts = {}) {
  const server = new ParleyServer(opts);
  for (let i = 0; ; i++) {
    try {
      await server.start();
      return server;
    } catch (err) {
      // A port of PARLEY_TEST_PORTS that another process holds: the next one.
      const busy = PORT_TRIES > 1 && /exited during startup/.test(err.message) && i + 1 < PORT_TRIES;
      if (!busy) {
        await server.stop().catch(() => {});
        throw err;
      }
      server.child = null;
    }
  }
}

// ---------------------------------------------------------------------------
// WebSocket client that buffers every frame it receives.

export class ChatClient {
  constructor(ws) {
    this.ws = ws;
    this.frames = [];      // every frame received, in order: {frame, consumed}
    this.waiters = [];
    this.closeInfo = null;
    this.requestCounter = 0;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8') };
        for (const w of this.waiters.splice(0)) w.onClose(this.closeInfo);
        resolve(this.closeInfo);
      });
    });
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    ws.on('error', () => { /* surfaced through close */ });
  }

  static open(url, { headers = {}, timeoutMs = 5000 } = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers, handshakeTimeout: timeoutMs, maxPayload: 256 * 1024 * 1024 });
      const client = new ChatClient(ws);  // listens from the first byte on
      const timer = setTimeout(() => { ws.terminate(); reject(new Error(`WebSocket ${url} did not open within ${timeoutMs} ms`)); }, timeoutMs);
      ws.once('open', () => { clearTimeout(timer); resolve(client); });
      ws.once('unexpected-response', (req, res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          let body = text;
          try { body = JSON.parse(text); } catch { /* keep text */ }
          req.destroy();
          reject(Object.assign(new Error(`upgrade refused with HTTP ${res.statusCode}: ${text}`), { status: res.statusCode, body }));
        });
      });
      ws.once('error', (err) => { clearTimeout(timer); reject(err); });
    });
  }

  onFrame(data, isBinary) {
    let frame;
    if (isBinary) frame = { __binary: Buffer.from(data) };
    else {
      const text = data.toString('utf8');
      try { frame = JSON.parse(text); } catch { frame = { __raw: text }; }
    }
    const entry = { frame, consumed: false, at: Date.now() };
    this.frames.push(entry);
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i];
      if (safeMatch(w.pred, frame)) {
        entry.consumed = true;
        this.waiters.splice(i, 1);
        w.resolve(frame);
        return;
      }
    }
  }

  get isOpen() { return this.ws.readyState === WebSocket.OPEN; }

  send(frame) { this.ws.send(JSON.stringify(frame)); }
  sendRaw(data, options = {}) { this.ws.send(data, options); }

  // The first not-yet-consumed frame matching pred (consumes it), waiting up to timeoutMs.
  next(pred = () => true, timeoutMs = 5000, what = '') {
    const found = this.frames.find((e) => !e.consumed && safeMatch(pred, e.frame));
    if (found) { found.consumed = true; return Promise.resolve(found.frame); }
    if (this.closeInfo) {
      return Promise.reject(new Error(`connection closed (code ${this.closeInfo.code} "${this.closeInfo.reason}") before ${what || 'the expected frame'} arrived; last frames: ${this.describeTail()}`));
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        pred,
        resolve: (f) => { clearTimeout(timer); resolve(f); },
        onClose: (info) => {
          clearTimeout(timer);
          reject(new Error(`connection closed (code ${info.code} "${info.reason}") before ${what || 'the expected frame'} arrived; last frames: ${this.describeTail()}`));
        },
      };
      const timer = setTimeout(() => {
        const idx = this.waiters.indexOf(waiter);
        if (idx >= 0) this.waiters.splice(idx, 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what || 'a frame'}; last frames: ${this.describeTail()}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  nextOfType(type, timeoutMs = 5000) { return this.next((f) => f.type === type, timeoutMs, `a "${type}" frame`); }

  // Waits ms, then fails if any unconsumed frame matching pred arrived (or was buffered).
  async expectNone(pred, ms = 500, what = 'an unexpected frame') {
    await sleep(ms);
    const hit = this.frames.find((e) => !e.consumed && safeMatch(pred, e.frame));
    if (hit) throw new Error(`expected no ${what}, got ${JSON.stringify(hit.frame).slice(0, 500)}`);
  }

  // Every frame received so far that matches pred (consumed or not).
  all(pred = () => true) { return this.frames.map((e) => e.frame).filter((f) => safeMatch(pred, f)); }

  // Sends a frame with a fresh request_id and resolves the first reply that echoes it.
  request(frame, timeoutMs = 5000) {
    const requestId = frame.request_id ?? `req-${++this.requestCounter}-${randomId(3)}`;
    this.send({ ...frame, request_id: requestId });
    return this.next((f) => f.request_id === requestId, timeoutMs, `the reply to ${frame.type} (request_id ${requestId})`);
  }

  // Like request(), for a frame given as a raw string that already contains "request_id".
  requestRaw(text, requestId, timeoutMs = 5000) {
    this.sendRaw(text);
    return this.next((f) => f.request_id === requestId, timeoutMs, `the reply to raw frame (request_id ${requestId})`);
  }

  async ping(timeoutMs = 5000) {
    const reply = await this.request({ type: 'ping' }, timeoutMs);
    if (reply.type !== 'pong') throw new Error(`ping answered ${JSON.stringify(reply)}`);
    return reply;
  }

  // Sends a message and resolves the message object of its message_sent reply.
  async sendMessage(fields, timeoutMs = 5000) {
    const reply = await this.request({ type: 'send_message', ...fields }, timeoutMs);
    if (reply.type !== 'message_sent') throw new Error(`send_message answered ${JSON.stringify(reply)}`);
    return reply.data;
  }

  waitClose(timeoutMs = 5000) {
    return Promise.race([
      this.closed,
      sleep(timeoutMs).then(() => { throw new Error(`connection still open after ${timeoutMs} ms; last frames: ${this.describeTail()}`); }),
    ]);
  }

  describeTail(n = 5) {
    return this.frames.slice(-n).map((e) => JSON.stringify(e.frame).slice(0, 300)).join(' | ') || '(none)';
  }

  close() { try { this.ws.close(1000); } catch { /* ignore */ } }
  terminate() { try { this.ws.terminate(); } catch { /* ignore */ } }
}

function safeMatch(pred, frame) {
  try { return Boolean(pred(frame)); } catch { return false; }
}

// ---------------------------------------------------------------------------
// Tokens

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// Mints a JWT. alg 'HS256' signs with secret; alg 'none' leaves the signature empty.
export function mintToken(secret, claims, { alg = 'HS256', header = {} } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const payload = { iat: now, exp: now + 3600, ...claims };
  const head = b64url(JSON.stringify({ alg, typ: 'JWT', ...header }));
  const body = b64url(JSON.stringify(payload));
  const signingInput = `${head}.${body}`;
  if (alg === 'none') return `${signingInput}.`;
  const sig = crypto.createHmac('sha256', secret).update(signingInput).digest();
  return `${signingInput}.${b64url(sig)}`;
}

// ---------------------------------------------------------------------------
// Small assertion helpers

export function assertMessageShape(assert, m, expected = {}) {
  assert.ok(m && typeof m === 'object', `message object expected, got ${JSON.stringify(m)}`);
  for (const key of ['id', 'thread_id', 'seq', 'sender_id', 'content', 'message_type', 'client_msg_id', 'status', 'created_at', 'sender']) {
    assert.ok(key in m, `message lacks "${key}": ${JSON.stringify(m)}`);
  }
  assert.match(m.id, UUID_RE, 'message id is a UUID');
  assert.match(m.thread_id, UUID_RE, 'thread_id is a UUID');
  assert.ok(Number.isInteger(m.seq) && m.seq >= 1, `seq is a positive integer, got ${m.seq}`);
  assert.match(m.sender_id, UUID_RE, 'sender_id is a UUID');
  assert.match(m.created_at, ISO_RE, `created_at is ISO 8601 UTC, got ${m.created_at}`);
  assert.equal(typeof m.status, 'string', 'status is a string');
  assert.ok(m.sender && typeof m.sender === 'object', 'sender is an object');
  for (const key of ['username', 'full_name', 'role']) {
    assert.ok(key in m.sender, `sender lacks "${key}": ${JSON.stringify(m.sender)}`);
  }
  for (const [k, v] of Object.entries(expected)) {
    assert.deepEqual(m[k], v, `message.${k}`);
  }
}

// Asserts an HTTP answer is a Parley error with the given status and code.
export function assertHttpError(assert, res, status, code, what = '') {
  const label = what ? `${what}: ` : '';
  assert.equal(res.status, status, `${label}HTTP status (body: ${res.text.slice(0, 300)})`);
  assert.ok(res.body && typeof res.body === 'object', `${label}JSON error body expected, got ${res.text.slice(0, 300)}`);
  assert.equal(res.body.status, 'error', `${label}body.status`);
  assert.equal(res.body.code, code, `${label}error code (message: ${res.body.message})`);
  assert.equal(typeof res.body.message, 'string', `${label}error message is a string`);
}

export function assertWsError(assert, frame, code, what = '') {
  const label = what ? `${what}: ` : '';
  assert.equal(frame.type, 'error', `${label}an error frame expected, got ${JSON.stringify(frame).slice(0, 300)}`);
  assert.equal(frame.code, code, `${label}error code (message: ${frame.message})`);
  assert.equal(typeof frame.message, 'string', `${label}error message is a string`);
}
