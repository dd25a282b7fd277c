// Socket.IO clients against Parley (CONTRACT.md section 7), driven by the
// official `socket.io-client` (pinned in package-lock.json) on its default
// transports (polling, then the upgrade to WebSocket), WebSocket only and
// polling only, and by raw Engine.IO requests for what a well-behaved
// client never sends.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import net from 'node:net';
import { startServer, assertMessageShape, sleep, UUID_RE, mintToken, newUuid } from './harness.mjs';

// A socket.io-client socket that records every event (with its ack, if the
// server asked for one) and acks new_message, ping and test_message unless told not to.
function sioClient(server, token, { transports, autoAck = true, auth, reconnection = false, query, extraHeaders } = {}) {
  const opts = { reconnection, forceNew: true, timeout: 5000 };
  if (transports) opts.transports = transports;
  if (query) opts.query = query;
  if (extraHeaders) opts.extraHeaders = extraHeaders;
  opts.auth = auth !== undefined ? auth : { token };
  const socket = io(server.baseUrl, opts);
  const c = { socket, events: [], waiters: [] };
  socket.onAny((event, ...args) => {
    const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
    const rec = { event, data: args[0], ack, at: c.events.length };
    c.events.push(rec);
    if (autoAck && ack && ['new_message', 'ping', 'test_message'].includes(event)) ack({ received: true });
    for (const w of c.waiters.splice(0)) if (!w(rec)) c.waiters.push(w);
  });
  c.next = (event, pred = () => true, timeoutMs = 5000) => new Promise((resolve, reject) => {
    const found = c.events.find((r) => !r.taken && r.event === event && pred(r.data));
    if (found) { found.taken = true; return resolve(found); }
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${timeoutMs} ms; got ${c.events.map((r) => r.event).join(',')}`)), timeoutMs);
    c.waiters.push((r) => {
      if (r.taken || r.event !== event || !pred(r.data)) return false;
      r.taken = true; clearTimeout(timer); resolve(r); return true;
    });
  });
  c.emit = (event, payload, timeoutMs = 5000) => socket.timeout(timeoutMs).emitWithAck(event, payload);
  c.connected = () => new Promise((resolve, reject) => {
    if (socket.connected) return resolve();
    socket.once('connect', resolve);
    socket.once('connect_error', (e) => reject(e));
  });
  c.close = () => socket.disconnect();
  return c;
}

async function connected(server, user, opts) {
  const c = sioClient(server, user.token, opts);
  await c.connected();
  await c.next('connection_success');
  return c;
}

// Raw Engine.IO over HTTP polling.
const EIO = '/socket.io/?EIO=4&transport=polling';
async function handshake(server) {
  const res = await server.http('GET', EIO);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.text[0], '0');
  return JSON.parse(res.text.slice(1));
}
const post = (server, sid, body) => server.http('POST', `${EIO}&sid=${sid}`, { body, headers: { 'Content-Type': 'text/plain' } });
const poll = (server, sid, timeoutMs = 10000) => server.http('GET', `${EIO}&sid=${sid}`, { timeoutMs });
// Polls until a packet matching pred arrives (the answers may carry pings
// and others). Every ping of the answer is answered, also one after the
// match: left unanswered, it would close the session at the ping timeout.
async function pollFor(server, sid, pred, rounds = 6) {
  const seen = [];
  for (let i = 0; i < rounds; i++) {
    const res = await poll(server, sid);
    if (res.status !== 200) return { status: res.status, body: res.body, seen };
    let packet = null;
    for (const p of res.text.split('\x1e')) {
      seen.push(p);
      if (p === '2') await post(server, sid, '3');
      if (packet === null && pred(p)) packet = p;
    }
    if (packet !== null) return { status: 200, packet, seen };
  }
  return { status: 200, packet: null, seen };
}

// A raw Engine.IO session over polling, its Socket.IO CONNECT accepted.
async function rawConnect(server, user) {
  const open = await handshake(server);
  await post(server, open.sid, `40${JSON.stringify({ token: user.token })}`);
  const connectedNow = await pollFor(server, open.sid, (p) => p.startsWith('40{"sid"'));
  assert.ok(connectedNow.packet, `not connected: ${connectedNow.seen.join(' | ')}`);
  return open;
}

describe('Socket.IO (Engine.IO v4, Socket.IO v5)', () => {
  let server;
  // --account-poll-ms 200: a `parley user disable` reaches the sessions well
  // within the waits below even on a loaded machine (the default polls every second).
  before(async () => { server = await startServer({ args: ['--account-poll-ms', '200'] }); });
  after(async () => { await server?.stop(); });

  it('the handshake answers the open packet as the reference server does', async () => {
    const open = await handshake(server);
    assert.match(open.sid, /^[\w-]{10,}$/);
    assert.deepEqual(open.upgrades, ['websocket']);
    assert.equal(open.pingInterval, 25000);
    assert.equal(open.pingTimeout, 20000);
    assert.equal(open.maxPayload, 1000000);
  });

  for (const transports of [undefined, ['websocket']]) {
    const label = transports ? 'WebSocket only' : 'polling then upgrade';
    it(`a good token connects (${label}): connection_success, then test_message, then the server ping with an ack`, async () => {
      const [alice] = await server.registerMany(1);
      const c = sioClient(server, alice.token, { transports });
      await c.connected();
      const success = await c.next('connection_success');
      assert.equal(success.data.userId, alice.id);
      const test = await c.next('test_message');
      assert.ok(test.at > success.at, 'test_message comes after connection_success');
      const ping = await c.next('ping');
      assert.equal(typeof ping.ack, 'function', 'the server ping asks for an ack');
      if (!transports) {
        for (let i = 0; i < 50 && c.socket.io.engine.transport.name !== 'websocket'; i++) await sleep(100);
        assert.equal(c.socket.io.engine.transport.name, 'websocket', 'the client upgraded to WebSocket');
      }
      // Still healthy after the acks: an event round trip.
      const pong = await c.emit('ping', {});
      assert.equal(pong.success, true);
      c.close();
    });
  }

  it('a bad, an expired and a missing token get connect_error and no session', async () => {
    const [alice] = await server.registerMany(1);
    // err.data.code is a code of the error table, as over REST and the native WebSocket.
    for (const [auth, code] of [[{ token: 'not-a-jwt' }, 'invalid_token'], [{ token: alice.token.slice(0, -3) + 'xyz' }, 'invalid_token'],
      [{}, 'unauthorized'], [{ token: '' }, 'unauthorized'], [undefined, 'unauthorized']]) {
      const c = sioClient(server, null, { auth: auth ?? null, transports: ['websocket'] });
      const err = await c.connected().then(() => null, (e) => e);
      assert.ok(err, `auth ${JSON.stringify(auth)} was accepted`);
      assert.match(err.message, /token|Authentication/i, err.message);
      assert.equal(err.data?.code, code, `auth ${JSON.stringify(auth)}: ${JSON.stringify(err.data)}`);
      assert.equal(c.events.length, 0, 'no event before a refused connect');
      c.close();
    }
  });

  // As the native WebSocket takes them: apps ported from a server that read
  // socket.handshake.query.token or the Authorization header.
  it('the token may also come as ?token=, as Authorization: Bearer, or with a Bearer prefix; auth wins over the query', async () => {
    const [alice, bob] = await server.registerMany(2);
    for (const transports of [undefined, ['websocket']]) {
      const label = transports ? 'WebSocket only' : 'polling';
      for (const [name, opts, expected] of [
        ['?token=', { auth: null, query: { token: alice.token } }, alice],
        ['Authorization: Bearer', { auth: null, extraHeaders: { Authorization: `Bearer ${alice.token}` } }, alice],
        ['auth with a Bearer prefix', { auth: { token: `Bearer ${alice.token}` } }, alice],
        ['auth and a query naming another user', { auth: { token: bob.token }, query: { token: alice.token } }, bob],
      ]) {
        const c = sioClient(server, null, { transports, ...opts });
        await c.connected();
        const success = await c.next('connection_success');
        assert.equal(success.data.userId, expected.id, `${name} (${label})`);
        c.close();
      }
      for (const [name, opts, code] of [
        ['a bad ?token=', { auth: null, query: { token: 'not-a-jwt' } }, 'invalid_token'],
        ['?token= and a header that differ', { auth: null, query: { token: alice.token }, extraHeaders: { Authorization: `Bearer ${bob.token}` } }, 'conflicting_tokens'],
      ]) {
        const c = sioClient(server, null, { transports, ...opts });
        const err = await c.connected().then(() => null, (e) => e);
        assert.ok(err, `${name} (${label}) was accepted`);
        assert.equal(err.data?.code, code, `${name} (${label}): ${JSON.stringify(err.data)}`);
        assert.equal(c.events.length, 0, 'no event before a refused connect');
        c.close();
      }
    }
  });

  it('send_message by username is acked and reaches the recipient on Socket.IO and native WebSocket; the ack of new_message is the delivery receipt', async () => {
    const [alice, bob] = await server.registerMany(2);
    const a = await connected(server, alice);
    const bSio = await connected(server, bob, { transports: ['websocket'] });
    const bWs = await server.connect(bob);
    const ack = await a.emit('send_message', { username: bob.username, text: 'hello over socket.io' });
    assert.equal(ack.success, true, JSON.stringify(ack));
    assertMessageShape(assert, ack.message, { sender_id: alice.id, content: 'hello over socket.io', seq: 1 });
    const sent = await a.next('message_sent');
    assert.equal(sent.data.id, ack.message.id);
    const got = await bSio.next('new_message', (m) => m.id === ack.message.id);
    assertMessageShape(assert, got.data, { content: 'hello over socket.io' });
    assert.equal(typeof got.ack, 'function', 'new_message asks for an ack');
    const native = await bWs.next((f) => f.type === 'new_message' && f.data.id === ack.message.id);
    assert.equal(native.data.content, 'hello over socket.io');
    // bSio acked new_message (autoAck): Alice's devices hear it was delivered.
    const delivered = await a.next('message_delivered', (d) => d.message_id === ack.message.id);
    assert.equal(delivered.data.user_id, bob.id);
    // The other way, native to Socket.IO.
    const reply = await bWs.request({ type: 'send_message', thread_id: ack.message.thread_id, content: 'back at you' });
    assert.equal(reply.type, 'message_sent');
    const back = await a.next('new_message', (m) => m.id === reply.data.id);
    assert.equal(back.data.seq, 2);
    // A failure comes back in the ack.
    const bad = await a.emit('send_message', { username: bob.username, text: '   ' });
    assert.equal(bad.success, false);
    assert.equal(typeof bad.error, 'string');
    a.close(); bSio.close();
  });

  it('an ack of new_message that comes late still counts as the delivery receipt', async () => {
    const [alice, bob] = await server.registerMany(2);
    const a = await connected(server, alice);
    const b = await connected(server, bob, { transports: ['websocket'], autoAck: false });
    const ack = await a.emit('send_message', { username: bob.username, text: 'ack me later' });
    assert.equal(ack.success, true, JSON.stringify(ack));
    const got = await b.next('new_message', (m) => m.id === ack.message.id);
    await sleep(1500);
    got.ack({ received: true });
    const delivered = await a.next('message_delivered', (d) => d.message_id === ack.message.id);
    assert.equal(delivered.data.user_id, bob.id);
    assert.equal(delivered.data.seq, ack.message.seq);
    const history = await server.history(alice.token, ack.message.thread_id);
    assert.equal(history.find((m) => m.id === ack.message.id).status, 'delivered');
    a.close(); b.close();
  });

  // socket.io-client apps ack every new_message; the last one a removed
  // member gets is the notice of the removal. Its ack used to come back as
  // an `error` event (forbidden), on every removal.
  it('the ack of the notice of one\'s removal says nothing', async () => {
    const [alice, bob] = await server.registerMany(2);
    const group = await server.createGroup(alice, [bob]);
    const b = await connected(server, bob, { transports: ['websocket'] });
    const del = await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${bob.id}`, { token: alice.token });
    assert.equal(del.status, 200, del.text);
    await b.next('new_message', (m) => m.thread_id === group.id && /removed/.test(m.content));
    await sleep(700);
    assert.deepEqual(b.events.filter((r) => r.event === 'error').map((r) => r.data), []);
    b.close();
  });

  // A phone that was off while its user was removed from a group: the
  // catch-up on connect brings what the group said up to the removal, and
  // its notice, as it brings what was said in the groups the user is in.
  // It came only through offline-messages or the app's own subscribe_thread.
  async function removedWhileAway({ byThemselves = false } = {}) {
    const [alice, bob] = await server.registerMany(2);
    const group = await server.createGroup(alice, [bob]);
    const a = await connected(server, alice);
    const owed = await a.emit('send_message', { thread_id: group.id, content: 'homework: page 4', client_msg_id: 'hw-1' });
    assert.equal(owed.success, true, JSON.stringify(owed));
    const del = await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${bob.id}`,
      { token: byThemselves ? bob.token : alice.token });
    assert.equal(del.status, 200, del.text);
    const after = await a.emit('send_message', { thread_id: group.id, content: 'not for bob', client_msg_id: 'nb-1' });
    assert.equal(after.success, true, JSON.stringify(after));
    a.close();
    return { alice, bob, group, owed: owed.message };
  }
  const inGroup = (c, group) => c.events.filter((r) => r.event === 'new_message' && r.data.thread_id === group.id);

  it('the catch-up on connect brings a removed member what they missed up to the notice, once acked never again', async () => {
    const { alice, bob, group, owed } = await removedWhileAway();
    assert.equal((await server.history(alice.token, group.id)).find((m) => m.id === owed.id).status, 'sent');
    const b = await connected(server, bob, { transports: ['websocket'] });
    await b.next('new_message', (m) => m.thread_id === group.id && m.message_type === 'system');
    await sleep(700);
    const contents = inGroup(b, group).map((r) => r.data.content);
    assert.equal(contents.length, 2, JSON.stringify(contents));
    assert.equal(contents[0], 'homework: page 4');
    assert.match(contents[1], /removed/);
    assert.deepEqual(b.events.filter((r) => r.event === 'error').map((r) => r.data), [], 'no error for the refusal that ends it');
    b.close();
    // Bob's receipts count: Alice sees it delivered, and a connect at once
    // (within the presence grace period) does not bring it again.
    let status = '';
    for (let i = 0; i < 50 && status !== 'delivered'; ++i) {
      if (i) await sleep(100);
      status = (await server.history(alice.token, group.id)).find((m) => m.id === owed.id).status;
    }
    assert.equal(status, 'delivered');
    const again = await connected(server, bob, { transports: ['websocket'] });
    await sleep(700);
    assert.deepEqual(inGroup(again, group).map((r) => r.data.content), []);
    again.close();
  });

  // Left from another device: the user's own notice is never acknowledged
  // (one's own message), and must not keep the thread owed: with a device
  // of theirs connected all along, it came on every connect.
  it('one who left from another device gets what was said before, and their own notice, once', async () => {
    const { bob, group } = await removedWhileAway({ byThemselves: true });
    const b = await connected(server, bob, { transports: ['websocket'] });
    await b.next('new_message', (m) => m.thread_id === group.id && m.message_type === 'system');
    const contents = inGroup(b, group).map((r) => r.data.content);
    assert.equal(contents.length, 2, JSON.stringify(contents));
    assert.equal(contents[0], 'homework: page 4');
    await sleep(700);
    const again = await connected(server, bob, { transports: ['websocket'] });
    await sleep(700);
    assert.deepEqual(inGroup(again, group).map((r) => r.data.content), [], 'not again while the first is connected');
    b.close();
    again.close();
  });

  // Apps written as socket.io's own examples are (`socket.on('new_message',
  // (m) => …)`) never ack: a connection of theirs that closed after the
  // removal had it, and the next connect does not bring it again.
  it('an app that never acks gets a removal it missed on its next connect only', async () => {
    const { bob, group } = await removedWhileAway();
    const b = await connected(server, bob, { transports: ['websocket'], autoAck: false });
    await b.next('new_message', (m) => m.thread_id === group.id && m.message_type === 'system');
    b.close();
    await sleep(3000 + 1500);  // the presence grace period: then bob's last_seen is the close
    const again = await connected(server, bob, { transports: ['websocket'], autoAck: false });
    await sleep(700);
    assert.deepEqual(inGroup(again, group).map((r) => r.data.content), []);
    again.close();
  });

  it('an ack id counts only on a session that was sent its message: a forged one changes nothing and says nothing', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const a = await connected(server, alice);
    // Bob and Carol over raw polling, to see the ack ids.
    const rawSession = async (user) => {
      const open = await handshake(server);
      assert.equal((await post(server, open.sid, `40${JSON.stringify({ token: user.token })}`)).status, 200);
      assert.ok((await pollFor(server, open.sid, (p) => p.startsWith('40'))).packet);
      return open.sid;
    };
    const bobSid = await rawSession(bob);
    const carolSid = await rawSession(carol);
    const ack = await a.emit('send_message', { username: bob.username, text: 'only bob may ack this' });
    assert.equal(ack.success, true, JSON.stringify(ack));
    const got = await pollFor(server, bobSid, (p) => /^42\d+\["new_message"/.test(p));
    const id = got.packet.match(/^42(\d+)/)[1];
    // Carol is not in the thread and was never sent the message.
    assert.equal((await post(server, carolSid, `43${id}[{"received":true}]`)).status, 200);
    let carolGot = '';
    try { carolGot = (await poll(server, carolSid, 1000)).text; } catch { /* nothing for her: as it should be */ }
    assert.ok(!carolGot.includes('"error"'), `an error told Carol of the thread: ${carolGot}`);
    await sleep(300);
    assert.equal(a.events.filter((r) => r.event === 'message_delivered').length, 0, 'a forged ack made a receipt');
    // Bob's own ack is the receipt.
    assert.equal((await post(server, bobSid, `43${id}[{"received":true}]`)).status, 200);
    const delivered = await a.next('message_delivered', (d) => d.message_id === ack.message.id);
    assert.equal(delivered.data.user_id, bob.id);
    a.close();
  });

  it('send_message by thread_id with client_msg_id is idempotent', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const a = await connected(server, alice, { transports: ['websocket'] });
    const first = await a.emit('send_message', { thread_id: thread.id, content: 'once', client_msg_id: 'sio-1' });
    const again = await a.emit('send_message', { thread_id: thread.id, content: 'once', client_msg_id: 'sio-1' });
    assert.equal(first.success, true);
    assert.equal(again.message.id, first.message.id);
    const history = await server.history(alice.token, thread.id);
    assert.equal(history.length, 1);
    a.close();
  });

  it('join_chat answers the chatId; mark_as_read answers success and every device sees the unread count drop', async () => {
    const [alice, bob] = await server.registerMany(2);
    const a = await connected(server, alice);
    const joined = await a.emit('join_chat', { username: bob.username });
    assert.equal(joined.success, true, JSON.stringify(joined));
    assert.match(joined.chatId, UUID_RE);
    const again = await a.emit('join_chat', { username: bob.username });
    assert.equal(again.chatId, joined.chatId, 'the same direct thread');
    const bWs = await server.connect(bob);
    const b = await connected(server, bob, { transports: ['websocket'], autoAck: false });
    await a.emit('send_message', { thread_id: joined.chatId, content: 'read me', client_msg_id: 'r-1' });
    await b.next('new_message');
    const before = await server.http('GET', '/api/chat/unread-count', { token: bob.token });
    assert.equal(before.body.data.unread_count, 1);
    const read = await b.emit('mark_as_read', { chatId: joined.chatId });
    assert.equal(read.success, true, JSON.stringify(read));
    const receipt = await bWs.next((f) => f.type === 'read_receipt' && f.thread_id === joined.chatId);
    assert.equal(receipt.user_id, bob.id, "Bob's other device hears of the read");
    await a.next('read_receipt', (r) => r.thread_id === joined.chatId);
    const after = await server.http('GET', '/api/chat/unread-count', { token: bob.token });
    assert.equal(after.body.data.unread_count, 0);
    const unknown = await a.emit('join_chat', { username: 'nobody_here_at_all' });
    assert.equal(unknown.success, false);
    const self = await a.emit('join_chat', { username: alice.username.toUpperCase() });
    assert.equal(self.success, false, JSON.stringify(self));
    assert.equal(self.code, 'invalid_recipient', `a chat with oneself is refused (got ${JSON.stringify(self)})`);
    a.close(); b.close();
  });

  it('a recipient who was offline gets the message when it connects', async () => {
    const [alice, bob] = await server.registerMany(2);
    const a = await connected(server, alice, { transports: ['websocket'] });
    const ack = await a.emit('send_message', { username: bob.username, text: 'while you were away' });
    assert.equal(ack.success, true);
    const b = await connected(server, bob);
    const got = await b.next('new_message', (m) => m.id === ack.message.id);
    assert.equal(got.data.content, 'while you were away');
    // Acked now: the next connect does not replay it.
    await a.next('message_delivered', (d) => d.message_id === ack.message.id);
    b.close();
    const b2 = await connected(server, bob, { transports: ['websocket'] });
    await sleep(500);
    assert.equal(b2.events.filter((r) => r.event === 'new_message').length, 0, 'nothing replayed twice');
    a.close(); b2.close();
  });

  it('a long catch-up on connect gives way to the client\'s own subscribe_thread: each message once, in seq order', async () => {
    // What the docs tell a client with several devices to do: subscribe each
    // thread from its own last seq on connect, while the catch-up (more than
    // one replay page here) would replay it from the user's position.
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    await server.sendBacklog(alice, thread.id, 1100);
    // No acks: an ack moves the user's delivered position, which is where the
    // catch-up starts, so acks of the subscribe's replay reaching the server
    // before the catch-up reads that position (a slow store) would rightly
    // make it skip seqs 1-10, which this client says it has (since_seq 10).
    const b = sioClient(server, bob.token, { transports: ['websocket'], autoAck: false });
    b.socket.on('connect', () => b.socket.emit('subscribe_thread', { thread_id: thread.id, since_seq: 10 }));
    await b.connected();
    await b.next('thread_subscribed', (d) => d.thread_id === thread.id && d.last_seq === 1100, 30000);
    await sleep(300);
    const seqs = b.events.filter((r) => r.event === 'new_message').map((r) => r.data.seq);
    // The catch-up (from 0) may have sent a few before the subscribe reached
    // the server; then the client's replay goes on from its since_seq.
    const head = seqs.findIndex((s) => s > 10);
    assert.ok(head >= 0, `nothing past since_seq: ${seqs.slice(0, 20)}`);
    assert.deepEqual(seqs.slice(0, head), Array.from({ length: head }, (_, i) => i + 1), 'what the catch-up sent comes first, in order');
    assert.deepEqual(seqs.slice(head), Array.from({ length: 1090 }, (_, i) => i + 11), 'then the client\'s replay, in order, each once');
    b.close();
  });

  it('catch_up: false: a client subscribing on connect from below the user\'s read mark gets its range in seq order', async () => {
    // The catch-up would start at the user's read mark (150, set by another
    // device); this device has only up to 50, says so on connect, and asks
    // for no catch-up. With one, the catch-up's 151-300 came first and 51-150
    // after them (the catch-up's first page usually beats the subscribe).
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createGroup(alice, [bob], 'catch-up order');
    await server.sendBacklog(alice, thread.id, 300);
    const mark = await server.http('POST', `/api/chat/mark-read/${thread.id}?up_to_seq=150`, { token: bob.token });
    assert.equal(mark.status, 200, mark.text);
    for (let round = 0; round < 3; round++) {
      const b = sioClient(server, bob.token, { transports: ['websocket'], autoAck: false, auth: { token: bob.token, catch_up: false } });
      b.socket.on('connect', () => b.socket.emit('subscribe_thread', { thread_id: thread.id, since_seq: 50 }));
      await b.connected();
      await b.next('thread_subscribed', (d) => d.thread_id === thread.id && d.last_seq >= 300, 30000);
      await sleep(300);
      const seqs = b.events.filter((r) => r.event === 'new_message').map((r) => r.data.seq);
      assert.deepEqual(seqs, Array.from({ length: 250 }, (_, i) => i + 51), `round ${round}: 51-300 in order`);
      assert.equal(b.events.filter((r) => r.event === 'thread_subscribed').length, 1, 'the client\'s answer only');
      b.close();
    }
    // Live messages flow without a catch-up too.
    const b = await connected(server, bob, { transports: ['websocket'], auth: { token: bob.token, catch_up: false } });
    await server.sendRest(alice.token, thread.id, { content: 'live after connect' });
    assert.equal((await b.next('new_message')).data.seq, 301);
    await sleep(200);
    assert.equal(b.events.filter((r) => r.event === 'new_message').length, 1, 'nothing replayed');
    b.close();
    // A catch_up that is not a boolean is refused, as a bad token is.
    const bad = sioClient(server, bob.token, { transports: ['websocket'], auth: { token: bob.token, catch_up: 'no' } });
    await assert.rejects(bad.connected(), (e) => /catch_up/.test(e.message));
    bad.close();
  });

  it('auth.subscribe: a busy thread is replayed from the client\'s since_seq before its live messages, in seq order', async () => {
    // A subscribe_thread emitted on 'connect' can be overtaken by the
    // thread's next live message; the CONNECT's own list cannot.
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createGroup(alice, [bob], 'subscribe at connect');
    await server.sendBacklog(alice, thread.id, 60);
    const aliceWs = await server.connect(alice);
    const streamed = 200;
    let sent = 0;
    const stream = (async () => {
      const deadline = Date.now() + 20000;
      while (sent < streamed && Date.now() < deadline) {
        for (let k = 0; k < 3 && sent < streamed; k++, sent++)
          aliceWs.send({ type: 'send_message', thread_id: thread.id, content: `live ${sent}`, request_id: `live-${sent}` });
        await sleep(2);
      }
    })();
    await sleep(30);
    const b = sioClient(server, bob.token, {
      transports: ['websocket'], autoAck: false,
      auth: { token: bob.token, catch_up: false, subscribe: [{ thread_id: thread.id, since_seq: 20 }] },
    });
    await b.connected();
    const subscribed = await b.next('thread_subscribed', (d) => d.thread_id === thread.id, 10000);
    await stream;
    assert.equal(sent, streamed);
    const last = 60 + streamed;
    await b.next('new_message', (d) => d.seq === last, 15000);
    const seqs = b.events.filter((r) => r.event === 'new_message').map((r) => r.data.seq);
    assert.deepEqual(seqs, Array.from({ length: last - 20 }, (_, i) => i + 21), '21 to the end, in order, each once');
    assert.ok(subscribed.data.last_seq >= 60, `thread_subscribed after the replay (last_seq ${subscribed.data.last_seq})`);
    b.close();
    // An `auth` renewal event takes no list (its numeric request ids would
    // be taken for ack ids): refused in its ack, and nothing else answers.
    const r = await connected(server, bob, { transports: ['websocket'], auth: { token: bob.token, catch_up: false } });
    const acks = [];
    r.socket.io.engine.on('packet', (pkt) => { if (pkt.type === 'message' && /^3/.test(pkt.data)) acks.push(pkt.data); });
    const renewed = await r.emit('auth', { token: bob.token, subscribe: [{ thread_id: thread.id, since_seq: last - 1, request_id: 0 }, { thread_id: newUuid(), request_id: 1 }] });
    assert.equal(renewed.success, false, JSON.stringify(renewed));
    assert.equal(renewed.code, 'invalid_field');
    await sleep(300);
    assert.equal(acks.length, 1, `one ack, the renewal's: ${JSON.stringify(acks)}`);
    assert.equal(r.events.filter((e) => e.event === 'thread_subscribed' || e.event === 'error').length, 0, 'no entry ran');
    r.close();
    // A bad list is refused as a bad catch_up is: CONNECT_ERROR invalid_field.
    const bad = sioClient(server, bob.token, { transports: ['websocket'], auth: { token: bob.token, subscribe: [{ thread_id: 'x' }] } });
    await assert.rejects(bad.connected(), (e) => /subscribe\[0\]/.test(e.message) && e.data?.code === 'invalid_field');
    bad.close();
  });

  it('the other native frames work as events, answered in the ack: subscribe_thread, typing, auth renewal', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    for (let i = 1; i <= 3; i++) await server.sendRest(alice.token, thread.id, { content: `old ${i}` });
    const b = await connected(server, bob, { transports: ['websocket'] });
    // The catch-up on connect replays the three unread messages first.
    for (let i = 1; i <= 3; i++) assert.equal((await b.next('new_message')).data.seq, i);
    const sub = await b.emit('subscribe_thread', { thread_id: thread.id, since_seq: 1 });
    assert.deepEqual(sub, { success: true, thread_id: thread.id, last_seq: 3 });
    await sleep(200);
    assert.equal(b.events.filter((r) => r.event === 'new_message').length, 3, 'nothing this socket already has');
    const aWs = await server.connect(alice);
    assert.deepEqual(await b.emit('typing', { thread_id: thread.id, is_typing: true }), { success: true });
    const typing = await aWs.next((f) => f.type === 'typing' && f.thread_id === thread.id);
    assert.equal(typing.user_id, bob.id);
    const renewed = await b.emit('auth', { token: bob.token });
    assert.equal(renewed.success, true, JSON.stringify(renewed));
    assert.equal(renewed.user_id, bob.id);
    const forbidden = await b.emit('subscribe_thread', { thread_id: (await server.createDirect(alice, (await server.registerMany(1))[0])).id });
    assert.equal(forbidden.success, false);
    assert.equal(forbidden.code, 'forbidden');
    b.close();
  });

  it('call signalling between a Socket.IO client and a native one; callee_offline in the ack', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const thread = await server.createDirect(alice, bob);
    const aWs = await server.connect(alice);
    const b = await connected(server, bob, { transports: ['websocket'] });
    assert.deepEqual(await b.emit('call_offer', { thread_id: thread.id, payload: { sdp: 'offer-sdp' } }), { success: true });
    const offer = await aWs.next((f) => f.type === 'call_offer' && f.thread_id === thread.id);
    assert.equal(offer.from_user_id, bob.id);
    assert.deepEqual(offer.payload, { sdp: 'offer-sdp' });
    aWs.send({ type: 'call_answer', thread_id: thread.id, payload: { sdp: 'answer-sdp' } });
    const answer = await b.next('call_answer', (d) => d.thread_id === thread.id);
    assert.equal(answer.data.from_user_id, alice.id);
    assert.deepEqual(answer.data.payload, { sdp: 'answer-sdp' });
    aWs.send({ type: 'ice_candidate', thread_id: thread.id, payload: { candidate: 'c1' } });
    assert.deepEqual((await b.next('ice_candidate', (d) => d.thread_id === thread.id)).data.payload, { candidate: 'c1' });
    assert.deepEqual(await b.emit('call_end', { thread_id: thread.id, payload: {} }), { success: true });
    await aWs.next((f) => f.type === 'call_end' && f.thread_id === thread.id);
    // Carol has never connected: the offer fails, and the ack says why.
    const lonely = await server.createDirect(bob, carol);
    const offline = await b.emit('call_offer', { thread_id: lonely.id, payload: {} });
    assert.equal(offline.success, false, JSON.stringify(offline));
    assert.equal(offline.code, 'callee_offline');
    b.close();
  });

  // An expired token ends the session with a plain close, no DISCONNECT:
  // socket.io-client reconnects by itself, and an `auth` function gives it a
  // fresh token (as apps of a provider with one-hour tokens do); the catch-up
  // then brings what was sent meanwhile. A stale token is refused at that
  // CONNECT (connect_error token_expired), after which the client stops.
  for (const transports of [['websocket'], ['polling']]) {
    it(`a token that expires: the session closes, and the client reconnects with a fresh token from its auth function (${transports})`, async () => {
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      // 7 s of life: the connect (a polling handshake on a loaded machine)
      // must happen before exp; with 2 s it could be refused instead.
      let tokens = 0;
      const auth = (cb) => {
        tokens += 1;
        const exp = Math.floor(Date.now() / 1000) + (tokens === 1 ? 7 : 3600);
        cb({ token: mintToken(server.secret, { sub: alice.id, exp }) });
      };
      const c = sioClient(server, null, { transports, reconnection: true, auth });
      const disconnected = new Promise((resolve) => c.socket.once('disconnect', resolve));
      await c.connected();
      await c.next('connection_success');
      const reason = await disconnected;
      assert.notEqual(reason, 'io server disconnect', 'a plain close, which the client answers by reconnecting');
      const told = c.events.find((e) => e.event === 'error' && e.data?.code === 'token_expired');
      assert.ok(told, 'the error event token_expired came first');
      assert.match(told.data.message, /reconnect with a fresh token/, 'words for Socket.IO, not for native frames');
      const sent = await server.sendRest(bob.token, thread.id, { content: 'while the token was renewed' });
      assert.equal(sent.status, 201);
      const again = await c.next('new_message', (m) => m.id === sent.body.data.id, 20000);
      assert.equal(again.data.content, 'while the token was renewed');
      assert.ok(c.socket.connected, 'connected again');
      assert.ok(tokens >= 2, 'a fresh token for the reconnect');
      c.close();
    });
  }

  it('a token that expires, given as it was: the reconnect is refused with token_expired and the client stops', async () => {
    const [alice] = await server.registerMany(1);
    const token = mintToken(server.secret, { sub: alice.id, exp: Math.floor(Date.now() / 1000) + 7 });
    const c = sioClient(server, token, { transports: ['websocket'], reconnection: true });
    await c.connected();
    const refused = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), 20000);
      c.socket.once('connect_error', (e) => { clearTimeout(timer); resolve(e); });
    });
    assert.ok(refused, 'no reconnect was tried within 20 s of the expiry');
    assert.equal(refused.data?.code, 'token_expired', refused.message);
    await sleep(1000);
    assert.equal(c.socket.connected, false, 'the client does not retry a refused CONNECT');
    c.close();
  });

  it('a disabled account over polling: the error event account_disabled, then the server disconnects', async () => {
    const [alice] = await server.registerMany(1);
    const c = await connected(server, alice, { transports: ['polling'], reconnection: true });
    const disconnected = new Promise((resolve) => c.socket.once('disconnect', resolve));
    await server.cli(['user', 'disable', alice.username]);
    assert.equal((await c.next('error', (e) => e?.code === 'account_disabled', 5000)).data.code, 'account_disabled');
    assert.equal(await disconnected, 'io server disconnect');
    c.close();
  });

  it('a disabled account over polling gets nothing after its DISCONNECT, even if it keeps polling', async () => {
    // Before, the closing session kept queuing: each poll carried the
    // thread's new messages to the disabled user until the close deadline.
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const open = await rawConnect(server, bob);
    await server.cli(['user', 'disable', bob.username]);
    const bye = await pollFor(server, open.sid, (p) => p === '41');
    assert.ok(bye.packet, `no DISCONNECT: ${bye.seen.join(' | ')}`);
    for (let i = 0; i < 5; i++) {
      assert.equal((await server.sendRest(alice.token, thread.id, { content: `after ${i}` })).status, 201);
    }
    await sleep(300);
    const after = await poll(server, open.sid, 5000);
    assert.ok(!after.text.includes('new_message'), `a disabled user was sent: ${after.text}`);
    assert.ok(after.status !== 200 || after.text.split('\x1e').includes('1'), `the close packet comes next: ${after.text}`);
  });

  // socket.io-client's disconnect() over polling: DISCONNECT (41) in one
  // POST, then the Engine.IO close (1) in another. The session ends at the
  // 41 (a poll was waiting); the 1 that follows is answered ok, not 400
  // unknown sid (an error in every browser's console). So is the real
  // client's, which counts no engineio_error.
  it('a polling client that disconnects: its Engine.IO close after the DISCONNECT is answered ok', async () => {
    const [bob] = await server.registerMany(1);
    const open = await rawConnect(server, bob);
    const waiting = poll(server, open.sid);
    await sleep(100);
    const bye = await post(server, open.sid, '41');
    assert.equal(bye.text, 'ok');
    const closed = await waiting;
    assert.ok(closed.text.split('\x1e').includes('1'), `the waiting poll gets the close: ${closed.text}`);
    const close = await post(server, open.sid, '1');
    assert.equal(close.status, 200, close.text);
    assert.equal(close.text, 'ok');

    const errors = async () => {
      const m = (await server.http('GET', '/metrics')).text.match(/parley_errors_total\{code="engineio_error"\} (\d+)/);
      return m ? Number(m[1]) : 0;
    };
    const before = await errors();
    for (let i = 0; i < 3; i++) {
      const c = await connected(server, bob, { transports: ['polling'] });
      await sleep(100);  // its poll waits
      c.socket.disconnect();
      await sleep(300);
    }
    assert.equal(await errors(), before, 'no Engine.IO error from a client disconnecting');
  });

  it('a server-side close in the middle of an upgrade reaches the client over the probe once it sends 5', async () => {
    // Before, the probe was dropped at the close: the client, which stops
    // polling after 3probe, never got the error event nor the DISCONNECT.
    const [alice] = await server.registerMany(1);
    const open = await rawConnect(server, alice);
    const probe = new WebSocket(`${server.wsBase}/socket.io/?EIO=4&transport=websocket&sid=${open.sid}`);
    const received = [];
    let closed = false;
    probe.on('message', (data) => received.push(String(data)));
    probe.on('close', () => { closed = true; });
    await new Promise((resolve, reject) => { probe.once('open', resolve); probe.once('error', reject); });
    probe.send('2probe');
    for (let i = 0; i < 50 && !received.includes('3probe'); i++) await sleep(20);
    assert.deepEqual(received, ['3probe']);
    await server.cli(['user', 'disable', alice.username]);
    // The account watcher closes the session right after it logs the change:
    // wait for that line, then give the close time to run, so that the probe
    // is checked after the server tried to close (not before, vacuously).
    const changed = `event=account_changed user_id=${alice.id} disabled=true`;
    for (let i = 0; i < 100 && !server.log.some((l) => l.includes(changed)); i++) await sleep(50);
    assert.ok(server.log.some((l) => l.includes(changed)), `the account watcher never saw the disable\n${server.logTail()}`);
    await sleep(1000);
    assert.equal(closed, false, 'the probe is kept while the upgrade is under way');
    probe.send('5');
    for (let i = 0; i < 100 && !closed; i++) await sleep(30);
    assert.ok(closed, 'the WebSocket closes after what was queued');
    assert.ok(received.some((p) => p.startsWith('42["error"') && p.includes('account_disabled')), received.join(' | '));
    assert.ok(received.includes('41'), `DISCONNECT: ${received.join(' | ')}`);
  });

  it('an upgrade whose client sends 5 without a probe first is taken, as the reference server takes it', async () => {
    const [alice, bob] = await server.registerMany(2);
    const open = await rawConnect(server, alice);
    const ws = new WebSocket(`${server.wsBase}/socket.io/?EIO=4&transport=websocket&sid=${open.sid}`);
    const received = [];
    ws.on('message', (data) => received.push(String(data)));
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    ws.send('5');
    await sleep(200);
    const thread = await server.createDirect(bob, alice);
    const sent = await server.sendRest(bob.token, thread.id, { content: 'over the upgraded socket' });
    assert.equal(sent.status, 201, sent.text);
    for (let i = 0; i < 100 && !received.some((p) => p.includes('over the upgraded socket')); i++) await sleep(30);
    assert.ok(received.some((p) => /^42\d*\["new_message"/.test(p) && p.includes('over the upgraded socket')), received.join(' | '));
    ws.close();
  });

  it('polling-only clients exchange messages', async () => {
    const [alice, bob] = await server.registerMany(2);
    const a = await connected(server, alice, { transports: ['polling'] });
    const b = await connected(server, bob, { transports: ['polling'] });
    for (let i = 1; i <= 5; i++) {
      const ack = await a.emit('send_message', { username: bob.username, text: `poll ${i}` });
      assert.equal(ack.success, true);
    }
    const got = [];
    for (let i = 1; i <= 5; i++) got.push((await b.next('new_message')).data);
    assert.deepEqual(got.map((m) => m.content), [1, 2, 3, 4, 5].map((i) => `poll ${i}`));
    const back = await b.emit('send_message', { username: alice.username, text: 'polled back' });
    assert.equal((await a.next('new_message', (m) => m.id === back.message.id)).data.content, 'polled back');
    assert.equal(a.socket.io.engine.transport.name, 'polling');
    a.close(); b.close();
  });

  it('an upgrade in the middle of a burst loses and duplicates nothing', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const aWs = await server.connect(alice);
    const N = 300;
    const b = sioClient(server, bob.token);  // polling first, upgrading meanwhile
    const sending = (async () => {
      for (let i = 1; i <= N; i++) {
        aWs.ws.send(JSON.stringify({ type: 'send_message', thread_id: thread.id, content: `m${i}`, client_msg_id: `b${i}` }));
        if (i % 20 === 0) await sleep(5);
      }
    })();
    await b.connected();
    await sending;
    const seqs = [];
    for (let i = 0; i < N; i++) seqs.push((await b.next('new_message', () => true, 15000)).data.seq);
    assert.deepEqual(seqs, Array.from({ length: N }, (_, i) => i + 1), 'every seq once, in order');
    // On a loaded machine the burst may be through before the upgrade is.
    for (let i = 0; i < 50 && b.socket.io.engine.transport.name !== 'websocket'; i++) await sleep(100);
    assert.equal(b.socket.io.engine.transport.name, 'websocket', 'upgraded');
    await sleep(300);
    assert.equal(b.events.filter((r) => r.event === 'new_message').length, N, 'no duplicate');
    b.close();
  });

  it('unknown events and bad payloads are answered in the ack, store nothing and keep the session', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const a = await connected(server, alice, { transports: ['websocket'] });
    const cases = [
      ['no_such_event', {}, 'unknown_type'],
      ['send_message', 'just a string', 'invalid_json'],
      ['send_message', { thread_id: thread.id }, 'missing_field'],
      ['send_message', { thread_id: 'not-a-uuid', content: 'x' }, 'invalid_field'],
      ['send_message', { thread_id: thread.id, content: 'x'.repeat(4001) }, 'content_too_long'],
      ['send_message', { thread_id: thread.id, content: 'x', message_type: 'system' }, null],
      ['mark_as_read', {}, 'missing_field'],
      ['join_chat', { username: 42 }, 'invalid_field'],
    ];
    for (const [event, payload, code] of cases) {
      const r = await a.emit(event, payload);
      assert.equal(r.success, false, `${event} ${JSON.stringify(payload).slice(0, 60)} → ${JSON.stringify(r)}`);
      if (code) assert.equal(r.code, code, `${event}: ${JSON.stringify(r)}`);
    }
    // Without an ack, the error is an `error` event {message, code}.
    a.socket.emit('no_such_event', {});
    const err = await a.next('error');
    assert.equal(err.data.code, 'unknown_type');
    assert.equal(typeof err.data.message, 'string');
    assert.equal((await server.history(alice.token, thread.id)).length, 0, 'nothing stored');
    assert.equal((await a.emit('ping', {})).success, true, 'session still open');
    a.close();
  });

  // JSON that JavaScript reads and the server refuses: an emoji cut in half
  // (a lone surrogate, which JSON.stringify escapes as \ud83d) and nesting
  // deeper than 32 levels. Refused like any bad event; the session stays.
  for (const transports of [['websocket'], ['polling']]) {
    it(`events whose data the server's parser refuses are answered and keep the session (${transports})`, async () => {
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      const a = await connected(server, alice, { transports });
      const disconnects = [];
      a.socket.on('disconnect', (r) => disconnects.push(r));
      const cut = '😀😀😀'.slice(0, 5);
      const deep = JSON.parse('['.repeat(40) + ']'.repeat(40));
      const cases = [
        [{ thread_id: thread.id, content: cut, client_msg_id: 'cut1' }, 'invalid_utf8'],
        [{ username: bob.username, text: '\udc00 low surrogate first' }, 'invalid_utf8'],
        [{ thread_id: thread.id, content: 'x', extra: deep }, 'invalid_json'],
      ];
      for (const [payload, code] of cases) {
        const r = await a.emit('send_message', payload);
        assert.equal(r.success, false, JSON.stringify(r));
        assert.equal(r.code, code, JSON.stringify(r));
        assert.equal(typeof r.error, 'string');
      }
      a.socket.emit('send_message', { thread_id: thread.id, content: cut });  // no ack: an `error` event
      assert.equal((await a.next('error', (e) => e?.code === 'invalid_utf8')).data.code, 'invalid_utf8');
      assert.equal((await a.emit('ping', {})).success, true, 'session still open');
      assert.deepEqual(disconnects, []);
      assert.equal((await server.history(alice.token, thread.id)).length, 0, 'nothing stored');
      a.close();
    });
  }
});

