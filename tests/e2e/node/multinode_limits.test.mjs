// Three `parley` nodes on one PostgreSQL and one Redis share the limits of
// CONTRACT section 5 and presence: the per-user connection limit and the
// failed-login limit count across nodes, and a node cut off from Redis for
// longer than its heartbeat (3 s), a Redis that hangs, or a Redis restart,
// leaves its users online at the other nodes once Redis is back. Node 3 reaches Redis through a TCP
// proxy the test can cut, so it alone loses Redis while the others keep it.
//
// Needs Debian's postgresql (tests/db/pg.sh) and redis-server
// (scripts/redis-test.sh); skipped when either is missing.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { randomId, sleep } from './harness.mjs';
import { Cluster, CuttableProxy, clusterSkip as skip, waitBus as waitHealth } from './cluster.mjs';

// A WebSocket connection expected to be refused by the per-user limit: how it ended.
async function refused(node, user) {
  const attempt = await node.tryUpgrade(`/ws?token=${encodeURIComponent(user.token)}`);
  assert.ok(attempt.opened, `the upgrade itself is accepted (HTTP ${attempt.status})`);
  const ws = attempt.client;
  const info = await ws.waitClose(5000);
  return {
    code: info.code,
    error: ws.all((f) => f.type === 'error').map((f) => f.code),
    established: ws.all((f) => f.type === 'connection_established').length,
  };
}
const REFUSED = { code: 4429, error: ['too_many_connections'], established: 0 };

async function onlineIn(node, viewer, userId) {
  const threads = await node.http('GET', '/api/chat/threads', { token: viewer.token });
  for (const t of threads.body.data.threads) {
    const p = t.participants.find((x) => x.user_id === userId);
    if (p) return p.online;
  }
  return undefined;
}

async function eventually(cond, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await sleep(100);
  }
  assert.fail(`${what} within ${timeoutMs} ms`);
}

