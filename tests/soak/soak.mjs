// Soak test (scripts/soak.sh MINUTES; not in CI): the real server for a few
// minutes under churn. Steady users stay connected and send; around them
// clients connect and leave, some stall (never read), some send garbage (raw
// bytes, broken HTTP, broken WebSocket frames, bad JSON). At the end, with
// only the steady users left, the server's RSS must be back near where it was
// after warm-up, its file descriptors must not have grown, and every message
// the server acknowledged must have reached every steady user (other than its
// sender). Prints a summary; exits 1 on any failure.
import fs from 'node:fs';
import net from 'node:net';
import crypto from 'node:crypto';

import { startServer, sleep, HOST } from '../e2e/node/harness.mjs';
import { RawWs, OP, frame } from '../conformance/wire.mjs';

const minutes = Number(process.argv[2] || process.env.SOAK_MINUTES || 1);
if (!(minutes > 0)) { console.error('usage: soak.mjs MINUTES'); process.exit(64); }
const DURATION_MS = minutes * 60_000;
const STEADY = 8;           // users connected from start to end, each sending every SEND_EVERY_MS
const SEND_EVERY_MS = 500;
const CHURNERS = 6;         // users whose connections come and go
const STALLERS = 3;         // users whose connections stop reading
const STALL_MAX_MS = 75_000;  // past the server's 60 s idle timeout; then we look and drop it

const log = (...a) => console.log(`[${new Date().toISOString().slice(11, 19)}]`, ...a);

function procStats(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
  const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
  const threads = Number(/Threads:\s+(\d+)/.exec(status)[1]);
  return { rssKb, fds, threads };
}

const counts = { churn_connects: 0, churn_sends: 0, stalls: 0, stalls_checked: 0, stalls_dropped_by_server: 0, garbage_tcp: 0,
                 garbage_http: 0, garbage_frames: 0, garbage_json: 0, errors: 0 };
const acked = [];           // {id, sender} of every message_sent
const transient = new Set(); // sockets and clients to tear down at the end
let stopping = false;

