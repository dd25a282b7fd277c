// Several `parley` nodes on one PostgreSQL and one Redis, for the multi-node
// end-to-end tests: a throwaway PostgreSQL (tests/db/pg.sh) with one
// database, a throwaway Redis (redis.mjs), and N nodes sharing both and one
// JWT secret. Everything is on loopback and stopped by PID: by stop(), or
// when the test process exits.
//
//   const cluster = new Cluster();
//   before(() => cluster.start({ size: 3 }));   // cluster.nodes[0..2]
//   after(() => cluster.stop());
//
// Tests may replace a node in cluster.nodes (nodes[2] = await
// cluster.startNode()) after killing it; stop() stops whatever is there.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ParleyServer, PG_SH, pgAvailable, randomId, sleep } from './harness.mjs';
import { redisAvailable, startRedis } from './redis.mjs';

// Why a multi-node test cannot run here (a string for node:test's skip), or false.
export const clusterSkip = (!pgAvailable() && 'PostgreSQL (tests/db/pg.sh) is not available')
  || (!redisAvailable() && 'redis-server is not installed');

// Waits until a node's GET /health says the bus is (ok) or is not (!ok) connected.
export async function waitBus(node, ok, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try { last = (await node.http('GET', '/health')).body; } catch { /* restarting */ }
    if (last?.bus?.ok === ok) return last;
    await sleep(100);
  }
  assert.fail(`bus.ok never became ${ok} on :${node.port}: ${JSON.stringify(last)}`);
}

// A PostgreSQL of its own in a temporary state dir, stopped on stop() or at exit.
const runningPg = new Set();
process.on('exit', () => { for (const pg of runningPg) pg.stop(); });

export class PgServer {
  start() {
    this.state = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-pg-state-'));
    runningPg.add(this);
    execFileSync(PG_SH, ['start', this.state], { stdio: 'ignore', timeout: 120000 });
    return this;
  }
  // A new, empty database; its URL.
  createdb() {
    return execFileSync(PG_SH, ['createdb', this.state], { encoding: 'utf8', timeout: 30000 }).trim();
  }
  stop() {
    if (!this.state) return;
    try { execFileSync(PG_SH, ['stop', this.state], { stdio: 'ignore', timeout: 60000 }); } catch { /* gone */ }
    fs.rmSync(this.state, { recursive: true, force: true });
    runningPg.delete(this);
    this.state = null;
  }
}

export class Cluster {
  constructor({ secret = `cluster-${randomId(16)}` } = {}) {
    this.secret = secret;
    this.nodes = [];
    this.pg = null;
    this.redis = null;
    this.databaseUrl = null;
    this.args = [];
  }

  // Starts PostgreSQL (one database), Redis and `size` nodes; each node gets
  // `args` too, and is up once its bus is connected (unless !waitBus).
  async start({ size = 3, args = [], waitBus: wait = true } = {}) {
    this.args = args;
    this.pg = new PgServer().start();
    this.databaseUrl = this.pg.createdb();
    this.redis = await startRedis();
    for (let i = 0; i < size; i++) this.nodes.push(await this.startNode({ waitBus: wait }));
    return this;
  }

  // A new node on the cluster's database and Redis (or `redisUrl`, such as a
  // proxy to it); not added to this.nodes.
  async startNode({ redisUrl = this.redis.url, args = this.args, waitBus: wait = true } = {}) {
    const node = new ParleyServer({ secret: this.secret, database: this.databaseUrl, args: ['--redis', redisUrl, ...args] });
    try {
      await node.start();
      if (wait) await waitBus(node, true);
    } catch (err) {
      await node.stop().catch(() => {});
      throw err;
    }
    return node;
  }

  // Two nodes: b on Redis, a through a CuttableProxy (this.proxy) that a test
  // cuts to take a off the bus. Resolves {nodeA, nodeB, proxy}; stop() stops all.
  async startCuttablePair() {
    await this.start({ size: 1 });
    this.proxy = await new CuttableProxy(this.redis.port).start();
    const nodeA = await this.startNode({ redisUrl: this.proxy.url });
    this.nodes.push(nodeA);
    return { nodeA, nodeB: this.nodes[0], proxy: this.proxy };
  }

  async stop() {
    for (const n of this.nodes) await n.stop().catch(() => {});
    await this.proxy?.cut().catch(() => {});
    this.redis?.remove();
    this.pg?.stop();
  }
}

// A describe's two nodes (Cluster.startCuttablePair), started before its
// tests, each handed to `started` ({nodeA, nodeB, proxy}), and stopped after
// them. Returns the cluster.
export function cuttablePair(name, started) {
  const cluster = new Cluster({ secret: `${name}-${randomId(16)}` });
  before(async () => { started(await cluster.startCuttablePair()); });
  after(async () => { await cluster.stop(); });
  return cluster;
}

// A loopback TCP proxy (to Redis) that can be cut, every connection dropped
// and new ones refused, and restored on the same port with start().
export class CuttableProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.delayMs = 0;
    this.port = 0;
    this.sockets = new Set();
  }
  get url() { return `redis://127.0.0.1:${this.port}`; }
  async start() {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, '127.0.0.1');
      for (const [a, b] of [[client, upstream], [upstream, client]]) {
        this.sockets.add(a);
        if (a === upstream) a.on('data', (chunk) => this.forward(client, chunk));
        else a.pipe(b);
        a.on('error', () => b.destroy());
        a.on('close', () => { this.sockets.delete(a); b.destroy(); });
      }
    });
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
    return this;
  }
  // Holds what Redis sends to the node for `ms` more (0: none), in order, so
  // that the node hears the other nodes' events late while its bus stays
  // healthy (its pings are answered well within their timeout).
  delay(ms) { this.delayMs = ms; }
  forward(client, chunk) {
    if (!this.delayMs && !client.held) {
      client.write(chunk);
      return;
    }
    (client.held ??= []).push({ at: Date.now() + (this.delayMs || 0), chunk });
    if (!client.holdTimer) this.release(client);
  }
  release(client) {
    const held = client.held;
    while (held.length && held[0].at <= Date.now()) {
      const { chunk } = held.shift();
      if (!client.destroyed) client.write(chunk);
    }
    client.holdTimer = held.length ? setTimeout(() => this.release(client), held[0].at - Date.now()) : null;
    if (!held.length) client.held = null;
  }
  async cut() {
    const closed = new Promise((resolve) => this.server.close(resolve));
    for (const s of this.sockets) s.destroy();
    await closed;
  }
}
