// Webhook push for offline participants (CONTRACT.md section 9): a Node
// http server on 127.0.0.1 plays the receiver. Exactly one signed
// notification per message for a participant with no open connection, none
// for one who is online; failures are retried, survive a restart, and each
// delivery id is answered 2xx once; past the attempt bound they are dead
// letters in /metrics. The outbox keeps no message text (an edit reaches the
// retries, a delete leaves nothing, dead letters included); a graceful stop
// stores every acknowledged message's notifications and does not wait for a
// slow receiver.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import crypto from 'node:crypto';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { startServer, sleep, HOST, UUID_RE } from './harness.mjs';

// A receiver that records every POST and answers `status` (changeable).
async function startReceiver(status = 200) {
  const r = { status, requests: [] };
  r.server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body = null;
      try { body = JSON.parse(raw); } catch { /* recorded as raw */ }
      const answered = r.status;
      r.requests.push({ method: req.method, url: req.url, headers: req.headers, raw, body, answered });
      res.writeHead(answered, { 'Content-Type': 'text/plain' });
      res.end(answered < 300 ? 'ok' : 'fail');
    });
  });
  await new Promise((resolve) => r.server.listen(0, HOST, resolve));
  r.url = `http://${HOST}:${r.server.address().port}/hooks/parley`;
  r.close = () => new Promise((resolve) => r.server.close(resolve));
  return r;
}

// One value from the server's own database (SQLite file or PostgreSQL), read
// with the database's CLI while the server runs or after it stopped.
function queryStore(server, sql) {
  if (server.database) {
    return execFileSync('psql', ['-qtA', '-v', 'ON_ERROR_STOP=1', server.database, '-c', sql],
      { encoding: 'utf8', timeout: 30000 }).trim();
  }
  return execFileSync('sqlite3', [path.join(server.dataDir, 'parley.db'), sql], { encoding: 'utf8', timeout: 30000 }).trim();
}

function signature(secret, raw) {
  return `sha256=${crypto.createHmac('sha256', secret).update(raw).digest('hex')}`;
}

async function waitFor(pred, ms, what) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await pred()) return;
    await sleep(50);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

