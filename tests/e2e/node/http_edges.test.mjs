// HTTP rough edges (issue 8): a WebSocket path without an upgrade answers 426
// with a hint, a non-JSON body is called a body, the mark-read reply has the
// read state in data and exactly the contract's top-level fields, and
// --registration closed refuses POST /api/auth/register (not `parley user add`).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, assertHttpError } from './harness.mjs';

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

  it('a form-encoded login is told its body is not valid JSON', async () => {
    const res = await server.http('POST', '/api/auth/login', {
      body: 'username=alice&password=x', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    assertHttpError(assert, res, 400, 'invalid_json');
    assert.match(res.body.message, /^body is not valid JSON/);
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
