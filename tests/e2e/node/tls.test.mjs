// TLS: --tls-cert/--tls-key serve HTTPS, WSS and Socket.IO on the one port,
// TLS 1.2 and 1.3 only; SIGHUP swaps the certificate without dropping open
// connections; a bad pair is refused at start and ignored at reload. Each
// run makes its own self-signed certificates with `openssl req` in a temp dir.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, execFile, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import WebSocket from 'ws';
import { io } from 'socket.io-client';

import { ParleyServer, ChatClient, HOST, PARLEY_BIN, sleep } from './harness.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-tls-'));
const certPath = path.join(dir, 'cert.pem');
const keyPath = path.join(dir, 'key.pem');

// A fresh self-signed certificate for 127.0.0.1; returns {cert, key} (PEM).
function makeCert(name) {
  const cert = path.join(dir, `${name}.cert.pem`);
  const key = path.join(dir, `${name}.key.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=parley-test-${name}`,
    '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore', timeout: 20000 });
  return { cert: fs.readFileSync(cert, 'utf8'), key: fs.readFileSync(key, 'utf8') };
}

const fingerprint = (pem) => new crypto.X509Certificate(pem).fingerprint256;

// The certificate a new TLS connection is shown (not verified: only compared).
function peerFingerprint(port) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: HOST, port, rejectUnauthorized: false }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.destroy();
      resolve(fp);
    });
    s.setTimeout(5000, () => { s.destroy(); reject(new Error('TLS handshake timed out')); });
    s.on('error', reject);
  });
}

