// PostgreSQL-only behaviour of a node (skipped where tests/db/pg.sh cannot
// start PostgreSQL): a PostgreSQL restart under a running node, two `parley`
// processes sending into one thread of one database at once, and one of them
// frozen inside its transaction. Each test here starts its own PostgreSQL
// (tests/db/pg.sh) so stopping it disturbs nobody.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { pathToFileURL } from 'node:url';
import { ParleyServer, PG_SH, pgAvailable, assertHttpError, assertWsError, sleep, listenOnTestPort, HOST, REPO_ROOT } from './harness.mjs';

const pg = (...args) => execFileSync(PG_SH, args, { encoding: 'utf8', timeout: 60000 }).trim();
const psql = (db, sql) => execFileSync('psql', ['-At', db, '-c', sql], { encoding: 'utf8', timeout: 10000 }).trim();

describe('PostgreSQL faults and several processes', { skip: !pgAvailable() && 'PostgreSQL (tests/db/pg.sh) is not available' }, () => {
  let state;
  let url;
  before(() => {
    state = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-pgstate-'));
    pg('start', state);
    url = pg('createdb', state);
  });
  after(() => {
    if (state) {
      pg('stop', state);
      fs.rmSync(state, { recursive: true, force: true });
    }
  });

  // Two nodes on a fresh database of their own, sharing a JWT secret.
  async function twoNodes() {
    const db = pg('createdb', state);
    const secret = `shared-secret-${Date.now()}-0123456789`;
    const nodes = [new ParleyServer({ database: db, secret }), new ParleyServer({ database: db, secret })];
    for (const node of nodes) await node.start();
    return nodes;
  }

  it('a PostgreSQL restart: sends fail with 503 storage_unavailable, nothing half-stored, and the node recovers by itself', async () => {
    const server = new ParleyServer({ database: url });
    await server.start();
    try {
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      const ws = await server.connect(alice);
      const before = await ws.sendMessage({ thread_id: thread.id, content: 'before', client_msg_id: 'f-1' });
      assert.equal(before.seq, 1);

      pg('halt', state);
      try {
        const rest = await server.sendRest(alice.token, thread.id, { content: 'during (rest)', client_msg_id: 'f-2' });
        assertHttpError(assert, rest, 503, 'storage_unavailable', 'REST send while PostgreSQL is down');
        const reply = await ws.request({ type: 'send_message', thread_id: thread.id, content: 'during (ws)', client_msg_id: 'f-3' }, 15000);
        assertWsError(assert, reply, 'storage_unavailable', 'WebSocket send while PostgreSQL is down');
        const health = await server.http('GET', '/health');
        assert.equal(health.status, 503, 'GET /health says the store is down');
        assert.equal(health.body?.storage?.ok, false);
      } finally {
        pg('resume', state);
      }

      // /health comes back by itself, with no write to clear it: a load
      // balancer that stopped sending traffic on its 503 sends none.
      let health = null;
      for (let i = 0; i < 100 && health?.status !== 200; i++) {
        if (i) await sleep(100);
        health = await server.http('GET', '/health');
      }
      assert.equal(health.status, 200, `GET /health after PostgreSQL is back, with no traffic: ${health.text}`);
      assert.equal(health.body?.storage?.ok, true);

      // The node reconnects on its own: the next sends succeed without a restart of parley.
      let after = null;
      for (let i = 0; i < 100 && !after; i++) {
        const r = await server.sendRest(alice.token, thread.id, { content: 'after', client_msg_id: 'f-4' });
        if (r.status === 201 || r.status === 200) after = r.body.data ?? r.body;
        else await sleep(100);
      }
      assert.ok(after, 'a send succeeds after PostgreSQL is back');
      const viaWs = await ws.sendMessage({ thread_id: thread.id, content: 'after (ws)', client_msg_id: 'f-5' }, 10000);
      const history = await server.history(bob.token, thread.id);
      assert.deepEqual(history.map((m) => m.content), ['before', 'after', 'after (ws)'],
        'only acknowledged messages are stored');
      assert.deepEqual(history.map((m) => m.seq), [1, 2, 3], 'seq stays gapless across the outage');
      assert.equal(viaWs.seq, 3);
    } finally {
      await server.stop();
    }
  });

  // A token the node cannot check is not a bad token: a 401 or a close 4401
  // makes clients (the web app among them) sign the user out, where they
  // should try again once the database is back.
  it('while PostgreSQL is down, tokens are not refused as bad: 503 at the upgrade, close 1013 for a first auth frame, a renewal keeps its connection', async () => {
    const [nodeA, nodeB] = await twoNodes();
    try {
      // Registered through A after B started: B has never read alice's account.
      const [alice] = await nodeA.registerMany(1);
      const open = await nodeA.connect(alice);
      const sio = io(nodeA.baseUrl, { auth: { token: alice.token }, reconnection: false, forceNew: true, transports: ['websocket'] });
      await new Promise((resolve, reject) => { sio.once('connect', resolve); sio.once('connect_error', reject); });
      pg('halt', state);
      try {
        const upgrade = await nodeB.tryUpgrade(`/ws?token=${encodeURIComponent(alice.token)}`, { timeoutMs: 15000 });
        assert.equal(upgrade.opened, undefined, 'the upgrade is refused');
        assert.equal(upgrade.status, 503, `the upgrade: ${JSON.stringify(upgrade.body)}`);
        assert.equal(upgrade.body?.code, 'storage_unavailable');

        const fresh = await nodeA.connect(alice, { via: 'none' });
        const reply = await fresh.request({ type: 'auth', token: alice.token }, 15000);
        assertWsError(assert, reply, 'storage_unavailable', 'a first auth frame');
        const closed = await fresh.waitClose(5000);
        assert.equal(closed.code, 1013, 'try again later, not 4401');

        const renewal = await open.request({ type: 'auth', token: alice.token }, 15000);
        assertWsError(assert, renewal, 'storage_unavailable', 'a renewal');
        const sioRenewal = await sio.timeout(15000).emitWithAck('auth', { token: alice.token });
        assert.equal(sioRenewal.success, false, JSON.stringify(sioRenewal));
        assert.equal(sioRenewal.code, 'storage_unavailable');
        await sleep(300);
        assert.equal(open.closeInfo, null, 'the renewing connection stays open');
        assert.equal(sio.connected, true, 'the Socket.IO session too');
      } finally {
        pg('resume', state);
      }
      // Back: the same token works on both nodes, and the open connection too.
      let renewed = null;
      for (let i = 0; i < 100 && !renewed; i++) {
        const r = await open.request({ type: 'auth', token: alice.token }, 15000);
        if (r.type === 'auth_renewed') renewed = r;
        else await sleep(100);
      }
      assert.ok(renewed, 'a renewal succeeds once PostgreSQL is back');
      const again = await nodeB.connect(alice);
      assert.equal(again.established.type, 'connection_established');
      sio.disconnect();
    } finally {
      await nodeA.stop();
      await nodeB.stop();
    }
  });

  // The web app's protocol client (web/src/parley-client.js, run here in
  // Node with ws as its WebSocket): a renewed token its connection could not
  // take (storage down) is handed to it again, or the connection would stay
  // on the old token until that expired (close 4401: signed out).
  it('the web app\'s client hands a renewal refused for a storage outage to its connection again', async () => {
    globalThis.WebSocket ??= WebSocket;
    const { ParleyClient } = await import(pathToFileURL(path.join(REPO_ROOT, 'web', 'src', 'parley-client.js')).href);
    const server = new ParleyServer({ database: pg('createdb', state) });
    await server.start();
    let c = null;
    try {
      const [alice] = await server.registerMany(1);
      const frames = [];
      c = new ParleyClient({ baseUrl: server.baseUrl, token: alice.token });
      c.addEventListener('frame', (e) => frames.push(e.detail));
      const until = async (pred, what, ms = 20000) => {
        for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) if (pred()) return;
        assert.fail(`waited in vain for ${what}; frames: ${JSON.stringify(frames.slice(-5))}`);
      };
      c.connect();
      await until(() => c.state === 'online', 'the client online');
      pg('halt', state);
      try {
        c.renewSocket();
        await until(() => frames.some((f) => f.type === 'error' && f.request_id === 'renew'), 'the renewal refused');
        assert.equal(frames.find((f) => f.request_id === 'renew').code, 'storage_unavailable');
        assert.equal(c.state, 'online', 'the connection stays');
      } finally {
        pg('resume', state);
      }
      await until(() => frames.some((f) => f.type === 'auth_renewed' && f.request_id === 'renew'), 'the renewal sent again and taken');
      assert.equal(c.state, 'online');
    } finally {
      c?.disconnect();
      await server.stop();
    }
  });

  it('a COMMIT whose answer is lost is reported as possibly stored, and the retry finds it', async () => {
    // A relay in front of PostgreSQL that, once armed, forwards the writer's
    // next COMMIT and then drops the connection without its answer: the
    // database commits, the node cannot know.
    const db = pg('createdb', state);
    const target = Number(new URL(db).port);
    let armed = false;
    const relay = net.createServer((client) => {
      const up = net.connect(target, HOST);
      let writer = false, cut = false;
      const end = () => { client.destroy(); up.destroy(); };
      for (const s of [client, up]) { s.on('error', end); s.on('close', end); }
      client.on('data', (d) => {
        if (cut) return;
        const text = d.toString('latin1');
        if (text.includes('idle_in_transaction_session_timeout')) writer = true;  // the writer's session settings
        up.write(d);
        if (writer && armed && /Q\0\0\0\x0bCOMMIT\0/.test(text)) {
          armed = false;
          cut = true;
          setTimeout(end, 200);
        }
      });
      up.on('data', (d) => { if (!cut) client.write(d); });
    });
    const relayUrl = new URL(db);
    relayUrl.port = String(await listenOnTestPort(relay));
    const node = new ParleyServer({ database: relayUrl.toString() });
    await node.start();
    try {
      const [alice, bob] = await node.registerMany(2);
      const dm = await node.createDirect(alice, bob);
      armed = true;
      const lost = await node.sendRest(alice.token, dm.id, { content: 'commit answer lost', client_msg_id: 'lost-1' });
      assert.equal(lost.status, 503, lost.text);
      assert.equal(lost.body.code, 'storage_unavailable');
      assert.match(lost.body.message, /may have been stored/, 'not "nothing was stored": the database did commit');
      let retry;
      for (let i = 0; i < 50; i++) {  // the node reconnects to the database first
        retry = await node.sendRest(alice.token, dm.id, { content: 'commit answer lost', client_msg_id: 'lost-1' });
        if (retry.status !== 503) break;
        await sleep(200);
      }
      assert.ok(retry.status === 200 || retry.status === 201, retry.text);
      const history = await node.history(bob.token, dm.id);
      assert.deepEqual(history.map((m) => m.client_msg_id), ['lost-1'], 'stored once, by the COMMIT whose answer was lost');
      assert.equal(retry.body.data.id, history[0].id);
    } finally {
      await node.stop();
      await new Promise((resolve) => relay.close(resolve));
    }
  });

  it('two parley processes on one database sending into one thread at once: seq gapless, nothing duplicated, retries recognised across nodes', async () => {
    const [nodeA, nodeB] = await twoNodes();
    try {
      const [alice, bob] = await nodeA.registerMany(2);
      const thread = await nodeA.createGroup(alice, [bob], 'two nodes');
      const wsA = await nodeA.connect(alice);
      const wsB = await nodeB.connect(bob);
      const perNode = 100;
      const sends = [];
      for (let i = 0; i < perNode; i++) {
        sends.push(wsA.sendMessage({ thread_id: thread.id, content: `a${i}`, client_msg_id: `a-${i}` }, 30000));
        sends.push(wsB.sendMessage({ thread_id: thread.id, content: `b${i}`, client_msg_id: `b-${i}` }, 30000));
      }
      const acked = await Promise.all(sends);
      const seqs = acked.map((m) => m.seq).sort((x, y) => x - y);
      assert.deepEqual(seqs, Array.from({ length: 2 * perNode }, (_, i) => i + 1), 'acked seqs are 1..200, once each');

      // alice's retry of a-7 sent through the other node returns the original.
      const wsA2 = await nodeB.connect(alice);
      const retry = await wsA2.sendMessage({ thread_id: thread.id, content: 'a7 again', client_msg_id: 'a-7' }, 10000);
      const original = acked.find((m) => m.client_msg_id === 'a-7');
      assert.equal(retry.id, original.id);
      assert.equal(retry.seq, original.seq);

      const history = await nodeB.history(alice.token, thread.id);
      assert.equal(history.length, 2 * perNode, 'nothing stored twice');
      assert.deepEqual(history.map((m) => m.seq), seqs);
    } finally {
      await nodeA.stop();
      await nodeB.stop();
    }
  });

  // Every node's writer holds the commit clock from BEGIN to COMMIT. Before
  // the fix a node frozen there (SIGSTOP, a paused VM, a network partition)
  // stopped every node's sends for as long as it stayed frozen.
  it('a node frozen inside its transaction does not stop the other node: its session ends and the clock is free', async () => {
    const db = pg('createdb', state);
    const secret = `frozen-secret-${Date.now()}-0123456789`;
    const nodeA = new ParleyServer({ database: db, secret });
    // B's client sends in bursts until B is caught: past the default rate
    // limit (200/s) its frames were refused and then closed for flooding,
    // so later attempts sent nothing and B was never caught mid-transaction.
    const nodeB = new ParleyServer({ database: db, secret, args: ['--rate-per-second', '100000', '--rate-burst', '100000'] });
    await nodeA.start();
    await nodeB.start();
    let frozen = false;
    try {
      const [alice, bob] = await nodeA.registerMany(2);
      const thread = await nodeA.createGroup(alice, [bob], 'one frozen');
      const wsA = await nodeA.connect(alice);
      const wsB = await nodeB.connect(bob);
      const answers = [];
      wsB.ws.on('message', (data) => {
        const f = JSON.parse(data.toString());
        if (f.type === 'message_sent' || f.type === 'error') answers.push(f);
      });
      // Freeze B until it is caught inside a transaction (bounded attempts).
      const inTransaction = () => Number(psql(db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'"));
      for (let attempt = 0; attempt < 80 && !frozen; attempt++) {
        for (let i = 0; i < 100; i++) wsB.send({ type: 'send_message', thread_id: thread.id, content: `b${attempt}.${i}`, client_msg_id: `b-${attempt}-${i}` });
        await sleep(20 + (attempt % 5) * 7);
        nodeB.child.kill('SIGSTOP');
        await sleep(100);
        if (inTransaction() > 0) frozen = true;
        else nodeB.child.kill('SIGCONT');
      }
      assert.ok(frozen, 'node B was never caught inside a transaction');

      const started = Date.now();
      const sent = await wsA.sendMessage({ thread_id: thread.id, content: 'while B is frozen' }, 20000);
      assert.ok(sent.seq > 0);
      assert.ok(Date.now() - started < 15000, `node A waited ${Date.now() - started} ms`);

      nodeB.child.kill('SIGCONT');
      frozen = false;
      // B's batch under way was rolled back (its sends fail, nothing acknowledged);
      // B reconnects and sends again.
      const after = await wsB.sendMessage({ thread_id: thread.id, content: 'B is back', client_msg_id: 'b-back' }, 20000);
      const history = await nodeA.history(alice.token, thread.id);
      assert.deepEqual(history.map((m) => m.seq), Array.from({ length: history.length }, (_, i) => i + 1), 'seq gapless');
      const stored = new Set(history.map((m) => m.id));
      for (const f of answers.filter((x) => x.type === 'message_sent')) assert.ok(stored.has(f.data.id), 'every acknowledged send is stored');
      assert.ok(stored.has(sent.id) && stored.has(after.id));
    } finally {
      if (frozen) nodeB.child.kill('SIGCONT');
      await nodeA.stop();
      await nodeB.stop();
    }
  });
});
