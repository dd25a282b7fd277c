// Socket.IO clients need no sticky sessions (CONTRACT section 6): the
// official `socket.io-client` on long-polling talks to three `parley` nodes
// (one PostgreSQL, one Redis) through a round-robin HTTP proxy written here
// with Node's `http` module, so each polling request lands on the next node,
// whichever owns the session; the node it lands on forwards it to the owner
// over Redis. Also: a sid no node owns (400), the WebSocket upgrade sent to
// the owner (it upgrades) and to another node (refused: the client stays on
// polling), Redis restarted (the client reconnects until it is back), and the
// owner killed while another node holds a forwarded long poll for it (the
// client is answered, reconnects, and misses nothing).
//
// Needs Debian's postgresql (tests/db/pg.sh) and redis-server
// (scripts/redis-test.sh); skipped when either is missing.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { io } from 'socket.io-client';
import { HOST, randomId, sleep } from './harness.mjs';
import { Cluster, clusterSkip as skip } from './cluster.mjs';

const sidOf = (url) => new URL(url, 'http://proxy').searchParams.get('sid');
const UNKNOWN_SID = { code: 1, message: 'Session ID unknown' };

// A load balancer without stickiness: each HTTP request goes to the next live
// node (a node that refuses the connection is marked dead and skipped). It
// remembers which node answered each handshake (the sid's owner) and logs
// every request. `route(req, sid)` may pick a node instead; `upgradeTo`
// ('owner' | 'other' | 'next') says where WebSocket upgrades go.
async function startProxy(nodes) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const p = { nodes, next: 0, dead: new Set(), owners: new Map(), log: [], upgrades: [], route: null, upgradeTo: 'next' };
  const sockets = new Set();
  const nextLive = () => {
    for (let k = 0; k < nodes.length; k++) {
      const i = p.next++ % nodes.length;
      if (!p.dead.has(i)) return i;
    }
    return 0;
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => send(Buffer.concat(chunks), 0));
    function send(body, tries) {
      const sid = sidOf(req.url);
      const chosen = p.route?.(req, sid);
      const i = chosen ?? nextLive();
      const upstream = http.request({ host: HOST, port: nodes[i].port, method: req.method, path: req.url, headers: req.headers, agent }, (ures) => {
        const out = [];
        ures.on('data', (c) => out.push(c));
        ures.on('end', () => {
          const text = Buffer.concat(out).toString();
          p.log.push({ method: req.method, sid, node: i, status: ures.statusCode, text });
          if (!sid && ures.statusCode === 200 && text[0] === '0') p.owners.set(JSON.parse(text.slice(1)).sid, i);
          res.writeHead(ures.statusCode, ures.headers);
          res.end(text);
        });
      });
      upstream.on('error', (e) => {
        // Nothing was sent to a node that refused the connection: try the next one.
        if (e.code === 'ECONNREFUSED' && tries < nodes.length) { p.dead.add(i); return send(body, tries + 1); }
        res.writeHead(502); res.end();
      });
      upstream.end(body);
    }
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.on('upgrade', (req, socket, head) => {
    const sid = sidOf(req.url);
    const owner = p.owners.get(sid);
    let i = nextLive();
    if (p.upgradeTo === 'owner' && owner !== undefined) i = owner;
    if (p.upgradeTo === 'other' && owner !== undefined) i = (owner + 1) % nodes.length;
    p.upgrades.push({ sid, node: i });
    const up = net.connect(nodes[i].port, HOST, () => {
      let text = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let k = 0; k < req.rawHeaders.length; k += 2) text += `${req.rawHeaders[k]}: ${req.rawHeaders[k + 1]}\r\n`;
      up.write(`${text}\r\n`);
      if (head.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    sockets.add(up);
    up.on('close', () => sockets.delete(up));
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  await new Promise((resolve) => server.listen(0, HOST, resolve));
  p.url = `http://${HOST}:${server.address().port}`;
  p.close = () => new Promise((resolve) => {
    for (const s of sockets) s.destroy();
    agent.destroy();
    server.close(() => resolve());
  });
  // Raw HTTP through the proxy.
  p.http = (method, urlPath, body) => fetch(`${p.url}${urlPath}`, { method, body, headers: body ? { 'Content-Type': 'text/plain' } : {} })
    .then(async (r) => ({ status: r.status, text: await r.text() }));
  return p;
}

// A socket.io-client socket recording every event; acks new_message, ping and test_message.
function sioClient(url, token, { transports = ['polling'], reconnection = false } = {}) {
  const socket = io(url, { transports, reconnection, reconnectionDelay: 200, reconnectionDelayMax: 1000, forceNew: true, timeout: 10000, auth: { token } });
  const c = { socket, events: [], waiters: [] };
  socket.onAny((event, ...args) => {
    const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
    const rec = { event, data: args[0] };
    c.events.push(rec);
    if (ack && ['new_message', 'ping', 'test_message'].includes(event)) ack({ received: true });
    for (const w of c.waiters.splice(0)) if (!w(rec)) c.waiters.push(w);
  });
  c.next = (event, pred = () => true, timeoutMs = 10000) => new Promise((resolve, reject) => {
    const found = c.events.find((r) => !r.taken && r.event === event && pred(r.data));
    if (found) { found.taken = true; return resolve(found.data); }
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${timeoutMs} ms; got ${c.events.map((r) => r.event).join(',')}`)), timeoutMs);
    c.waiters.push((r) => {
      if (r.taken || r.event !== event || !pred(r.data)) return false;
      r.taken = true; clearTimeout(timer); resolve(r.data); return true;
    });
  });
  c.emit = (event, payload, timeoutMs = 10000) => socket.timeout(timeoutMs).emitWithAck(event, payload);
  c.connected = () => new Promise((resolve, reject) => {
    if (socket.connected) return resolve();
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  c.messages = (threadId) => c.events.filter((r) => r.event === 'new_message' && r.data.thread_id === threadId).map((r) => r.data);
  return c;
}

async function waitFor(what, cond, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (cond()) return;
    await sleep(50);
  }
  assert.fail(`timed out waiting for ${what}`);
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('Socket.IO long-polling over three nodes without sticky sessions', { skip }, () => {
  const cluster = new Cluster({ secret: `siofwd-${randomId(16)}` });
  let redis;
  let proxy;
  let nodes = [];

  before(async () => {
    await cluster.start({ size: 3 });
    ({ redis, nodes } = cluster);
    proxy = await startProxy(nodes);
  });
  after(async () => {
    await proxy?.close();
    await cluster.stop();
  });

  it('connect with auth, messages both ways in order exactly once, acks, and disconnect, each request on the next node', async () => {
    const [alice, bob] = await nodes[0].registerMany(2);
    const thread = await nodes[0].createDirect(alice, bob);
    const bobWs = await nodes[1].connect(bob);
    const c = sioClient(proxy.url, alice.token);
    await c.connected();
    const success = await c.next('connection_success');
    assert.equal(success.userId, alice.id);
    const sid = c.socket.io.engine.id;
    const owner = proxy.owners.get(sid);
    assert.notEqual(owner, undefined, 'the proxy saw the handshake');
    assert.match(sid, /^[0-9a-f]+\.[0-9a-f-]{36}$/, 'the sid names its node');

    // Bob (native WebSocket, another node) to Alice: in seq order, once each.
    const n = 15;
    const fromBob = [];
    for (let i = 1; i <= n; i++) fromBob.push(await bobWs.sendMessage({ thread_id: thread.id, content: `b${i}`, client_msg_id: `b-${i}` }));
    await waitFor(`${n} messages at Alice`, () => c.messages(thread.id).length >= n);
    // Alice's acks of new_message (POSTs through any node) are her delivery receipts.
    for (const m of fromBob) await bobWs.next((f) => f.type === 'message_delivered' && f.message_id === m.id, 10000, `message_delivered for ${m.seq}`);
    // Alice to Bob, each acknowledged through the Socket.IO ack.
    for (let i = 1; i <= n; i++) {
      const ack = await c.emit('send_message', { thread_id: thread.id, content: `a${i}`, client_msg_id: `a-${i}` });
      assert.equal(ack.success, true, JSON.stringify(ack));
      assert.equal(ack.message.seq, n + i);
    }
    // A burst without waiting: the client packs the events into successive
    // POSTs, which land on different nodes; they are stored in the order emitted.
    const burst = 20;
    const acks = await Promise.all(range(1, burst).map((i) =>
      c.emit('send_message', { thread_id: thread.id, content: `burst${i}`, client_msg_id: `burst-${i}` })));
    assert.ok(acks.every((a) => a.success), JSON.stringify(acks.find((a) => !a.success)));
    assert.deepEqual(acks.map((a) => a.message.seq), range(2 * n + 1, 2 * n + burst), 'stored in the order emitted');
    const total = n + burst;
    const atBob = await (async () => {
      const deadline = Date.now() + 15000;
      for (;;) {
        const seqs = bobWs.all((f) => f.type === 'new_message' && f.data.thread_id === thread.id).map((f) => f.data.seq);
        if (seqs.length >= total || Date.now() > deadline) return seqs;
        await sleep(50);
      }
    })();
    await sleep(500);
    assert.deepEqual(c.messages(thread.id).map((m) => m.seq), range(1, n), 'Alice: each of Bob\'s messages once, in seq order');
    assert.deepEqual(c.messages(thread.id).map((m) => m.content), range(1, n).map((i) => `b${i}`));
    assert.deepEqual(atBob, range(n + 1, 2 * n + burst), 'Bob: each of Alice\'s messages once, in seq order');
    assert.equal(bobWs.all((f) => f.type === 'new_message').length, total, 'nothing twice at Bob');

    // The session's requests really went to every node, and every one was answered 200 there.
    const mine = proxy.log.filter((r) => r.sid === sid);
    const byNode = new Set(mine.map((r) => r.node));
    assert.equal(byNode.size, 3, `requests for the sid reached all three nodes (${[...byNode]})`);
    assert.ok(mine.filter((r) => r.node !== owner && r.method === 'GET').length >= 2, 'long polls served through other nodes');
    assert.ok(mine.filter((r) => r.node !== owner && r.method === 'POST').length >= 2, 'POSTs served through other nodes');
    assert.ok(mine.every((r) => r.status === 200), `every request answered 200: ${JSON.stringify(mine.filter((r) => r.status !== 200))}`);

    const other = (owner + 1) % 3;
    const metrics = await nodes[other].http('GET', '/metrics');
    const forwarded = Number(/^parley_socketio_forwarded_total (\d+)$/m.exec(metrics.text)?.[1]);
    assert.ok(forwarded >= mine.filter((r) => r.node === other).length, `/metrics counts the forwarded requests (${forwarded})`);

    // Disconnect: the owner ends the session; Bob sees Alice go offline.
    c.socket.disconnect();
    await bobWs.next((f) => f.type === 'presence' && f.user_id === alice.id && f.online === false, 15000, 'Alice offline after her disconnect');
    // For a while after the client's DISCONNECT its sid is answered as
    // closed wherever asked (a poll gets the close packet; socket.io-client's
    // Engine.IO close that follows is answered ok), not 400 unknown sid.
    for (let k = 0; k < 3; k++) {
      const res = await proxy.http('GET', `/socket.io/?EIO=4&transport=polling&sid=${sid}`);
      assert.equal(res.status, 200, `a poll for the closed session, on node ${k}: ${res.text}`);
      assert.equal(res.text, '1', 'the close packet');
      const close = await proxy.http('POST', `/socket.io/?EIO=4&transport=polling&sid=${sid}`, { body: '1', headers: { 'Content-Type': 'text/plain' } });
      assert.equal(close.status, 200, close.text);
      assert.equal(close.text, 'ok');
    }
  });

  it('a polling request for a sid no node owns gets 400 "Session ID unknown", wherever it lands', async () => {
    const open = await proxy.http('GET', '/socket.io/?EIO=4&transport=polling');
    assert.equal(open.status, 200);
    const liveNode = JSON.parse(open.text.slice(1)).sid.split('.')[0];
    const sids = [
      `${liveNode}.00000000-0000-4000-8000-000000000000`,  // a live node, no such session there
      `0123456789abcdef.00000000-0000-4000-8000-000000000000`,  // no such node
      '00000000-0000-4000-8000-000000000000',  // names no node
      'bad sid\nQ1',  // characters no sid has
    ];
    for (const s of sids) {
      for (let k = 0; k < 3; k++) {  // each of the three nodes in turn
        const q = `/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(s)}`;
        const get = await proxy.http('GET', q);
        assert.equal(get.status, 400, `GET ${s}`);
        assert.deepEqual(JSON.parse(get.text), UNKNOWN_SID);
        const post = await proxy.http('POST', q, '40');
        assert.equal(post.status, 400, `POST ${s}`);
        assert.deepEqual(JSON.parse(post.text), UNKNOWN_SID);
      }
    }
  });

  it('the WebSocket upgrade: on the owning node it upgrades, on another it is refused and the client stays on polling', async () => {
    const [alice, bob] = await nodes[0].registerMany(2);
    const thread = await nodes[0].createDirect(alice, bob);
    const bobWs = await nodes[2].connect(bob);
    for (const where of ['other', 'owner']) {
      proxy.upgradeTo = where;
      const c = sioClient(proxy.url, alice.token, { transports: ['polling', 'websocket'] });
      let upgradeError = null;
      c.socket.io.on('open', () => c.socket.io.engine.on('upgradeError', (e) => { upgradeError = e; }));
      await c.connected();
      await c.next('connection_success');
      const sid = c.socket.io.engine.id;
      await waitFor('the upgrade attempt', () => proxy.upgrades.some((u) => u.sid === sid));
      if (where === 'owner') {
        await waitFor('the upgrade', () => c.socket.io.engine.transport.name === 'websocket');
      } else {
        await waitFor('the refused probe', () => upgradeError !== null);
        assert.equal(c.socket.io.engine.transport.name, 'polling', 'still on polling');
      }
      const sent = await bobWs.sendMessage({ thread_id: thread.id, content: `to ${where}` });
      const got = await c.next('new_message', (m) => m.id === sent.id);
      assert.equal(got.content, `to ${where}`);
      const ack = await c.emit('send_message', { thread_id: thread.id, content: `from ${where}`, client_msg_id: `u-${where}` });
      assert.equal(ack.success, true);
      await bobWs.next((f) => f.type === 'new_message' && f.data.id === ack.message.id, 10000, `Alice's message (${where})`);
      c.socket.disconnect();
    }
    proxy.upgradeTo = 'next';
  });

  it('Redis restarted: forwarded requests fail, the client reconnects until Redis is back, and misses nothing', async () => {
    const [alice, bob] = await nodes[0].registerMany(2);
    const thread = await nodes[0].createDirect(alice, bob);
    const bobWs = await nodes[0].connect(bob);
    const c = sioClient(proxy.url, alice.token, { reconnection: true });
    await c.connected();
    await c.next('connection_success');
    const first = await bobWs.sendMessage({ thread_id: thread.id, content: 'before' });
    await c.next('new_message', (m) => m.id === first.id);
    const reasons = [];
    c.socket.on('disconnect', (reason) => reasons.push(reason));
    redis.stopSync();
    const acked = [];
    try {
      await waitFor('the disconnect', () => reasons.length > 0, 20000);
      for (let i = 1; i <= 5; i++) acked.push(await bobWs.sendMessage({ thread_id: thread.id, content: `while down ${i}` }));
    } finally {
      // Also when the above failed: the tests after this one need Redis (a failure
      // to restart is logged, so as not to hide the one that brought us here).
      try { redis.start(); } catch (err) { console.error('restarting Redis failed:', err); }
    }
    for (const node of nodes) {
      const deadline = Date.now() + 30000;
      while (!(await node.http('GET', '/health').catch(() => null))?.body?.bus?.ok) {
        if (Date.now() > deadline) assert.fail(`bus never came back on :${node.port}`);
        await sleep(100);
      }
    }
    await waitFor('a session that lasts', () => c.socket.connected, 30000);
    const after = await bobWs.sendMessage({ thread_id: thread.id, content: 'after' });
    await c.next('new_message', (m) => m.id === after.id, 20000);
    const got = new Set(c.messages(thread.id).map((m) => m.id));
    for (const m of [first, ...acked, after]) assert.ok(got.has(m.id), `message ${m.seq} reached Alice`);
    c.socket.disconnect();
  });

  it('the owner killed while another node holds its long poll: the client is answered, reconnects, and misses nothing', async () => {
    const victim = 2;
    const [alice, bob] = await nodes[0].registerMany(2);
    const thread = await nodes[0].createDirect(alice, bob);
    const bobWs = await nodes[0].connect(bob);
    // The handshake on the victim while it lives; every other request on the two others.
    let other = 0;
    proxy.route = (req, sid) => {
      if (!sid && !proxy.dead.has(victim) && nodes[victim].child) return victim;
      other = (other + 1) % 2;
      return other;
    };
    try {
      const c = sioClient(proxy.url, alice.token, { reconnection: true });
      await c.connected();
      await c.next('connection_success');
      assert.equal(proxy.owners.get(c.socket.io.engine.id), victim);
      const first = await bobWs.sendMessage({ thread_id: thread.id, content: 'before' });
      await c.next('new_message', (m) => m.id === first.id);
      await sleep(1500);  // a long poll is now held on node 0 or 1 for the victim (the ping interval is 25 s)
      const reasons = [];
      c.socket.on('disconnect', (reason) => reasons.push(reason));
      const killedAt = Date.now();
      await nodes[victim].kill9();
      proxy.dead.add(victim);
      // Answered long before the owner's next ping would have come.
      await waitFor('the disconnect', () => reasons.length > 0, 15000);
      assert.ok(Date.now() - killedAt < 15000);
      assert.equal(reasons[0], 'transport error');
      assert.ok([0, 1].some((k) => nodes[k].log.some((l) => l.includes('event=sio_forward_failed') && l.includes('reason=node_gone'))),
        'a node holding the long poll saw its owner gone');
      const acked = [];
      for (let i = 1; i <= 5; i++) acked.push(await bobWs.sendMessage({ thread_id: thread.id, content: `while away ${i}` }));
      await c.next('connection_success', () => true, 20000);  // reconnected, on a live node
      assert.notEqual(proxy.owners.get(c.socket.io.engine.id), victim);
      const after = await bobWs.sendMessage({ thread_id: thread.id, content: 'after' });
      await c.next('new_message', (m) => m.id === after.id, 15000);
      const got = new Set(c.messages(thread.id).map((m) => m.id));
      for (const m of [first, ...acked, after]) assert.ok(got.has(m.id), `message ${m.seq} reached Alice`);
      c.socket.disconnect();
    } finally {
      proxy.route = null;
    }
  });
});