describe('Socket.IO pings with a short timeout, and a session closing with a backlog', () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--socketio-ping-interval', '2000', '--socketio-ping-timeout', '1500',
      '--max-outbound-bytes', '262144', '--rate-burst', '10000'] });
  });
  after(async () => { await server?.stop(); });

  it('pings come within pingInterval of each other, never a sweep late: clients stay connected', async () => {
    // The server sent pings at its once-a-second sweep, a second late
    // (every ~3 s with a 2 s pingInterval): socket.io-client, with a short
    // pingTimeout, then closed with "ping timeout". The pings' spacing is
    // measured here instead of relying on a 500 ms pingTimeout, which a
    // stall of this test process alone could exceed on a loaded machine:
    // now 1-2 s apart, a late sweep makes them ~3 s apart. The mean gap
    // (first to last ping over their count) shrugs off a stall at one ping.
    const [alice, bob] = await server.registerMany(2);
    const clients = [await connected(server, alice, { transports: ['websocket'] }), await connected(server, bob, { transports: ['polling'] })];
    const drops = [];
    const pings = clients.map(() => []);
    clients.forEach((c, i) => {
      c.socket.on('disconnect', (r) => drops.push(r));
      c.socket.io.on('ping', () => pings[i].push(Date.now()));
    });
    await sleep(9000);
    assert.deepEqual(drops, [], 'no client gave up');
    for (const [i, times] of pings.entries()) {
      assert.ok(times.length >= 3, `client ${i}: only ${times.length} pings in 9 s`);
      const meanGap = (times.at(-1) - times[0]) / (times.length - 1);
      assert.ok(meanGap <= 2500, `client ${i}: pings ${Math.round(meanGap)} ms apart on average (pingInterval 2000): ` +
        times.slice(1).map((t, k) => t - times[k]).join(', '));
    }
    for (const c of clients) assert.equal((await c.emit('ping', {})).success, true);
    for (const c of clients) c.close();
  });

  it('a session that disconnects during its catch-up stops reading the backlog', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    await server.sendBacklog(alice, thread.id, 3000, `backlog ${'x'.repeat(300)}`);
    const before = await server.metric('parley_messages_out_total');
    const open = await handshake(server);
    await post(server, open.sid, `40${JSON.stringify({ token: bob.token })}`);
    await poll(server, open.sid, 3000);
    await post(server, open.sid, '41');  // DISCONNECT, then no more polls
    await sleep(2000);
    const sent = (await server.metric('parley_messages_out_total')) - before;
    // Paced by --max-outbound-bytes (a few hundred frames), not all 3000
    // read, encoded and dropped.
    assert.ok(sent < 1500, `frames sent into the closing session: ${sent}`);
  });
});