describe('three nodes share the connection and login limits and presence through Redis', { skip }, () => {
  const cluster = new Cluster({ secret: `multinode-limits-${randomId(16)}` });
  let redis;
  let proxy;
  let nodes = [];

  before(async () => {
    await cluster.start({ size: 2 });
    ({ redis, nodes } = cluster);
    proxy = await new CuttableProxy(redis.port).start();
    nodes.push(await cluster.startNode({ redisUrl: proxy.url }));
  });
  after(async () => {
    await cluster.stop();
    await proxy?.cut().catch(() => {});
  });
  // Tests that cut the proxy or stop Redis put it back in a `finally`, so that
  // one failing does not fail the tests after it for want of their bus.
  async function restoreBus() {
    if (!proxy.server.listening) await proxy.start().catch(() => {});
    let up = false;
    try { up = redis.cli('ping') === 'PONG'; } catch { /* down */ }
    if (!up) try { redis.start(); } catch (err) { console.error('restoring Redis failed:', err); }
    for (const n of nodes) await waitHealth(n, true, 30000).catch(() => {});
  }

  it('the 21st connection of a user spread over three nodes is refused on every node, as on one node', async () => {
    const user = await nodes[0].register();
    const open = [];
    for (let i = 0; i < 20; i++) open.push(await nodes[i % 3].connect(user));
    for (const node of nodes) assert.deepEqual(await refused(node, user), REFUSED, `the 21st on :${node.port}`);
    for (const c of open) await c.ping();  // the 20 stay open
    // One closes on node 1: there is room for one more, on another node.
    open[0].ws.close();
    await open[0].waitClose();
    await eventually(async () => {
      try {
        open.push(await nodes[2].connect(user, { timeoutMs: 2000 }));
        return true;
      } catch { return false; }
    }, 5000, 'a connection on node 3 once one closed on node 1');
    assert.deepEqual(await refused(nodes[1], user), REFUSED, 'full again');
    for (const c of open) c.ws.close();
  });

  it('25 connections of one user opened at once over three nodes: exactly 20 are established', async () => {
    const user = await nodes[0].register();
    const attempts = await Promise.all(Array.from({ length: 25 }, (_, i) =>
      nodes[i % 3].tryUpgrade(`/ws?token=${encodeURIComponent(user.token)}`)));
    assert.ok(attempts.every((a) => a.opened), 'every upgrade accepted');
    const clients = attempts.map((a) => a.client);
    const outcome = (c) => {
      if (c.all((f) => f.type === 'connection_established').length) return 'established';
      if (c.closeInfo) return 'closed';
      return null;
    };
    await eventually(() => clients.every((c) => outcome(c) !== null), 10000, 'every connection established or closed');
    await sleep(300);  // a late refusal of an established one would show meanwhile
    const established = clients.filter((c) => outcome(c) === 'established' && !c.closeInfo);
    const closed = clients.filter((c) => c.closeInfo);
    assert.equal(established.length, 20, 'the limit, not more');
    assert.equal(closed.length, 5);
    for (const c of closed) assert.equal(c.closeInfo.code, 4429);
    for (const c of clients) c.ws.close();
  });

  it('frames sent right after the open wait for the limit to answer, and are served in order', async () => {
    const user = await nodes[0].register();
    const attempt = await nodes[1].tryUpgrade(`/ws?token=${encodeURIComponent(user.token)}`);
    assert.ok(attempt.opened);
    const ws = attempt.client;
    const replies = [1, 2, 3].map((i) => ws.request({ type: 'ping', request_id: `early-${i}` }));
    for (const r of await Promise.all(replies)) assert.equal(r.type, 'pong', `not refused as unauthenticated: ${JSON.stringify(r)}`);
    const order = ws.all().map((f) => f.type);
    assert.equal(order[0], 'connection_established', `established first: ${order.join(',')}`);
    ws.ws.close();
  });

  it('Socket.IO sessions count too: established after the limiter answers, connect_error past the limit', async () => {
    const user = await nodes[0].register();
    const open = [];
    for (let i = 0; i < 19; i++) open.push(await nodes[i % 3].connect(user));
    const sio = (node) => {
      const socket = io(node.baseUrl, { reconnection: false, forceNew: true, timeout: 5000, transports: ['websocket'], auth: { token: user.token } });
      const events = [];
      socket.onAny((event, ...args) => events.push({ event, data: args[0] }));
      const waitFor = async (event) => {
        const deadline = Date.now() + 5000;
        while (Date.now() < deadline) {
          const found = events.find((e) => e.event === event);
          if (found) return found;
          await sleep(20);
        }
        assert.fail(`no ${event}; got ${events.map((e) => e.event).join(',')}`);
      };
      return { socket, events, waitFor };
    };
    const twentieth = sio(nodes[1]);
    assert.equal((await twentieth.waitFor('connection_success')).data.userId, user.id);
    const pong = await twentieth.socket.timeout(5000).emitWithAck('ping', {});
    assert.equal(pong.success, true, 'events flow once admitted');
    const extra = sio(nodes[2]);
    let connects = 0;
    extra.socket.on('connect', () => { connects += 1; });
    const refusal = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no connect_error within 5 s')), 5000);
      extra.socket.once('connect_error', (e) => { clearTimeout(timer); resolve(e); });
    });
    assert.equal(refusal.data?.code, 'too_many_connections');
    await sleep(200);
    assert.equal(connects, 0, 'a refused session never gets connect');
    assert.deepEqual(extra.events, [], 'no events for a refused session');
    twentieth.socket.disconnect();
    extra.socket.disconnect();
    for (const c of open) c.ws.close();
  });

  it('10 failed logins spread over three nodes lock the account on every node', async () => {
    const [victim, bystander] = await nodes[0].registerMany(2);
    for (let i = 0; i < 10; i++) {
      const res = await nodes[i % 3].http('POST', '/api/auth/login', { body: { username: victim.username, password: `wrong-${i}-password` } });
      assert.equal(res.status, 401, `failure ${i + 1} on node ${(i % 3) + 1}: ${res.text}`);
    }
    for (const node of nodes) {
      const res = await node.http('POST', '/api/auth/login', { body: { username: victim.username, password: victim.password } });
      assert.equal(res.status, 429, `locked on :${node.port} even with the right password: ${res.text}`);
      assert.equal(res.body.code, 'rate_limited');
    }
    const other = await nodes[2].http('POST', '/api/auth/login', { body: { username: bystander.username, password: bystander.password } });
    assert.equal(other.status, 200, 'another account still logs in');
  });

  it("a node cut off from Redis past its heartbeat: its users go offline at the others, and come back online when it is back", async () => {
    const [alice, carol] = await nodes[0].registerMany(2);
    await nodes[0].createDirect(alice, carol);
    const aliceWs = await nodes[0].connect(alice);
    const carolWs = await nodes[2].connect(carol);  // node 3: behind the proxy
    await aliceWs.next((f) => f.type === 'presence' && f.user_id === carol.id && f.online, 5000, 'carol online');

    await proxy.cut();
    try {
      await waitHealth(nodes[2], false);
      await aliceWs.next((f) => f.type === 'presence' && f.user_id === carol.id && !f.online, 15000,
        "carol offline: node 3's heartbeat expired and node 1 or 2 reaped it");
      assert.equal(await onlineIn(nodes[1], alice, carol.id), false);

      await proxy.start();
      await waitHealth(nodes[2], true, 20000);
      await aliceWs.next((f) => f.type === 'presence' && f.user_id === carol.id && f.online, 10000,
        'carol online again: node 3 registered her again and announced it');
      await eventually(async () => (await onlineIn(nodes[1], alice, carol.id)) === true, 5000, 'carol online in listings on node 2');
      await carolWs.ping();
    } finally {
      await restoreBus();
    }
  });

  // The node's presence script and the bus event that announces the user go
  // unanswered; Redis may run the script when it wakes, but the event is lost
  // with the links that carried it, and the other nodes' subscriptions are
  // coming back at the same moment. Two rounds: the user connects early in
  // the hang, and just before the links give up on it (3 s).
  for (const pauseMs of [1500, 2800]) {
    it(`a user who comes online while Redis hangs (${pauseMs} ms in) is announced to a contact on another node once it answers`, async () => {
      const [alice, carol] = await nodes[0].registerMany(2);
      await nodes[0].createDirect(alice, carol);
      const aliceWs = await nodes[0].connect(alice);
      let carolWs;
      redis.pause();
      try {
        await sleep(pauseMs);
        carolWs = await nodes[1].connect(carol);
        await sleep(5000);
      } finally {
        redis.resume();
      }
      try {
        await aliceWs.next((f) => f.type === 'presence' && f.user_id === carol.id && f.online, 15000,
          'carol online at alice, on another node');
        await eventually(async () => (await onlineIn(nodes[0], alice, carol.id)) === true, 5000, 'carol online in listings');
        await carolWs.ping();
      } finally {
        await restoreBus();
      }
    });
  }

  it('Redis restarted: users stay online at the other nodes, and connection counts are back in Redis', async () => {
    const [alice, carol] = await nodes[0].registerMany(2);
    await nodes[0].createDirect(alice, carol);
    await nodes[0].connect(alice);
    await nodes[2].connect(carol);
    const busy = await nodes[0].register();
    for (let i = 0; i < 20; i++) await nodes[i % 3].connect(busy);
    await eventually(async () => (await onlineIn(nodes[1], alice, carol.id)) === true, 5000, 'carol online on node 2');

    redis.stopSync();
    try {
      for (const n of nodes) await waitHealth(n, false);
      await sleep(3500);  // past the 3 s heartbeat
      redis.start();  // empty: no persistence
      for (const n of nodes) await waitHealth(n, true, 30000);
      await eventually(async () => (await onlineIn(nodes[1], alice, carol.id)) === true, 5000,
        'carol (node 3) online in listings on node 2 after the restart');
      await eventually(async () => (await onlineIn(nodes[2], carol, alice.id)) === true, 5000,
        'alice (node 1) online in listings on node 3 after the restart');
      // Each node wrote its counts again, so the 21st is refused on a node that has only 6.
      const counted = () => redis.cli('HVALS', `parley:user-conns:${busy.id}`).split('\n').filter(Boolean)
        .reduce((sum, v) => sum + Number(v), 0);
      await eventually(() => counted() === 20, 5000, 'the 20 connections counted in Redis again');
      assert.deepEqual(await refused(nodes[2], busy), REFUSED, 'the 21st after the restart');
    } finally {
      await restoreBus();
    }
  });
});