// The harness's server, spoken to over HTTPS with the test's CA.
class TlsServer extends ParleyServer {
  constructor(opts) {
    super(opts);
    this.ca = [];
  }
  get baseUrl() { return `https://${HOST}:${this.port}`; }
  get wsBase() { return `wss://${HOST}:${this.port}`; }
  http(method, urlPath, { token, body, headers = {}, timeoutMs = 10000 } = {}) {
    const hdrs = { ...headers };
    let payload = null;
    if (body !== undefined) {
      payload = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      hdrs['Content-Type'] = 'application/json';
      hdrs['Content-Length'] = payload.length;
    }
    if (token) hdrs.Authorization = `Bearer ${token}`;
    return new Promise((resolve, reject) => {
      const req = https.request({ host: HOST, port: this.port, method, path: urlPath, headers: hdrs, agent: false, ca: this.ca },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed = null;
            try { parsed = JSON.parse(text); } catch { /* not JSON */ }
            resolve({ status: res.statusCode, headers: res.headers, text, body: parsed, socket: res.socket });
          });
        });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${urlPath} timed out`)));
      req.on('error', reject);
      if (payload) req.write(payload);
      req.end();
    });
  }
  // A WSS chat connection, verified against the test's CA.
  async connectWss(user) {
    const ws = new WebSocket(`${this.wsBase}/ws?token=${encodeURIComponent(user.token)}`, { ca: this.ca, handshakeTimeout: 5000 });
    const client = new ChatClient(ws);
    this.clients.add(client);
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    client.established = await client.nextOfType('connection_established');
    return client;
  }
}

describe('TLS: HTTPS, WSS and Socket.IO on one port', () => {
  let server, alice, bob, thread, first, second;
  before(async () => {
    first = makeCert('first');
    second = makeCert('second');
    fs.writeFileSync(certPath, first.cert);
    fs.writeFileSync(keyPath, first.key);
    server = new TlsServer({ args: ['--tls-cert', certPath, '--tls-key', keyPath, '--threads', '2'] });
    server.ca = [first.cert, second.cert];
    await server.start();
    [alice, bob] = await server.registerMany(2);
    thread = await server.createDirect(alice, bob);
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('HTTPS answers with the certificate given, over TLS 1.2 or 1.3', async () => {
    const res = await server.http('GET', '/health');
    assert.equal(res.status, 200);
    assert.equal(res.body.status, 'ok');
    assert.ok(['TLSv1.2', 'TLSv1.3'].includes(res.socket.getProtocol()), res.socket.getProtocol());
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.equal(await peerFingerprint(server.port), fingerprint(first.cert));
  });

  it('plain HTTP on the TLS port gets no answer', async () => {
    await assert.rejects(ParleyServer.prototype.http.call({ port: server.port }, 'GET', '/health', { timeoutMs: 3000 }));
  });

  it('connections that send nothing cost next to nothing (the TLS stream waits for the first bytes)', async () => {
    const rssKiB = () => Number(fs.readFileSync(`/proc/${server.child.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
    const open = (n) => Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
      const s = net.connect(server.port, HOST, () => resolve(s));
      s.on('error', reject);
    })));
    const warm = await open(20);
    await sleep(300);
    const before = rssKiB();
    const silent = await open(400);
    await sleep(1000);
    const grown = rssKiB() - before;
    for (const s of [...warm, ...silent]) s.destroy();
    // A TLS stream is about 70 KiB: 400 of them would be over 27 MiB.
    assert.ok(grown < 8 * 1024, `400 silent connections took ${(grown / 1024).toFixed(1)} MiB`);
    assert.equal((await server.http('GET', '/health')).status, 200);
  });

  it('TLS 1.1 is refused, TLS 1.2 and 1.3 are accepted (openssl s_client)', () => {
    const run = (flag, extra = []) => spawnSync('openssl', ['s_client', '-connect', `${HOST}:${server.port}`, flag, ...extra],
      { input: '', encoding: 'utf8', timeout: 10000 });
    // SECLEVEL=0 lets this client offer TLS 1.1 at all: the refusal must come from the server.
    const old = run('-tls1_1', ['-cipher', 'DEFAULT:@SECLEVEL=0']);
    assert.notEqual(old.status, 0);
    assert.match(old.stdout + old.stderr, /alert protocol version/);
    for (const [flag, name] of [['-tls1_2', 'TLSv1.2'], ['-tls1_3', 'TLSv1.3']]) {
      const ok = run(flag);
      assert.equal(ok.status, 0, ok.stderr);
      // "New, TLSv1.3, …" is the handshake's line; the "Protocol :" block of
      // TLS 1.3 waits for a session ticket that s_client may exit before.
      assert.match(ok.stdout, new RegExp(`(Protocol\\s*: |New, )${name.replace('.', '\\.')}`));
    }
  });

  it('WSS carries chat both ways', async () => {
    const a = await server.connectWss(alice);
    const b = await server.connectWss(bob);
    const m = await a.sendMessage({ thread_id: thread.id, content: 'over wss' });
    const got = await b.next((f) => f.type === 'new_message' && f.data.id === m.id, 5000, 'the message at Bob');
    assert.equal(got.data.content, 'over wss');
    // A message larger than one TLS record (16 KiB) arrives whole.
    const big = 'x'.repeat(3900) + '✓'.repeat(40);
    const m2 = await b.sendMessage({ thread_id: thread.id, content: big });
    const got2 = await a.next((f) => f.type === 'new_message' && f.data.id === m2.id, 5000, 'the big message');
    assert.equal(got2.data.content, big);
    a.ws.close();
    b.ws.close();
  });

  it('Socket.IO over TLS: polling, then the upgrade to a WebSocket, for several clients (whichever loop they land on)', async () => {
    const sockets = [];
    try {
      for (let i = 0; i < 4; i++) {
        const s = io(server.baseUrl, { ca: server.ca, auth: { token: alice.token }, reconnection: false, forceNew: true, timeout: 5000 });
        sockets.push(s);
        await new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); });
      }
      const deadline = Date.now() + 5000;
      while (sockets.some((s) => s.io.engine.transport.name !== 'websocket') && Date.now() < deadline) await sleep(50);
      assert.deepEqual(sockets.map((s) => s.io.engine.transport.name), ['websocket', 'websocket', 'websocket', 'websocket']);
      // Every upgraded socket still carries events: a message to Bob's thread reaches each of Alice's sockets.
      const seen = sockets.map((s) => new Promise((resolve) => s.on('new_message', (msg, ack) => {
        if (typeof ack === 'function') ack({ received: true });
        if (msg.content === 'to every socket') resolve(true);
      })));
      const b = await server.connectWss(bob);
      await b.sendMessage({ thread_id: thread.id, content: 'to every socket' });
      const all = await Promise.race([Promise.all(seen), sleep(5000).then(() => 'timeout')]);
      assert.notEqual(all, 'timeout', 'every Socket.IO client got the message');
      const ack = await sockets[0].timeout(5000).emitWithAck('send_message', { username: bob.username, text: 'from sio over tls' });
      assert.equal(ack.success, true, JSON.stringify(ack));
      await b.next((f) => f.type === 'new_message' && f.data.content === 'from sio over tls', 5000, 'the Socket.IO message at Bob');
      b.ws.close();
    } finally {
      for (const s of sockets) s.close();
    }
  });

  it('SIGHUP: an open WSS connection keeps working, new connections get the new certificate', async () => {
    const a = await server.connectWss(alice);
    const b = await server.connectWss(bob);
    fs.writeFileSync(certPath, second.cert);
    fs.writeFileSync(keyPath, second.key);
    const logged = server.log.length;
    server.child.kill('SIGHUP');
    const deadline = Date.now() + 5000;
    while (!server.log.slice(logged).some((l) => l.includes('event=tls_reloaded')) && Date.now() < deadline) await sleep(50);
    assert.ok(server.log.slice(logged).some((l) => l.includes('event=tls_reloaded')), server.logTail());
    assert.equal(await peerFingerprint(server.port), fingerprint(second.cert));
    const m = await a.sendMessage({ thread_id: thread.id, content: 'after the reload' });
    await b.next((f) => f.type === 'new_message' && f.data.id === m.id, 5000, 'the message on the old connection');
    assert.equal(a.closeInfo, null, 'the old connection is still open');
    assert.equal((await server.http('GET', '/health')).status, 200);
    a.ws.close();
    b.ws.close();
  });

  it('a reload with a bad key is logged and the current certificate stays', async () => {
    fs.writeFileSync(keyPath, 'not a key\n');
    const logged = server.log.length;
    server.child.kill('SIGHUP');
    const deadline = Date.now() + 5000;
    while (!server.log.slice(logged).some((l) => l.includes('event=tls_reload_failed')) && Date.now() < deadline) await sleep(50);
    assert.ok(server.log.slice(logged).some((l) => l.includes('event=tls_reload_failed')), server.logTail());
    assert.equal(await peerFingerprint(server.port), fingerprint(second.cert));
    assert.equal((await server.http('GET', '/health')).status, 200);
    fs.writeFileSync(keyPath, second.key);
  });
});