// A send made as the session connects is answered while the catch-up is
// still reading where the user stands (held here for 1.5 s after its read):
// the answer waits for the older messages the catch-up replays, as a native
// client's does behind its subscribe_thread. Sent at once, its seq came
// first, and a client that keeps the highest seq it has seen would resume
// past them. The sends wait 300 ms after connecting: a send stored before
// the catch-up reads the positions marks the thread read (nothing to replay).
describe('Socket.IO: a send answered before the catch-up has begun', () => {
  let server;
  before(async () => { server = await startServer({ env: { PARLEY_TEST_SIO_CATCH_UP_PAUSE_MS: '1500' } }); });
  after(async () => { await server?.stop(); });

  // Bob, with messages 1-3 from Alice unread, connects and sends; `then`
  // runs after the send. What Bob's socket got: seqs, 'ack N', 'sent N'.
  async function sendAtConnect(then = async () => {}) {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    for (let i = 1; i <= 3; i++) assert.equal((await server.sendRest(alice.token, thread.id, { content: `while away ${i}` })).status, 201);
    const b = sioClient(server, bob.token, { transports: ['websocket'] });
    await b.connected();
    await sleep(300);
    // A callback, not emitWithAck: it runs as the ack is read, in order with the events.
    b.socket.emit('send_message', { thread_id: thread.id, content: 'sent at connect', client_msg_id: 'at-connect' },
      (ack) => b.events.push({ event: 'ACK', data: ack }));
    await then({ alice, b, thread });
    await b.next('message_sent', (d) => d.client_msg_id === 'at-connect', 10000);
    await b.next('new_message', (d) => d.seq === 3, 10000);
    await sleep(300);
    b.close();
    return b.events.filter((r) => ['new_message', 'message_sent', 'ACK'].includes(r.event))
      .map((r) => (r.event === 'new_message' ? r.data.seq : r.event === 'ACK' ? `ack ${r.data.message?.seq}` : `sent ${r.data.seq}`));
  }

  it('its ack and message_sent come after the messages the catch-up replays', async () => {
    const order = await sendAtConnect();
    assert.deepEqual(order.slice(0, 3), [1, 2, 3], `the replay first: ${JSON.stringify(order)}`);
    assert.deepEqual(order.slice(3).sort(), ['ack 4', 'sent 4'], `then the answer, once: ${JSON.stringify(order)}`);
  });

  // The client's own subscribe_thread, sent while the catch-up still holds
  // live delivery, replays the thread: the answer takes its seq's place in
  // it, before a newer message (5) that came meanwhile.
  it('with the client\'s own subscribe_thread meanwhile, the answer keeps its seq\'s place', async () => {
    const order = await sendAtConnect(async ({ alice, b, thread }) => {
      await sleep(300);
      assert.equal((await server.sendRest(alice.token, thread.id, { content: 'newer' })).status, 201);
      await sleep(100);
      b.socket.emit('subscribe_thread', { thread_id: thread.id, since_seq: 0 });
      await b.next('new_message', (d) => d.seq === 5, 10000);
    });
    assert.deepEqual(order.slice(0, 3), [1, 2, 3], `the replay first: ${JSON.stringify(order)}`);
    assert.deepEqual(order.slice(3, 5).sort(), ['ack 4', 'sent 4'], `then the answer: ${JSON.stringify(order)}`);
    assert.deepEqual(order.slice(5), [5], `then the newer message, once: ${JSON.stringify(order)}`);
  });

  // The client's own replay of the thread has ended, and the catch-up still
  // holds live delivery: a message from Alice (4) waits, and the answer to
  // Bob's send (5) waits behind it. It went out at once, before 4.
  it('after the client\'s own replay has ended, the answer still waits behind older held messages', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    for (let i = 1; i <= 3; i++) assert.equal((await server.sendRest(alice.token, thread.id, { content: `read ${i}` })).status, 201);
    const b = sioClient(server, bob.token, { transports: ['websocket'] });
    b.socket.on('connect', () => b.socket.emit('subscribe_thread', { thread_id: thread.id, since_seq: 3 }));
    await b.connected();
    await b.next('thread_subscribed', (d) => d.thread_id === thread.id, 10000);
    assert.equal((await server.sendRest(alice.token, thread.id, { content: 'held' })).status, 201);
    await sleep(200);
    b.socket.emit('send_message', { thread_id: thread.id, content: 'answered while held', client_msg_id: 'after-replay' },
      (ack) => b.events.push({ event: 'ACK', data: ack }));
    await b.next('message_sent', (d) => d.client_msg_id === 'after-replay', 10000);
    await b.next('new_message', (d) => d.seq === 4, 10000);
    await sleep(300);
    const order = b.events.filter((r) => ['new_message', 'message_sent', 'ACK'].includes(r.event))
      .map((r) => (r.event === 'new_message' ? r.data.seq : r.event === 'ACK' ? `ack ${r.data.message?.seq}` : `sent ${r.data.seq}`));
    assert.deepEqual(order[0], 4, `the held message first: ${JSON.stringify(order)}`);
    assert.deepEqual(order.slice(1).sort(), ['ack 5', 'sent 5'], `then the answer: ${JSON.stringify(order)}`);
    b.close();
  });
});

