// Out of file descriptors: accept() fails while the listen queue stays
// readable. The server must pause and retry (a few log lines a second), not
// spin a core on failing accepts, and must serve again once descriptors free.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { startServer } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('accept under an exhausted descriptor table', () => {
  const sockets = [];
  let server;
  after(async () => {
    for (const s of sockets) s.destroy();
    await server?.stop();
  });

  it('pauses between failed accepts and recovers when descriptors free up', async () => {
    server = await startServer();
    const failures = [];
    for (const stream of [server.child.stdout, server.child.stderr]) {
      stream.on('data', (chunk) => {
        for (const line of chunk.toString().split('\n')) if (line.includes('event=accept_failed')) failures.push(line);
      });
    }
    // The server's own descriptors (store, epoll, eventfds) plus a few spare.
    const open = Number(execFileSync('sh', ['-c', `ls /proc/${server.child.pid}/fd | wc -l`]).toString().trim());
    const limit = open + 8;
    const pid = String(server.child.pid);
    const soft = execFileSync('prlimit', ['--pid', pid, '--nofile', '--raw', '--noheadings', '--output', 'SOFT']).toString().trim();
    execFileSync('prlimit', ['--pid', pid, `--nofile=${limit}:`]);  // the soft limit only: no privilege needed

    // More connections than descriptors left; they send nothing, so only the
    // header timeout would close them.
    for (let i = 0; i < 40; i++) {
      const s = net.connect(server.port, '127.0.0.1');
      s.on('error', () => {});
      sockets.push(s);
    }
    await sleep(300);
    const before = failures.length;
    await sleep(1000);
    const perSecond = failures.length - before;
    assert.ok(failures.length > 0, 'accept failed once the table was full (else the test proves nothing)');
    assert.ok(perSecond <= 15, `at most ~10 failed accepts a second while paused, saw ${perSecond}`);
    assert.match(failures[0], /retry_ms=100/);

    // Free the descriptors: the queued connections get served and so does a new request.
    for (const s of sockets.splice(0)) s.destroy();
    execFileSync('prlimit', ['--pid', pid, `--nofile=${soft}:`]);
    let health = null;
    for (let i = 0; i < 50 && health?.status !== 200; i++) {
      health = await server.http('GET', '/health').catch(() => null);
      if (health?.status !== 200) await sleep(100);
    }
    assert.equal(health?.status, 200, 'the server serves again');
  });
});
