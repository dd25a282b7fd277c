// Limits and abuse: oversize frames, binary frames, invalid UTF-8, too many
// connections per user, message rate, content length, slow consumers.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { startServer, sleep, assertWsError, assertHttpError } from './harness.mjs';

describe('frame limits', () => {
  let server, alice, bob;
  before(async () => {
    server = await startServer({ args: ['--max-frame-bytes', '4096', '--max-content-chars', '10'] });
    [alice, bob] = await server.registerMany(2);
  });
  after(async () => { await server?.stop(); });

  it('a frame over --max-frame-bytes closes the connection with 1009', async () => {
    const ws = await server.connect(alice);
    ws.send({ type: 'send_message', username: bob.username, content: 'x'.repeat(5000) });
    const { code } = await ws.waitClose(5000);
    assert.equal(code, 1009, 'close code 1009 (message too big)');
  });

  it('a frame just under the limit is fine', async () => {
    const ws = await server.connect(alice);
    const reply = await ws.request({ type: 'ping', padding: 'p'.repeat(3900) });
    assert.equal(reply.type, 'pong');
  });

  it('a binary frame → error binary_not_supported, and the connection stays open', async () => {
    const ws = await server.connect(alice);
    ws.sendRaw(Buffer.from([1, 2, 3, 4]), { binary: true });
    const err = await ws.nextOfType('error');
    assertWsError(assert, err, 'binary_not_supported');
    await ws.ping();
  });

  it('a text frame with invalid UTF-8 bytes is closed with 1007', async () => {
    const ws = await server.connect(alice);
    const bytes = Buffer.concat([Buffer.from('{"type":"ping","x":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]);
    ws.sendRaw(bytes, { binary: false });
    const { code } = await ws.waitClose(5000);
    assert.equal(code, 1007, 'close code 1007 (invalid frame payload data)');
  });

  it('--max-content-chars counts code points: 10 emoji pass, 11 do not', async () => {
    const ws = await server.connect(alice);
    const ok = await ws.sendMessage({ username: bob.username, content: '😀'.repeat(10) });
    assert.equal(ok.content, '😀'.repeat(10));
    const combining = await ws.sendMessage({ thread_id: ok.thread_id, content: 'e\u0301'.repeat(5) });  // 10 code points
    assert.equal(combining.content, 'e\u0301'.repeat(5));
    const tooLong = await ws.request({ type: 'send_message', thread_id: ok.thread_id, content: '😀'.repeat(11) });
    assertWsError(assert, tooLong, 'content_too_long');
    const rest = await server.sendRest(alice.token, ok.thread_id, { content: 'abcdefghijk' });
    assert.equal(rest.status, 400);
    assert.equal(rest.body.code, 'content_too_long');
  });

  it('an HTTP body over the limit → 413 payload_too_large', async () => {
    const res = await server.http('POST', '/api/auth/login', { body: { username: 'x'.repeat(6000), password: 'y' } });
    assert.equal(res.status, 413, res.text);
    assert.equal(res.body?.code, 'payload_too_large');
  });
});

describe('connections per user', () => {
  let server, alice, bob;
  before(async () => {
    server = await startServer({ args: ['--max-connections-per-user', '2'] });
    [alice, bob] = await server.registerMany(2);
  });
  after(async () => { await server?.stop(); });

  // Opens a connection expected to be refused; resolves a description of how it was refused.
  async function refusedConnection(user) {
    const attempt = await server.tryUpgrade(`/ws?token=${encodeURIComponent(user.token)}`);
    if (!attempt.opened) return { httpStatus: attempt.status, reason: JSON.stringify(attempt.body) };
    const ws = attempt.client;
    const info = await ws.waitClose(5000);
    const established = ws.all((f) => f.type === 'connection_established').length > 0;
    return { closeCode: info.code, reason: info.reason, established, frames: ws.all() };
  }

  it('the third connection of a user is refused with a reason; other users are unaffected', async () => {
    const c1 = await server.connect(alice);
    const c2 = await server.connect(alice);
    const third = await refusedConnection(alice);
    if (third.httpStatus) {
      assert.ok([429, 503, 403].includes(third.httpStatus), `refused at upgrade with ${third.httpStatus}`);
    } else {
      assert.notEqual(third.closeCode, 1000, 'not a normal close');
      assert.notEqual(third.closeCode, 1006, 'closed by the server with a close frame, not dropped');
      assert.ok(third.reason.length > 0 || third.frames.some((f) => f.type === 'error'), `a reason is given: ${JSON.stringify(third)}`);
    }
    await c1.ping();
    await c2.ping();
    const b1 = await server.connect(bob);
    await b1.ping();
  });

  it('after one connection closes, a new one is accepted', async () => {
    const u = await server.register();
    const c1 = await server.connect(u);
    await server.connect(u);
    c1.close();
    await c1.waitClose();
    let opened = null;
    for (let i = 0; i < 20 && !opened; i++) {  // the server may need a moment to count the close
      try { opened = await server.connect(u); } catch { await sleep(100); }
      if (opened && !opened.isOpen) opened = null;
    }
    assert.ok(opened, 'a new connection is accepted once there is room');
    await opened.ping();
  });
});

describe('message rate limit', () => {
  let server, alice, bob;
  before(async () => {
    server = await startServer({ args: ['--rate-per-second', '5', '--rate-burst', '5'] });
    [alice, bob] = await server.registerMany(2);
  });
  after(async () => { await server?.stop(); });

  it('a burst past the bucket gets rate_limited errors echoing request_id; the connection stays open and nothing refused is stored', async () => {
    const ws = await server.connect(alice);
    const thread = await server.createDirect(alice, bob);
    const ids = Array.from({ length: 12 }, (_, i) => `burst-${i}`);
    ids.forEach((rid, i) => ws.send({ type: 'send_message', thread_id: thread.id, content: `burst ${i}`, request_id: rid }));
    const isReply = (f) => f.type === 'message_sent' || f.type === 'error';
    for (let i = 0; i < 100 && ws.all(isReply).length < ids.length; i++) await sleep(50);
    const replies = ws.all(isReply);
    const sent = replies.filter((r) => r.type === 'message_sent');
    const limited = replies.filter((r) => r.type === 'error' && r.code === 'rate_limited');
    assert.equal(replies.length, ids.length, `one reply per frame: ${JSON.stringify(replies.map((r) => r.code || r.type))}`);
    assert.ok(limited.length >= 1, `some frames were rate limited: ${JSON.stringify(replies.map((r) => r.code || r.type))}`);
    assert.equal(sent.length + limited.length, ids.length, 'every frame got either message_sent or rate_limited');
    assert.ok(sent.length >= 5, `the burst allowance passed (${sent.length})`);
    assert.deepEqual(replies.map((r) => r.request_id).sort(), [...ids].sort(),
      `every reply, rate_limited errors included, echoes its request_id: ${JSON.stringify(limited[0])}`);
    assert.ok(ws.isOpen, 'a short burst does not close the connection');
    const history = await server.history(alice.token, thread.id);
    assert.equal(history.length, sent.length, 'only acknowledged messages are stored');
    await sleep(1100);  // the bucket refills
    await ws.sendMessage({ thread_id: thread.id, content: 'after a pause' });
  });

  it('acknowledging each message of a replay longer than the burst is not flooding: no error, no close', async () => {
    // 80 receipts at once past a burst of 5 were 75 rate_limited errors, and
    // the 50th in a row closed the connection: every reconnection with a
    // backlog ended the same way for a client that acks each message.
    const [carol, dave] = await server.registerMany(2);
    const thread = await server.createDirect(carol, dave);
    for (let i = 0; i < 80; i++) await server.sendRest(carol.token, thread.id, { content: `backlog ${i}` });
    const ws = await server.connect(dave);
    ws.send({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 });
    for (let i = 0; i < 100 && ws.all((f) => f.type === 'new_message').length < 80; i++) await sleep(50);
    const replayed = ws.all((f) => f.type === 'new_message');
    assert.equal(replayed.length, 80);
    for (const m of replayed) ws.send({ type: 'message_received', message_id: m.data.id });
    await sleep(1000);
    assert.ok(ws.isOpen, 'still open');
    assert.deepEqual(ws.all((f) => f.type === 'error').map((f) => f.code), [], 'no error for a receipt');
    const a = await server.connect(carol);
    await sleep(1100);  // a token for the newest receipt
    ws.send({ type: 'message_received', message_id: replayed[79].data.id });
    await a.next((f) => f.type === 'message_delivered' && f.message_id === replayed[79].data.id, 5000, 'the newest receipt counts');

    // A receipt that waits for its answer is told when it is refused: a
    // request_id gets the error (an accepted one has no answer over the
    // native WebSocket), a Socket.IO ack {success:false, code}.
    for (let i = 0; i < 40; i++) ws.send({ type: 'message_received', message_id: replayed[i].data.id, request_id: `r${i}` });
    // A connection's frames are taken in order: once a request sent after
    // the forty is answered (pong, or rate_limited itself), each of them was
    // let through or refused, however slowly this build reads.
    await ws.request({ type: 'ping' }, 20000);
    const refused = ws.all((f) => typeof f.request_id === 'string' && /^r\d+$/.test(f.request_id));
    assert.ok(refused.length >= 20, `receipts past the burst are answered: ${refused.length}`);
    assert.deepEqual([...new Set(refused.map((f) => f.code))], ['rate_limited']);
    assert.ok(ws.isOpen, 'still not flooding');
    await sleep(1100);
    const sio = io(server.baseUrl, { transports: ['websocket'], auth: { token: dave.token }, reconnection: false });
    try {
      await new Promise((resolve, reject) => { sio.once('connect', resolve); sio.once('connect_error', reject); });
      const acks = await Promise.all(replayed.slice(0, 30).map((m) =>
        sio.timeout(3000).emitWithAck('message_received', { message_id: m.data.id }).catch((err) => ({ timedOut: String(err) }))));
      assert.deepEqual(acks.filter((x) => x.timedOut), [], 'every ack answered');
      assert.ok(acks.some((x) => x.success === true), 'those within the burst: success');
      assert.ok(acks.some((x) => x.success === false && x.code === 'rate_limited'), `those past it: rate_limited: ${JSON.stringify(acks.slice(-2))}`);
    } finally {
      sio.close();
    }
    ws.close(); a.close();
  });

  it('sustained flooding closes the connection with a close code and reason', async () => {
    const ws = await server.connect(alice);
    const thread = await server.createDirect(alice, bob);
    for (let i = 0; i < 400 && ws.isOpen; i++) {
      ws.send({ type: 'send_message', thread_id: thread.id, content: `flood ${i}` });
      if (i % 50 === 49) await sleep(5);
    }
    const info = await ws.waitClose(10000);
    assert.notEqual(info.code, 1000, 'not a normal close');
    assert.notEqual(info.code, 1006, 'a close frame, not a dropped socket');
    assert.ok(info.reason.length > 0, `a close reason is given (code ${info.code})`);
  });
});

describe('REST writes per user', () => {
  let server, alice, bob;
  before(async () => {
    server = await startServer({ args: ['--rest-rate-per-second', '1', '--rest-rate-burst', '3'] });
    [alice, bob] = await server.registerMany(2);
  });
  after(async () => { await server?.stop(); });

  it('past the burst a write gets 429 rate_limited with Retry-After and stores nothing; reads and other users go on', async () => {
    const thread = await server.createDirect(alice, bob);  // one of alice's three
    const answers = [];
    for (let i = 0; i < 8; i++) answers.push(await server.sendRest(alice.token, thread.id, { content: `rest ${i}` }));
    const statuses = answers.map((a) => a.status);
    assert.deepEqual(statuses.slice(0, 2), [201, 201], `the burst passes: ${statuses}`);
    const refused = answers.filter((a) => a.status === 429);
    assert.ok(refused.length >= 1, `past the burst: ${statuses}`);
    assert.equal(refused[0].body.code, 'rate_limited');
    assert.equal(refused[0].headers['retry-after'], '1');
    const history = await server.history(alice.token, thread.id);
    assert.equal(history.length, answers.filter((a) => a.status === 201).length, 'only what was answered 201 is stored');
    assert.equal((await server.http('GET', `/api/chat/threads/${thread.id}`, { token: alice.token })).status, 200, 'reads are not limited');
    assert.equal((await server.sendRest(bob.token, thread.id, { content: 'bob' })).status, 201, 'bob has his own bucket');
    await sleep(1100);
    assert.equal((await server.sendRest(alice.token, thread.id, { content: 'later' })).status, 201, 'the bucket refills');
  });
});

describe('group size', () => {
  let server;
  before(async () => { server = await startServer({ args: ['--max-group-members', '4'] }); });
  after(async () => { await server?.stop(); });

  it('a group past --max-group-members is refused, made or grown; members already in count once', async () => {
    const [a, b, c, d, e] = await server.registerMany(5);
    const create = (ids) => server.http('POST', '/api/chat/threads', { token: a.token, body: { type: 'group', title: 'small', participant_ids: ids } });
    const big = await create([b.id, c.id, d.id, e.id]);
    assertHttpError(assert, big, 400, 'group_too_large');
    const made = await create([b.id, c.id, d.id]);
    assert.equal(made.status, 201, made.text);
    const path = `/api/chat/threads/${made.body.data.id}/participants`;
    const grow = await server.http('POST', path, { token: a.token, body: { participant_ids: [e.id] } });
    assertHttpError(assert, grow, 400, 'group_too_large');
    const same = await server.http('POST', path, { token: a.token, body: { participant_ids: [b.id, c.id] } });
    assert.equal(same.status, 200, `adding those already in: ${same.text}`);
    const members = (await server.http('GET', `/api/chat/threads/${made.body.data.id}`, { token: a.token })).body.data.participants;
    assert.equal(members.length, 4, 'nobody added past the bound');
    assert.ok(!members.some((p) => p.user_id === e.id));
  });

  // The bound is counted again as each addition commits: additions sent at
  // once, each checked against the same list of two, used to pass it together.
  it('additions at once never take a group past --max-group-members', async () => {
    for (let round = 0; round < 5; round++) {
      const [a, b, ...others] = await server.registerMany(8);
      const made = await server.http('POST', '/api/chat/threads',
        { token: a.token, body: { type: 'group', title: `race ${round}`, participant_ids: [b.id] } });
      assert.equal(made.status, 201, made.text);
      const path = `/api/chat/threads/${made.body.data.id}/participants`;
      const answers = await Promise.all(others.map((o) => server.http('POST', path, { token: a.token, body: { participant_ids: [o.id] } })));
      const statuses = answers.map((r) => r.status);
      for (const r of answers.filter((x) => x.status !== 200)) assertHttpError(assert, r, 400, 'group_too_large');
      const members = (await server.http('GET', `/api/chat/threads/${made.body.data.id}`, { token: a.token })).body.data.participants;
      assert.equal(members.length, 4, `round ${round}: ${members.length} members after ${statuses}`);
      assert.equal(statuses.filter((x) => x === 200).length, 2, `round ${round}: two additions fit: ${statuses}`);
    }
  });
});

describe('logins of one account', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('at most 4 of one account wait for a hash at once; past them 429, and other accounts still log in', async () => {
    const [mallory, alice] = await server.registerMany(2);
    const login = (u) => server.http('POST', '/api/auth/login', { body: { username: u.username, password: u.password } });
    // 24 correct logins at once: the password pool hashes one or two at a time.
    const flood = await Promise.all(Array.from({ length: 24 }, () => login(mallory)));
    const statuses = flood.map((r) => r.status);
    const refused = flood.filter((r) => r.status === 429);
    assert.ok(refused.length >= 1 && flood.some((r) => r.status === 200), `statuses: ${statuses}`);
    assert.ok(statuses.every((st) => st === 200 || st === 429), `statuses: ${statuses}`);
    assert.equal(refused[0].body.code, 'rate_limited');
    assert.equal(refused[0].headers['retry-after'], '1');
    // While the account floods again, another account's login is served.
    const again = Array.from({ length: 24 }, () => login(mallory));
    const other = await login(alice);
    assert.equal(other.status, 200, `another account during the flood: ${other.text}`);
    await Promise.all(again);
    assert.equal((await login(mallory)).status, 200, 'once its logins are answered, the account logs in');
  });
});

describe('slow consumers', () => {
  let server;
  before(async () => {
    // 1 MiB: well above what a client that reads has in flight, well below what a stalled one piles up.
    server = await startServer({ args: ['--max-outbound-bytes', String(1024 * 1024), '--rate-per-second', '100000', '--rate-burst', '100000'] });
  });
  after(async () => { await server?.stop(); });

  it('a client that stops reading is disconnected past --max-outbound-bytes, others keep going', async () => {
    const [alice, bob, carol] = await server.registerMany(3);
    const group = await server.createGroup(alice, [bob, carol], 'slow');
    const aliceWs = await server.connect(alice);
    const slow = await server.connect(bob);
    const fast = await server.connect(carol);
    slow.ws._socket.pause();  // Bob's client stops reading: the server's queue for him grows

    const content = 'z'.repeat(3900);
    const total = 5000;  // ~20 MB: far beyond the kernel socket buffers (a few MB) plus 1 MiB
    let acked = 0;
    for (let i = 0; i < total; i += 10) {
      const batch = [];
      for (let j = i; j < Math.min(total, i + 10); j++) batch.push(aliceWs.sendMessage({ thread_id: group.id, content: `${j} ${content}` }, 20000));
      acked += (await Promise.all(batch)).length;
    }
    assert.equal(acked, total, 'the sender was never slowed into failure');

    // Carol reads everything.
    for (let i = 0; i < 200; i++) {
      if (fast.all((f) => f.type === 'new_message').length >= total) break;
      await sleep(50);
    }
    assert.equal(fast.all((f) => f.type === 'new_message').length, total, 'the fast reader got every message');

    // Bob's connection was dropped by the server: resume reading and see the close.
    slow.ws._socket.resume();
    const info = await slow.waitClose(10000);
    assert.ok(info, 'the slow client was disconnected');
    const seen = slow.all((f) => f.type === 'new_message').length;
    assert.ok(seen < total, `the slow client did not get everything queued (${seen} of ${total})`);

    // The fast reader and the sender are still fine.
    await fast.ping();
    await aliceWs.ping();
  });

  it('a catch-up replay larger than --max-outbound-bytes is paced, not dropped', async () => {
    const [alice, bob] = await server.registerMany(2);
    const thread = await server.createDirect(alice, bob);
    const aliceWs = await server.connect(alice);
    const content = 'y'.repeat(3900);
    const total = 600;  // ~2.4 MB of backlog: more than twice the 1 MiB bound
    for (let i = 0; i < total; i += 10) {
      const batch = [];
      for (let j = i; j < Math.min(total, i + 10); j++) batch.push(aliceWs.sendMessage({ thread_id: thread.id, content: `${j} ${content}` }, 20000));
      await Promise.all(batch);
    }
    const bobWs = await server.connect(bob);
    const sub = await bobWs.request({ type: 'subscribe_thread', thread_id: thread.id, since_seq: 0 }, 30000);
    assert.equal(sub.type, 'thread_subscribed');
    const replayed = bobWs.all((f) => f.type === 'new_message' && f.data.thread_id === thread.id).map((f) => f.data.seq);
    assert.deepEqual(replayed, Array.from({ length: total }, (_, i) => i + 1), 'the whole backlog, in order, once');
    assert.ok(bobWs.isOpen, 'the catching-up client is not disconnected');
  });
});