// A send stored before the catch-up reads the positions marks its thread
// read up to it, so the catch-up replays from past it (here another user's
// newer message): its answer, held meanwhile, goes before that replay. It
// was kept until the replay ended, after the newer message.
describe('Socket.IO: a send stored before the catch-up reads the positions', () => {
  let server;
  before(async () => { server = await startServer({ env: { PARLEY_TEST_SIO_CATCH_UP_READ_PAUSE_MS: '1000' } }); });
  after(async () => { await server?.stop(); });

  it('its answer comes before the newer messages the catch-up replays', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    for (let i = 1; i <= 3; i++) assert.equal((await server.sendRest(alice.token, thread.id, { content: `before ${i}` })).status, 201);
    const b = sioClient(server, bob.token, { transports: ['websocket'] });
    b.socket.on('connect', () => {
      b.socket.emit('send_message', { thread_id: thread.id, content: 'sent at connect', client_msg_id: 'before-read' },
        (ack) => b.events.push({ event: 'ACK', data: ack }));
    });
    await b.connected();
    await sleep(300);  // stored by now; the positions are read 1 s after connecting
    assert.equal((await server.sendRest(alice.token, thread.id, { content: 'newer' })).status, 201);
    await b.next('new_message', (d) => d.seq === 5, 10000);
    await b.next('message_sent', (d) => d.client_msg_id === 'before-read', 10000);
    await sleep(300);
    const order = b.events.filter((r) => ['new_message', 'message_sent', 'ACK'].includes(r.event))
      .map((r) => (r.event === 'new_message' ? r.data.seq : r.event === 'ACK' ? `ack ${r.data.message?.seq}` : `sent ${r.data.seq}`));
    assert.deepEqual(order.slice(0, 2).sort(), ['ack 4', 'sent 4'], `the answer first: ${JSON.stringify(order)}`);
    assert.deepEqual(order.slice(2), [5], `then the newer message, once (1-3 were read by sending): ${JSON.stringify(order)}`);
    b.close();
  });
});

