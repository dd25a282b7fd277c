// The crash test: kill -9 the server at random points of the write path,
// many times, and check every acknowledged message.
//
// Six clients send into two direct and two group threads as fast as their
// windows allow, each message with its own client_msg_id. After a random
// delay (varied so kills land early in the first batches, after a run of
// commits and checkpoints, or right after an ack arrived) the server gets
// SIGKILL; it is restarted on the same data dir and must have every message
// it acknowledged (message_sent) exactly once, with the seq it acknowledged,
// each thread's seq gapless; resending every unacknowledged message with the
// same client_msg_id must store it at most once (a message committed whose
// ack was lost answers with the original), and `parley check` must find the
// store sound. Rounds repeat until the time budget is spent; one runs with
// --fsync. A final pass reads every thread from seq 1.
//
// Reproduce a run with PARLEY_CRASH_SEED=<seed printed in the output>
// (the kill points depend on timing too, so the seed picks the delays, not
// what the server was doing at them). PARLEY_CRASH_BUDGET_MS and
// PARLEY_CRASH_MAX_ROUNDS bound the run.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { ParleyServer, PARLEY_BIN, TEST_STORE, sleep } from './harness.mjs';

const ON_PG = TEST_STORE === 'postgres';
// CI bound: the rounds stop starting once the budget would be exceeded.
const BUDGET_MS = Number(process.env.PARLEY_CRASH_BUDGET_MS || (ON_PG ? 20000 : 40000));
const MAX_ROUNDS = Number(process.env.PARLEY_CRASH_MAX_ROUNDS || 40);
const MIN_ROUNDS = 3;
const SEED = Number(process.env.PARLEY_CRASH_SEED || Math.floor(Math.random() * 2 ** 31));
const WINDOW = 48;  // messages in flight per client

// mulberry32: a small seeded generator, so a run's delays can be replayed.
function makeRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = makeRandom(SEED);
const uniform = (lo, hi) => lo + (hi - lo) * random();

// How a round's kill is placed. 'early' lands in the first batches (often
// before any ack); 'timer' after up to 1.5 s of commits, which spans many
// WAL checkpoints (in odd rounds one per 1000 pages: about every 70 ms, so a kill
// often lands while one runs; each round reports how many reset the WAL);
// 'after_ack' waits a random time and then kills synchronously inside the
// handler of the next message_sent, i.e. just after a commit's acks went out
// while the next batch is being written.
const MODES = ['early', 'timer', 'after_ack', 'timer', 'after_ack'];

// One sending client on a raw `ws` socket (ChatClient keeps every frame and
// scans them per reply, too slow for tens of thousands of sends).
class Sender {
  // fresh: () => the next new record to send, or null (retries use queue only).
  constructor(server, user, index, fresh = () => null) {
    this.server = server;
    this.user = user;
    this.index = index;
    this.fresh = fresh;
    this.pending = new Map();  // request_id -> record
    this.queue = [];           // records to send again
    this.errors = {};
    this.onAck = null;
    this.stopped = false;
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${this.server.wsBase}/ws?token=${encodeURIComponent(this.user.token)}`,
        { handshakeTimeout: 5000, maxPayload: 64 * 1024 * 1024 });
      this.ws = ws;
      const timer = setTimeout(() => { ws.terminate(); reject(new Error('no connection_established in 5 s')); }, 5000);
      this.closed = new Promise((done) => ws.once('close', done));
      ws.on('error', () => { /* surfaced through close */ });
      ws.on('message', (data) => {
        const text = data.toString('utf8');
        if (text.includes('"connection_established"') && !this.established) {
          this.established = true;
          clearTimeout(timer);
          resolve();
          return;
        }
        if (!text.includes('"request_id"')) return;  // fan-out, presence, replays
        const frame = JSON.parse(text);
        const record = this.pending.get(frame.request_id);
        if (!record) return;
        this.pending.delete(frame.request_id);
        if (frame.type === 'message_sent') {
          record.state = 'acked';
          record.id = frame.data.id;
          record.seq = frame.data.seq;
          assert.equal(frame.data.client_msg_id, record.cid, 'message_sent echoes the client_msg_id');
          assert.equal(frame.data.thread_id, record.threadId, 'message_sent names the thread sent to');
          if (this.onAck) this.onAck(record);
        } else {
          record.state = 'failed';
          this.errors[frame.code || frame.type] = (this.errors[frame.code || frame.type] || 0) + 1;
        }
        this.pump();
      });
      ws.once('close', () => { clearTimeout(timer); if (!this.established) reject(new Error('closed before connection_established')); });
    });
  }

  pump() {
    while (!this.stopped && this.pending.size < WINDOW && this.ws.readyState === WebSocket.OPEN) {
      const record = this.queue.length ? this.queue.shift() : this.fresh();
      if (!record) return;
      const requestId = `${record.cid}#${record.attempts++}`;
      record.state = 'inflight';
      this.pending.set(requestId, record);
      this.ws.send(JSON.stringify({ type: 'send_message', request_id: requestId, thread_id: record.threadId,
        content: record.content, client_msg_id: record.cid }));
    }
  }

  // Resolves once every queued record got an answer (or the socket closed).
  drained(timeoutMs) {
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      const check = () => {
        if (!this.queue.length && !this.pending.size) return resolve();
        if (this.ws.readyState !== WebSocket.OPEN) return reject(new Error(`sender ${this.index}: connection closed with ${this.pending.size + this.queue.length} unanswered`));
        if (Date.now() > deadline) return reject(new Error(`sender ${this.index}: ${this.pending.size + this.queue.length} sends unanswered after ${timeoutMs} ms`));
        setTimeout(check, 20);
      };
      check();
    });
  }
}

