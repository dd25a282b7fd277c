// A throwaway redis-server for end-to-end tests, through
// scripts/redis-test.sh: loopback, a temporary directory, no persistence,
// stopped by PID (also when the test process exits).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from './harness.mjs';

const SCRIPT = path.join(REPO_ROOT, 'scripts', 'redis-test.sh');
const running = new Set();
process.on('exit', () => { for (const r of running) r.stopSync(); });

export function redisAvailable() {
  try { execFileSync('redis-server', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

export class RedisServer {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-redis-'));
    this.port = 0;
  }
  get url() { return `redis://127.0.0.1:${this.port}`; }
  start() {
    const args = ['start', this.dir];
    if (this.port) args.push(String(this.port));
    this.port = Number(execFileSync(SCRIPT, args, { encoding: 'utf8', timeout: 20000 }).trim());
    running.add(this);
    return this;
  }
  stopSync() {
    try { execFileSync(SCRIPT, ['stop', this.dir], { stdio: 'ignore', timeout: 20000 }); } catch { /* gone */ }
    running.delete(this);
  }
  // SIGSTOP / SIGCONT: a Redis that hangs (its kernel still accepts
  // connections, nothing answers).
  pid() { return Number(fs.readFileSync(path.join(this.dir, 'redis.pid'), 'utf8')); }
  pause() { process.kill(this.pid(), 'SIGSTOP'); }
  resume() { process.kill(this.pid(), 'SIGCONT'); }
  // Commands through redis-cli (loopback only).
  cli(...args) {
    return execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(this.port), ...args], { encoding: 'utf8', timeout: 10000 }).trim();
  }
  remove() {
    this.stopSync();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function startRedis() { return new RedisServer().start(); }