describe('Socket.IO sessions that stop answering', () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--socketio-ping-interval', '1000', '--socketio-ping-timeout', '1500'] });
  });
  after(async () => { await server?.stop(); });

  it('a client that stops answering pings is dropped, and resumes losslessly on reconnect', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aWs = await server.connect(alice);
    // Bob over raw polling: CONNECT, then silence.
    const open = await handshake(server);
    assert.equal(open.pingInterval, 1000);
    assert.equal((await post(server, open.sid, `40${JSON.stringify({ token: bob.token })}`)).status, 200);
    const conn = await pollFor(server, open.sid, (p) => p.startsWith('40'));
    assert.ok(conn.packet, `no CONNECT answer: ${conn.seen.join(' | ')}`);
    const first = await aWs.request({ type: 'send_message', username: bob.username, content: 'one' });
    assert.equal(first.type, 'message_sent');
    // No GET, no pong: the session is gone after the ping timeout.
    let gone = null;
    for (let i = 0; i < 40 && !gone; i++) {
      await sleep(250);
      const h = await server.http('GET', '/health');
      const live = await server.http('POST', `${EIO}&sid=${open.sid}`, { body: '6', headers: { 'Content-Type': 'text/plain' } });
      if (live.status === 400) gone = live;
      assert.equal(h.status, 200);
    }
    assert.ok(gone, 'the silent session was not dropped');
    assert.deepEqual(gone.body, { code: 1, message: 'Session ID unknown' });
    const second = await aWs.request({ type: 'send_message', username: bob.username, content: 'two' });
    assert.equal(second.type, 'message_sent');
    // Bob comes back with socket.io-client: both messages, in order, once.
    const b = await connected(server, bob, { transports: ['websocket'] });
    const got = [(await b.next('new_message')).data, (await b.next('new_message')).data];
    assert.deepEqual(got.map((m) => m.content), ['one', 'two']);
    await sleep(300);
    assert.equal(b.events.filter((r) => r.event === 'new_message').length, 2);
    b.close();
  });

  it('a long poll whose connection the client drops closes the session, and what came after it is caught up on reconnect', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aWs = await server.connect(alice);
    const open = await handshake(server);
    assert.equal((await post(server, open.sid, `40${JSON.stringify({ token: bob.token })}`)).status, 200);
    const conn = await pollFor(server, open.sid, (p) => p.startsWith('40'));
    assert.ok(conn.packet, `no CONNECT answer: ${conn.seen.join(' | ')}`);
    // A poll given up on (a proxy's reset, say): its connection closes while
    // it waits. (A poll the server answers first, with a ping, is answered.)
    let dropped = false;
    for (let i = 0; i < 10 && !dropped; i++) {
      try {
        const r = await poll(server, open.sid, 300);
        for (const p of r.text.split('\x1e')) if (p === '2') await post(server, open.sid, '3');
      } catch { dropped = true; }
    }
    assert.ok(dropped, 'every poll was answered within 300 ms');
    // The session closes once the server has seen the poll's connection end:
    // wait for that (bounded; a noop POST is refused once the session is
    // gone), not a fixed 300 ms that a slow (sanitizer) build can overrun.
    // The ping timeout would end it too, a second or more later: that one
    // is logged, and is not what this test is about.
    let ended = false;
    for (let i = 0; i < 100 && !ended; i++) {
      ended = (await post(server, open.sid, '6')).status === 400;
      if (!ended) await sleep(100);
    }
    assert.ok(ended, 'the session outlived its poll\'s connection');
    assert.ok(!server.log.some((l) => l.includes(`event=eio_ping_timeout sid=${open.sid}`)),
      'closed at the dropped poll, not later at the ping timeout');
    const sent = await aWs.request({ type: 'send_message', username: bob.username, content: 'after the dead poll' });
    assert.equal(sent.type, 'message_sent');
    // Before, the message went into the dead connection and the session went on.
    const next = await poll(server, open.sid);
    assert.equal(next.status, 400, `the session outlived its poll's connection: ${next.text}`);
    assert.deepEqual(next.body, { code: 1, message: 'Session ID unknown' });
    const b = await connected(server, bob, { transports: ['websocket'] });
    assert.equal((await b.next('new_message')).data.content, 'after the dead poll');
    b.close();
  });

  // A raw connection holding a long poll of `sid`; `after` is written once it waits.
  async function rawPoll(sid, after, together = false) {
    const sock = net.connect(server.port, '127.0.0.1');
    await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    const got = [];
    sock.on('data', (d) => got.push(d));
    sock.on('error', () => {});
    const get = `GET ${EIO}&sid=${sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
    if (together) {
      sock.write(get + after);  // read with the request: already in the server's buffer
    } else {
      sock.write(get);
      await sleep(200);
      if (after) sock.write(after);
    }
    return { sock, text: () => Buffer.concat(got).toString('latin1') };
  }
  async function connectedPollingSession(user) {
    const open = await handshake(server);
    assert.equal((await post(server, open.sid, `40${JSON.stringify({ token: user.token })}`)).status, 200);
    // Through what connect queues, the Socket.IO ping event last: then
    // nothing waits for the next poll.
    const conn = await pollFor(server, open.sid, (p) => p.startsWith('42') && p.includes('"ping"'));
    assert.ok(conn.packet, `no ping event after CONNECT: ${conn.seen.join(' | ')}`);
    assert.ok(conn.seen.some((p) => p.startsWith('40')), 'connected');
    return open.sid;
  }
  // Waits for an Engine.IO ping and answers it: the next comes a ping
  // interval (1 s here) later, time for a poll to wait unanswered by one.
  async function afterPing(sid) {
    const ping = await pollFor(server, sid, (p) => p === '2');
    assert.ok(ping.packet, `no ping: ${ping.seen.join(' | ')}`);
  }

  for (const [name, bytes, together] of [['a stray CRLF', '\r\n'], ['the start of a pipelined request', 'GET /health HTTP/1.1\r\nHo'],
    ['a stray CRLF sent with the poll', '\r\n', true]]) {
    it(`a long poll dropped after ${name} still closes the session: nothing goes into the dead connection`, async () => {
      const [alice, bob] = await server.registerMany(2);
      const aWs = await server.connect(alice);
      const sid = await connectedPollingSession(bob);
      await afterPing(sid);
      const { sock } = await rawPoll(sid, bytes, together);
      await sleep(100);
      sock.destroy();
      let ended = false;
      for (let i = 0; i < 100 && !ended; i++) {
        ended = (await post(server, sid, '6')).status === 400;
        if (!ended) await sleep(100);
      }
      // Before, the bytes ended the watch: the session went on, and the next
      // message was written into the dead connection and lost to it.
      assert.ok(ended, 'the session outlived its poll\'s connection');
      assert.ok(!server.log.some((l) => l.includes(`event=eio_ping_timeout sid=${sid}`)),
        'closed at the dropped poll, not later at the ping timeout');
      const sent = await aWs.request({ type: 'send_message', username: bob.username, content: `after ${name}` });
      assert.equal(sent.type, 'message_sent');
      assert.deepEqual((await poll(server, sid)).body, { code: 1, message: 'Session ID unknown' });
      aWs.close();
    });
  }

  it('a request pipelined behind a long poll is answered after it, and the poll still gets its message', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aWs = await server.connect(alice);
    const sid = await connectedPollingSession(bob);
    await afterPing(sid);
    const raw = await rawPoll(sid, 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await sleep(200);
    assert.equal((await aWs.request({ type: 'send_message', username: bob.username, content: 'to the poll' })).type, 'message_sent');
    // Two answers on the connection: the poll's (Engine.IO packets), then
    // /health's (JSON with the server's uptime).
    let text = '';
    const second = () => text.indexOf('HTTP/1.1 ', 1);
    for (let i = 0; i < 50 && !(second() > 0 && text.slice(second()).includes('uptime')); i++) { await sleep(100); text = raw.text(); }
    assert.ok(/^HTTP\/1\.1 200/.test(text), `the poll was answered first: ${text.slice(0, 300)}`);
    assert.ok(second() > 0 && /^HTTP\/1\.1 200/.test(text.slice(second())) && text.slice(second()).includes('uptime'),
      `then the pipelined /health: ${text.slice(0, 900)}`);
    // The poll carries the message, unless a ping answered it first: then the next poll does.
    if (!text.slice(0, second()).includes('to the poll')) {
      const next = await pollFor(server, sid, (p) => p.includes('to the poll'));
      assert.ok(next.packet, `the message, by the next poll: ${next.seen.join(' | ')}`);
    }
    raw.sock.destroy();
    aWs.close();
  });

  // The reference server's connectTimeout; Parley's is the native auth
  // frame's deadline, 10 s. Each session here answers every ping.
  it('an Engine.IO session with no accepted CONNECT is closed after 10 s, though it answers pings', async () => {
    const started = Date.now();
    const rawWs = (first) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`${server.wsBase}/socket.io/?EIO=4&transport=websocket`);
      const s = { got: [], closedAt: null };
      ws.on('message', (d) => { const t = String(d); s.got.push(t); if (t === '2') ws.send('3'); });
      ws.on('close', () => { s.closedAt = Date.now(); });
      ws.once('error', reject);
      ws.once('open', () => { if (first) ws.send(first); resolve(s); });
    });
    const silent = await rawWs(null);
    const refused = await rawWs('40{"token":"not.a.token"}');
    // Polling, no CONNECT: polls and pongs until the close packet (bounded: 16 s).
    const open = await handshake(server);
    let polledClose = null;
    while (!polledClose && Date.now() - started < 16000) {
      const res = await poll(server, open.sid, 3000);
      if (res.status !== 200) break;
      for (const p of res.text.split('\x1e')) {
        if (p === '2') await post(server, open.sid, '3');
        if (p === '1') polledClose = Date.now();
      }
    }
    for (let i = 0; i < 40 && (!silent.closedAt || !refused.closedAt); i++) await sleep(100);
    assert.ok(refused.got.some((p) => p.startsWith('44{')), `no CONNECT_ERROR: ${refused.got.join(' | ')}`);
    assert.ok(silent.got.includes('2') && refused.got.includes('2'), 'the server pinged, the clients answered');
    for (const [name, at] of [['no CONNECT', silent.closedAt], ['CONNECT_ERROR', refused.closedAt], ['polling', polledClose]]) {
      assert.ok(at, `the ${name} session was not closed`);
      const after = at - started;
      assert.ok(after >= 9000 && after <= 13000, `the ${name} session closed after ${after} ms`);
    }
    assert.equal((await poll(server, open.sid)).status, 400, 'the polling session is gone');
  });

  it('a WebSocket probe that never sends 5 is dropped after the ping timeout; the session stays on polling', async () => {
    const open = await handshake(server);
    const probe = new WebSocket(`${server.wsBase}/socket.io/?EIO=4&transport=websocket&sid=${open.sid}`);
    const received = [];
    probe.on('message', (data) => received.push(String(data)));
    let closed = false;
    probe.on('close', () => { closed = true; });
    await new Promise((resolve, reject) => { probe.once('open', resolve); probe.once('error', reject); });
    probe.send('2probe');
    // The polling side keeps answering pings, so only the probe can time out.
    const started = Date.now();
    while (!closed && Date.now() - started < 8000) {
      const res = await poll(server, open.sid, 3000);
      assert.equal(res.status, 200, `the session itself was closed: ${res.text}`);
      for (const p of res.text.split('\x1e')) if (p === '2') await post(server, open.sid, '3');
      if (res.text === '6') await sleep(100);  // upgrading: polls are answered at once
    }
    assert.ok(closed, 'the unfinished probe was not dropped');
    assert.deepEqual(received, ['3probe']);
    // Still a polling session: the next poll waits for and gets a ping.
    const after = await poll(server, open.sid, 3000);
    assert.equal(after.status, 200);
    assert.ok(after.text.split('\x1e').includes('2'), `no ping over polling: ${after.text}`);
    await post(server, open.sid, '1');
  });
});

describe('Socket.IO limits are the native ones', () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--max-connections-per-user', '2', '--rate-burst', '5', '--rate-per-second', '1'] });
  });
  after(async () => { await server?.stop(); });

  // The reference server's way to refuse a CONNECT (an error from a
  // middleware): connect_error, never a `connect` lost a moment later.
  const refusedConnect = (c) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no connect_error within 5 s')), 5000);
    c.socket.once('connect', () => { clearTimeout(timer); reject(new Error('the refused session got connect')); });
    c.socket.once('connect_error', (e) => { clearTimeout(timer); resolve(e); });
  });

  it('Socket.IO sessions count against the connections per user, beside native ones: past it, connect_error', async () => {
    const [alice] = await server.registerMany(1);
    const ws = await server.connect(alice);
    const a1 = await connected(server, alice, { transports: ['websocket'] });
    const a2 = sioClient(server, alice.token, { transports: ['websocket'] });
    const err = await refusedConnect(a2);
    assert.equal(err.data?.code, 'too_many_connections');
    assert.match(err.message, /too many connections/);
    await sleep(300);
    assert.equal(a2.socket.connected, false, 'the third connection is not connected');
    assert.deepEqual(a2.events.map((e) => e.event), [], 'a refused session gets no events');
    assert.equal((await a1.emit('ping', {})).success, true, 'the others stay');
    // Once a place is free, the same socket connects when asked to (tried
    // again for a while: the server may need a moment to count the close).
    a1.close();
    let refusal = null;
    for (let i = 0; i < 40; i++) {
      await sleep(i ? 250 : 300);
      a2.socket.connect();
      try { await a2.connected(); refusal = null; break; } catch (e) {
        refusal = e;
        if (e.data?.code !== 'too_many_connections') throw e;
      }
    }
    assert.ok(a2.socket.connected, `still refused once a place was free: ${refusal?.message}`);
    await a2.next('connection_success');
    a2.close(); ws.close?.();
  });

  // The client is told packets up to maxPayload (1 MB) will do: one past
  // --max-frame-bytes (a photo inlined as base64) used to close the session,
  // and the packets sent after it (the rest of a flushed offline queue: the
  // same POST, or the next frames) were lost with no ack and no error.
  for (const transports of [['polling'], ['websocket']]) {
    it(`over ${transports[0]}, an event past --max-frame-bytes is refused in its ack and the next ones go through`, async () => {
      const [erin, fay] = await server.registerMany(2);
      const thread = await server.createDirect(erin, fay);
      const c = await connected(server, erin, { transports });
      const send = (name, extra = {}) => c.emit('send_message', { thread_id: thread.id, content: name, client_msg_id: name, ...extra });
      const answers = await Promise.all([send('m0'), send('big', { image_base64: 'A'.repeat(80000) }), send('m1'), send('m2')]);
      assert.deepEqual(answers.map((a) => a.success), [true, false, true, true], JSON.stringify(answers).slice(0, 400));
      assert.equal(answers[1].code, 'payload_too_large', JSON.stringify(answers[1]));
      assert.ok(c.socket.connected, 'the session stays');
      const history = await server.http('GET', `/api/chat/threads/${thread.id}/messages?limit=10`, { token: erin.token });
      assert.deepEqual(history.body.data.messages.map((m) => m.content), ['m0', 'm1', 'm2']);
      c.close();
    });
  }

  it('over polling too, the refused connection gets connect_error and the client does not retry by itself', async () => {
    const [carol] = await server.registerMany(1);
    const held = [await server.connect(carol), await server.connect(carol)];
    const c = sioClient(server, carol.token, { transports: ['polling'], reconnection: true });
    let opens = 0;
    c.socket.io.on('open', () => { opens += 1; });
    assert.equal((await refusedConnect(c)).data?.code, 'too_many_connections');
    await sleep(1000);
    assert.equal(c.socket.connected, false);
    assert.equal(opens, 1, 'the client did not reconnect by itself');
    c.close();
    for (const h of held) h.close?.();
  });

  it('a raw client refused past the limit can CONNECT again on the same Engine.IO session', async () => {
    const [dave] = await server.registerMany(1);
    const held = [await server.connect(dave), await server.connect(dave)];
    const open = await handshake(server);
    await post(server, open.sid, `40${JSON.stringify({ token: dave.token })}`);
    const first = await pollFor(server, open.sid, (p) => p.startsWith('44'));
    assert.ok(first.packet, `no CONNECT_ERROR: ${first.seen.join(' | ')}`);
    assert.deepEqual(JSON.parse(first.packet.slice(2)).data, { code: 'too_many_connections' });
    assert.ok(!first.seen.some((p) => p.startsWith('40')), `a CONNECT answer came: ${first.seen.join(' | ')}`);
    held[0].close?.();
    // Tried again for a while: the server may need a moment to count the close.
    let second;
    for (let i = 0; i < 40; i++) {
      await sleep(i ? 250 : 300);
      await post(server, open.sid, `40${JSON.stringify({ token: dave.token })}`);
      second = await pollFor(server, open.sid, (p) => p.startsWith('40{"sid"') || p.startsWith('44'));
      if (!second.packet?.startsWith('44') || JSON.parse(second.packet.slice(2)).data?.code !== 'too_many_connections') break;
    }
    assert.ok(second.packet?.startsWith('40{"sid"'), `not connected: ${second.seen.join(' | ')}`);
    await post(server, open.sid, '1');
    held[1].close?.();
  });

  it('acking every message of a catch-up longer than the burst is no flood: no error, no close, the receipts catch up', async () => {
    // burst 5, 1 per second, flooding closes after 50 refusals in a row: 80
    // acks at once were 75 refusals, so the connection closed (1008) on every
    // reconnection while the backlog lasted.
    const [dave, erin] = await server.registerMany(2);
    const thread = await server.createDirect(dave, erin);
    const ids = [];
    for (let i = 0; i < 80; i++) ids.push((await server.sendRest(dave.token, thread.id, { content: `backlog ${i}` })).id);
    const e = await connected(server, erin, { transports: ['websocket'] });
    let disconnected = null;
    e.socket.on('disconnect', (r) => { disconnected = r; });
    for (let waited = 0; e.events.filter((r) => r.event === 'new_message').length < 80 && waited < 15000; waited += 100) await sleep(100);
    assert.equal(e.events.filter((r) => r.event === 'new_message').length, 80, 'the 80 replayed');
    await sleep(2500);
    assert.equal(disconnected, null, 'still connected');
    assert.deepEqual(e.events.filter((r) => r.event === 'error').map((r) => r.data.code), [], 'no error events');
    const answer = await e.emit('ping', {}).catch(() => null);
    assert.ok(answer, 'the session still answers');
    // The newest receipt waited for a token and went through (waited for,
    // bounded: one token a second, later on a loaded machine): nothing
    // replayed next time.
    const delivered = async () => (await server.http('GET', `/api/chat/threads/${thread.id}`, { token: dave.token }))
      .body?.data?.participants?.find((p) => p.user_id === erin.id)?.last_delivered_seq;
    let mark;
    for (let waited = 0; (mark = await delivered()) !== 80 && waited < 15000; waited += 200) await sleep(200);
    assert.equal(mark, 80, "erin's delivery mark reaches the last of the 80");
    e.close();
    const again = await connected(server, erin, { transports: ['websocket'] });
    await sleep(500);
    assert.equal(again.events.filter((r) => r.event === 'new_message').length, 0, 'nothing replayed on the next connect');
    again.close();
  });

  it('a catch-up over several threads past the burst: each thread\'s newest receipt catches up and its sender hears of it', async () => {
    // Before, one receipt waited for all threads: the other thread's mark
    // stayed behind (replayed on the next connect) and its sender never heard.
    const [dave, frank, erin] = await server.registerMany(3);
    const t1 = await server.createDirect(dave, erin);
    const t2 = await server.createDirect(frank, erin);
    const last = {};
    for (let i = 0; i < 20; i++) {
      last[t1.id] = (await server.sendRest(dave.token, t1.id, { content: `one ${i}` })).body.data.id;
      last[t2.id] = (await server.sendRest(frank.token, t2.id, { content: `two ${i}` })).body.data.id;
    }
    const d = await server.connect(dave);
    const f = await server.connect(frank);
    const e = await connected(server, erin, { transports: ['websocket'] });
    for (let waited = 0; e.events.filter((r) => r.event === 'new_message').length < 40 && waited < 15000; waited += 100) await sleep(100);
    assert.equal(e.events.filter((r) => r.event === 'new_message').length, 40, 'the 40 replayed');
    // One token a second: the two threads' receipts within a few ticks.
    await d.next((m) => m.type === 'message_delivered' && m.message_id === last[t1.id], 8000, 'delivered of thread one');
    await f.next((m) => m.type === 'message_delivered' && m.message_id === last[t2.id], 8000, 'delivered of thread two');
    e.close();
    const again = await connected(server, erin, { transports: ['websocket'] });
    await sleep(500);
    assert.equal(again.events.filter((r) => r.event === 'new_message').length, 0, 'nothing replayed on the next connect');
    again.close(); d.close(); f.close();
  });

  it('events count against the rate limit: past the burst they are refused in the ack', async () => {
    const [bob] = await server.registerMany(1);
    const b = await connected(server, bob, { transports: ['websocket'] });
    const answers = await Promise.all(Array.from({ length: 10 }, () => b.emit('ping', {})));
    const limited = answers.filter((r) => r.success === false && r.code === 'rate_limited');
    assert.ok(limited.length >= 3, `expected refusals, got ${JSON.stringify(answers)}`);
    assert.ok(answers.some((r) => r.success === true));
    b.close();
  });
});

describe('Engine.IO handshakes not yet connected are bounded per address', () => {
  let server;
  before(async () => { server = await startServer({ args: ['--socketio-max-pending-per-address', '3'] }); });
  after(async () => { await server?.stop(); });

  it('past the bound a handshake gets 429 and nothing is opened; a CONNECT or a close frees a place', async () => {
    const [alice] = await server.registerMany(1);
    const open = [await handshake(server), await handshake(server), await handshake(server)];
    const refused = await server.http('GET', EIO);
    assert.equal(refused.status, 429, refused.text);
    assert.equal(refused.text[0], '{', 'an Engine.IO error body, not an open packet');
    assert.equal(refused.body.code, 3);
    // A client that closes its session frees its place at once.
    await post(server, open[0].sid, '1');
    await handshake(server);
    assert.equal((await server.http('GET', EIO)).status, 429);
    // A session whose CONNECT was accepted stops counting (within a second).
    await post(server, open[1].sid, `40${JSON.stringify({ token: alice.token })}`);
    const connected = await pollFor(server, open[1].sid, (p) => p.startsWith('40{"sid"'));
    assert.ok(connected.packet, `not connected: ${connected.seen.join(' | ')}`);
    let status = 0;
    for (let waited = 0; waited < 3000; waited += 200) {
      status = (await server.http('GET', EIO)).status;
      if (status === 200) break;
      await sleep(200);
    }
    assert.equal(status, 200, 'a place was freed by the connected session');
    // The connected session still works.
    await post(server, open[1].sid, '1');
  });

  it('a session closed for want of a CONNECT (10 s) frees its place then, not once a poll collects the close', async () => {
    let last = Date.now();
    for (let i = 0; i < 10; i++) {  // fill the bound (places of the test above may still be held)
      const r = await server.http('GET', EIO);
      if (r.status === 429) break;
      assert.equal(r.status, 200, r.text);
      last = Date.now();
    }
    assert.equal((await server.http('GET', EIO)).status, 429, 'the bound is full');
    // Each is closed 10 s after its handshake (checked once a second); its
    // close waits for a poll for the ping timeout (20 s), which never comes.
    await sleep(Math.max(0, last + 10000 - Date.now()));
    let status = 0;
    while (Date.now() < last + 14000) {
      status = (await server.http('GET', EIO)).status;
      if (status === 200) break;
      await sleep(250);
    }
    assert.equal(status, 200, `a place was free again ${Date.now() - last} ms after the last handshake`);
  });
});

describe('Engine.IO sessions a client closes before connecting stay in the bound until they are gone', () => {
  let server;
  before(async () => { server = await startServer({ args: ['--socketio-max-pending-per-address', '3'] }); });
  after(async () => { await server?.stop(); });

  // A DISCONNECT (or a bad packet) ends a session that never connected at
  // once, but it waits for a poll to collect its close: freed at that close,
  // a client could hold sessions as fast as it sends, with no account.
  it('handshakes each followed by a Socket.IO DISCONNECT are still refused past the bound', async () => {
    for (let i = 0; i < 3; i++) {
      const open = await handshake(server);
      await post(server, open.sid, '41');
    }
    const refused = await server.http('GET', EIO);
    assert.equal(refused.status, 429, refused.text);
  });
});

describe('Socket.IO polling and CORS', () => {
  let server;
  before(async () => { server = await startServer({ args: ['--allowed-origins', 'http://app.example'] }); });
  after(async () => { await server?.stop(); });

  it('an allowed Origin gets the CORS headers, another one 403 code 4', async () => {
    const ok = await server.http('GET', EIO, { headers: { Origin: 'http://app.example' } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['access-control-allow-origin'], 'http://app.example');
    assert.equal(ok.headers['access-control-allow-credentials'], 'true');
    const sid = JSON.parse(ok.text.slice(1)).sid;
    const posted = await server.http('POST', `${EIO}&sid=${sid}`, { body: '6', headers: { Origin: 'http://app.example', 'Content-Type': 'text/plain' } });
    assert.equal(posted.headers['access-control-allow-origin'], 'http://app.example');
    const evil = await server.http('GET', EIO, { headers: { Origin: 'http://evil.example' } });
    assert.equal(evil.status, 403);
    assert.deepEqual(evil.body, { code: 4, message: 'Forbidden' });
    const preflight = await server.http('OPTIONS', EIO, { headers: { Origin: 'http://app.example', 'Access-Control-Request-Method': 'POST' } });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers['access-control-allow-origin'], 'http://app.example');
    // An app's own headers (socket.io-client's extraHeaders) pass the preflight, as on the reference server.
    const custom = await server.http('OPTIONS', EIO, { headers: { Origin: 'http://app.example', 'Access-Control-Request-Method': 'GET',
      'Access-Control-Request-Headers': 'x-school-id, authorization' } });
    assert.equal(custom.headers['access-control-allow-headers'], 'x-school-id, authorization');
    const odd = await server.http('OPTIONS', EIO, { headers: { Origin: 'http://app.example', 'Access-Control-Request-Method': 'GET',
      'Access-Control-Request-Headers': 'x-a;b=c' } });
    assert.equal(odd.headers['access-control-allow-headers'], 'Authorization, Content-Type', 'not a list of header names: the fixed list');
  });

  it('a POST over maxPayload gets its 413 with the CORS headers, so a browser app sees it', async () => {
    const open = await handshake(server);
    const res = await server.http('POST', `${EIO}&sid=${open.sid}`,
      { body: '4' + 'x'.repeat(1000001), headers: { Origin: 'http://app.example', 'Content-Type': 'text/plain' } });
    assert.equal(res.status, 413);
    assert.equal(res.headers['access-control-allow-origin'], 'http://app.example');
    assert.equal(res.headers['access-control-allow-credentials'], 'true');
    const rest = await server.http('POST', '/api/chat/threads', { body: { type: 'group', title: 'x'.repeat(2_000_000) },
      headers: { Origin: 'http://app.example' } });
    assert.equal(rest.status, 413);
    assert.equal(rest.headers['access-control-allow-origin'], 'http://app.example');
  });
});

describe('bad Engine.IO and Socket.IO input', () => {
  let server, alice, bob, thread;
  before(async () => {
    server = await startServer();
    [alice, bob] = await server.registerMany(2);
    thread = await server.createDirect(alice, bob);
  });
  after(async () => { await server?.stop(); });

  const err = (code, message) => ({ code, message });
  // Each case: the request(s), then what the server must answer.
  const httpCases = [
    ['unknown transport', () => server.http('GET', '/socket.io/?EIO=4&transport=carrier-pigeon'), 400, err(0, 'Transport unknown')],
    ['unknown sid', () => server.http('GET', `${EIO}&sid=nope`), 400, err(1, 'Session ID unknown')],
    ['POST handshake', () => server.http('POST', EIO, { body: '40' }), 400, err(2, 'Bad handshake method')],
    ['EIO=3', () => server.http('GET', '/socket.io/?EIO=3&transport=polling'), 400, err(5, 'Unsupported protocol version')],
    ['no EIO', () => server.http('GET', '/socket.io/?transport=polling'), 400, err(5, 'Unsupported protocol version')],
    ['websocket without upgrade', () => server.http('GET', '/socket.io/?EIO=4&transport=websocket'), 400, err(3, 'Bad request')],
    ['PUT with a sid', async () => { const o = await handshake(server); return server.http('PUT', `${EIO}&sid=${o.sid}`, { body: 'x' }); }, 400, err(3, 'Bad request')],
    ['POST over maxPayload', async () => { const o = await handshake(server); return post(server, o.sid, '4' + 'x'.repeat(1000001)); }, 413, null],
  ];
  for (const [name, run, status, body] of httpCases) {
    it(`HTTP: ${name} → ${status}`, async () => {
      const res = await run();
      assert.equal(res.status, status, res.text.slice(0, 200));
      if (body) assert.deepEqual(res.body, body);
    });
  }

  it('HTTP: a WebSocket upgrade with an unknown sid → 400 code 1', async () => {
    const res = await server.tryUpgrade('/socket.io/?EIO=4&transport=websocket&sid=nope');
    assert.equal(res.status, 400, JSON.stringify(res));
  });

  it('HTTP: a second poll while one is pending → 400 and the session is closed', async () => {
    const o = await handshake(server);
    const first = poll(server, o.sid);
    await sleep(200);
    const second = await poll(server, o.sid);
    assert.equal(second.status, 400);
    const firstRes = await first;
    assert.equal(firstRes.status, 200);
    assert.ok(firstRes.text.split('\x1e').includes('1'), `the pending poll gets the close packet: ${firstRes.text}`);
    assert.deepEqual((await poll(server, o.sid)).body, err(1, 'Session ID unknown'));
  });

  // Packets that end the session (as the reference server does): the next
  // request for the sid is 400 "Session ID unknown".
  const closing = [
    ['an empty packet in the payload', '40\x1e\x1e2'],
    ['an unknown Engine.IO packet type', '9hello'],
    // Engine.IO v4: only the server pings ("invalid heartbeat direction").
    // Answered, 100,000 of them in one POST held megabytes per session.
    ['a ping from the client', '2'],
    ['a burst of pings from the client', Array(1000).fill('2').join('\x1e')],
    ['an unknown Socket.IO packet type', '49{}'],
    ['a Socket.IO packet that is not JSON', '42["send_message",{'],
    ['an EVENT that is not an array', '42{"type":"ping"}'],
    ['an EVENT with no name', '42[]'],
    ['an ack id of 20 digits', '4212345678901234567890["ping",{}]'],
    ['an EVENT before CONNECT', '42["send_message",{"username":"x","text":"y"}]'],
    ['a CONNECT_ERROR from the client', '44{"message":"x"}'],
    // The reference parser: "got binary data when not reconstructing a packet".
    ['a binary packet no binary packet announced', 'bAQID'],
    ['a binary packet that is not even base64', 'b!!!'],
  ];
  for (const [name, body] of closing) {
    it(`closes the session on ${name}`, async () => {
      const o = await handshake(server);
      const res = await post(server, o.sid, body);
      assert.ok(res.status === 200 || res.status === 400, `POST answered ${res.status}`);
      const after = await poll(server, o.sid);
      if (after.status === 200) {
        assert.ok(after.text.split('\x1e').includes('1'), `expected the close packet, got ${after.text}`);
        assert.equal((await poll(server, o.sid)).status, 400);
      } else {
        assert.deepEqual(after.body, err(1, 'Session ID unknown'));
      }
    });
  }

  // Packets answered with a clear error while the session stays.
  // A CONNECT_ERROR for the main namespace carries the error code in data.code.
  const connectError = (code) => (p) => p.startsWith('44{') && JSON.parse(p.slice(2)).data?.code === code;
  const answered = [
    ['CONNECT to another namespace', '40/admin,{}', (p) => p.startsWith('44/admin,') && /Invalid namespace/.test(p)],
    ['CONNECT without a token', '40{}', (p) => connectError('unauthorized')(p) && /token/.test(p)],
    ['CONNECT with a bad token', '40{"token":"bad.token.here"}', connectError('invalid_token')],
    ['CONNECT with a token that is not a string', '40{"token":42}', (p) => connectError('invalid_field')(p) && /token must be a string/.test(p)],
    ['CONNECT whose data has a lone surrogate', '40{"token":"\\ud800"}', connectError('invalid_utf8')],
    ['CONNECT whose data is nested too deep', `40{"token":${'['.repeat(40)}${']'.repeat(40)}}`, connectError('invalid_json')],
  ];
  for (const [name, body, pred] of answered) {
    it(`answers ${name} with CONNECT_ERROR`, async () => {
      const o = await handshake(server);
      assert.equal((await post(server, o.sid, body)).status, 200);
      const r = await pollFor(server, o.sid, pred);
      assert.ok(r.packet, `got ${r.seen.join(' | ')}`);
      assert.equal((await post(server, o.sid, '6')).status, 200, 'the session is still open');
    });
  }

  it('a BINARY_EVENT is refused with an error event and the session stays', async () => {
    const o = await handshake(server);
    await post(server, o.sid, `40${JSON.stringify({ token: alice.token })}`);
    assert.ok((await pollFor(server, o.sid, (p) => p.startsWith('40{'))).packet);
    await post(server, o.sid, `451-["send_message",{"thread_id":"${thread.id}","content":{"_placeholder":true,"num":0}}]\x1ebAQID`);
    const r = await pollFor(server, o.sid, (p) => p.startsWith('42["error"') && p.includes('binary_not_supported'));
    assert.ok(r.packet, `got ${r.seen.join(' | ')}`);
    await post(server, o.sid, '4217["ping",{}]');
    assert.ok((await pollFor(server, o.sid, (p) => p.startsWith('4317['))).packet, 'still answering');
    // Its one attachment came; a second binary packet is one nobody announced.
    await post(server, o.sid, 'bAQID');
    const after = await poll(server, o.sid);
    if (after.status === 200) assert.ok(after.text.split('\x1e').includes('1'), `expected the close packet, got ${after.text}`);
    else assert.deepEqual(after.body, err(1, 'Session ID unknown'));
  });

  // An Engine.IO session opened on a raw WebSocket: what it got, its close code.
  async function rawEioSocket() {
    const ws = new WebSocket(`${server.wsBase}/socket.io/?EIO=4&transport=websocket`);
    const got = [];
    const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
    ws.on('message', (d) => got.push(String(d)));
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    const waitFor = async (pred, what) => {
      for (let i = 0; i < 100 && !got.some(pred); i++) await sleep(20);
      assert.ok(got.some(pred), `${what}: ${got.join(' | ')}`);
    };
    return { ws, got, closed, waitFor };
  }

  it('over a WebSocket: binary frames announced by a BINARY_EVENT are dropped, a stray one closes the session', async () => {
    const { ws, closed, waitFor } = await rawEioSocket();
    ws.send(`40${JSON.stringify({ token: alice.token })}`);
    await waitFor((p) => p.startsWith('40{'), 'connected');
    ws.send(`452-["send_message",{"thread_id":"${thread.id}","content":{"_placeholder":true,"num":0}}]`);
    ws.send(Buffer.from([1, 2, 3]));
    ws.send(Buffer.from([4, 5, 6]));
    await waitFor((p) => p.startsWith('42["error"') && p.includes('binary_not_supported'), 'refused');
    ws.send('4217["ping",{}]');
    await waitFor((p) => p.startsWith('4317['), 'still answering after its two attachments');
    ws.send(Buffer.from([7]));
    const code = await Promise.race([closed, sleep(3000).then(() => 'still open')]);
    assert.notEqual(code, 'still open', 'a binary frame nobody announced closes the session');
  });

  // engine.io-client with forceBase64 (React Native) sends attachments as
  // `b` + base64 text over the WebSocket too: engine.io-parser takes them so.
  it('over a WebSocket: base64 attachments (b…) announced by a BINARY_EVENT are dropped, a stray one closes the session', async () => {
    const { ws, closed, waitFor } = await rawEioSocket();
    ws.send(`40${JSON.stringify({ token: alice.token })}`);
    await waitFor((p) => p.startsWith('40{'), 'connected');
    ws.send(`451-["send_message",{"thread_id":"${thread.id}","content":{"_placeholder":true,"num":0}}]`);
    ws.send('bAQID');
    await waitFor((p) => p.startsWith('42["error"') && p.includes('binary_not_supported'), 'refused');
    ws.send('4217["ping",{}]');
    await waitFor((p) => p.startsWith('4317['), 'still answering after its base64 attachment');
    ws.send('bBw==');
    const code = await Promise.race([closed, sleep(3000).then(() => 'still open')]);
    assert.notEqual(code, 'still open', 'a base64 attachment nobody announced closes the session');
  });

  // socket.io-client's connect() called again while its CONNECT is on its
  // way (an app's "online" handler) sends a second one: the reference server
  // answers it and the session stays.
  it('a second CONNECT while the first is answered, and one after it, keep the session', async () => {
    const { ws, got, waitFor } = await rawEioSocket();
    ws.send(`40${JSON.stringify({ token: alice.token })}`);
    ws.send(`40${JSON.stringify({ token: alice.token })}`);
    await waitFor((p) => p.startsWith('40{'), 'connected');
    ws.send(`40${JSON.stringify({ token: alice.token })}`);
    await waitFor(() => got.filter((p) => p.startsWith('40{')).length === 2, 'the CONNECT after it answered again');
    const sids = new Set(got.filter((p) => p.startsWith('40{')).map((p) => JSON.parse(p.slice(2)).sid));
    assert.equal(sids.size, 1, 'the same Socket.IO session');
    ws.send('4217["ping",{}]');
    await waitFor((p) => p.startsWith('4317['), 'still answering');
    assert.equal(got.filter((p) => p.startsWith('42["connection_success"')).length, 1, 'one connection_success');
    ws.close();
  });

  it('socket.io-client calling connect() again while connecting stays connected', async () => {
    const c = sioClient(server, alice.token, { transports: ['websocket'] });
    c.socket.io.on('open', () => c.socket.connect());
    await Promise.race([c.connected(), sleep(5000).then(() => { throw new Error('no connect within 5 s'); })]);
    await c.next('connection_success');
    assert.equal((await c.emit('ping', {})).success, true);
    await sleep(300);
    assert.ok(c.socket.connected, 'still connected');
    c.close();
  });

  // The empty frame's payload view points just past its header in the
  // loop's read buffer, where the previous frame's bytes still are: read as
  // a packet type, that was once a ping of an empty string. Here the frame
  // before it is a noop ("6"), which, read again, would leave the session open.
  it('an empty WebSocket text frame closes the session; the server stays up', async () => {
    const { ws, closed, waitFor } = await rawEioSocket();
    ws.send('40');  // CONNECT without a token: answered, so frames are being read
    await waitFor((p) => p.startsWith('44'), 'no answer to the CONNECT');
    ws.send('6');
    ws.send('');
    const code = await Promise.race([closed, sleep(3000).then(() => 'still open')]);
    assert.notEqual(code, 'still open', 'the session was not closed');
    assert.equal((await server.http('GET', '/health')).status, 200);
    const a = await connected(server, alice, { transports: ['websocket'] });
    assert.equal((await a.emit('ping', {})).success, true);
    a.close();
  });

  it('after all of it: nothing stored, the server healthy', async () => {
    assert.equal((await server.history(alice.token, thread.id)).length, 0);
    const h = await server.http('GET', '/health');
    assert.equal(h.status, 200);
  });
});