describe('webhook for offline participants', () => {
  const secret = `hook-${crypto.randomBytes(8).toString('hex')}`;
  // A server that retries every 150 ms, practically without end.
  const startRetryingServer = (receiver) => startServer({
    args: ['--webhook-url', receiver.url, '--webhook-secret', secret, '--webhook-backoff-ms', '150',
      '--webhook-max-backoff-ms', '150', '--webhook-max-attempts', '1000'],
  });

  it('one correctly signed notification per message for the offline participant, none for the online one', async () => {
    const receiver = await startReceiver(200);
    const server = await startServer({ args: ['--webhook-url', receiver.url, '--webhook-secret', secret] });
    try {
      const [alice, bob, carol] = await server.registerMany(3);
      const thread = await server.createGroup(alice, [bob, carol]);
      const aliceWs = await server.connect(alice);
      await server.connect(bob);  // bob is online; carol has no connection
      const sent = [];
      for (let i = 0; i < 3; i++) sent.push(await aliceWs.sendMessage({ thread_id: thread.id, content: `hi ${i}` }));

      await waitFor(() => receiver.requests.length >= 3, 10000, 'three notifications');
      await sleep(1500);  // nothing more may come
      assert.equal(receiver.requests.length, 3, JSON.stringify(receiver.requests.map((r) => r.body?.recipient_id)));
      // POSTs run in parallel (--webhook-concurrency), so they may arrive in any order.
      const ids = new Set();
      const byMessage = new Map(receiver.requests.map((req) => [req.body?.message?.id, req]));
      assert.deepEqual([...byMessage.keys()].sort(), sent.map((m) => m.id).sort(), 'one per message');
      for (const [i, m] of sent.entries()) {
        const req = byMessage.get(m.id);
        assert.equal(req.method, 'POST');
        assert.equal(req.url, '/hooks/parley');
        assert.match(req.headers['content-type'], /application\/json/);
        assert.equal(req.headers['x-parley-signature'], signature(secret, req.raw), 'HMAC-SHA256 of the body');
        assert.ok(req.headers['x-parley-delivery'], 'X-Parley-Delivery is set');
        ids.add(req.headers['x-parley-delivery']);
        assert.equal(req.body.type, 'message');
        assert.equal(req.body.recipient_id, carol.id);
        assert.equal(req.body.thread_id, thread.id);
        assert.equal(req.body.message.content, `hi ${i}`);
        assert.equal(req.body.message.seq, m.seq);
        assert.equal(req.body.message.sender.username, alice.username);
        // Counted when the notification is made: this message and any before it, perhaps later ones too.
        assert.ok(req.body.unread_count >= i + 1 && req.body.unread_count <= 3, `unread_count ${req.body.unread_count}`);
      }
      assert.equal(ids.size, 3, 'a distinct delivery id each');
      for (const id of ids) assert.match(id, UUID_RE);
      assert.equal(await server.metric('parley_webhook_delivered_total'), 3);
    } finally {
      await server.stop();
      await receiver.close();
    }
  });

  it('a failing receiver: retried with backoff, kept across a restart, each delivery id answered 2xx once', async () => {
    const receiver = await startReceiver(500);
    const server = await startServer({
      args: ['--webhook-url', receiver.url, '--webhook-secret', secret, '--webhook-backoff-ms', '200',
        '--webhook-max-backoff-ms', '400', '--webhook-max-attempts', '1000'],
    });
    try {
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      const sent = [];
      for (let i = 0; i < 4; i++) {
        const res = await server.sendRest(alice.token, thread.id, { content: `while down ${i}` });
        assert.equal(res.status, 201);
        sent.push(res.body.data.id);
      }
      // Each of the four is tried more than once while the receiver fails.
      await waitFor(() => {
        const perId = new Map();
        for (const r of receiver.requests) perId.set(r.headers['x-parley-delivery'], (perId.get(r.headers['x-parley-delivery']) || 0) + 1);
        return perId.size === 4 && [...perId.values()].every((n) => n >= 2);
      }, 15000, 'two failed attempts of each notification');
      // The server counts a failure once the 500 is back, after the receiver saw the request.
      await waitFor(async () => (await server.metric('parley_webhook_failed_attempts_total')) >= 8, 5000,
        'eight failed attempts counted in /metrics');

      await server.stop({ removeData: false });
      const failedIds = new Set(receiver.requests.map((r) => r.headers['x-parley-delivery']));
      receiver.status = 200;
      await server.start();

      await waitFor(() => receiver.requests.filter((r) => r.answered === 200).length >= 4, 15000, 'all four delivered after the restart');
      await sleep(1500);
      const ok = receiver.requests.filter((r) => r.answered === 200);
      assert.equal(ok.length, 4, 'no notification is delivered twice');
      const okIds = ok.map((r) => r.headers['x-parley-delivery']);
      assert.equal(new Set(okIds).size, 4, 'each delivery id answered 2xx once');
      assert.deepEqual(new Set(okIds), failedIds, 'the same delivery ids as before the restart');
      assert.deepEqual(ok.map((r) => r.body.message.id).sort(), [...sent].sort());
      for (const r of ok) assert.equal(r.headers['x-parley-signature'], signature(secret, r.raw));
    } finally {
      await server.stop();
      await receiver.close();
    }
  });

  it('past --webhook-max-attempts a notification is a dead letter, counted in /metrics', async () => {
    const receiver = await startReceiver(503);
    const server = await startServer({
      args: ['--webhook-url', receiver.url, '--webhook-secret', secret, '--webhook-backoff-ms', '100',
        '--webhook-max-attempts', '3'],
    });
    try {
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      assert.equal((await server.sendRest(alice.token, thread.id, { content: 'nobody home' })).status, 201);
      const deadline = Date.now() + 10000;
      while (Date.now() < deadline && (await server.metric('parley_webhook_dead_letters')) < 1) await sleep(100);
      assert.equal(await server.metric('parley_webhook_dead_letters'), 1);
      await sleep(800);
      assert.equal(receiver.requests.length, 3, 'exactly max-attempts POSTs, then none');
      assert.equal(new Set(receiver.requests.map((r) => r.headers['x-parley-delivery'])).size, 1);
      // The count survives a restart (the dead letter is kept in the store).
      await server.restart();
      assert.equal(await server.metric('parley_webhook_dead_letters'), 1);
    } finally {
      await server.stop();
      await receiver.close();
    }
  });

  it('interim answers (103 Early Hints, 102 Processing) before the 200: one POST each, delivered', async () => {
    const posts = [];
    const receiver = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        posts.push(req.headers['x-parley-delivery']);
        if (posts.length % 2) res.writeEarlyHints({ link: '</x>; rel=preload' });
        else res.writeProcessing();
        setTimeout(() => { res.writeHead(200); res.end('ok'); }, 50);
      });
    });
    await new Promise((resolve) => receiver.listen(0, HOST, resolve));
    const server = await startServer({
      args: ['--webhook-url', `http://${HOST}:${receiver.address().port}/hook`, '--webhook-secret', secret,
        '--webhook-backoff-ms', '100', '--webhook-max-attempts', '5'],
    });
    try {
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      for (const content of ['early hints', 'processing'])
        assert.equal((await server.sendRest(alice.token, thread.id, { content })).status, 201);
      await waitFor(async () => (await server.metric('parley_webhook_delivered_total')) >= 2, 10000, 'two deliveries');
      await sleep(500);  // a retry (backoff 100 ms) would come meanwhile
      assert.equal(posts.length, 2, `one POST per message: ${posts}`);
      assert.equal(new Set(posts).size, 2);
      assert.equal(await server.metric('parley_webhook_failed_attempts_total'), 0);
    } finally {
      await server.stop();
      await new Promise((resolve) => receiver.close(resolve));
    }
  });

  it('a deleted message: no notification carries its text again, queued or dead, and the outbox has none of it', async () => {
    const receiver = await startReceiver(503);
    const server = await startServer({
      args: ['--webhook-url', receiver.url, '--webhook-secret', secret, '--webhook-backoff-ms', '150',
        '--webhook-max-backoff-ms', '150', '--webhook-max-attempts', '3'],
    });
    try {
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      const deadText = `TAKEDOWN-DEAD-${crypto.randomBytes(4).toString('hex')}`;
      const liveText = `TAKEDOWN-LIVE-${crypto.randomBytes(4).toString('hex')}`;
      const dead = (await server.sendRest(alice.token, thread.id, { content: deadText })).body.data;
      await waitFor(async () => (await server.metric('parley_webhook_dead_letters')) >= 1, 10000, 'a dead letter');
      receiver.status = 500;  // fails, but is retried (three attempts in all)
      const live = (await server.sendRest(alice.token, thread.id, { content: liveText })).body.data;
      await waitFor(() => receiver.requests.some((r) => r.body?.message?.id === live.id), 10000, 'a first attempt');
      for (const m of [dead, live]) {
        assert.equal((await server.http('DELETE', `/api/chat/messages/${m.id}`, { token: alice.token })).status, 200);
      }
      const seenAtDelete = receiver.requests.length;
      receiver.status = 200;
      await sleep(1000);  // several backoffs
      const later = receiver.requests.slice(seenAtDelete + 1);  // one may have been under way during the delete
      assert.deepEqual(later.filter((r) => r.raw.includes('TAKEDOWN-')).map((r) => r.body?.message?.id), [],
        'no POST after the delete carries the text');
      assert.equal(queryStore(server, `SELECT COUNT(*) FROM webhook_outbox WHERE body LIKE '%TAKEDOWN-%'`), '0');
      assert.equal(queryStore(server, `SELECT COUNT(*) FROM webhook_outbox WHERE message_id IN ('${dead.id}', '${live.id}')`), '0',
        'the notifications of both messages, the dead letter too, are gone');
      // /metrics follows the store: the dead letter it counted is gone.
      await waitFor(async () => (await server.metric('parley_webhook_dead_letters')) === 0, 10000,
        'parley_webhook_dead_letters back to 0');
    } finally {
      await server.stop();
      await receiver.close();
    }
  });

  it('a disabled recipient gets no push: neither new messages nor the retries of those queued before', async () => {
    const receiver = await startReceiver(500);
    const server = await startRetryingServer(receiver);
    try {
      const [alice, bob, carol] = await server.registerMany(3);
      const thread = await server.createGroup(alice, [bob, carol]);  // bob and carol have no connection
      const before = (await server.sendRest(alice.token, thread.id, { content: 'before the disable' })).body.data;
      await waitFor(() => receiver.requests.some((r) => r.body?.recipient_id === bob.id), 10000, 'a first attempt to bob');
      await server.cli(['user', 'disable', bob.username]);  // rejects on a non-zero exit
      const seenAtDisable = receiver.requests.length;
      receiver.status = 200;
      const after = (await server.sendRest(alice.token, thread.id, { content: 'after the disable' })).body.data;
      await waitFor(() => receiver.requests.some((r) => r.answered === 200 && r.body?.message?.id === after.id), 10000,
        'carol\'s notification of the later message');
      await sleep(1000);  // several backoffs
      const toBob = receiver.requests.slice(seenAtDisable + 1).filter((r) => r.body?.recipient_id === bob.id);  // one may have been under way
      assert.deepEqual(toBob.map((r) => r.body.message.content), [], 'nothing more reaches the disabled account');
      assert.ok(receiver.requests.some((r) => r.answered === 200 && r.body?.recipient_id === carol.id && r.body.message.id === before.id),
        'carol, who is not disabled, still gets both');
      assert.equal(queryStore(server, `SELECT COUNT(*) FROM webhook_outbox WHERE recipient_id = '${bob.id}'`), '0',
        'the disabled account\'s notifications are gone from the outbox');
    } finally {
      await server.stop();
      await receiver.close();
    }
  });

  it('a member removed from the thread gets no retry of its messages', async () => {
    const receiver = await startReceiver(500);
    const server = await startRetryingServer(receiver);
    try {
      const [alice, bob, carol] = await server.registerMany(3);
      const thread = await server.createGroup(alice, [bob, carol]);  // bob and carol have no connection
      const msg = (await server.sendRest(alice.token, thread.id, { content: 'for members only' })).body.data;
      await waitFor(() => receiver.requests.some((r) => r.body?.recipient_id === carol.id), 10000, 'a first attempt to carol');
      const removed = await server.http('DELETE', `/api/chat/threads/${thread.id}/participants/${carol.id}`, { token: alice.token });
      assert.equal(removed.status, 200, removed.text);
      const seenAtRemoval = receiver.requests.length;
      await sleep(1000);  // still failing: several retries would come
      receiver.status = 200;
      await waitFor(() => receiver.requests.some((r) => r.answered === 200 && r.body?.recipient_id === bob.id && r.body.message?.id === msg.id),
        10000, 'bob\'s notification');
      await sleep(500);
      // One may have been under way at the removal.
      const toCarol = receiver.requests.slice(seenAtRemoval).filter((r) => r.body?.recipient_id === carol.id).slice(1);
      assert.deepEqual(toCarol.map((r) => r.body.message?.content), [], 'nothing more reaches the removed member');
      assert.equal(queryStore(server, `SELECT COUNT(*) FROM webhook_outbox WHERE recipient_id = '${carol.id}'`), '0',
        'the removed member\'s notifications are gone from the outbox');
    } finally {
      await server.stop();
      await receiver.close();
    }
  });

  it('an edited message: a retry carries the new text', async () => {
    const receiver = await startReceiver(500);
    const server = await startRetryingServer(receiver);
    try {
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      const m = (await server.sendRest(alice.token, thread.id, { content: 'before the edit' })).body.data;
      await waitFor(() => receiver.requests.length >= 1, 10000, 'a first attempt');
      assert.equal(receiver.requests[0].body.message.content, 'before the edit');
      assert.equal(queryStore(server, `SELECT COUNT(*) FROM webhook_outbox WHERE body LIKE '%before the edit%'`), '0',
        'the outbox keeps no copy of the text');
      const patched = await server.http('PATCH', `/api/chat/messages/${m.id}`, { token: alice.token, body: { content: 'after the edit' } });
      assert.equal(patched.status, 200);
      // A retry claimed just before the edit committed may still carry the old
      // text (docs/webhooks.md); every one claimed after it carries the new.
      await waitFor(() => receiver.requests.some((r) => r.body?.message?.content === 'after the edit'), 10000,
        'a retry with the new text');
      const firstNew = receiver.requests.findIndex((r) => r.body?.message?.content === 'after the edit');
      receiver.status = 200;
      await waitFor(() => receiver.requests.some((r) => r.answered === 200), 10000, 'a delivery');
      const delivered = receiver.requests.find((r) => r.answered === 200);
      assert.equal(delivered.body.message.content, 'after the edit');
      assert.deepEqual(receiver.requests.slice(firstNew).map((r) => r.body?.message?.content).filter((c) => c !== 'after the edit'), [],
        'no attempt after the first with the new text goes back to the old');
      assert.ok(delivered.body.message.edited_at, 'edited_at is set');
      assert.equal(delivered.headers['x-parley-signature'], signature(secret, delivered.raw));
      assert.equal(delivered.headers['x-parley-delivery'], receiver.requests[0].headers['x-parley-delivery'], 'the same notification');
    } finally {
      await server.stop();
      await receiver.close();
    }
  });

  // A server whose receiver nobody listens at: every notification stays
  // queued (backoff of an hour).
  const startUnheardServer = (env = {}) => startServer({
    args: ['--webhook-url', `http://${HOST}:9/none`, '--webhook-secret', secret, '--webhook-backoff-ms', '3600000',
      '--webhook-max-backoff-ms', '3600000'],
    env,
  });
  // `messages` acknowledged messages from one sender to a group of `recipients` with no connection.
  async function sendToOfflineGroup(server, recipients, messages) {
    const [alice, ...others] = await server.registerMany(1 + recipients);
    const thread = await server.createGroup(alice, others);
    const ws = await server.connect(alice);
    const sends = [];
    for (let i = 0; i < messages; i++) sends.push(ws.sendMessage({ thread_id: thread.id, content: `push me ${i}` }, 20000));
    assert.equal((await Promise.all(sends)).length, messages);
  }

  it('a graceful stop stores the notifications of every acknowledged message', async () => {
    const server = await startUnheardServer();
    const kRecipients = 40;
    const kMessages = 60;
    try {
      await sendToOfflineGroup(server, kRecipients, kMessages);
      await server.stop({ removeData: false, graceMs: 15000 });
      const { code } = await server.exited;
      assert.equal(code, 0, server.logTail());
      assert.equal(Number(queryStore(server, 'SELECT COUNT(*) FROM webhook_outbox')), kMessages * kRecipients,
        'one notification per message and offline recipient');
    } finally {
      await server.stop();
    }
  });

  it('a kill -9 right after the acknowledgements: the next start stores every notification the intake had not, once', async () => {
    // As above, but no chance to store what the intake holds (held back here
    // by a test-only pause, as a kill in the instant after the commits would
    // find it): the messages were committed owing their push, and the next
    // start makes what is owed.
    const server = await startUnheardServer({ PARLEY_TEST_WEBHOOK_INTAKE_PAUSE_MS: '600000' });
    const kRecipients = 40;
    const kMessages = 60;
    try {
      await sendToOfflineGroup(server, kRecipients, kMessages);
      await server.kill9();
      const storedBefore = Number(queryStore(server, 'SELECT COUNT(*) FROM webhook_outbox'));
      const owedBefore = Number(queryStore(server, 'SELECT COUNT(*) FROM owed_pushes'));
      assert.equal(storedBefore, 0, 'the intake stored nothing before the kill');
      assert.equal(owedBefore, kMessages, 'every acknowledged message was committed owing its push');
      server.extraEnv = {};
      await server.start();
      const expected = kMessages * kRecipients;
      await waitFor(() => Number(queryStore(server, 'SELECT COUNT(*) FROM webhook_outbox')) >= expected, 15000,
        `${expected} notifications (${storedBefore} stored before the restart, ${owedBefore} messages owed)`);
      await waitFor(() => Number(queryStore(server, 'SELECT COUNT(*) FROM owed_pushes')) === 0, 5000, 'nothing owed');
      await sleep(500);
      assert.equal(Number(queryStore(server, 'SELECT COUNT(*) FROM webhook_outbox')), expected, 'none stored twice');
      assert.equal(Number(queryStore(server,
        "SELECT COUNT(*) FROM (SELECT DISTINCT message_id, recipient_id FROM webhook_outbox) AS d")), expected,
      'one per message and recipient');
    } finally {
      await server.stop();
    }
  });

  it('one slow POST holds one of the --webhook-concurrency slots, not the notifications due behind it', async () => {
    const arrived = [];
    const held = [];
    const receiver = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        arrived.push({ content: body.message.content, at: Date.now() });
        if (body.message.content === 'slow') held.push(res);  // answered only at the end
        else res.writeHead(200).end('ok');
      });
    });
    await new Promise((resolve) => receiver.listen(0, HOST, resolve));
    const url = `http://${HOST}:${receiver.address().port}/hooks`;
    const server = await startServer({ args: ['--webhook-url', url, '--webhook-secret', secret] });
    try {
      const [alice, bob, carol, dave] = await server.registerMany(4);
      const slowThread = await server.createDirect(alice, bob);
      const fastThread = await server.createDirect(carol, dave);
      assert.equal((await server.sendRest(alice.token, slowThread.id, { content: 'slow' })).status, 201);
      await waitFor(() => arrived.length === 1, 10000, 'the slow POST');
      const sentAt = Date.now();
      for (let i = 0; i < 5; i++) assert.equal((await server.sendRest(carol.token, fastThread.id, { content: `fast ${i}` })).status, 201);
      await waitFor(() => arrived.length === 6, 4000, 'the five others while the slow one is held (4 s: it times out at 5 s)');
      const late = arrived.slice(1).filter((a) => a.at - sentAt > 2500);
      assert.deepEqual(late, [], 'none waited for the slow POST');
    } finally {
      for (const res of held) res.destroy();
      await server.stop();
      await new Promise((resolve) => receiver.close(resolve));
    }
  });

  it('a receiver that does not answer: the stop abandons its POST, exits 0 in time, and the next start sends it', async () => {
    const held = [];
    let answer = false;
    const requests = [];
    const slow = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        requests.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')), answered: answer });
        if (answer) res.writeHead(200).end('ok');
        else held.push(res);  // never answered: the server's timeout is 5 s
      });
    });
    await new Promise((resolve) => slow.listen(0, HOST, resolve));
    const url = `http://${HOST}:${slow.address().port}/slow`;
    const server = await startServer({ args: ['--webhook-url', url, '--webhook-secret', secret, '--shutdown-timeout', '3'] });
    try {
      const [alice, bob] = await server.registerMany(2);
      const thread = await server.createDirect(alice, bob);
      assert.equal((await server.sendRest(alice.token, thread.id, { content: 'slow hook' })).status, 201);
      await waitFor(() => requests.length >= 1, 10000, 'the POST to reach the receiver');
      const t0 = Date.now();
      await server.stop({ removeData: false, graceMs: 10000 });
      const { code } = await server.exited;
      const took = Date.now() - t0;
      assert.equal(code, 0, server.logTail());
      assert.ok(took < 3000, `stopped in ${took} ms (shutdown timeout 3 s)`);
      answer = true;
      const t1 = Date.now();
      await server.start();
      await waitFor(() => requests.some((r) => r.answered), 10000, 'the notification to be sent again');
      assert.ok(Date.now() - t1 < 10000, 'not after the one-minute lease');
      const again = requests.find((r) => r.answered);
      assert.equal(again.headers['x-parley-delivery'], requests[0].headers['x-parley-delivery']);
      assert.equal(again.headers['x-parley-attempt'], '1', 'an abandoned POST is not a failed attempt');
    } finally {
      for (const res of held) res.destroy();
      await server.stop();
      await new Promise((resolve) => slow.close(resolve));
    }
  });

  it('refuses an https:// URL and a missing secret at start', async () => {
    await assert.rejects(startServer({ args: ['--webhook-url', 'https://127.0.0.1:1/x', '--webhook-secret', 's'] }),
      /exited during startup/);
    await assert.rejects(startServer({ args: ['--webhook-url', 'http://127.0.0.1:1/x'] }), /exited during startup/);
  });
});
