// The web app on a bad network: the connection cut (a proxy drops every
// socket) and the server restarted while both people keep writing. After
// reconnection every message is on both screens exactly once, in order,
// including those written offline (queued, shown pending, sent once).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, randomId } from '../node/harness.mjs';
import {
  launchBrowser, openAs, threadLink, messageLog, messageTexts, sendFromComposer, screenshotPath, until, waitOnline, Proxy,
} from './browser.mjs';

describe('web app: offline, reconnection and gap filling', () => {
  let server; let proxy; let browser; let alice; let bob; let thread;
  let alicePage; let bobPage;

  before(async () => {
    server = await startServer();
    proxy = await new Proxy(server.port).start();
    browser = await launchBrowser();
    alice = await server.register({ username: `alice_${randomId(3)}`, full_name: 'Alice Teacher', role: 'teacher' });
    bob = await server.register({ username: `bob_${randomId(3)}`, full_name: 'Bob Parent', role: 'parent' });
    thread = await server.createDirect(alice, bob);
    await server.sendRest(alice.token, thread.id, { content: 'before 1', client_msg_id: 'b1' });
  });
  after(async () => {
    await browser?.close();
    await proxy?.close();
    await server?.stop();
  });

  it('both open the conversation', async () => {
    alicePage = await openAs(await browser.newContext(), proxy.base, alice);
    bobPage = await openAs(await browser.newContext(), proxy.base, bob);
    await threadLink(alicePage, 'Bob Parent').click();
    await threadLink(bobPage, 'Alice Teacher').click();
    await messageLog(bobPage).getByText('before 1').waitFor();
    await messageLog(alicePage).getByText('before 1').waitFor();
  });

  it('network cut: a banner, messages written offline wait as pending, then go once each, in order', async () => {
    proxy.cut();
    await alicePage.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    await bobPage.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();

    await sendFromComposer(alicePage, 'offline A1');
    await sendFromComposer(alicePage, 'offline A2');
    // Meanwhile Bob's other device (REST, straight to the server) writes too.
    await server.sendRest(bob.token, thread.id, { content: 'while cut B1', client_msg_id: 'wc1' });
    const pending = messageLog(alicePage).locator('li.pending');
    assert.equal(await pending.count(), 2, 'two pending messages');
    assert.equal(await pending.first().locator('[data-status=pending]').count(), 1);
    await alicePage.screenshot({ path: screenshotPath('offline-pending') });

    proxy.resume();
    await waitOnline(alicePage, 30000);
    await waitOnline(bobPage, 30000);
    const expected = ['before 1', 'offline A1', 'offline A2', 'while cut B1'];
    for (const page of [alicePage, bobPage]) {
      await until(async () => (await messageTexts(page)).length >= 4 && (await messageLog(page).locator('li.pending').count()) === 0,
        { timeout: 15000, what: 'all four messages, none pending' });
    }
    const history = await server.history(alice.token, thread.id);
    const stored = history.map((m) => m.content);
    assert.equal(stored.filter((t) => t === 'offline A1').length, 1, 'stored once');
    assert.equal(stored.filter((t) => t === 'offline A2').length, 1, 'stored once');
    assert.ok(stored.indexOf('offline A1') < stored.indexOf('offline A2'), 'in the order written');
    assert.deepEqual(await messageTexts(alicePage), stored, "Alice's screen is the stored history");
    assert.deepEqual(await messageTexts(bobPage), stored, "Bob's screen is the stored history");
    assert.deepEqual([...stored].sort(), [...expected].sort());
  });

  it('a reconnect names each known thread and its last seq in the auth frame, so the missed messages come first', async () => {
    // docs/protocol.md, "Reconnecting in order": listed there, a thread's
    // replay begins before any live message of it can arrive. A group of
    // its own, so that the direct thread's history stays as the tests below count it.
    const group = await server.createGroup(alice, [bob], 'Order on reconnect');
    await server.sendRest(alice.token, group.id, { content: 'group 1', client_msg_id: `g1-${randomId(3)}` });
    await threadLink(bobPage, 'Order on reconnect').click();
    await messageLog(bobPage).getByText('group 1').waitFor();
    const groupSeen = (await server.history(bob.token, group.id)).at(-1).seq;
    const sent = [];
    bobPage.on('websocket', (ws) => ws.on('framesent', (e) => { try { sent.push(JSON.parse(e.payload)); } catch { /* not JSON */ } }));
    proxy.cut();
    await bobPage.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    for (let i = 1; i <= 3; i++) await server.sendRest(alice.token, group.id, { content: `missed ${i}`, client_msg_id: `m${i}-${randomId(3)}` });
    proxy.resume();
    await waitOnline(bobPage, 30000);
    const auth = sent.find((f) => f.type === 'auth' && Array.isArray(f.subscribe));
    assert.ok(auth, `an auth frame with a subscribe list: ${JSON.stringify(sent.map((f) => f.type))}`);
    assert.deepEqual(auth.subscribe.find((e) => e.thread_id === group.id),
      { thread_id: group.id, since_seq: groupSeen, request_id: `a:${group.id}` }, 'the group, from its last seq seen');
    assert.deepEqual(auth.subscribe.find((e) => e.thread_id === thread.id)?.since_seq,
      (await server.history(bob.token, thread.id)).at(-1).seq, 'the direct thread too');
    assert.equal(sent.filter((f) => f.type === 'subscribe_thread' && [group.id, thread.id].includes(f.thread_id)).length, 0,
      'neither is subscribed a second time');
    await until(async () => (await messageTexts(bobPage)).includes('missed 3'), { timeout: 15000, what: 'the missed messages' });
    assert.deepEqual((await messageTexts(bobPage)).slice(-3), ['missed 1', 'missed 2', 'missed 3']);
    await threadLink(bobPage, 'Alice Teacher').click();
    await messageLog(bobPage).getByText('before 1').waitFor();
  });

  it('a message written offline survives closing the tab and is sent once when the app opens again', async () => {
    proxy.cut();
    await alicePage.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    await sendFromComposer(alicePage, 'kept across a reload');
    await messageLog(alicePage).locator('li.pending').waitFor();
    const ctx = alicePage.context();
    await alicePage.close();
    proxy.resume();
    alicePage = await openAs(ctx, proxy.base, alice);
    await threadLink(alicePage, 'Bob Parent').click();
    await messageLog(alicePage).locator('li.msg:not(.pending)', { hasText: 'kept across a reload' }).waitFor();
    await messageLog(bobPage).getByText('kept across a reload').waitFor();
    const stored = (await server.history(alice.token, thread.id)).filter((m) => m.content === 'kept across a reload');
    assert.equal(stored.length, 1, 'stored once');
    assert.equal(await messageLog(alicePage).getByText('kept across a reload').count(), 1, 'shown once');
  });

  it('server restarted while messages are sent: nothing missing or doubled afterwards', async () => {
    await server.stop({ removeData: false });
    await alicePage.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    await sendFromComposer(alicePage, 'during restart A3');
    await sendFromComposer(bobPage, 'during restart B2');
    await server.start();
    proxy.retarget(server.port);
    // A message stored while the pages are still reconnecting (gap to fill).
    await server.sendRest(bob.token, thread.id, { content: 'after restart B3', client_msg_id: 'ar3' });

    await waitOnline(alicePage, 30000);
    await waitOnline(bobPage, 30000);
    const stored = async () => (await server.history(alice.token, thread.id)).map((m) => m.content);
    await until(async () => (await stored()).length === 8, { timeout: 15000, what: 'eight stored messages' });
    const all = await stored();
    for (const page of [alicePage, bobPage]) {
      let shown = [];
      await until(async () => JSON.stringify(shown = await messageTexts(page)) === JSON.stringify(all),
        { timeout: 15000, what: 'the screen equal to the stored history' }).catch((err) => {
        assert.deepEqual(shown, all, err.message);
      });
    }
    assert.equal(new Set(all).size, all.length, 'no message stored twice');
    // Ticks of Alice's messages are all past "sent": Bob's device acknowledged the replay.
    let statuses = [];
    await until(async () => {
      statuses = await messageLog(alicePage).locator('li.msg.mine .tick').evaluateAll((els) => els.map((e) => e.dataset.status));
      return statuses.every((s) => s === 'read');
    }, { timeout: 10000, what: "all of Alice's messages read by Bob (he has the conversation open)" }).catch((err) => {
      assert.fail(`${err.message}: ${statuses}`);
    });
  });
});
