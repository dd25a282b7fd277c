// A table of bad inputs, over WebSocket and REST. Each one must be answered
// with the right error code, leave the database unchanged, and (WebSocket)
// leave the connection open: a ping still gets its pong.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, newUuid, randomId, assertHttpError } from './harness.mjs';

const LONE_SURROGATE = '\\ud800';  // JSON escape text, not a JS string: the server must see it raw

describe('bad inputs are refused with the right code and change nothing', () => {
  let server, alice, bob, carol, dm, group, aliceWs;

  before(async () => {
    server = await startServer();
    [alice, bob, carol] = await server.registerMany(3);
    dm = await server.createDirect(alice, bob);
    group = await server.createGroup(alice, [bob, carol], 'table');
    assert.equal((await server.sendRest(alice.token, dm.id, { content: 'seed' })).status, 201);
    aliceWs = await server.connect(alice);
  });
  after(async () => { await server?.stop(); });

  // Everything a bad input could have changed, as Alice and Bob see it.
  async function snapshot() {
    const out = {};
    for (const [name, user] of [['alice', alice], ['bob', bob], ['carol', carol]]) {
      const res = await server.http('GET', '/api/chat/threads', { token: user.token });
      assert.equal(res.status, 200);
      out[name] = res.body.data.threads
        .map((t) => ({ id: t.id, last_seq: t.last_seq, participants: t.participants.length, last: t.last_message?.id ?? null }))
        .sort((x, y) => x.id.localeCompare(y.id));
    }
    out.dm = (await server.history(alice.token, dm.id)).map((m) => [m.id, m.seq, m.content]);
    out.group = (await server.history(alice.token, group.id)).map((m) => [m.id, m.seq, m.content]);
    return out;
  }

  // ----- WebSocket frames ------------------------------------------------
  // frame: an object (sent as JSON, with a request_id) or a raw string.
  const wsCases = () => [
    { name: 'not JSON at all', raw: 'hello there', code: 'invalid_json' },
    { name: 'truncated JSON', raw: '{"type":"ping"', code: 'invalid_json' },
    { name: 'a JSON array', raw: '[{"type":"ping"}]', code: 'invalid_json' },
    { name: 'a JSON string', raw: '"ping"', code: 'invalid_json' },
    { name: 'a JSON number', raw: '42', code: 'invalid_json' },
    { name: 'JSON null', raw: 'null', code: 'invalid_json' },
    { name: 'JSON nested 5000 deep', raw: `{"type":"ping","x":${'['.repeat(5000)}${']'.repeat(5000)}}`, code: 'invalid_json' },
    // Read as infinity, it would be relayed as `Infinity`, which no client's JSON parser reads.
    { name: 'a number beyond a double in a call payload', raw: (rid) => `{"type":"call_offer","thread_id":"${dm.id}","payload":{"sdp":1e400},"request_id":"${rid}"}`, code: 'invalid_json' },
    { name: 'a request_id beyond a double', raw: '{"type":"ping","request_id":-1e400}', code: 'invalid_json' },
    { name: 'no type', frame: { thread_id: dm.id, content: 'x' }, code: 'missing_field' },
    { name: 'type is a number', frame: { type: 7 }, code: 'invalid_field' },
    { name: 'unknown type', frame: { type: 'launch_rockets' }, code: 'unknown_type' },
    // Quoted back cut to 64 bytes: never inside a character, or the error frame is invalid UTF-8 and the client drops the connection.
    { name: 'unknown type of 81 bytes, a character across byte 64', frame: { type: 'x' + 'é'.repeat(40) }, code: 'unknown_type' },
    { name: 'type is null', frame: { type: null }, code: 'missing_field' },
    { name: 'send_message without content', frame: { type: 'send_message', thread_id: dm.id }, code: 'missing_field' },
    { name: 'send_message without thread_id or username', frame: { type: 'send_message', content: 'x' }, code: 'missing_field' },
    { name: 'thread_id is a number', frame: { type: 'send_message', thread_id: 12345, content: 'x' }, code: 'invalid_field' },
    { name: 'thread_id is not a UUID', frame: { type: 'send_message', thread_id: 'not-a-uuid', content: 'x' }, code: 'invalid_field' },
    { name: 'thread_id is SQL', frame: { type: 'send_message', thread_id: "' OR 1=1 --", content: 'x' }, code: 'invalid_field' },
    { name: 'content is a number', frame: { type: 'send_message', thread_id: dm.id, content: 42 }, code: 'invalid_field' },
    { name: 'content is an object', frame: { type: 'send_message', thread_id: dm.id, content: { text: 'x' } }, code: 'invalid_field' },
    { name: 'empty content', frame: { type: 'send_message', thread_id: dm.id, content: '' }, code: 'empty_content' },
    { name: 'whitespace-only content', frame: { type: 'send_message', thread_id: dm.id, content: ' \n\t  \r\n ' }, code: 'empty_content' },
    { name: 'content of 4001 ASCII characters', frame: { type: 'send_message', thread_id: dm.id, content: 'a'.repeat(4001) }, code: 'content_too_long' },
    { name: 'content of 4001 emoji (code points, not bytes)', frame: { type: 'send_message', thread_id: dm.id, content: '😀'.repeat(4001) }, code: 'content_too_long' },
    { name: 'content with a lone surrogate', raw: (rid) => `{"type":"send_message","thread_id":"${dm.id}","content":"bad ${LONE_SURROGATE} here","request_id":"${rid}"}`, code: 'invalid_utf8' },
    { name: 'a number beyond a double\'s range', raw: (rid) => `{"type":"ping","n":1e400,"request_id":"${rid}"}`, code: 'invalid_json' },
    { name: 'nesting 40 deep', raw: (rid) => `{"type":"ping","request_id":"${rid}","n":${'['.repeat(40)}${']'.repeat(40)}}`, code: 'invalid_json' },
    { name: 'message_type video', frame: { type: 'send_message', thread_id: dm.id, content: 'x', message_type: 'video' }, code: 'invalid_message_type' },
    { name: 'message_type system', frame: { type: 'send_message', thread_id: dm.id, content: 'x', message_type: 'system' }, code: 'invalid_message_type' },
    { name: 'message_type is a number', frame: { type: 'send_message', thread_id: dm.id, content: 'x', message_type: 3 }, code: 'invalid_field' },
    { name: 'client_msg_id is an object', frame: { type: 'send_message', thread_id: dm.id, content: 'x', client_msg_id: { a: 1 } }, code: 'invalid_field' },
    { name: 'unknown thread', frame: { type: 'send_message', thread_id: newUuid(), content: 'x' }, code: 'forbidden' },
    { name: 'unknown username', frame: { type: 'send_message', username: `nobody_${randomId(4)}`, content: 'x' }, code: 'user_not_found' },
    { name: 'SQL as a username', frame: { type: 'send_message', username: "bob' OR '1'='1", content: 'x' }, code: 'user_not_found' },
    { name: 'DM to oneself', frame: { type: 'send_message', username: alice.username, content: 'x' }, code: 'invalid_recipient' },
    { name: 'subscribe_thread without thread_id', frame: { type: 'subscribe_thread' }, code: 'missing_field' },
    { name: 'subscribe_thread with since_seq 1e30', raw: (rid) => `{"type":"subscribe_thread","thread_id":"${dm.id}","since_seq":1e30,"request_id":"${rid}"}`, code: 'invalid_field' },
    { name: 'subscribe_thread with since_seq a string', frame: { type: 'subscribe_thread', thread_id: dm.id, since_seq: 'three' }, code: 'invalid_field' },
    { name: 'mark_as_read with a malformed thread_id', frame: { type: 'mark_as_read', thread_id: 'xyz' }, code: 'invalid_field' },
    { name: 'typing without thread_id', frame: { type: 'typing', is_typing: true }, code: 'missing_field' },
  ];

  it('WebSocket: each bad frame gets its error code, echoes request_id, changes nothing, keeps the connection', async (t) => {
    const cases = wsCases();
    assert.ok(cases.length >= 25, `${cases.length} cases`);
    let i = 0;
    for (const c of cases) {
      i++;
      const rid = `bad-${i}`;
      await t.test(`${c.name} → ${c.code}`, async () => {
        const before = await snapshot();
        let reply;
        if (c.frame) {
          reply = await aliceWs.request({ ...c.frame, request_id: rid });
          assert.equal(reply.request_id, rid, `${c.name}: request_id echoed`);
        } else if (typeof c.raw === 'function') {
          // The reply should echo request_id; accept an un-echoed error too, so that a wrong code is reported as such.
          aliceWs.sendRaw(c.raw(rid));
          reply = await aliceWs.next((f) => f.request_id === rid || (f.type === 'error' && f.request_id === undefined),
            5000, `the reply to ${c.name}`);
          assert.equal(reply.request_id, rid, `${c.name}: request_id echoed (code ${reply.code})`);
        } else {
          aliceWs.sendRaw(c.raw);
          reply = await aliceWs.next((f) => f.type === 'error', 5000, `the error for ${c.name}`);
        }
        assert.equal(reply.type, 'error', `${c.name}: an error frame expected, got ${JSON.stringify(reply).slice(0, 300)}`);
        assert.equal(reply.code, c.code, `${c.name}: error code (message: ${reply.message})`);
        assert.equal(typeof reply.message, 'string', `${c.name}: a human message`);
        assert.ok(aliceWs.isOpen, `${c.name}: the connection stays open`);
        await aliceWs.ping();
        assert.deepEqual(await snapshot(), before, `${c.name}: the database is unchanged`);
      });
    }
    assert.equal(aliceWs.all((f) => f.type === 'message_sent').length, 0, 'no bad frame was stored');
  });

  // docs/protocol.md: request_id is a string or a number. Any other type is
  // refused like a wrong-typed field (the frame is not carried out), never
  // dropped silently; the error cannot echo it, so it has no request_id.
  it('WebSocket: a request_id that is an object, an array or a boolean gets invalid_field and changes nothing', async (t) => {
    for (const [name, rid] of [['an object', { n: 1 }], ['an array', ['r', 1]], ['a boolean', true], ['an empty object', {}]]) {
      await t.test(name, async () => {
        const before = await snapshot();
        const content = `never stored ${randomId(4)}`;
        aliceWs.sendRaw(JSON.stringify({ type: 'send_message', thread_id: dm.id, content, client_msg_id: `rid-${randomId(4)}`, request_id: rid }));
        const reply = await aliceWs.next((f) => f.type === 'error' || (f.type === 'message_sent' && f.data?.content === content),
          5000, `the reply to a request_id that is ${name}`);
        assert.equal(reply.type, 'error', `an error frame, got ${JSON.stringify(reply).slice(0, 300)}`);
        assert.equal(reply.code, 'invalid_field');
        assert.match(reply.message, /request_id/);
        assert.equal(reply.request_id, undefined, 'a request_id of a type the protocol does not allow is not echoed');
        assert.ok(aliceWs.isOpen, 'the connection stays open');
        await aliceWs.ping();
        assert.deepEqual(await snapshot(), before, 'nothing was stored');
      });
    }
    // The allowed types still work, and an explicit null is as good as none.
    const byString = await aliceWs.request({ type: 'ping', request_id: 'p-1' });
    assert.deepEqual([byString.type, byString.request_id], ['pong', 'p-1']);
    const byNumber = await aliceWs.request({ type: 'ping', request_id: 77 });
    assert.deepEqual([byNumber.type, byNumber.request_id], ['pong', 77]);
    aliceWs.sendRaw('{"type":"ping","request_id":null}');
    const byNull = await aliceWs.next((f) => f.type === 'pong' || f.type === 'error', 5000, 'the reply to request_id null');
    assert.equal(byNull.type, 'pong');
  });

  // ----- REST requests ---------------------------------------------------
  const restCases = () => {
    const msgs = `/api/chat/threads/${dm.id}/messages`;
    const tok = alice.token;
    return [
      { name: 'send: body is not JSON', method: 'POST', path: msgs, token: tok, body: 'content=hello', status: 400, code: 'invalid_json' },
      { name: 'send: body is a JSON array', method: 'POST', path: msgs, token: tok, body: '["hello"]', status: 400, code: 'invalid_json' },
      { name: 'send: JSON nested 5000 deep', method: 'POST', path: msgs, token: tok, body: `{"content":"x","y":${'['.repeat(5000)}${']'.repeat(5000)}}`, status: 400, code: 'invalid_json' },
      { name: 'send: empty object', method: 'POST', path: msgs, token: tok, body: {}, status: 400, code: 'missing_field' },
      { name: 'send: empty content', method: 'POST', path: msgs, token: tok, body: { content: '' }, status: 400, code: 'empty_content' },
      { name: 'send: whitespace content', method: 'POST', path: msgs, token: tok, body: { content: '   \n ' }, status: 400, code: 'empty_content' },
      { name: 'send: content is a number', method: 'POST', path: msgs, token: tok, body: { content: 12 }, status: 400, code: 'invalid_field' },
      { name: 'send: 4001 characters', method: 'POST', path: msgs, token: tok, body: { content: 'b'.repeat(4001) }, status: 400, code: 'content_too_long' },
      { name: 'send: message_type system', method: 'POST', path: msgs, token: tok, body: { content: 'x', message_type: 'system' }, status: 400, code: 'invalid_message_type' },
      { name: 'send: message_type gif', method: 'POST', path: msgs, token: tok, body: { content: 'x', message_type: 'gif' }, status: 400, code: 'invalid_message_type' },
      { name: 'send: lone surrogate', method: 'POST', path: msgs, token: tok, body: `{"content":"a ${LONE_SURROGATE} b"}`, status: 400, code: 'invalid_utf8' },
      { name: 'send: raw invalid UTF-8 bytes', method: 'POST', path: msgs, token: tok,
        body: Buffer.concat([Buffer.from('{"content":"bad '), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]), status: 400, code: 'invalid_utf8' },
      { name: 'send: body over the frame limit', method: 'POST', path: msgs, token: tok, body: { content: 'c'.repeat(70 * 1024) }, status: 413, code: 'payload_too_large' },
      { name: 'send: no token', method: 'POST', path: msgs, body: { content: 'x' }, status: 401, code: 'unauthorized' },
      { name: 'send: unknown thread', method: 'POST', path: `/api/chat/threads/${newUuid()}/messages`, token: tok, body: { content: 'x' }, status: 403, code: 'forbidden' },
      { name: 'history: limit 0', method: 'GET', path: `${msgs}?limit=0`, token: tok, status: 400, code: 'invalid_limit' },
      { name: 'history: limit 201', method: 'GET', path: `${msgs}?limit=201`, token: tok, status: 400, code: 'invalid_limit' },
      { name: 'history: limit with SQL', method: 'GET', path: `${msgs}?limit=${encodeURIComponent('10; DROP TABLE messages')}`, token: tok, status: 400, code: 'invalid_limit' },
      { name: 'threads: unknown type', method: 'POST', path: '/api/chat/threads', token: tok, body: { type: 'triangle', participant_ids: [bob.id] }, status: 400, code: 'invalid_field' },
      { name: 'threads: no type', method: 'POST', path: '/api/chat/threads', token: tok, body: { participant_ids: [bob.id] }, status: 400, code: 'missing_field' },
      { name: 'threads: title with control characters', method: 'POST', path: '/api/chat/threads', token: tok, body: { type: 'group', title: 'Class 4B\u0000\u001b[2J', participant_ids: [bob.id] }, status: 400, code: 'invalid_field' },
      { name: 'threads: blank title', method: 'POST', path: '/api/chat/threads', token: tok, body: { type: 'group', title: ' \t ', participant_ids: [bob.id] }, status: 400, code: 'invalid_field' },
      { name: 'threads: participant_ids a string', method: 'POST', path: '/api/chat/threads', token: tok, body: { type: 'group', title: 't', participant_ids: bob.id }, status: 400, code: 'invalid_field' },
      { name: 'path: invalid UTF-8 once decoded', method: 'GET', path: '/api/users/%ff', token: tok, status: 400, code: 'invalid_utf8' },
      { name: 'path: a surrogate once decoded', method: 'GET', path: '/api/chat/threads/%ed%a0%80/messages', token: tok, status: 400, code: 'invalid_utf8' },
      { name: 'search: invalid UTF-8 once decoded', method: 'GET', path: '/api/users?search=%FF', token: tok, status: 400, code: 'invalid_utf8' },
      { name: 'threads: unknown username', method: 'POST', path: '/api/chat/threads', token: tok, body: { type: 'direct', usernames: [`ghost_${randomId(4)}`] }, status: 404, code: 'user_not_found' },
      { name: 'participants: non-admin adds', method: 'POST', path: `/api/chat/threads/${group.id}/participants`, token: bob.token, body: { participant_ids: [newUuid()] }, status: 403, code: 'forbidden' },
      { name: 'register: weak password', method: 'POST', path: '/api/auth/register', body: { username: `weak_${randomId(4)}`, password: 'abc', full_name: 'W' }, status: 400, code: 'weak_password' },
      { name: 'register: SQL as username', method: 'POST', path: '/api/auth/register', body: { username: "x'; DROP TABLE users; --", password: 'long-enough-pw', full_name: 'S' }, status: 400, code: 'invalid_username' },
      { name: 'login: SQL as username', method: 'POST', path: '/api/auth/login', body: { username: "admin' OR '1'='1' --", password: "' OR '1'='1" }, status: 401, code: 'invalid_credentials' },
      { name: 'login: password missing', method: 'POST', path: '/api/auth/login', body: { username: alice.username }, status: 400, code: 'missing_field' },
      { name: 'mark-read: no token', method: 'POST', path: `/api/chat/mark-read/${dm.id}`, status: 401, code: 'unauthorized' },
    ];
  };

  it('REST: each bad request gets its status and code and changes nothing', async (t) => {
    const cases = restCases();
    assert.ok(cases.length >= 25, `${cases.length} cases`);
    for (const c of cases) {
      await t.test(`${c.name} → ${c.status} ${c.code}`, async () => {
        const before = await snapshot();
        const res = await server.http(c.method, c.path, { token: c.token, body: c.body });
        assertHttpError(assert, res, c.status, c.code, c.name);
        assert.deepEqual(await snapshot(), before, `${c.name}: the database is unchanged`);
      });
    }
    // The refused registrations created no user.
    const weak = cases.find((c) => c.name === 'register: weak password');
    const login = await server.http('POST', '/api/auth/login', { body: { username: weak.body.username, password: weak.body.password } });
    assert.equal(login.status, 401, 'the refused registration created no account');
  });

  // ----- SQL-looking strings that are valid input ------------------------
  it('REST: an error quoting the client\'s text is valid UTF-8 when the quote is cut', async () => {
    const ghost = 'x' + 'é'.repeat(40);  // 81 bytes: a cut at byte 64 falls inside a character
    const res = await server.http('POST', '/api/chat/threads', { token: alice.token, body: { type: 'direct', usernames: [ghost] } });
    assertHttpError(assert, res, 404, 'user_not_found');
    assert.ok(!res.text.includes('\uFFFD'), `the body is valid UTF-8: ${res.text}`);
    assert.ok(res.body.message.includes('x' + 'é'.repeat(31)), res.body.message);
  });

  it('SQL-looking content is stored and returned verbatim, never interpreted', async () => {
    const samples = [
      "'; DROP TABLE messages; --",
      "Robert'); DROP TABLE users;--",
      "1' OR '1'='1",
      'SELECT * FROM users WHERE 1=1; -- "quoted"',
      "%' UNION SELECT password_hash FROM users --",
    ];
    const bobWs = await server.connect(bob);
    const ids = [];
    for (const content of samples) {
      const m = await aliceWs.sendMessage({ thread_id: dm.id, content });
      assert.equal(m.content, content, 'message_sent content verbatim');
      const live = await bobWs.next((f) => f.type === 'new_message' && f.data.id === m.id, 5000, 'live copy');
      assert.equal(live.data.content, content, 'new_message content verbatim');
      ids.push(m.id);
    }
    const history = await server.history(bob.token, dm.id);
    const stored = history.filter((m) => ids.includes(m.id)).map((m) => m.content);
    assert.deepEqual(stored, samples, 'history returns them verbatim');
    // The tables are all still there: everything keeps working.
    assert.equal((await server.http('GET', '/api/users/me', { token: bob.token })).status, 200);
    assert.equal((await server.sendRest(bob.token, dm.id, { content: 'still alive' })).status, 201);
  });

  it('a SQL-looking search matches nothing instead of everything', async () => {
    for (const q of ["' OR '1'='1", "%' OR 1=1 --", '%']) {
      const res = await server.http('GET', `/api/users?search=${encodeURIComponent(q)}`, { token: alice.token });
      assert.equal(res.status, 200, `search ${q}: ${res.text}`);
      assert.ok(Array.isArray(res.body.data.users));
      assert.ok(!res.body.data.users.some((u) => [bob.id, carol.id].includes(u.id)), `search ${JSON.stringify(q)} does not return everyone`);
    }
  });

  it('content of exactly 4000 code points (emoji) is accepted and kept intact', async () => {
    const content = '😀'.repeat(4000);
    const m = await aliceWs.sendMessage({ thread_id: dm.id, content });
    assert.equal(m.content, content);
    const [stored] = (await server.http('GET', `/api/chat/threads/${dm.id}/messages?limit=1`, { token: bob.token })).body.data.messages;
    assert.equal(stored.content, content, 'stored intact');
  });
});