// A WSS upgrade of a Socket.IO session that lives on another event loop keeps
// its WebSocket on the loop that accepted it (a TLS stream cannot move); the
// session still has to see that WebSocket's queue, or it cannot pace a
// catch-up replay and the client is dropped as a slow consumer.
describe('Socket.IO over WSS on another loop: a catch-up replay is paced', () => {
  let server;
  before(async () => {
    fs.mkdirSync(dir, { recursive: true });
    const pair = makeCert('pacing');
    fs.writeFileSync(path.join(dir, 'pacing.cert'), pair.cert);
    fs.writeFileSync(path.join(dir, 'pacing.key'), pair.key);
    server = new TlsServer({ args: ['--tls-cert', path.join(dir, 'pacing.cert'), '--tls-key', path.join(dir, 'pacing.key'),
      '--threads', '2', '--max-outbound-bytes', String(1024 * 1024), '--rate-per-second', '100000', '--rate-burst', '100000'] });
    server.ca = [pair.cert];
    await server.start();
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a backlog larger than --max-outbound-bytes arrives whole over the upgraded WebSocket', { timeout: 90000 }, async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const a = await server.connectWss(alice);
    const total = 600;  // ~2.4 MB of backlog: more than twice the 1 MiB bound, more than one replay page
    for (let i = 0; i < total; i += 20) {
      const batch = [];
      for (let j = i; j < Math.min(total, i + 20); j++) batch.push(a.sendMessage({ thread_id: thread.id, content: `${j} ${'y'.repeat(3900)}` }, 20000));
      await Promise.all(batch);
    }
    a.ws.close();

    // Bob connects after the fact, so the server catches him up on connect.
    // Engine.IO by hand, so that the loops are known: the polling requests go
    // over one kept-alive connection, and the WebSocket is the next
    // connection accepted, which the server hands to the other loop.
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: server.ca });
    const poll = (method, query, body) => new Promise((resolve, reject) => {
      const req = https.request({ host: HOST, port: server.port, method, path: `/socket.io/?EIO=4&transport=polling${query}`, agent },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => { text += c; });
          res.on('end', () => resolve({ status: res.statusCode, text }));
        });
      req.setTimeout(10000, () => req.destroy(new Error(`${method} polling request timed out`)));
      req.on('error', reject);
      if (body) req.write(body);
      req.end();
    });
    let ws;
    try {
      const { sid } = JSON.parse((await poll('GET', '')).text.slice(1));
      assert.equal((await poll('POST', `&sid=${sid}`, `40${JSON.stringify({ token: bob.token })}`)).status, 200);
      assert.match((await poll('GET', `&sid=${sid}`)).text, /^40/);
      ws = new WebSocket(`${server.wsBase}/socket.io/?EIO=4&transport=websocket&sid=${sid}`, { ca: server.ca });
      const seqs = [];
      let upgraded = false;
      let closed = null;
      ws.on('message', (data) => {
        const text = String(data);
        if (text === '3probe') {
          upgraded = true;
          return;
        }
        if (text === '2') return ws.send('3');
        const m = text.match(/^42(\d*)([\s\S]*)$/);
        if (!m) return;
        const [event, payload] = JSON.parse(m[2]);
        if (event === 'new_message') seqs.push(payload.seq);
      });
      ws.on('close', (code) => { closed = code; });
      await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
      ws.send('2probe');
      const probed = Date.now() + 5000;
      while (!upgraded && Date.now() < probed) await sleep(20);
      assert.ok(upgraded, 'the probe was answered');
      ws.send('5');
      // The catch-up on connect (Bob has read nothing) paused while nobody
      // polled; on the WebSocket it goes on, paced by that WebSocket's queue.
      const deadline = Date.now() + 60000;
      while (seqs.length < total && closed === null && Date.now() < deadline) await sleep(50);
      assert.equal(closed, null, `the client was dropped after ${seqs.length} of ${total} messages`);
      await sleep(200);
      assert.deepEqual(seqs, Array.from({ length: total }, (_, i) => i + 1), 'the whole backlog, in order, once');
    } finally {
      ws?.close();
      agent.destroy();
    }
  });
});

