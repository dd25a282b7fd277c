// A membership change made through one node decides the audience of every
// message committed after it, whichever node stores that message, also before
// the change's `members_changed` event has reached that node.
//
// Node A hears Redis through a proxy that holds every event for 1.5 s (its
// bus stays healthy: pings are answered within their timeout), so A's member
// list of the group is the one from before a change made through node B. A
// message sent through A right after must still reach a member just added
// (live, without waiting for a later message's gap fill: there is none here)
// and must not reach a member just removed, nor must an edit or deletion
// made through A then. Before the store told A the thread's membership
// version at commit (and edits read the members after committing), each
// failed every time.
//
// Needs Debian's postgresql (tests/db/pg.sh) and redis-server; skipped when
// either is missing.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomId, sleep } from './harness.mjs';
import { cuttablePair, clusterSkip as skip } from './cluster.mjs';

// Below the bus's ping timeout (3 s), so that A's bus stays healthy, and
// long enough for an add and a send on PostgreSQL under CI's load.
const HOLD_MS = 2200;
const newMessage = (client, id) => client.all((f) => f.type === 'new_message' && f.data.id === id);

describe('membership changed through one node, a message sent through another right after', { skip }, () => {
  let nodeA;
  let nodeB;
  let proxy;
  cuttablePair('membership', (pair) => ({ nodeA, nodeB, proxy } = pair));

  // A group of admin and alice made on B; alice on A sends once so that A
  // holds the group's members in its cache before the change.
  async function groupWarmOnA(more) {
    const [admin, alice, ...others] = await nodeB.registerMany(2 + more);
    const group = await nodeB.createGroup(admin, [alice]);
    const aliceWs = await nodeA.connect(alice);
    await aliceWs.sendMessage({ thread_id: group.id, content: 'warm', client_msg_id: `warm-${randomId(4)}` });
    return { admin, alice, others, group, aliceWs };
  }

  // The same, with bob added through B, A told of it (no hold yet), and bob on A.
  async function groupWithBobOnA() {
    const warm = await groupWarmOnA(1);
    const { admin, others: [bob], group } = warm;
    const add = await nodeB.http('POST', `/api/chat/threads/${group.id}/participants`,
      { token: admin.token, body: { participant_ids: [bob.id] } });
    assert.equal(add.status, 200, add.text);
    await sleep(300);
    return { ...warm, bob, bobOnA: await nodeA.connect(bob) };
  }

  it('a member added through B gets, live, a message sent through A before A heard of the addition', async () => {
    const { admin, others: [carol], group, aliceWs } = await groupWarmOnA(1);
    const carolOnA = await nodeA.connect(carol);
    const carolOnB = await nodeB.connect(carol);
    proxy.delay(HOLD_MS);
    const heldFrom = Date.now();
    try {
      const added = await nodeB.http('POST', `/api/chat/threads/${group.id}/participants`,
        { token: admin.token, body: { participant_ids: [carol.id] } });
      assert.equal(added.status, 200, added.text);
      const sent = await aliceWs.sendMessage({ thread_id: group.id, content: 'welcome', client_msg_id: `w-${randomId(4)}` });
      // Before A hears of the addition (HOLD_MS after it was published, so
      // after heldFrom + HOLD_MS): the frame must come from the send itself.
      // Waited for rather than looked at after a fixed sleep: A reads the
      // group's members from PostgreSQL first, slow when CI's cores are busy.
      const beforeAHears = heldFrom + HOLD_MS - 300 - Date.now();
      await carolOnA.next((f) => f.type === 'new_message' && f.data.id === sent.id, Math.max(beforeAHears, 1),
        'on node A, before A heard of the addition, the message sent right after Carol was added');
      await carolOnB.next((f) => f.type === 'new_message' && f.data.id === sent.id, 5000, 'Carol on node B gets it too');
      // And nothing twice once A hears of the change.
      await sleep(HOLD_MS + 300);
      assert.equal(newMessage(carolOnA, sent.id).length, 1, 'once on A');
      assert.equal(newMessage(carolOnB, sent.id).length, 1, 'once on B');
    } finally {
      proxy.delay(0);
    }
  });

  it('a member removed through B does not get a message sent through A before A heard of the removal', async () => {
    const { admin, bob, group, aliceWs, bobOnA } = await groupWithBobOnA();
    const bobOnB = await nodeB.connect(bob);
    const before = await aliceWs.sendMessage({ thread_id: group.id, content: 'hello bob', client_msg_id: `h-${randomId(4)}` });
    await bobOnA.next((f) => f.type === 'new_message' && f.data.id === before.id, 5000, 'Bob gets a message while a member');
    proxy.delay(HOLD_MS);
    try {
      const removed = await nodeB.http('DELETE', `/api/chat/threads/${group.id}/participants/${bob.id}`, { token: admin.token });
      assert.equal(removed.status, 200, removed.text);
      const sent = await aliceWs.sendMessage({ thread_id: group.id, content: 'not for bob', client_msg_id: `n-${randomId(4)}` });
      await sleep(HOLD_MS + 300);
      assert.equal(newMessage(bobOnA, sent.id).length, 0, 'Bob on node A did not get a message stored after his removal');
      assert.equal(newMessage(bobOnB, sent.id).length, 0, 'nor on node B');
    } finally {
      proxy.delay(0);
    }
  });

  it('a member removed through B does not get an edit or a deletion made through A before A heard of the removal', async () => {
    const { admin, bob, group, aliceWs, bobOnA } = await groupWithBobOnA();
    const toEdit = await aliceWs.sendMessage({ thread_id: group.id, content: 'draft', client_msg_id: `e-${randomId(4)}` });
    const toDelete = await aliceWs.sendMessage({ thread_id: group.id, content: 'oops', client_msg_id: `d-${randomId(4)}` });
    await bobOnA.next((f) => f.type === 'new_message' && f.data.id === toDelete.id, 5000, 'Bob gets both while a member');
    proxy.delay(HOLD_MS);
    try {
      const removed = await nodeB.http('DELETE', `/api/chat/threads/${group.id}/participants/${bob.id}`, { token: admin.token });
      assert.equal(removed.status, 200, removed.text);
      const edited = await aliceWs.request({ type: 'edit_message', message_id: toEdit.id, content: 'the final text, not for bob' });
      assert.equal(edited.type, 'message_edited', JSON.stringify(edited));
      const deleted = await aliceWs.request({ type: 'delete_message', message_id: toDelete.id });
      assert.equal(deleted.type, 'message_deleted', JSON.stringify(deleted));
      await sleep(HOLD_MS + 300);
      const changes = bobOnA.all((f) => (f.type === 'message_edited' && f.data.id === toEdit.id) ||
        (f.type === 'message_deleted' && (f.message_id ?? f.data?.message_id) === toDelete.id));
      assert.deepEqual(changes.map((f) => f.type), [], 'Bob got no change made after his removal');
    } finally {
      proxy.delay(0);
    }
  });
});
