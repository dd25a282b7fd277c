// WebSocket authentication: token in the query, in the Authorization header,
// or in a first `auth` frame; what happens with bad, expired or missing tokens.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, mintToken, newUuid, randomId, assertWsError } from './harness.mjs';

describe('WebSocket authentication', () => {
  let server, alice, bob;
  before(async () => {
    server = await startServer();
    [alice, bob] = await server.registerMany(2);
  });
  after(async () => { await server?.stop(); });

  function assertEstablished(frame, user) {
    assert.equal(frame.type, 'connection_established');
    assert.equal(frame.user_id, user.id, 'user_id is the token subject');
    assert.equal(typeof frame.session_id, 'string', 'session_id is a string');
    assert.ok(frame.session_id.length > 0, 'session_id is not empty');
    assert.ok(frame.timestamp !== undefined && frame.timestamp !== null, 'timestamp present');
    const t = typeof frame.timestamp === 'number' ? frame.timestamp : Date.parse(frame.timestamp);
    assert.ok(Number.isFinite(t), `timestamp is a time: ${frame.timestamp}`);
  }

  it('token in ?token= → connection_established with user_id, session_id, timestamp', async () => {
    const ws = await server.connect(alice, { via: 'query' });
    assertEstablished(ws.established, alice);
    await ws.ping();
  });

  it('token in the Authorization: Bearer header', async () => {
    const ws = await server.connect(alice, { via: 'header' });
    assertEstablished(ws.established, alice);
    await ws.ping();
  });

  it('the Bearer scheme in any case, with one or more spaces before the token (RFC 6750 2.1), on REST and the upgrade', async () => {
    for (const value of [`Bearer  ${alice.token}`, `bearer ${alice.token}`, `BEARER   ${alice.token}`]) {
      const me = await server.http('GET', '/api/users/me', { headers: { Authorization: value } });
      assert.equal(me.status, 200, `${value.slice(0, 12)}: ${me.text}`);
      const ws = await server.connect(alice, { via: 'given headers', headers: { Authorization: value } });
      await ws.ping();
      ws.close();
    }
    for (const value of ['Bearer', 'Bearer   ', `Bearer${alice.token}`]) {
      const me = await server.http('GET', '/api/users/me', { headers: { Authorization: value } });
      assert.equal(me.status, 401, `${value.slice(0, 12)}: ${me.text}`);
    }
  });

  it('token in a first auth frame', async () => {
    const ws = await server.connect(alice, { via: 'frame' });
    assertEstablished(ws.established, alice);
    await ws.ping();
  });

  it('every session has its own session_id', async () => {
    const a = await server.connect(alice);
    const b = await server.connect(alice);
    assert.notEqual(a.established.session_id, b.established.session_id);
  });

  for (const wsPath of ['/ws', '/api/v1/ws/chat', '/']) {
    it(`the same protocol on ${wsPath}`, async () => {
      const aliceWs = await server.connect(alice, { path: wsPath });
      const bobWs = await server.connect(bob, { path: wsPath });
      const m = await aliceWs.sendMessage({ username: bob.username, content: `via ${wsPath}` });
      const got = await bobWs.next((f) => f.type === 'new_message' && f.data.id === m.id, 5000, 'new_message');
      assert.equal(got.data.content, `via ${wsPath}`);
    });
  }

  it('a frame before auth (no token at upgrade) → not_authenticated, and auth still works after', async () => {
    const ws = await server.connect(null, { via: 'none' });
    const refused = await ws.request({ type: 'send_message', username: bob.username, content: 'sneaky' });
    assertWsError(assert, refused, 'not_authenticated');
    assert.ok(ws.isOpen, 'still open');
    ws.send({ type: 'auth', token: alice.token, request_id: 'auth-1' });
    const established = await ws.nextOfType('connection_established');
    assertEstablished(established, alice);
    assert.equal(established.request_id, 'auth-1', 'the answer to an auth frame echoes its request_id');
    await ws.ping();
  });

  it('frames sent right behind the auth frame wait for its answer and are handled in order', async () => {
    // Before, the token check ran on a worker and they were refused as not_authenticated.
    const ws = await server.connect(null, { via: 'none' });
    ws.send({ type: 'auth', token: alice.token, request_id: 'auth-2' });
    ws.send({ type: 'ping', request_id: 'p1' });
    ws.send({ type: 'send_message', username: bob.username, content: 'right behind auth', client_msg_id: 'behind-1', request_id: 's1' });
    assertEstablished(await ws.nextOfType('connection_established'), alice);
    const pong = await ws.next((f) => f.request_id === 'p1', 5000, 'the ping\'s answer');
    assert.equal(pong.type, 'pong');
    const sent = await ws.next((f) => f.request_id === 's1', 5000, 'the send\'s answer');
    assert.equal(sent.type, 'message_sent', JSON.stringify(sent));
    assert.equal(sent.data.content, 'right behind auth');
    await ws.expectNone((f) => f.type === 'error', 300, 'an error');
  });

  describe('bad tokens at upgrade → HTTP 401', () => {
    const cases = () => {
      const past = Math.floor(Date.now() / 1000) - 600;
      return [
        ['garbage', 'garbage-token'],
        ['wrong signature', mintToken('not-the-secret', { sub: alice.id })],
        ['alg none', mintToken(server.secret, { sub: alice.id }, { alg: 'none' })],
        ['expired', mintToken(server.secret, { sub: alice.id, iat: past - 60, exp: past })],
        ['not yet valid', mintToken(server.secret, { sub: alice.id, nbf: Math.floor(Date.now() / 1000) + 3600 })],
        ['unknown sub without a profile', mintToken(server.secret, { sub: newUuid() })],
      ];
    };
    for (const via of ['query', 'header']) {
      it(`in the ${via}`, async () => {
        for (const [name, token] of cases()) {
          const headers = via === 'header' ? { Authorization: `Bearer ${token}` } : {};
          const urlPath = via === 'query' ? `/ws?token=${encodeURIComponent(token)}` : '/ws';
          const result = await server.tryUpgrade(urlPath, { headers });
          if (result.opened) result.client.terminate();
          assert.equal(result.status, 401, `${name} token in the ${via}: expected HTTP 401, got ${result.opened ? 'an open WebSocket' : result.status}`);
        }
      });
    }
  });

  it('a bad auth frame → error invalid_token, then close 4401', async () => {
    const ws = await server.connect(null, { via: 'none' });
    ws.send({ type: 'auth', token: 'garbage', request_id: 'a1' });
    const err = await ws.nextOfType('error');
    assertWsError(assert, err, 'invalid_token');
    assert.equal(err.request_id, 'a1', 'request_id echoed');
    const { code } = await ws.waitClose(5000);
    assert.equal(code, 4401, 'close code 4401');
  });

  it('an expired token in the auth frame → error then close 4401', async () => {
    const ws = await server.connect(null, { via: 'none' });
    const past = Math.floor(Date.now() / 1000) - 600;
    ws.send({ type: 'auth', token: mintToken(server.secret, { sub: alice.id, iat: past - 60, exp: past }) });
    const err = await ws.nextOfType('error');
    assert.equal(err.type, 'error');
    assert.ok(['invalid_token', 'token_expired'].includes(err.code), `code ${err.code}`);
    assert.equal((await ws.waitClose(5000)).code, 4401);
  });

  it('no auth within 10 s → close 4408', async () => {
    const ws = await server.connect(null, { via: 'none' });
    const started = Date.now();
    const { code } = await ws.waitClose(15000);
    const waited = Date.now() - started;
    assert.equal(code, 4408, 'close code 4408');
    assert.ok(waited >= 9000, `closed after ${waited} ms, not before ~10 s`);
  });

  it('auth on an open connection renews the token and keeps the session working', async () => {
    const ws = await server.connect(alice);
    const fresh = mintToken(server.secret, { sub: alice.id });
    ws.send({ type: 'auth', token: fresh });
    await ws.ping();
    assert.ok(ws.isOpen, 'still open after renewing');
    const m = await ws.sendMessage({ username: bob.username, content: 'after renewal' });
    assert.equal(m.sender_id, alice.id);
  });

  it("renewing with another user's token never turns the connection into that user", async () => {
    const ws = await server.connect(alice);
    ws.send({ type: 'auth', token: bob.token, request_id: 'renew-as-bob' });
    await ws.ping().catch(() => {});
    assert.ok(!ws.all((f) => f.type === 'connection_established').some((f) => f.user_id === bob.id),
      'no connection_established for Bob');
    const refusal = ws.all((f) => f.type === 'error' && f.code === 'invalid_token');
    assert.ok(refusal.every((f) => f.request_id === 'renew-as-bob'), `the refusal echoes request_id: ${JSON.stringify(refusal)}`);
    // The renewal is checked off the event loop, so the 4401 close may come
    // before or after this request's reply: either is fine, becoming Bob is not.
    if (ws.isOpen) {
      let r;
      try {
        r = await ws.request({ type: 'send_message', username: alice.username, content: 'who am I' });
      } catch (e) {
        assert.match(String(e.message), /4401/, 'closed only by the refused renewal');
        return;
      }
      assert.equal(r.code, 'invalid_recipient', `still Alice: a DM to Alice is a DM to herself (got ${JSON.stringify(r).slice(0, 200)})`);
    }
  });

  it('a provider token for an unknown sub with a profile provisions the user', async () => {
    const sub = newUuid();
    const token = mintToken(server.secret, {
      sub, email: `p_${randomId(4)}@example.invalid`, role: 'authenticated',
      user_metadata: { full_name: 'Provided Person', role: 'parent' },
    });
    const ws = await server.connect(token);
    assert.equal(ws.established.user_id, sub, 'the user id is the token sub');
    const me = await server.http('GET', '/api/users/me', { token });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.body.data.id, sub);
    assert.equal(me.body.data.full_name, 'Provided Person');
    assert.equal(me.body.data.role, 'parent');
  });

  it('a provider\'s user made ahead with `parley user add --id` can be messaged before their first token, and that token is theirs', async () => {
    const sub = newUuid();
    const username = `pre_${randomId(4)}`;
    await server.cli(['user', 'add', '--id', sub.toUpperCase(), '--username', username, '--full-name', 'Pre Made', '--role', 'parent']);
    const alice = await server.register();
    const a = await server.connect(alice);
    const sent = await a.request({ type: 'send_message', username, content: 'waiting for you', client_msg_id: randomId() });
    assert.equal(sent.type, 'message_sent', JSON.stringify(sent));
    // Their first token, from the provider: no profile needed, the account exists.
    const token = mintToken(server.secret, { sub, role: 'authenticated' });
    const me = await server.http('GET', '/api/users/me', { token });
    assert.equal(me.status, 200, me.text);
    assert.deepEqual([me.body.data.id, me.body.data.username, me.body.data.full_name], [sub, username, 'Pre Made']);
    const inbox = await server.http('GET', `/api/chat/threads/${sent.data.thread_id}/messages`, { token });
    assert.deepEqual(inbox.body.data.messages.map((m) => m.content), ['waiting for you']);
    // No password: no password sign-in.
    const login = await server.http('POST', '/api/auth/login', { body: { username, password: '' } });
    assert.equal(login.status, 401, login.text);
    // The id is taken now; and --password stays required without --id.
    await assert.rejects(server.cli(['user', 'add', '--id', sub, '--username', `${username}2`, '--full-name', 'Again']),
      (e) => /user_exists/.test(e.stderr));
    await assert.rejects(server.cli(['user', 'add', '--username', `${username}3`, '--full-name', 'No Password']),
      (e) => /--password is required/.test(e.stderr));
  });

  it("an app's first requests at once, with the e-mail's name taken, all succeed as one user", async () => {
    // Each request provisions with its own random suffix to the taken name;
    // the losers of that race must find the winner's user, not answer 409.
    const taken = await server.register();
    for (let round = 0; round < 5; round++) {
      const sub = newUuid();
      const token = mintToken(server.secret, {
        sub, email: `${taken.username}@example.invalid`, role: 'authenticated',
        user_metadata: { full_name: 'Same Name', role: 'parent' },
      });
      const answers = await Promise.all(Array.from({ length: 8 }, () => server.http('GET', '/api/users/me', { token })));
      for (const a of answers) {
        assert.equal(a.status, 200, `round ${round}: ${a.text}`);
        assert.equal(a.body.data.id, sub);
      }
      assert.equal(new Set(answers.map((a) => a.body.data.username)).size, 1, 'one user, one name');
    }
  });

  it('a request for no endpoint answers 404 and provisions nobody, with or without a token', async () => {
    const sub = newUuid();
    const token = mintToken(server.secret, {
      sub, email: `q_${randomId(4)}@example.invalid`, role: 'authenticated',
      user_metadata: { full_name: 'Nobody Yet', role: 'parent' },
    });
    const nowhere = await server.http('GET', '/api/nonexistent/endpoint', { token });
    assert.equal(nowhere.status, 404, nowhere.text);
    assert.equal(nowhere.body.code, 'not_found');
    assert.equal((await server.http('GET', '/api/nonexistent/endpoint')).status, 404, 'without a token too');
    const someone = await server.register();
    const found = await server.http('GET', `/api/users/${sub}`, { token: someone.token });
    assert.equal(found.status, 404, `no user was made for the token's sub: ${found.text}`);
  });
});
