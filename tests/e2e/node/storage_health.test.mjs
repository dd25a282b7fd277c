// A store whose writes fail (issue 8, item 5): a file-size limit of 0 on the
// running server stands in for a full disk. Sends are refused with
// storage_unavailable (and not acknowledged), the cause is in the log (at
// most a line a second however fast clients retry, and a line when it ends),
// /health reports the store's write state, and all recovers with the disk.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer, assertHttpError, assertWsError, sleep } from './harness.mjs';
import { TEST_STORE } from './harness.mjs';

function setFileSizeLimit(pid, limit) {
  execFileSync('prlimit', ['--pid', String(pid), `--fsize=${limit}`]);
}

// Only with SQLite: a file-size limit on the server stands in for SQLite's full disk.
describe('/health and send errors follow the store write state', { skip: TEST_STORE !== 'sqlite' }, () => {
  let server, alice, bob, dm;
  before(async () => {
    server = await startServer();
    [alice, bob] = await server.registerMany(2);
    dm = await server.createDirect(alice, bob);
  });
  after(async () => {
    if (server?.child) setFileSizeLimit(server.child.pid, 'unlimited:unlimited');
    await server?.stop();
  });

  it('writes failing: sends say storage_unavailable, /health says so; then both recover', async () => {
    assert.equal((await server.sendRest(alice.token, dm.id, { content: 'before' })).status, 201);
    const ok = await server.http('GET', '/health');
    assert.equal(ok.status, 200);
    assert.equal(ok.body.storage.ok, true);

    const ws = await server.connect(alice);
    setFileSizeLimit(server.child.pid, '0:unlimited');
    const res = await server.sendRest(alice.token, dm.id, { content: 'while the disk is full' });
    assertHttpError(assert, res, 503, 'storage_unavailable');
    const reply = await ws.request({ type: 'send_message', thread_id: dm.id, content: 'ws while full' });
    assertWsError(assert, reply, 'storage_unavailable');

    const bad = await server.http('GET', '/health');
    assert.equal(bad.status, 503);
    assert.equal(bad.body.status, 'degraded');
    assert.equal(bad.body.storage.ok, false);
    assert.equal(typeof bad.body.storage.error, 'string');
    assert.ok(server.log.some((l) => l.includes('event=store_batch_failed')), 'the cause is logged');

    // A client retrying at once: the first failure was logged, the next ones
    // at most once a second, each saying how many it stands for.
    const started = Date.now();
    for (let i = 0; i < 10; i++) {
      const burst = await Promise.all(Array.from({ length: 20 }, (_, k) => server.sendRest(alice.token, dm.id, { content: `retry ${i}.${k}` })));
      for (const r of burst) assertHttpError(assert, r, 503, 'storage_unavailable');
    }
    await sleep(1100);
    assertHttpError(assert, await server.sendRest(alice.token, dm.id, { content: 'a second later' }), 503, 'storage_unavailable');
    const seconds = (Date.now() - started) / 1000;
    // The server's log comes over a pipe that may be read after the HTTP answer
    // it preceded: wait (bounded) for a line that counts what was held back.
    const failedLines = () => server.log.filter((l) => l.includes('event=store_batch_failed'));
    const counting = (l) => /error="[^"]+" suppressed=[1-9]\d*$/.test(l);
    for (let i = 0; i < 50 && !failedLines().slice(1).some(counting); i++) await sleep(100);
    const failed = failedLines();
    assert.ok(failed.length <= 2 + Math.ceil(seconds), `${failed.length} lines in ${seconds} s for 200 failures:\n${failed.join('\n')}`);
    assert.match(failed[0], /error="[^"]+" suppressed=0$/, 'the first line has the details');
    // Which later line counts them depends on timing: with a slow machine a
    // line may come between the bursts and hold all but the last back.
    assert.ok(failed.slice(1).some(counting),
      `a later line counts what it held back:\n${failed.join('\n')}`);
    const recoveredLines = () => server.log.filter((l) => l.includes('event=store_batch_recovered'));

    setFileSizeLimit(server.child.pid, 'unlimited:unlimited');
    const after = await server.sendRest(alice.token, dm.id, { content: 'after' });
    assert.equal(after.status, 201, after.text);
    // The end of the failures is said, with what the last lines held back.
    const endSaid = () => {
      const last = server.log.findLastIndex((l) => l.includes('event=store_batch_recovered'));
      return last > server.log.findLastIndex((l) => l.includes('event=store_batch_failed'));
    };
    for (let i = 0; i < 50 && !endSaid(); i++) await sleep(100);
    assert.ok(endSaid(), `the end of the failures is logged:\n${server.log.slice(-5).join('\n')}`);
    assert.match(recoveredLines().at(-1), /event=store_batch_recovered suppressed=\d+$/);
    const good = await server.http('GET', '/health');
    assert.equal(good.status, 200);
    assert.equal(good.body.storage.ok, true);
    // Nothing refused was stored.
    const contents = (await server.history(bob.token, dm.id)).map((m) => m.content);
    assert.deepEqual(contents, ['before', 'after']);
    ws.close();
  });
});
