// Hostile input found by probing (issue 8, items 3-9): each case failed before
// its fix. Password hashing never delays reads, registration and failed
// logins are limited per address exactly, out-of-range seqs are refused the
// same way over WebSocket and REST and never mute delivery, absurd token
// expiries are invalid everywhere, a bad `auth` frame closes 4401, provider
// profiles are cleaned like registration's, and two different tokens on one
// upgrade are refused.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, mintToken, newUuid, randomId, assertHttpError, assertWsError } from './harness.mjs';

const INT64_MAX = '9223372036854775807';
const MAX_SEQ = 2 ** 53 - 1;

describe('password hashing runs on its own pool', () => {
  let server, alice, bob, dm;
  before(async () => {
    server = await startServer({ args: ['--login-failures-per-address', '100000', '--login-failures-per-account', '100000'] });
    [alice, bob] = await server.registerMany(2);
    dm = await server.createDirect(alice, bob);
    assert.equal((await server.sendRest(alice.token, dm.id, { content: 'hello' })).status, 201);
  });
  after(async () => { await server?.stop(); });

  it('a burst of logins does not queue reads and /health behind it', async () => {
    const order = [];
    const logins = [];
    for (let i = 0; i < 24; i++) {
      logins.push(server.http('POST', '/api/auth/login', { body: { username: `nobody_${i}_${randomId(3)}`, password: 'wrong-password' }, timeoutMs: 60000 })
        .then((res) => { order.push('login'); return res; }));
    }
    // Let the burst reach the server first.
    await new Promise((r) => setTimeout(r, 50));
    const health = server.http('GET', '/health', { timeoutMs: 60000 }).then((res) => { order.push('health'); return res; });
    const read = server.http('GET', `/api/chat/threads/${dm.id}/messages`, { token: alice.token, timeoutMs: 60000 })
      .then((res) => { order.push('read'); return res; });
    const [h, r] = await Promise.all([health, read]);
    const results = await Promise.all(logins);
    assert.equal(h.status, 200);
    assert.equal(r.status, 200);
    for (const res of results) assert.ok([401, 503].includes(res.status), `login answered ${res.status}`);
    // Ordering, not speed: both answered well before the hashing finished (on
    // one shared pool they would queue behind all 24; the margin absorbs a
    // loaded CI machine).
    for (const what of ['health', 'read']) {
      const loginsBefore = order.slice(0, order.indexOf(what)).length;
      assert.ok(loginsBefore < 18, `${what} waited for ${loginsBefore} of 24 logins (order: ${order.join(',')})`);
    }
  });
});

describe('per-address limits are exact under concurrency', () => {
  let server;
  before(async () => {
    server = await startServer({
      args: ['--login-failures-per-address', '5'],
      env: { PARLEY_REGISTRATIONS_PER_ADDRESS: '3' },
    });
  });
  after(async () => { await server?.stop(); });

  it('10 concurrent registrations from one address: exactly 3 are created', async () => {
    const names = Array.from({ length: 10 }, (_, i) => `reg_${i}_${randomId(3)}`);
    const results = await Promise.all(names.map((username) => server.http('POST', '/api/auth/register',
      { body: { username, password: 'a-good-password', full_name: 'R' }, timeoutMs: 60000 })));
    const created = results.filter((r) => r.status === 201);
    const limited = results.filter((r) => r.status === 429);
    assert.equal(created.length, 3, results.map((r) => r.status).join(','));
    assert.equal(limited.length, 7);
    for (const r of limited) assertHttpError(assert, r, 429, 'rate_limited');
    // The refused ones do not exist.
    const token = created[0].body.data.token;
    for (const [i, r] of results.entries()) {
      if (r.status !== 429) continue;
      const found = await server.http('GET', `/api/users?search=${names[i]}`, { token });
      assert.equal(found.body.data.users.length, 0, `${names[i]} was created`);
    }
  });

  it('12 concurrent failed logins from one address with a limit of 5: exactly 5 are tried', async () => {
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => server.http('POST', '/api/auth/login',
      { body: { username: `ghost_${i}_${randomId(3)}`, password: 'nope-nope' }, timeoutMs: 60000 })));
    const statuses = results.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 401).length, 5, statuses.join(','));
    assert.equal(statuses.filter((s) => s === 429).length, 7, statuses.join(','));
    // A client can say when to try again: at most the window (15 minutes).
    const refused = results.find((r) => r.status === 429);
    assert.equal(refused.headers['retry-after'], '900');
    assert.match(refused.body.message, /try again in at most 15 minutes/);
  });

  it('another address has a count of its own (the server reads each peer address)', async () => {
    const login = (localAddress) => server.http('POST', '/api/auth/login',
      { body: { username: `ghost_${randomId(4)}`, password: 'nope-nope' }, localAddress });
    assert.equal((await login('127.0.0.1')).status, 429, '127.0.0.1 used up its 5 failures above');
    assert.equal((await login('127.0.0.2')).status, 401);
  });
});