describe('TLS settings refused at start', () => {
  const run = (args, env = {}) => new Promise((resolve) => {
    const data = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-tls-bad-'));
    execFile(PARLEY_BIN, ['serve', '--port', '0', '--bind', HOST, '--data-dir', data, '--jwt-secret', 's'.repeat(32), ...args],
      { timeout: 15000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
        fs.rmSync(data, { recursive: true, force: true });
        resolve({ code: err ? err.code : 0, stderr });
      });
  });
  let pair;
  before(() => {
    fs.mkdirSync(dir, { recursive: true });
    pair = makeCert('start');
    fs.writeFileSync(path.join(dir, 'good.cert.pem'), pair.cert);
    fs.writeFileSync(path.join(dir, 'good.key.pem'), pair.key);
    fs.writeFileSync(path.join(dir, 'other.key.pem'), makeCert('other').key);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a missing certificate file: a clear error and exit 1', async () => {
    const r = await run(['--tls-cert', path.join(dir, 'missing.pem'), '--tls-key', path.join(dir, 'good.key.pem')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /tls_config: cannot load the TLS certificate .*missing\.pem/);
  });

  it('a key that does not match the certificate (given by PARLEY_TLS_*): exit 1', async () => {
    const r = await run([], { PARLEY_TLS_CERT: path.join(dir, 'good.cert.pem'), PARLEY_TLS_KEY: path.join(dir, 'other.key.pem') });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /tls_config: cannot load the TLS key .*other\.key\.pem: key values mismatch|does not match the certificate/);
  });

  it('--tls-cert without --tls-key is refused', async () => {
    const r = await run(['--tls-cert', path.join(dir, 'good.cert.pem')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /tls-key/);
  });
});