describe('crash test: kill -9 at random points of the write path', () => {
  const server = new ParleyServer({
    // As fast as the clients can: the per-connection rate limit has its own test.
    args: ['--rate-per-second', '1000000', '--rate-burst', '1000000'],
  });
  after(async () => { await server.stop(); });

  it('every acknowledged message survives exactly once with its seq; retries store nothing twice; the store checks sound', async () => {
    const started = Date.now();
    console.log(`# crash test seed ${SEED} (PARLEY_CRASH_SEED to replay), budget ${BUDGET_MS} ms, store ${TEST_STORE}`);
    await server.start();
    const baseArgs = server.extraArgs;
    // Odd rounds checkpoint at 1000 WAL pages (SQLite's own default): with
    // the server's default of 16,000 a round's 1.5 s window holds about one
    // checkpoint, so these are the rounds whose kills land in or right after
    // one; even rounds run the defaults a deployment runs.
    const smallWal = (r) => r % 2 === 1;
    const argsFor = (r) => (smallWal(r) ? [...baseArgs, '--wal-checkpoint-pages', '1000'] : baseArgs);

    const users = await server.registerMany(6);
    const threads = [
      await server.createDirect(users[0], users[1]),
      await server.createDirect(users[2], users[3]),
      await server.createGroup(users[0], users.slice(1), 'crash everyone'),
      await server.createGroup(users[4], [users[1], users[3], users[5]], 'crash odd'),
    ];
    const members = [[0, 1], [2, 3], [0, 1, 2, 3, 4, 5], [1, 3, 4, 5]];
    const threadsOf = users.map((_, u) => threads.filter((_, t) => members[t].includes(u)).map((t) => t.id));
    const readerOf = new Map(threads.map((t, i) => [t.id, users[members[i][0]]]));

    const records = new Map();                      // `${sender_id}/${cid}` -> what was sent and its ack
    const storedByKey = new Map();                  // `${sender_id}/${cid}` -> {id, seq} as stored
    const verifiedTo = new Map(threads.map((t) => [t.id, 0]));  // seq read and checked so far

    // Reads each thread from the last checked seq: gapless, each client_msg_id
    // once, and each stored message one that a client sent.
    const readNew = async () => {
      for (const t of threads) {
        for (let page = 0; page < 5000; page++) {
          const from = verifiedTo.get(t.id);
          const res = await server.http('GET', `/api/chat/threads/${t.id}/messages?after_seq=${from}&limit=200`,
            { token: readerOf.get(t.id).token });
          assert.equal(res.status, 200, `history of ${t.id}: ${res.text}`);
          const msgs = res.body.data.messages;
          verifyPage(t.id, msgs, from);
          if (msgs.length < 200) break;
        }
      }
    };
    const verifyPage = (threadId, msgs, from) => {
      msgs.forEach((m, i) => {
        assert.equal(m.seq, from + i + 1, `thread ${threadId}: seq ${from + i + 1} expected after ${from + i}, got ${m.seq} (a gap or a repeat)`);
        assert.equal(m.thread_id, threadId);
        if (m.message_type === 'system') return;
        assert.ok(m.client_msg_id, `message seq ${m.seq} in ${threadId} has no client_msg_id: nobody sent it`);
        const key = `${m.sender_id}/${m.client_msg_id}`;
        assert.ok(!storedByKey.has(key), `client_msg_id ${m.client_msg_id} of ${m.sender_id} stored twice (seq ${storedByKey.get(key)?.seq} and ${m.seq})`);
        const record = records.get(key);
        assert.ok(record, `stored message ${m.client_msg_id} (seq ${m.seq}) was never sent`);
        assert.equal(m.thread_id, record.threadId, `${m.client_msg_id} stored in the thread it was sent to`);
        assert.equal(m.content, record.content, `${m.client_msg_id} keeps its content`);
        storedByKey.set(key, { id: m.id, seq: m.seq });  // only what is compared, to keep memory small
      });
      if (msgs.length) verifiedTo.set(threadId, msgs[msgs.length - 1].seq);
    };
    // Every acknowledged record is stored, with the id and seq it was acknowledged with.
    const checkAcked = (what) => {
      for (const [key, r] of records) {
        if (r.state !== 'acked') continue;
        const m = storedByKey.get(key);
        assert.ok(m, `${what}: acknowledged ${r.cid} (seq ${r.seq} in ${r.threadId}) is missing`);
        assert.equal(m.id, r.id, `${what}: ${r.cid} keeps the id it was acknowledged with`);
        assert.equal(m.seq, r.seq, `${what}: ${r.cid} keeps the seq it was acknowledged with`);
      }
    };
    const checkStore = async (what) => {
      const where = server.database ? ['--database', server.database] : ['--data-dir', server.dataDir];
      const out = await new Promise((resolve) => {
        execFile(PARLEY_BIN, ['check', '--json', ...where], { timeout: 30000 },
          (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
      });
      assert.equal(out.code, 0, `${what}: parley check exits 0: ${out.stdout} ${out.stderr}`);
      const report = JSON.parse(out.stdout);
      assert.equal(report.ok, true, `${what}: parley check: ${out.stdout}`);
      assert.deepEqual(report.problems, []);
    };
    // Marks every thread read for every member, so a reconnect does not
    // replay the whole history to each client.
    const markAllRead = async () => {
      for (const [t, thread] of threads.entries()) {
        for (const u of members[t]) {
          const res = await server.http('POST', `/api/chat/mark-read/${thread.id}`, { token: users[u].token });
          assert.equal(res.status, 200, `mark-read: ${res.text}`);
        }
      }
    };

    // How many times the WAL started over (each completed checkpoint that
    // reset it bumps the checkpoint sequence number in the WAL header, bytes
    // 12-15): shows the kills land after checkpoints, not only before the
    // first. Null when there is no WAL (PostgreSQL, or another journal).
    const walResets = () => {
      try {
        const fd = fs.openSync(path.join(server.dataDir, 'parley.db-wal'), 'r');
        try {
          const header = Buffer.alloc(16);
          return fs.readSync(fd, header, 0, 16, 0) === 16 ? header.readUInt32BE(12) : null;
        } finally { fs.closeSync(fd); }
      } catch { return null; }
    };

    const stats = [];
    let roundMs = 0;
    let round = 0;
    for (; round < MAX_ROUNDS; round++) {
      const elapsed = Date.now() - started;
      if (round >= MIN_ROUNDS && elapsed + roundMs * 1.3 > BUDGET_MS) break;
      const roundStart = Date.now();
      const fsync = !ON_PG && round === 2;
      const mode = fsync ? 'timer' : MODES[round % MODES.length];
      if (fsync) {
        // This round's server commits with fsync; the restart after its kill goes back.
        server.extraArgs = [...argsFor(round), '--fsync'];
        await server.restart();
      }

      // Connect, then send as fast as the windows allow until the kill.
      // Each client cycles through its threads; a record exists once sent.
      const senders = users.map((u, index) => {
        let i = 0;
        return new Sender(server, u, index, () => {
          if (i >= 100000) return null;  // a bound far beyond any kill delay
          const threadId = threadsOf[index][(i + round) % threadsOf[index].length];
          const cid = `r${round}-c${index}-${i}`;
          const record = { cid, threadId, sender: index, content: `crash round ${round} client ${index} #${i}`,
            state: 'queued', attempts: 0, round };
          i++;
          records.set(`${u.id}/${cid}`, record);
          return record;
        });
      });
      await Promise.all(senders.map((s) => s.open()));
      let ackedThisRound = 0;
      let killedAt = null;
      const killNow = () => {
        if (killedAt === null) {
          killedAt = Date.now();
          try { server.child.kill('SIGKILL'); } catch { /* already gone */ }
        }
      };
      let armed = false;
      for (const s of senders) {
        s.onAck = () => {
          ackedThisRound++;
          if (armed) killNow();
        };
      }
      const walResetsBefore = walResets();
      const sendStart = Date.now();
      for (const s of senders) s.pump();
      const delay = mode === 'early' ? uniform(0, 40) : mode === 'timer' ? uniform(50, 1500) : uniform(20, 1200);
      await sleep(delay);
      if (mode === 'after_ack') {
        armed = true;
        // An ack arrives long before 2 s; if none did, the kill below lands anyway.
        for (let waited = 0; killedAt === null && waited < 2000; waited += 5) await sleep(5);
      }
      killNow();
      const killDelay = killedAt - sendStart;
      await server.kill9();
      const walResetsAfter = walResets();
      // Acks already in the sockets' receive buffers still count: wait for each close.
      await Promise.race([Promise.all(senders.map((s) => s.closed)), sleep(5000)]);
      for (const s of senders) { s.stopped = true; s.ws.terminate(); }

      // Only records that went out are in play; the rest were never sent.
      const sent = [...records.values()].filter((r) => r.round === round);
      const unacked = sent.filter((r) => r.state !== 'acked');
      const errors = Object.assign({}, ...senders.map((s) => s.errors));

      // Restart on the same data dir and read what is there.
      server.extraArgs = argsFor(round + 1);
      await server.restart();
      await readNew();
      checkAcked(`round ${round} after kill -9`);
      const committedUnacked = unacked.filter((r) => storedByKey.has(`${users[r.sender].id}/${r.cid}`)).length;

      // The clients retry whatever had no ack, with the same client_msg_id.
      const retriers = users.map((u, i) => new Sender(server, u, i));
      await Promise.all(retriers.map((s) => s.open()));
      for (const r of unacked) {
        const stored = storedByKey.get(`${users[r.sender].id}/${r.cid}`);
        r.expect = stored ? { id: stored.id, seq: stored.seq } : null;
        r.state = 'queued';
        retriers[r.sender].queue.push(r);
      }
      for (const s of retriers) s.pump();
      await Promise.all(retriers.map((s) => s.drained(30000)));
      for (const r of unacked) {
        assert.equal(r.state, 'acked', `retry of ${r.cid} answered message_sent (errors: ${JSON.stringify(retriers[r.sender].errors)})`);
        if (r.expect) {
          assert.equal(r.id, r.expect.id, `retry of ${r.cid}, committed before the kill, answers the original id`);
          assert.equal(r.seq, r.expect.seq, `retry of ${r.cid} answers the original seq`);
        }
      }
      for (const s of retriers) s.ws.terminate();
      await readNew();
      checkAcked(`round ${round} after the retries`);
      await checkStore(`round ${round}`);
      await markAllRead();

      stats.push({ round, mode, fsync, small_wal: smallWal(round), delay_ms: killDelay,
        wal_restarts: walResetsBefore === null || walResetsAfter === null ? null : walResetsAfter - walResetsBefore,
        sent: sent.length, acked: ackedThisRound,
        unacked: unacked.length, committed_unacked: committedUnacked, errors });
      console.log(`# ${JSON.stringify(stats[stats.length - 1])}`);  // as it goes: a failing round shows the ones before
      roundMs = Math.max(roundMs, Date.now() - roundStart);
    }

    // A last pass from seq 1: nothing checked in an earlier round went missing since.
    const finalStart = Date.now();
    storedByKey.clear();
    for (const t of threads) verifiedTo.set(t.id, 0);
    await readNew();
    checkAcked('final pass');
    const total = [...records.values()].length;
    assert.equal(storedByKey.size, total, 'every message sent is stored exactly once after the retries');
    await checkStore('final');

    const sum = (k) => stats.reduce((a, s) => a + s[k], 0);
    console.log(`# ${round} rounds in ${Date.now() - started} ms: ${sum('acked')} acked, ${sum('unacked')} unacknowledged at the kill ` +
      `(${sum('committed_unacked')} of them committed), ${total} messages stored; final pass ${Date.now() - finalStart} ms`);
    assert.ok(round >= MIN_ROUNDS, `at least ${MIN_ROUNDS} rounds ran (${round})`);
    assert.ok(sum('acked') > 0, 'messages were acknowledged before kills');
    // A test whose kills all land after the writes finished would prove nothing.
    assert.ok(stats.filter((s) => s.unacked > 0).length >= MIN_ROUNDS,
      `the kills landed mid-write (rounds with sends in flight: ${stats.filter((s) => s.unacked > 0).length})`);
  });
});