describe('hostile values over WebSocket and REST', () => {
  let server, alice, bob, dm;
  before(async () => {
    server = await startServer();
    [alice, bob] = await server.registerMany(2);
    dm = await server.createDirect(alice, bob);
    assert.equal((await server.sendRest(bob.token, dm.id, { content: 'one' })).status, 201);
  });
  after(async () => { await server?.stop(); });

  it('since_seq beyond 2^53-1 is refused over WebSocket like after_seq over REST, and never mutes delivery', async () => {
    const ws = await server.connect(alice);
    const reply = await ws.requestRaw(`{"type":"subscribe_thread","thread_id":"${dm.id}","since_seq":${INT64_MAX},"request_id":"big"}`, 'big');
    assertWsError(assert, reply, 'invalid_field', 'since_seq 2^63-1');
    const over = await ws.request({ type: 'subscribe_thread', thread_id: dm.id, since_seq: MAX_SEQ + 1 });
    assertWsError(assert, over, 'invalid_field', 'since_seq 2^53');
    for (const value of [INT64_MAX, String(MAX_SEQ + 1)]) {
      const res = await server.http('GET', `/api/chat/threads/${dm.id}/messages?after_seq=${value}`, { token: alice.token });
      assertHttpError(assert, res, 400, 'invalid_field', `after_seq=${value}`);
    }
    // The largest allowed value is accepted by both and mutes nothing.
    const ok = await ws.request({ type: 'subscribe_thread', thread_id: dm.id, since_seq: MAX_SEQ });
    assert.equal(ok.type, 'thread_subscribed', JSON.stringify(ok));
    const rest = await server.http('GET', `/api/chat/threads/${dm.id}/messages?after_seq=${MAX_SEQ}`, { token: alice.token });
    assert.equal(rest.status, 200);
    assert.deepEqual(rest.body.data.messages, []);
    // Live delivery on this connection still works.
    const sent = await server.sendRest(bob.token, dm.id, { content: 'after the big since_seq' });
    assert.equal(sent.status, 201);
    const live = await ws.next((f) => f.type === 'new_message' && f.data.id === sent.body.data.id, 5000, 'the live message');
    assert.equal(live.data.content, 'after the big since_seq');
    ws.close();
  });

  it('a token with exp at 2^63 or 1e300 is invalid over REST, the upgrade and the auth frame', async () => {
    for (const exp of [2 ** 63, 1e300]) {
      const token = mintToken(server.secret, { sub: alice.id, exp });
      assertHttpError(assert, await server.http('GET', '/api/users/me', { token }), 401, 'invalid_token', `REST exp=${exp}`);
      const up = await server.tryUpgrade(`/ws?token=${encodeURIComponent(token)}`);
      assert.equal(up.opened, undefined, `upgrade with exp=${exp} opened`);
      assert.equal(up.status, 401);
      const ws = await server.connect(null, { via: 'none' });
      ws.send({ type: 'auth', token, request_id: 'a' });
      const err = await ws.next((f) => f.type === 'error', 5000, 'the auth error');
      assert.equal(err.code, 'invalid_token');
      assert.equal((await ws.waitClose()).code, 4401);
    }
  });

  it('a bad auth frame (no token, non-string, over-long) gets an error, then close 4401', async () => {
    const frames = [
      { type: 'auth' },
      { type: 'auth', token: 12345 },
      { type: 'auth', token: 'x'.repeat(9000) },
    ];
    for (const frame of frames) {
      const ws = await server.connect(null, { via: 'none' });
      ws.send({ ...frame, request_id: 'bad' });
      const err = await ws.next((f) => f.type === 'error', 5000, 'the error');
      assert.ok(['missing_field', 'invalid_field'].includes(err.code), err.code);
      const closed = await ws.waitClose();
      assert.equal(closed.code, 4401, `after ${JSON.stringify(frame).slice(0, 60)}`);
    }
    // Also on an authenticated connection.
    const ws = await server.connect(alice);
    ws.send({ type: 'auth', request_id: 'renew' });
    assertWsError(assert, await ws.next((f) => f.type === 'error'), 'missing_field');
    assert.equal((await ws.waitClose()).code, 4401);
  });

  it('a provider profile is cleaned like registration: full_name cut to 200 bytes, control characters dropped', async () => {
    const long = mintToken(server.secret, { sub: newUuid(), user_metadata: { full_name: 'é'.repeat(2500), role: 'r'.repeat(500) } });
    const a = await server.http('GET', '/api/users/me', { token: long });
    assert.equal(a.status, 200, a.text);
    assert.ok(Buffer.byteLength(a.body.data.full_name) <= 200, `full_name has ${Buffer.byteLength(a.body.data.full_name)} bytes`);
    assert.equal(a.body.data.full_name, 'é'.repeat(100));
    assert.ok(a.body.data.role.length <= 64);
    const nul = mintToken(server.secret, { sub: newUuid(), email: 'nul@example.com', user_metadata: { full_name: 'Ada\u0000 Love\u0007lace' } });
    const b = await server.http('GET', '/api/users/me', { token: nul });
    assert.equal(b.status, 200, b.text);
    assert.equal(b.body.data.full_name, 'Ada Lovelace');
    // Registration refuses the same text outright.
    const reg = await server.http('POST', '/api/auth/register', { body: { username: `n_${randomId(3)}`, password: 'a-good-password', full_name: 'Ada\u0000' } });
    assertHttpError(assert, reg, 400, 'invalid_field');
  });

  it('an upgrade whose ?token= and Authorization header differ is refused with 400', async () => {
    const up = await server.tryUpgrade(`/ws?token=${encodeURIComponent(alice.token)}`, { headers: { Authorization: `Bearer ${bob.token}` } });
    assert.equal(up.opened, undefined, 'the upgrade opened');
    assert.equal(up.status, 400);
    // The same token twice is fine.
    const same = await server.tryUpgrade(`/ws?token=${encodeURIComponent(alice.token)}`, { headers: { Authorization: `Bearer ${alice.token}` } });
    assert.equal(same.opened, true);
    same.client.close();
  });
});
