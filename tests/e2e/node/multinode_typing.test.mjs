// Typing stops by itself (CONTRACT section 5: after 6 s), also when the
// typist's node cannot say so: killed with -9, its `is_typing: false` never
// comes, and before the fix the typist showed as typing on every other node
// for good. Now each node stops another node's typist whose stop has not
// come 2 s after the typing timeout (src/bus/typing_lapse.h).
//
// Needs Debian's postgresql (tests/db/pg.sh) and redis-server; skipped when
// either is missing.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomId, sleep } from './harness.mjs';
import { Cluster, clusterSkip as skip } from './cluster.mjs';

const typingOf = (client, userId) => client.all((f) => f.type === 'typing' && f.user_id === userId);

describe('typing across nodes stops by itself', { skip }, () => {
  const cluster = new Cluster({ secret: `typing-${randomId(16)}` });

  before(() => cluster.start({ size: 2 }));
  after(() => cluster.stop());

  it('a typist whose node is alive is stopped once, by its own node, after the timeout', async () => {
    const [n0, n1] = cluster.nodes;
    const [watcher, typist] = await n0.registerMany(2);
    const thread = await n0.createDirect(watcher, typist);
    const watcherWs = await n0.connect(watcher);
    const typistWs = await n1.connect(typist);
    typistWs.send({ type: 'typing', thread_id: thread.id, is_typing: true });
    await watcherWs.next((f) => f.type === 'typing' && f.is_typing === true, 5000, 'typing: true');
    const stop = await watcherWs.next((f) => f.type === 'typing' && f.is_typing === false, 10000, 'typing: false');
    assert.equal(stop.user_id, typist.id);
    await sleep(3500);  // past the other node's lapse: no second stop
    assert.deepEqual(typingOf(watcherWs, typist.id).map((f) => f.is_typing), [true, false]);
  });

  it("a typist whose node is killed with -9 is stopped on the other node", async () => {
    const [n0, n1] = cluster.nodes;
    const [watcher, typist] = await n0.registerMany(2);
    const thread = await n0.createDirect(watcher, typist);
    const watcherWs = await n0.connect(watcher);
    const typistWs = await n1.connect(typist);
    typistWs.send({ type: 'typing', thread_id: thread.id, is_typing: true });
    await watcherWs.next((f) => f.type === 'typing' && f.is_typing === true, 5000, 'typing: true');
    const killedAt = Date.now();
    await n1.kill9();
    const stop = await watcherWs.next((f) => f.type === 'typing' && f.is_typing === false, 15000,
      'typing: false for the typist of the killed node');
    assert.equal(stop.user_id, typist.id);
    assert.equal(stop.from_user_id, typist.id);
    assert.equal(stop.thread_id, thread.id);
    assert.ok(Date.now() - killedAt < 12000, `stopped ${Date.now() - killedAt} ms after the kill`);
  });
});
