// HTTP rough edges (issue 8): a WebSocket path without an upgrade answers 426
// with a hint, a non-JSON body is called a body, the mark-read reply has the
// read state in data and exactly the contract's top-level fields, a client
// that expects 100-continue is told to go on at once, and
// --registration closed refuses POST /api/auth/register (not `parley user add`).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, assertHttpError, HOST } from './harness.mjs';

describe('HTTP rough edges', () => {
  let server, alice, bob, dm;
  before(async () => {
    server = await startServer();
    [alice, bob] = await server.registerMany(2);
    dm = await server.createDirect(alice, bob);
  });
  after(async () => { await server?.stop(); });

  it('GET on a WebSocket path without an upgrade is 426 with a hint', async () => {
    for (const path of ['/ws', '/ws/', '/api/v1/ws/chat']) {
      const res = await server.http('GET', path);
      assertHttpError(assert, res, 426, 'upgrade_required', path);
      assert.equal(res.headers.upgrade, 'websocket', 'a 426 names the protocol to upgrade to');
      assert.match(res.body.message, /WebSocket/);
    }
  });

  // RFC 3986: %2F is data inside a segment. Decoding it into a separator
  // would route /api%2Fusers%2Fme past a proxy rule on /api/users/.
  it('an encoded slash splits no path segment: it names no route', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    assert.equal((await server.http('GET', '/api/users/%6De', { token: alice.token })).status, 200, 'other escapes decode');
    const me = await server.http('GET', '/api%2Fusers%2Fme', { token: alice.token });
    assertHttpError(assert, me, 404, 'not_found', '/api%2Fusers%2Fme');
    const history = await server.http('GET', `/api/chat/threads/${thread.id}%2Fmessages`, { token: alice.token });
    assert.notEqual(history.status, 200, `${history.status} ${history.text}`);
    assert.ok(history.body?.error || history.body?.code || history.body?.status === 'error', history.text);
  });

  it('a form-encoded login is told its body is not valid JSON', async () => {
    const res = await server.http('POST', '/api/auth/login', {
      body: 'username=alice&password=x', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    assertHttpError(assert, res, 400, 'invalid_json');
    assert.match(res.body.message, /^body is not valid JSON/);
  });

  it('a POST with Expect: 100-continue gets 100 Continue at once, then its answer', async () => {
    const group = await server.createGroup(alice, [bob], 'expect');
    const body = JSON.stringify({ content: 'c'.repeat(2000), client_msg_id: 'expect-1' });
    const started = Date.now();
    const result = await new Promise((resolve, reject) => {
      const req = http.request({
        host: HOST, port: server.port, method: 'POST', path: `/api/chat/threads/${group.id}/messages`, agent: false,
        headers: { Authorization: `Bearer ${alice.token}`, 'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(body), Expect: '100-continue' },
      }, (res) => {
        let text = '';
        res.on('data', (c) => { text += c; });
        res.on('end', () => resolve({ status: res.statusCode, text, continuedAfter }));
      });
      let continuedAfter = null;
      // curl waits 1 s for the 100 before it sends anyway; this client never
      // sends without it, and gives up after 3 s (measured from before the
      // connect, so a loaded machine's slow connect is counted too): a server
      // that does not answer Expect at all fails here.
      const timer = setTimeout(() => req.destroy(new Error('no 100 Continue within 3000 ms')), 3000);
      req.on('continue', () => {
        clearTimeout(timer);
        continuedAfter = Date.now() - started;
        req.end(body);
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    assert.equal(result.status, 201, result.text);
    assert.ok(result.continuedAfter < 3000, `100 Continue after ${result.continuedAfter} ms`);
  });

  it('mark-read: data holds the read state; top level is status, data, thread_id, user_id', async () => {
    assert.equal((await server.sendRest(alice.token, dm.id, { content: 'hi' })).status, 201);
    const res = await server.http('POST', `/api/chat/mark-read/${dm.id}`, { token: bob.token });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(Object.keys(res.body).sort(), ['data', 'status', 'thread_id', 'user_id']);
    assert.equal(res.body.thread_id, dm.id);
    assert.equal(res.body.user_id, bob.id);
    assert.deepEqual(res.body.data, { thread_id: dm.id, user_id: bob.id, last_read_seq: 1 });
  });
});

describe('--registration closed', () => {
  let server;
  before(async () => { server = await startServer({ args: ['--registration', 'closed'] }); });
  after(async () => { await server?.stop(); });

  it('refuses POST /api/auth/register with 403 registration_closed; user add still works', async () => {
    const res = await server.http('POST', '/api/auth/register', { body: { username: 'newbie', password: 'a-good-password', full_name: 'N' } });
    assertHttpError(assert, res, 403, 'registration_closed');
    await server.cli(['user', 'add', '--username', 'admin_made', '--password', 'a-good-password', '--full-name', 'A']);
    const login = await server.http('POST', '/api/auth/login', { body: { username: 'admin_made', password: 'a-good-password' } });
    assert.equal(login.status, 200, login.text);
  });

  it('PARLEY_REGISTRATION=sometimes is refused at start', async () => {
    await assert.rejects(startServer({ env: { PARLEY_REGISTRATION: 'sometimes' } }));
  });
});
