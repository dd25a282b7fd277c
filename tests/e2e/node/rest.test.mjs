// The HTTP API of docs/protocol.md, endpoint by endpoint.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, randomId, mintToken, assertHttpError, assertMessageShape, UUID_RE, ISO_RE,
} from './harness.mjs';

const randomPhone = () => `+1555${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;

describe('REST API', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  describe('public endpoints', () => {
    it('GET / answers text/plain "Parley chat server running"', async () => {
      const res = await server.http('GET', '/', { headers: { Accept: 'text/plain' } });
      assert.equal(res.status, 200);
      assert.match(res.headers['content-type'] || '', /^text\/plain/, 'content-type');
      assert.match(res.text, /Parley chat server running/);
    });

    it('GET /health answers JSON with status, version, uptime, counts, storage and bus state', async () => {
      const res = await server.http('GET', '/health');
      assert.equal(res.status, 200);
      assert.match(res.headers['content-type'] || '', /application\/json/);
      assert.ok(res.body && typeof res.body === 'object', `JSON body expected, got ${res.text}`);
      assert.ok('status' in res.body, 'a top-level status field');
      const flat = JSON.stringify(res.body);
      for (const word of ['version', 'uptime', 'connection', 'user', 'storage', 'bus']) {
        assert.ok(flat.includes(word), `/health mentions ${word}: ${flat}`);
      }
    });

    it('GET /metrics answers Prometheus text with parley_connections', async () => {
      const res = await server.http('GET', '/metrics');
      assert.equal(res.status, 200);
      assert.match(res.headers['content-type'] || '', /^text\/plain/);
      assert.match(res.text, /^parley_connections(\{[^}]*\})? \d+(\.\d+)?$/m, 'a parley_connections sample');
      assert.match(res.text, /^# TYPE parley_connections (gauge|counter)$/m, 'a TYPE line for it');
    });

    it('an unknown path is a JSON 404 not_found', async () => {
      const [alice] = await server.registerMany(1);
      const res = await server.http('GET', '/api/chat/no-such-endpoint', { token: alice.token });
      assertHttpError(assert, res, 404, 'not_found');
    });
  });

  describe('register and login', () => {
    it('register answers 201 with token, user and an ISO 8601 expires_at', async () => {
      const username = `u_${randomId(5)}`;
      const phone = randomPhone();
      const res = await server.http('POST', '/api/auth/register', {
        body: { username, password: 'long-enough-pw', full_name: 'Ada Lovelace', role: 'teacher', phone_number: phone },
      });
      assert.equal(res.status, 201, res.text);
      assert.equal(res.body.status, 'success');
      const { token, user, expires_at: expiresAt } = res.body.data;
      assert.equal(typeof token, 'string');
      assert.equal(token.split('.').length, 3, 'token is a JWT');
      assert.match(user.id, UUID_RE);
      assert.equal(user.username, username);
      assert.equal(user.full_name, 'Ada Lovelace');
      assert.equal(user.role, 'teacher');
      assert.equal(user.phone_number, phone);
      assert.ok(!('password' in user) && !('password_hash' in user), 'no password material in user');
      assert.ok(!JSON.stringify(res.body).includes('argon2'), 'no hash anywhere in the answer');
      assert.match(expiresAt, ISO_RE, `expires_at is ISO 8601 UTC: ${expiresAt}`);
      assert.ok(Date.parse(expiresAt) > Date.now(), 'expires_at is in the future');
    });

    it('register refuses a taken username (409 username_taken) and a taken phone (409 phone_taken)', async () => {
      const phone = randomPhone();
      const a = await server.register({ phone_number: phone });
      assertHttpError(assert, await server.http('POST', '/api/auth/register',
        { body: { username: a.username, password: 'long-enough-pw', full_name: 'Dup' } }), 409, 'username_taken');
      assertHttpError(assert, await server.http('POST', '/api/auth/register',
        { body: { username: `u_${randomId(5)}`, password: 'long-enough-pw', full_name: 'Dup', phone_number: phone } }), 409, 'phone_taken');
    });

    it('a phone number is one account however it is written: register refuses another spelling (409 phone_taken)', async () => {
      const digits = String(Math.floor(Math.random() * 1e7)).padStart(7, '0');
      const a = await server.register({ phone_number: `+1 555 ${digits}` });
      assert.equal(a.user.phone_number, `+1 555 ${digits}`, "kept as typed");
      for (const other of [`+1555${digits}`, `1-555-${digits.slice(0, 3)}-${digits.slice(3)}`, `(1) 555.${digits}`]) {
        assertHttpError(assert, await server.http('POST', '/api/auth/register',
          { body: { username: `u_${randomId(5)}`, password: 'long-enough-pw', full_name: 'Dup', phone_number: other } }),
        409, 'phone_taken', other);
      }
    });

    it('register validates username, password and required fields', async () => {
      const post = (body) => server.http('POST', '/api/auth/register', { body });
      for (const bad of ['ab', 'with space', 'dash-ed', 'x'.repeat(33), 'émile', 'semi;colon']) {
        assertHttpError(assert, await post({ username: bad, password: 'long-enough-pw', full_name: 'N' }), 400, 'invalid_username',
          `username ${JSON.stringify(bad)}`);
      }
      const empty = await post({ username: '', password: 'long-enough-pw', full_name: 'N' });
      assert.equal(empty.status, 400, `empty username: ${empty.text}`);
      assert.ok(['invalid_username', 'missing_field'].includes(empty.body.code), `empty username code: ${empty.body.code}`);
      assertHttpError(assert, await post({ username: `u_${randomId(5)}`, password: 'short77', full_name: 'N' }), 400, 'weak_password', '7-char password');
      // Characters, not bytes: each of these is 8 bytes or more and under 8 characters.
      for (const pw of ['😀😀', 'éééé', '€€€', 'ééééééé']) {
        assertHttpError(assert, await post({ username: `u_${randomId(5)}`, password: pw, full_name: 'N' }), 400, 'weak_password',
          `${JSON.stringify(pw)} is ${[...pw].length} characters`);
      }
      const accented = await post({ username: `u_${randomId(5)}`, password: 'éééééééé', full_name: 'N' });
      assert.equal(accented.status, 201, `eight accented characters are enough: ${accented.text}`);
      assertHttpError(assert, await post({ username: `u_${randomId(5)}`, full_name: 'N' }), 400, 'missing_field', 'no password');
      assertHttpError(assert, await post({ password: 'long-enough-pw', full_name: 'N' }), 400, 'missing_field', 'no username');
      assertHttpError(assert, await post({ username: 123, password: 'long-enough-pw', full_name: 'N' }), 400, 'invalid_field', 'numeric username');
      assertHttpError(assert, await post('{"username":'), 400, 'invalid_json', 'truncated JSON');
    });

    it('an empty or null phone_number on register is no number (a form\'s empty field); a bad one is refused', async () => {
      const post = (body) => server.http('POST', '/api/auth/register', { body });
      for (const phone_number of ['', null]) {
        const res = await post({ username: `u_${randomId(5)}`, password: 'long-enough-pw', full_name: 'N', phone_number });
        assert.equal(res.status, 201, `phone_number ${JSON.stringify(phone_number)}: ${res.text}`);
        assert.equal(res.body.data.user.phone_number, null);
      }
      assertHttpError(assert, await post({ username: `u_${randomId(5)}`, password: 'long-enough-pw', full_name: 'N', phone_number: '  ' }),
        400, 'invalid_field', 'blank phone_number');
      assertHttpError(assert, await post({ username: `u_${randomId(5)}`, password: 'long-enough-pw', full_name: 'N', phone_number: 'abc' }),
        400, 'invalid_field', 'letters');
    });

    it('an upper-case username is either refused or folded to lower case', async () => {
      const name = `Mixed_${randomId(3)}`;
      const res = await server.http('POST', '/api/auth/register', { body: { username: name, password: 'long-enough-pw', full_name: 'M' } });
      if (res.status === 201) {
        assert.equal(res.body.data.user.username, name.toLowerCase(), 'stored as [a-z0-9_.] only');
        const login = await server.http('POST', '/api/auth/login', { body: { username: name.toLowerCase(), password: 'long-enough-pw' } });
        assert.equal(login.status, 200, 'the folded name logs in');
      } else {
        assertHttpError(assert, res, 400, 'invalid_username');
      }
    });

    it('register accepts the edges: 3 and 32 characters, dots, an 8-character password', async () => {
      const post = (body) => server.http('POST', '/api/auth/register', { body });
      const shortest = `${randomId(1)}`.slice(0, 2) + 'z';  // 3 chars
      const longest = `u.${randomId(15)}`;                   // 32 chars
      assert.equal(shortest.length, 3);
      assert.equal(longest.length, 32);
      for (const username of [shortest, longest]) {
        const res = await post({ username, password: '12345678', full_name: 'Edge' });
        assert.ok(res.status === 201 || (res.status === 409 && res.body.code === 'username_taken'), `${username}: ${res.status} ${res.text}`);
      }
    });

    it('login by username and by phone_number gives a working token', async () => {
      const phone = randomPhone();
      const u = await server.register({ phone_number: phone });
      for (const body of [{ username: u.username, password: u.password }, { phone_number: phone, password: u.password }]) {
        const res = await server.http('POST', '/api/auth/login', { body });
        assert.equal(res.status, 200, `login with ${Object.keys(body)[0]}: ${res.text}`);
        assert.equal(res.body.data.user.id, u.id);
        assert.match(res.body.data.expires_at, ISO_RE);
        const me = await server.http('GET', '/api/users/me', { token: res.body.data.token });
        assert.equal(me.status, 200);
        assert.equal(me.body.data.id, u.id);
      }
    });

    it('login by phone_number matches the digits, not the spelling; the user keeps the number as typed', async () => {
      const digits = String(Math.floor(Math.random() * 1e7)).padStart(7, '0');
      const typed = `+1 555 ${digits}`;
      const u = await server.register({ phone_number: typed });
      for (const phone of [`+1555${digits}`, `+1-555-${digits}`, `1 (555) ${digits.slice(0, 3)}.${digits.slice(3)}`]) {
        const res = await server.http('POST', '/api/auth/login', { body: { phone_number: phone, password: u.password } });
        assert.equal(res.status, 200, `login with ${phone}: ${res.text}`);
        assert.equal(res.body.data.user.id, u.id);
        assert.equal(res.body.data.user.phone_number, typed, 'phone_number as it was registered');
      }
      assertHttpError(assert, await server.http('POST', '/api/auth/login', { body: { phone_number: `+1555${digits}9`, password: u.password } }),
        401, 'invalid_credentials', 'one digit more is another number');
    });

    it('login with a wrong password or an unknown user is 401 invalid_credentials, the same for both', async () => {
      const u = await server.register();
      const wrong = await server.http('POST', '/api/auth/login', { body: { username: u.username, password: 'not-the-password' } });
      const unknown = await server.http('POST', '/api/auth/login', { body: { username: `nobody_${randomId(4)}`, password: 'whatever-123' } });
      assertHttpError(assert, wrong, 401, 'invalid_credentials', 'wrong password');
      assertHttpError(assert, unknown, 401, 'invalid_credentials', 'unknown user');
      assert.equal(wrong.body.message, unknown.body.message, 'same message: nothing tells which usernames exist');
    });

    it('refresh gives a fresh working token for the caller', async () => {
      const u = await server.register();
      const res = await server.http('POST', '/api/auth/refresh', { token: u.token });
      assert.equal(res.status, 200, res.text);
      const { token, expires_at: expiresAt } = res.body.data;
      assert.equal(typeof token, 'string');
      assert.match(expiresAt, ISO_RE);
      const me = await server.http('GET', '/api/users/me', { token });
      assert.equal(me.body.data.id, u.id);
    });
  });

  describe('tokens on REST', () => {
    it('no token → 401 unauthorized', async () => {
      assertHttpError(assert, await server.http('GET', '/api/users/me'), 401, 'unauthorized');
    });
    it('garbage token → 401 invalid_token', async () => {
      assertHttpError(assert, await server.http('GET', '/api/users/me', { token: 'not.a.jwt' }), 401, 'invalid_token');
    });
    it('wrong signature → 401 invalid_token', async () => {
      const u = await server.register();
      const forged = mintToken('some-other-secret', { sub: u.id });
      assertHttpError(assert, await server.http('GET', '/api/users/me', { token: forged }), 401, 'invalid_token');
    });
    it('alg none → 401 invalid_token', async () => {
      const u = await server.register();
      const none = mintToken(server.secret, { sub: u.id }, { alg: 'none' });
      assertHttpError(assert, await server.http('GET', '/api/users/me', { token: none }), 401, 'invalid_token');
    });
    it('expired → 401 token_expired', async () => {
      const u = await server.register();
      const past = Math.floor(Date.now() / 1000) - 3600;
      const expired = mintToken(server.secret, { sub: u.id, iat: past - 60, exp: past });
      assertHttpError(assert, await server.http('GET', '/api/users/me', { token: expired }), 401, 'token_expired');
    });
    it('no exp claim → 401 invalid_token', async () => {
      const u = await server.register();
      const noExp = mintToken(server.secret, { sub: u.id, exp: undefined });
      assertHttpError(assert, await server.http('GET', '/api/users/me', { token: noExp }), 401, 'invalid_token');
    });
    it('a self-minted HS256 token with the shared secret works', async () => {
      const u = await server.register();
      const own = mintToken(server.secret, { sub: u.id });
      const me = await server.http('GET', '/api/users/me', { token: own });
      assert.equal(me.status, 200, me.text);
      assert.equal(me.body.data.username, u.username);
    });
    it('`parley token <username>` prints a working token', async () => {
      const u = await server.register();
      const { stdout } = await server.cli(['token', u.username]);
      const me = await server.http('GET', '/api/users/me', { token: stdout.trim() });
      assert.equal(me.status, 200, me.text);
      assert.equal(me.body.data.id, u.id);
    });
  });

  describe('users', () => {
    it('GET /api/users/me returns the caller', async () => {
      const u = await server.register({ full_name: 'Grace Hopper', role: 'admin' });
      const res = await server.http('GET', '/api/users/me', { token: u.token });
      assert.equal(res.status, 200);
      assert.equal(res.body.status, 'success');
      assert.equal(res.body.data.id, u.id);
      assert.equal(res.body.data.username, u.username);
      assert.equal(res.body.data.full_name, 'Grace Hopper');
      assert.equal(res.body.data.role, 'admin');
    });

    it('GET /api/users?search= finds by username and by full name, without password material', async () => {
      const tag = randomId(4);
      const target = await server.register({ username: `findme_${tag}`, full_name: `Zebulon ${tag}` });
      const asker = await server.register();
      for (const q of [`findme_${tag}`, `Zebulon ${tag}`, `zebulon ${tag}`]) {
        const res = await server.http('GET', `/api/users?search=${encodeURIComponent(q)}`, { token: asker.token });
        assert.equal(res.status, 200, res.text);
        const users = res.body.data.users;
        assert.ok(Array.isArray(users), 'data.users is a list');
        assert.ok(users.some((x) => x.id === target.id), `search ${JSON.stringify(q)} finds the user`);
        assert.ok(!JSON.stringify(users).includes('password'), 'no password material');
      }
      const none = await server.http('GET', `/api/users?search=${encodeURIComponent(`nothing_${randomId(6)}`)}`, { token: asker.token });
      assert.deepEqual(none.body.data.users, []);
      // A NUL ended the pattern early, and `%00zzz` listed every user.
      for (const q of ['%00zzz', 'b%00zzz', '%1B']) {
        const bad = await server.http('GET', `/api/users?search=${q}`, { token: asker.token });
        assert.equal(bad.status, 400, `${q}: ${bad.text}`);
        assert.equal(bad.body.code, 'invalid_field');
      }
    });

    it('a message of control characters only is blank (empty_content), as white space is', async () => {
      const [a, b] = await server.registerMany(2);
      const t = await server.createDirect(a, b);
      for (const content of ['\u0000', '\u0007\u001b', ' \u0085\u009b ']) {
        const res = await server.sendRest(a.token, t.id, { content });
        assert.equal(res.status, 400, `${JSON.stringify(content)}: ${res.text}`);
        assert.equal(res.body.code, 'empty_content');
      }
      assert.equal((await server.sendRest(a.token, t.id, { content: '\u0007bell' })).status, 201);
    });
  });

  describe('threads', () => {
    it('a direct thread is created once: 201, then 200 with the same id, from either side', async () => {
      const [a, b] = await server.registerMany(2);
      const first = await server.http('POST', '/api/chat/threads', { token: a.token, body: { type: 'direct', participant_ids: [b.id] } });
      assert.equal(first.status, 201, first.text);
      assert.equal(first.body.data.type, 'direct');
      assert.match(first.body.data.id, UUID_RE);
      assert.deepEqual(first.body.data.participants.map((p) => p.user_id).sort(), [a.id, b.id].sort());
      const again = await server.http('POST', '/api/chat/threads', { token: a.token, body: { type: 'direct', participant_ids: [b.id] } });
      assert.equal(again.status, 200, `asking again answers 200: ${again.text}`);
      assert.equal(again.body.data.id, first.body.data.id);
      const other = await server.http('POST', '/api/chat/threads', { token: b.token, body: { type: 'direct', usernames: [a.username] } });
      assert.equal(other.status, 200, `the other side by username answers 200: ${other.text}`);
      assert.equal(other.body.data.id, first.body.data.id);
    });

    it('concurrent direct-thread creations of the same pair make one thread', async () => {
      const [a, b] = await server.registerMany(2);
      const results = await Promise.all(Array.from({ length: 6 }, (_, i) => server.http('POST', '/api/chat/threads',
        { token: i % 2 ? a.token : b.token, body: { type: 'direct', participant_ids: [i % 2 ? b.id : a.id] } })));
      assert.equal(new Set(results.map((r) => r.body.data.id)).size, 1, 'one thread id for all');
      assert.equal(results.filter((r) => r.status === 201).length, 1, 'exactly one 201');
    });

    it('a direct thread with yourself or an unknown user is refused', async () => {
      const [a] = await server.registerMany(1);
      const self = await server.http('POST', '/api/chat/threads', { token: a.token, body: { type: 'direct', participant_ids: [a.id] } });
      assert.equal(self.status, 400, `direct thread with oneself: ${self.text}`);
      const ghost = await server.http('POST', '/api/chat/threads', { token: a.token, body: { type: 'direct', usernames: [`ghost_${randomId(4)}`] } });
      assertHttpError(assert, ghost, 404, 'user_not_found');
    });

    it('a group has its title and the creator as admin', async () => {
      const [a, b, c] = await server.registerMany(3);
      const res = await server.http('POST', '/api/chat/threads', { token: a.token, body: { type: 'group', title: 'Class 7B', participant_ids: [b.id, c.id] } });
      assert.equal(res.status, 201, res.text);
      const t = res.body.data;
      assert.equal(t.type, 'group');
      assert.equal(t.title, 'Class 7B');
      assert.equal(t.participants.length, 3);
      const creator = t.participants.find((p) => p.user_id === a.id);
      assert.ok(creator, 'the creator is a participant');
      assert.equal(creator.is_admin, true, 'the creator is admin');
      assert.ok(t.participants.filter((p) => p.user_id !== a.id).every((p) => p.is_admin === false), 'the others are not');
      const got = await server.http('GET', `/api/chat/threads/${t.id}`, { token: c.token });
      assert.equal(got.status, 200);
      assert.equal(got.body.data.title, 'Class 7B');
    });

    it('the answers to creating a thread and adding members carry each participant\'s presence', async () => {
      const [a, b, c, d] = await server.registerMany(4);
      const bWs = await server.connect(b);
      try {
        const res = await server.http('POST', '/api/chat/threads', { token: a.token, body: { type: 'group', title: 'P', participant_ids: [b.id, c.id] } });
        assert.equal(res.status, 201, res.text);
        const online = (t) => Object.fromEntries(t.participants.map((p) => [p.user_id, p.online]));
        assert.deepEqual(online(res.body.data), { [a.id]: false, [b.id]: true, [c.id]: false });
        const add = await server.http('POST', `/api/chat/threads/${res.body.data.id}/participants`, { token: a.token, body: { participant_ids: [d.id] } });
        assert.equal(add.status, 200, add.text);
        assert.deepEqual(online(add.body.data), { [a.id]: false, [b.id]: true, [c.id]: false, [d.id]: false });
      } finally {
        bWs.close();
      }
    });

    it('GET /api/chat/threads lists the caller\'s threads, newest activity first, with unread_count, last_message, participants', async () => {
      const [a, b, c] = await server.registerMany(3);
      const t1 = await server.createDirect(a, b);
      const t2 = await server.createDirect(a, c);
      await server.sendRest(b.token, t1.id, { content: 'older' });
      await new Promise((r) => setTimeout(r, 20));
      await server.sendRest(c.token, t2.id, { content: 'newer' });
      const res = await server.http('GET', '/api/chat/threads', { token: a.token });
      assert.equal(res.status, 200);
      const threads = res.body.data.threads;
      assert.deepEqual(threads.map((t) => t.id), [t2.id, t1.id], 'newest activity first');
      assert.equal(threads[0].unread_count, 1);
      assert.equal(threads[0].last_message.content, 'newer');
      assertMessageShape(assert, threads[0].last_message);
      assert.ok(Array.isArray(threads[0].participants) && threads[0].participants.length === 2);

      await server.sendRest(b.token, t1.id, { content: 'now newest' });
      const again = await server.http('GET', '/api/chat/threads', { token: a.token });
      assert.deepEqual(again.body.data.threads.map((t) => t.id), [t1.id, t2.id], 'order follows activity');
    });

    it('admins add and remove participants; a group records it as system messages', async () => {
      const [a, b, c] = await server.registerMany(3);
      const g = await server.createGroup(a, [b], 'membership');
      const before = await server.history(a.token, g.id);

      const add = await server.http('POST', `/api/chat/threads/${g.id}/participants`, { token: a.token, body: { participant_ids: [c.id] } });
      assert.equal(add.status, 200, `add: ${add.text}`);
      const afterAdd = await server.http('GET', `/api/chat/threads/${g.id}`, { token: c.token });
      assert.equal(afterAdd.status, 200, 'the new participant can read the thread');
      assert.equal(afterAdd.body.data.participants.length, 3);

      const del = await server.http('DELETE', `/api/chat/threads/${g.id}/participants/${c.id}`, { token: a.token });
      assert.equal(del.status, 200, `remove: ${del.text}`);
      assertHttpError(assert, await server.http('GET', `/api/chat/threads/${g.id}`, { token: c.token }), 403, 'forbidden', 'removed participant');

      const history = await server.history(a.token, g.id);
      const system = history.slice(before.length);
      assert.equal(system.length, 2, `one system message for the add and one for the removal: ${JSON.stringify(system)}`);
      assert.ok(system.every((m) => m.message_type === 'system'), 'both are system messages');
      const seqs = history.map((m) => m.seq);
      assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), 'system messages take seqs like any message');
    });

    it('participants are added by username as well as by id (as when creating a thread), each once', async () => {
      const [a, b, c, d] = await server.registerMany(4);
      const g = await server.createGroup(a, [b], 'by name');
      const before = await server.history(a.token, g.id);
      const url = `/api/chat/threads/${g.id}/participants`;
      // An unknown name refuses the whole request: nobody is added.
      assertHttpError(assert, await server.http('POST', url, { token: a.token, body: { usernames: [c.username, 'nobody_here_x'] } }),
        404, 'user_not_found', 'an unknown username');
      assertHttpError(assert, await server.http('POST', url, { token: a.token, body: {} }), 400, 'missing_field', 'neither field');
      assert.equal((await server.history(a.token, g.id)).length, before.length, 'nothing was added');
      const add = await server.http('POST', url, {
        token: a.token, body: { usernames: [c.username.toUpperCase(), d.username], participant_ids: [d.id] },
      });
      assert.equal(add.status, 200, add.text);
      assert.deepEqual(add.body.data.participants.map((p) => p.user_id ?? p.id).sort(), [a.id, b.id, c.id, d.id].sort());
      const notices = (await server.history(a.token, g.id)).slice(before.length);
      assert.deepEqual(notices.map((m) => m.message_type), ['system', 'system'], 'one notice per person added');
    });

    it('a non-admin member cannot add or remove others, but may leave', async () => {
      const [a, b, c, d] = await server.registerMany(4);
      const g = await server.createGroup(a, [b, c], 'non-admin');
      assertHttpError(assert, await server.http('POST', `/api/chat/threads/${g.id}/participants`, { token: b.token, body: { participant_ids: [d.id] } }),
        403, 'forbidden', 'non-admin adds');
      assertHttpError(assert, await server.http('DELETE', `/api/chat/threads/${g.id}/participants/${c.id}`, { token: b.token }),
        403, 'forbidden', 'non-admin removes another');
      const leave = await server.http('DELETE', `/api/chat/threads/${g.id}/participants/${b.id}`, { token: b.token });
      assert.equal(leave.status, 200, `leaving yourself is allowed: ${leave.text}`);
      assertHttpError(assert, await server.http('GET', `/api/chat/threads/${g.id}/messages`, { token: b.token }), 403, 'forbidden', 'after leaving');
    });

    it('a message read by a member who then leaves stays read for its sender', async () => {
      const [a, b, c] = await server.registerMany(3);
      const g = await server.createGroup(a, [b, c], 'readers leave');
      const read = (await server.sendRest(a.token, g.id, { content: 'read by bob' })).body.data;
      const unread = (await server.sendRest(a.token, g.id, { content: 'read by nobody' })).body.data;
      const mark = await server.http('POST', `/api/chat/mark-read/${g.id}?up_to_seq=${read.seq}`, { token: b.token });
      assert.equal(mark.status, 200, mark.text);
      const status = async () => Object.fromEntries((await server.history(a.token, g.id)).map((m) => [m.seq, m.status]));
      assert.equal((await status())[read.seq], 'read', 'read before bob leaves');

      const leave = await server.http('DELETE', `/api/chat/threads/${g.id}/participants/${b.id}`, { token: b.token });
      assert.equal(leave.status, 200, leave.text);
      const after = await status();
      assert.equal(after[read.seq], 'read', 'still read after bob left');
      assert.equal(after[unread.seq], 'sent', 'what nobody read is not');

      // Carol, removed by Alice, counts as well; Alice's own marks never do.
      await server.http('POST', `/api/chat/mark-read/${g.id}`, { token: c.token });
      const removed = await server.http('DELETE', `/api/chat/threads/${g.id}/participants/${c.id}`, { token: a.token });
      assert.equal(removed.status, 200, removed.text);
      assert.equal((await status())[unread.seq], 'read', 'read by carol before her removal');
      const mine = (await server.sendRest(a.token, g.id, { content: 'alone now' })).body.data;
      assert.equal((await status())[mine.seq], 'sent', 'nobody else has read it');
    });

    it('a direct thread has no system messages and takes no new participants', async () => {
      const [a, b, c] = await server.registerMany(3);
      const t = await server.createDirect(a, b);
      await server.sendRest(a.token, t.id, { content: 'hi' });
      const add = await server.http('POST', `/api/chat/threads/${t.id}/participants`, { token: a.token, body: { participant_ids: [c.id] } });
      assert.ok(add.status === 400 || add.status === 403, `adding to a direct thread is refused: ${add.status} ${add.text}`);
      const history = await server.history(a.token, t.id);
      assert.ok(history.every((m) => m.message_type !== 'system'), 'no system message in a direct thread');
      assert.equal(history.length, 1);
    });
  });

  describe('messages', () => {
    let a, b, thread, sent;
    before(async () => {
      [a, b] = await server.registerMany(2);
      thread = await server.createDirect(a, b);
      sent = [];
      for (let i = 1; i <= 10; i++) {
        const r = await server.sendRest(i % 2 ? a.token : b.token, thread.id, { content: `msg ${i}`, client_msg_id: `p-${i}` });
        assert.equal(r.status, 201, r.text);
        sent.push(r.body.data);
      }
    });
    const page = (query, token = a.token) => server.http('GET', `/api/chat/threads/${thread.id}/messages${query}`, { token });
    const seqsOf = (res) => res.body.data.messages.map((m) => m.seq);

    it('POST a message answers 201 with the full message object, and the recipient gets it live', async () => {
      const bWs = await server.connect(b);
      const res = await server.sendRest(a.token, thread.id, { content: 'live via REST', message_type: 'text', client_msg_id: 'rest-live' });
      assert.equal(res.status, 201, res.text);
      assertMessageShape(assert, res.body.data, { thread_id: thread.id, sender_id: a.id, content: 'live via REST', client_msg_id: 'rest-live', message_type: 'text' });
      const live = await bWs.next((f) => f.type === 'new_message' && f.data.id === res.body.data.id, 5000, 'new_message at the recipient');
      assert.equal(live.data.content, 'live via REST');
      sent.push(res.body.data);
    });

    it('history defaults to ascending seq', async () => {
      const res = await page('');
      assert.equal(res.status, 200);
      const seqs = seqsOf(res);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'ascending');
      assert.equal(seqs[0], 1);
      res.body.data.messages.forEach((m) => assertMessageShape(assert, m));
    });

    it('limit alone gives the newest messages', async () => {
      const last = sent.length;
      assert.deepEqual(seqsOf(await page('?limit=3')), [last - 2, last - 1, last]);
    });

    it('before_seq pages backwards', async () => {
      assert.deepEqual(seqsOf(await page('?before_seq=8&limit=3')), [5, 6, 7]);
      assert.deepEqual(seqsOf(await page('?before_seq=3&limit=5')), [1, 2]);
      assert.deepEqual(seqsOf(await page('?before_seq=1&limit=5')), []);
    });

    it('after_seq pages forwards from the oldest', async () => {
      assert.deepEqual(seqsOf(await page('?after_seq=2&limit=3')), [3, 4, 5]);
      assert.deepEqual(seqsOf(await page(`?after_seq=${sent.length}&limit=3`)), []);
    });

    it('limit 1 and 200 are fine; 0, 201, -1 and non-numbers are 400 invalid_limit', async () => {
      assert.equal((await page('?limit=1')).status, 200);
      assert.equal((await page('?limit=200')).status, 200);
      for (const bad of ['0', '201', '-1', 'abc', '1.5']) {
        assertHttpError(assert, await page(`?limit=${bad}`), 400, 'invalid_limit', `limit=${bad}`);
      }
    });

    it('empty parameters, as the template ?before_seq=&after_seq=&limit= leaves them, are absent: the default page', async () => {
      const all = await page('');
      const templated = await page('?before_seq=&after_seq=&limit=');
      assert.equal(templated.status, 200, templated.text);
      assert.deepEqual(seqsOf(templated), seqsOf(all));
    });

    it('history is the same for both participants', async () => {
      const mine = await server.history(a.token, thread.id);
      const theirs = await server.history(b.token, thread.id);
      assert.deepEqual(theirs.map((m) => m.id), mine.map((m) => m.id));
    });
  });

  describe('compatibility endpoints', () => {
    it('POST /api/chat/subscribe and /unsubscribe answer success with top-level user_id', async () => {
      const [a, b] = await server.registerMany(2);
      const t = await server.createDirect(a, b);
      for (const p of ['/api/chat/subscribe', '/api/chat/unsubscribe']) {
        const res = await server.http('POST', p, { token: a.token, body: { thread_id: t.id } });
        assert.equal(res.status, 200, `${p}: ${res.text}`);
        assert.equal(res.body.status, 'success');
        assert.equal(res.body.user_id, a.id, `${p}: top-level user_id`);
      }
    });
  });
});

describe('login rate limit per account', () => {
  let server;
  before(async () => { server = await startServer({ args: ['--login-failures-per-account', '3'] }); });
  after(async () => { await server?.stop(); });

  it('after 3 failures the 4th attempt is 429 even with the right password; other accounts are unaffected', async () => {
    const [victim, bystander] = await server.registerMany(2);
    for (let i = 1; i <= 3; i++) {
      const res = await server.http('POST', '/api/auth/login', { body: { username: victim.username, password: `wrong-${i}-password` } });
      assertHttpError(assert, res, 401, 'invalid_credentials', `failure ${i}`);
    }
    const fourth = await server.http('POST', '/api/auth/login', { body: { username: victim.username, password: victim.password } });
    assertHttpError(assert, fourth, 429, 'rate_limited', 'the 4th attempt with the right password');
    const other = await server.http('POST', '/api/auth/login', { body: { username: bystander.username, password: bystander.password } });
    assert.equal(other.status, 200, `another account still logs in: ${other.text}`);
  });
});