const server = await startServer();
const pid = server.child.pid;
let failed = false;
try {
  const steadyUsers = await server.registerMany(STEADY);
  const churnUsers = await server.registerMany(CHURNERS);
  const stallUsers = await server.registerMany(STALLERS);
  const thread = await server.createGroup(steadyUsers[0], [...steadyUsers.slice(1), ...churnUsers, ...stallUsers], 'soak');
  const steady = [];
  for (const u of steadyUsers) steady.push({ user: u, ws: await server.connect(u) });

  // Steady senders: one message in flight per user; every ack is recorded.
  let seqNo = 0;
  const senders = steady.map(async (s) => {
    while (!stopping) {
      try {
        const m = await s.ws.sendMessage({ thread_id: thread.id, content: `steady ${s.user.username} ${++seqNo}`,
                                           client_msg_id: crypto.randomUUID() }, 15000);
        acked.push({ id: m.id, sender: s.user.id });
      } catch (err) {
        counts.errors++;
        log('steady send failed:', err.message);
      }
      await sleep(SEND_EVERY_MS);
    }
  });

  await sleep(Math.min(20_000, DURATION_MS / 6));  // warm-up: caches and pools reach their working size
  const start = procStats(pid);
  let peak = { ...start };
  log(`warm: rss ${start.rssKb} kB, fds ${start.fds}, threads ${start.threads}`);

  // ---- churn
  const churnOnce = async () => {
    const u = churnUsers[Math.floor(Math.random() * churnUsers.length)];
    const c = await server.connect(u);
    transient.add(c);
    counts.churn_connects++;
    if (Math.random() < 0.5) {
      const m = await c.sendMessage({ thread_id: thread.id, content: `churn ${u.username}`, client_msg_id: crypto.randomUUID() }, 15000);
      acked.push({ id: m.id, sender: u.id });
      counts.churn_sends++;
    }
    await sleep(200 + Math.random() * 2000);
    if (Math.random() < 0.5) c.close(); else c.terminate();  // polite close or a vanished client
    transient.delete(c);
  };

  // Opens a stalled connection every call while fewer than MAX_STALLED are held;
  // each lives until the server drops it or STALL_MAX_MS passes.
  let stalled = 0;
  const MAX_STALLED = 6;
  const stallOnce = async () => {
    if (stalled >= MAX_STALLED) return;
    const u = stallUsers[counts.stalls % stallUsers.length];
    const ws = await RawWs.open(HOST, server.port, `/ws?token=${encodeURIComponent(u.token)}`);
    counts.stalls++;
    stalled++;
    ws.socket.pause();  // never read again: the server's queue and our kernel buffer fill
    transient.add(ws);
    (async () => {
      // A paused socket does not see the server's FIN or reset: after
      // STALL_MAX_MS (past the server's idle timeout) read again and see
      // whether the server has closed it.
      const dropped = new Promise((r) => ws.socket.once('close', () => r('closed')));
      await Promise.race([dropped, sleep(STALL_MAX_MS)]);
      if (!ws.ourTeardown) {
        counts.stalls_checked++;
        ws.socket.resume();
        const outcome = await Promise.race([dropped, sleep(3000).then(() => 'open')]);
        if (outcome === 'closed') counts.stalls_dropped_by_server++;
      }
      ws.destroy();
      transient.delete(ws);
      stalled--;
    })();
  };

  const garbageOnce = async () => {
    const kind = Math.floor(Math.random() * 4);
    if (kind === 0) {  // bytes that are not HTTP at all
      const s = net.connect({ host: HOST, port: server.port });
      transient.add(s);
      s.on('error', () => {});
      s.on('data', () => {});
      s.write(crypto.randomBytes(100 + Math.floor(Math.random() * 4000)));
      await sleep(500);
      s.destroy();
      transient.delete(s);
      counts.garbage_tcp++;
    } else if (kind === 1) {  // broken HTTP: bad token, bad request line, a huge header
      const reqs = ['GET /api/chat/threads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not.a.token\r\n\r\n',
                    'BREW /\x00 HTTP/9\r\n\r\n',
                    `GET / HTTP/1.1\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`,
                    'POST /api/chat/threads HTTP/1.1\r\nContent-Length: 5\r\nAuthorization: Bearer x\r\n\r\n{"a":'];
      const s = net.connect({ host: HOST, port: server.port });
      transient.add(s);
      s.on('error', () => {});
      s.on('data', () => {});
      s.write(reqs[Math.floor(Math.random() * reqs.length)]);
      await sleep(300);
      s.destroy();
      transient.delete(s);
      counts.garbage_http++;
    } else {
      const u = churnUsers[Math.floor(Math.random() * churnUsers.length)];
      const ws = await RawWs.open(HOST, server.port, `/ws?token=${encodeURIComponent(u.token)}`);
      transient.add(ws);
      if (kind === 2) {  // random bytes where frames should be: the server closes 1002 (or 1009)
        ws.send(crypto.randomBytes(10 + Math.floor(Math.random() * 500)));
        counts.garbage_frames++;
      } else {           // well-framed nonsense: bad JSON, unknown types, wrong field types
        for (const t of ['{not json', '{"type":"nope"}', '{"type":"send_message","thread_id":7}', '[]', '"\\ud800"'])
          ws.send(frame(OP.TEXT, t));
        counts.garbage_json++;
      }
      await sleep(500);
      ws.destroy();
      transient.delete(ws);
    }
  };

  // Each loop runs one action at a time, so the number of open transient connections stays bounded.
  const loop = (fn, pauseMs) => (async () => {
    while (!stopping) {
      try { await fn(); } catch (err) { counts.errors++; log('churn action failed:', err.message); }
      await sleep(pauseMs);
    }
  })();
  const endAt = Date.now() + DURATION_MS;
  const loops = [loop(churnOnce, 100), loop(churnOnce, 150), loop(stallOnce, 5000),
                 loop(garbageOnce, 50), loop(garbageOnce, 120)];
  while (Date.now() < endAt) {
    await sleep(Math.min(30_000, endAt - Date.now()));
    const now = procStats(pid);
    if (now.rssKb > peak.rssKb) peak.rssKb = now.rssKb;
    if (now.fds > peak.fds) peak.fds = now.fds;
    log(`rss ${now.rssKb} kB, fds ${now.fds}, acked ${acked.length}, churn ${counts.churn_connects}, ` +
        `stalls ${counts.stalls}, garbage ${counts.garbage_tcp + counts.garbage_http + counts.garbage_frames + counts.garbage_json}`);
  }

  // ---- drain: stop everything but the steady users, let the server notice
  stopping = true;
  for (const t of transient) { t.ourTeardown = true; try { (t.terminate || t.destroy).call(t); } catch { /* gone */ } }
  await Promise.race([Promise.all(senders), sleep(20_000)]);
  // Stall loops may sit in their wait: the sockets are destroyed above; give the loops a moment.
  await Promise.race([Promise.all(loops), sleep(20_000)]);

  // ---- delivery: every acked message at every steady user but its sender (bounded wait)
  const missingFor = () => steady.map((s) => {
    const got = new Set(s.ws.all((f) => f.type === 'new_message').map((f) => f.data.id));
    return acked.filter((m) => m.sender !== s.user.id && !got.has(m.id)).length;
  });
  let missing = missingFor();
  for (let i = 0; i < 30 && missing.some((n) => n > 0); i++) { await sleep(500); missing = missingFor(); }
  const dupes = steady.map((s) => {
    const ids = s.ws.all((f) => f.type === 'new_message').map((f) => f.data.id);
    return ids.length - new Set(ids).size;
  });
  const steadyOpen = steady.filter((s) => s.ws.isOpen).length;

  await sleep(5000);  // presence grace, idle sweeps, closes in flight
  const end = procStats(pid);

  // ---- verdict
  const rssLimitKb = Math.round(start.rssKb * 1.5 + 16 * 1024);
  const checks = [
    ['every acked message delivered to every steady user', missing.every((n) => n === 0), `missing per user ${JSON.stringify(missing)}`],
    ['no duplicate deliveries', dupes.every((n) => n === 0), `duplicates per user ${JSON.stringify(dupes)}`],
    ['steady users still connected', steadyOpen === STEADY, `${steadyOpen}/${STEADY}`],
    ['RSS back near its start', end.rssKb <= rssLimitKb, `start ${start.rssKb} kB, peak ${peak.rssKb} kB, end ${end.rssKb} kB (limit ${rssLimitKb} kB)`],
    ['no file descriptor leak', end.fds <= start.fds + 2, `start ${start.fds}, peak ${peak.fds}, end ${end.fds}`],
    ['stalled readers dropped by the server (idle timeout)', counts.stalls_dropped_by_server === counts.stalls_checked,
     `${counts.stalls_dropped_by_server} of the ${counts.stalls_checked} held past ${STALL_MAX_MS / 1000} s`],
    ['server alive', server.child.exitCode === null && server.child.signalCode === null, ''],
  ];
  console.log('\n==== soak summary');
  console.log(`duration ${minutes} min; messages acknowledged ${acked.length}; deliveries checked ${acked.length * (STEADY - 1)}+`);
  console.log(`connections: ${STEADY} steady, ${counts.churn_connects} churn (${counts.churn_sends} sent), ` +
              `${counts.stalls} stalled, ` +
              `garbage: ${counts.garbage_tcp} raw TCP, ${counts.garbage_http} HTTP, ${counts.garbage_frames} frames, ${counts.garbage_json} JSON`);
  console.log(`client-side errors ${counts.errors}; threads start ${start.threads}, end ${end.threads}`);
  for (const [name, ok, detail] of checks) {
    console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
    if (!ok) failed = true;
  }
  if (counts.errors > 0) console.log('note: client-side errors are counted above; see the log lines');
} catch (err) {
  console.error('soak: aborted:', err);
  console.error(server.logTail(40));
  failed = true;
} finally {
  stopping = true;
  await server.stop();
}
console.log(failed ? 'soak: FAILED' : 'soak: passed');
process.exit(failed ? 1 : 0);
