// The web app open in two tabs of one browser: they share one saved outbox
// (localStorage). Each tab used to save its own list over the other's, so a
// message written offline in one tab was dropped from storage by the other
// tab's next save, and lost for good when its tab was closed before the
// network came back. Now each tab merges its changes into what is stored and
// takes over what the other queued: every message is sent once.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, randomId, sleep } from '../node/harness.mjs';
import {
  launchBrowser, openAs, threadLink, messageLog, messageTexts, sendFromComposer, until, waitOnline, trackErrors, Proxy,
} from './browser.mjs';

describe('web app: two tabs of one user share the offline outbox', () => {
  let server; let proxy; let browser; let alice; let bob; let thread;
  let cutNow = false;

  before(async () => {
    server = await startServer();
    proxy = await new Proxy(server.port).start();
    browser = await launchBrowser();
    alice = await server.register({ username: `alice_${randomId(3)}`, full_name: 'Alice Teacher', role: 'teacher' });
    bob = await server.register({ username: `bob_${randomId(3)}`, full_name: 'Bob Parent', role: 'parent' });
    thread = await server.createDirect(alice, bob);
    await server.sendRest(alice.token, thread.id, { content: 'before', client_msg_id: 'b0' });
  });
  afterEach(() => { if (cutNow) proxy.resume(); cutNow = false; });
  after(async () => {
    await browser?.close();
    await proxy?.close();
    await server?.stop();
  });

  async function offlineTabs(ctx) {
    const tabs = [await openAs(ctx, proxy.base, alice), await openAs(ctx, proxy.base, alice)];
    for (const tab of tabs) {
      await threadLink(tab, 'Bob Parent').click();
      await messageLog(tab).getByText('before').waitFor();
    }
    proxy.cut();
    cutNow = true;
    for (const tab of tabs) await tab.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    return tabs;
  }

  async function storedTexts() {
    return (await server.history(bob.token, thread.id)).map((m) => m.content);
  }

  it('a message queued in a tab closed while offline is sent by the other tab', async () => {
    const ctx = await browser.newContext();
    const [tabA, tabB] = await offlineTabs(ctx);
    await sendFromComposer(tabA, 'from tab A');
    await messageLog(tabA).locator('li.pending').waitFor();
    await sendFromComposer(tabB, 'from tab B');
    await until(async () => (await messageLog(tabB).locator('li.pending').count()) === 2,
      { what: "tab B shows tab A's queued message as pending too" });
    await tabA.close();

    proxy.resume();
    await tabB.evaluate(() => window.dispatchEvent(new Event('online')));
    await waitOnline(tabB, 30000);
    await until(async () => (await storedTexts()).length === 3, { timeout: 20000, what: 'both queued messages stored' })
      .catch(async (err) => assert.fail(`${err.message}: stored ${JSON.stringify(await storedTexts())}`));
    const stored = await storedTexts();
    assert.deepEqual([...stored].sort(), ['before', 'from tab A', 'from tab B']);
    await until(async () => (await messageLog(tabB).locator('li.pending').count()) === 0, { what: 'nothing pending in tab B' });
    assert.deepEqual(await messageTexts(tabB), stored, "tab B's screen is the stored history");
    assert.deepEqual(tabB.pageErrors, []);
    await ctx.close();
  });

  it('with both tabs open, each message queued offline is stored once, and leaves both outboxes', async () => {
    const ctx = await browser.newContext();
    const tabs = await offlineTabs(ctx);
    const before = (await storedTexts()).length;
    await sendFromComposer(tabs[0], 'both open A');
    await sendFromComposer(tabs[1], 'both open B');
    await sendFromComposer(tabs[0], 'both open A2');

    proxy.resume();
    for (const tab of tabs) await tab.evaluate(() => window.dispatchEvent(new Event('online')));
    for (const tab of tabs) {
      await waitOnline(tab, 30000);
      await until(async () => (await messageLog(tab).locator('li.pending').count()) === 0,
        { timeout: 20000, what: 'nothing pending in either tab' });
    }
    const stored = await storedTexts();
    assert.equal(stored.length, before + 3, `stored once each: ${JSON.stringify(stored)}`);
    for (const t of ['both open A', 'both open B', 'both open A2']) {
      assert.equal(stored.filter((s) => s === t).length, 1, `"${t}" stored once`);
    }
    assert.ok(stored.indexOf('both open A') < stored.indexOf('both open A2'), 'one tab\'s messages in the order written');
    const saved = await tabs[0].evaluate(() => Object.keys(localStorage)
      .filter((k) => k.startsWith('parley.outbox')).map((k) => JSON.parse(localStorage.getItem(k)).length));
    assert.deepEqual(saved, [0], 'the saved outbox is empty');
    for (const tab of tabs) {
      assert.deepEqual(await messageTexts(tab), stored, "each tab's screen is the stored history");
      assert.deepEqual(tab.pageErrors, []);
    }
    await ctx.close();
  });

  it("a tab whose own connection is down keeps showing its offline message while the other tab sends it", async (t) => {
    const ctx = await browser.newContext();
    const down = { on: false, sockets: [] };
    // Tab A's WebSockets and API calls alone can be cut (a connection that
    // went silent in one tab); tab B's go through.
    const tabA = await ctx.newPage();
    trackErrors(tabA);
    await tabA.routeWebSocket(/\/ws$/, (ws) => { if (down.on) ws.close(); else { down.sockets.push(ws); ws.connectToServer(); } });
    await tabA.route(/\/api\//, (route) => (down.on ? route.abort('connectionrefused') : route.continue()));
    await tabA.goto(`${proxy.base}/app/#token=${encodeURIComponent(alice.token)}`);
    await waitOnline(tabA);
    const tabB = await openAs(ctx, proxy.base, alice);
    for (const tab of [tabA, tabB]) {
      await threadLink(tab, 'Bob Parent').click();
      await messageLog(tab).getByText('before').waitFor();
    }
    down.on = true;
    for (const ws of down.sockets) await ws.close().catch(() => {});
    await tabA.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    await sendFromComposer(tabA, 'written in the offline tab');
    await until(async () => (await storedTexts()).includes('written in the offline tab'), { timeout: 15000, what: 'tab B sending it' });
    await messageLog(tabB).getByText('written in the offline tab').waitFor();
    const shownInA = () => messageLog(tabA).getByText('written in the offline tab').count();
    const end = Date.now() + 1500;
    while (Date.now() < end) {
      assert.equal(await shownInA(), 1, 'still shown in the offline tab (pending)');
      await sleep(100);
    }
    down.on = false;
    await tabA.evaluate(() => window.dispatchEvent(new Event('online')));
    await waitOnline(tabA, 30000);
    const onlineAt = Date.now();
    await until(async () => (await messageLog(tabA).locator('li.pending').count()) === 0, { timeout: 15000, what: 'nothing pending in tab A' });
    assert.equal(await shownInA(), 1, 'shown once, as stored');
    assert.deepEqual(await messageTexts(tabA), await storedTexts(), "tab A's screen is the stored history");

    // Offline again within 10 s of that reconnection: the next one stays too
    // (the clean-up after the reconnection is that connection's only).
    down.on = true;
    for (const ws of down.sockets) await ws.close().catch(() => {});
    await tabA.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    await sendFromComposer(tabA, 'written offline again');
    await until(async () => (await storedTexts()).includes('written offline again'), { timeout: 15000, what: 'tab B sending the second' });
    if (Date.now() > onlineAt + 9000) {
      down.on = false;
      await ctx.close();
      t.skip('the second offline message came over 9 s after the reconnection: too late to see the old clean-up pass');
      return;
    }
    while (Date.now() < onlineAt + 11500) {
      assert.equal(await messageLog(tabA).getByText('written offline again').count(), 1, 'the second still shown in the offline tab');
      await sleep(200);
    }
    down.on = false;
    await ctx.close();
  });

  it('messages queued to a group the user was removed from while offline are dropped, not shown as unsent after a re-add', async () => {
    const carol = await server.register({ username: `carol_${randomId(3)}`, full_name: 'Carol Parent', role: 'parent' });
    const group = await server.createGroup(carol, [alice], 'Group G');
    const ctx = await browser.newContext();
    const page = await openAs(ctx, proxy.base, alice);
    await threadLink(page, 'Group G').click();
    await page.getByRole('heading', { name: 'Group G' }).waitFor();
    proxy.cut();
    cutNow = true;
    await page.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    await sendFromComposer(page, 'queued one');
    await sendFromComposer(page, 'queued two');
    const removed = await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${alice.id}`, { token: carol.token });
    assert.equal(removed.status, 200, removed.text);
    proxy.resume();
    cutNow = false;
    await page.evaluate(() => window.dispatchEvent(new Event('online')));
    await waitOnline(page, 30000);
    await until(async () => (await threadLink(page, 'Group G').count()) === 0, { timeout: 10000, what: 'the group gone from the list' });
    await sleep(1000);  // the queued messages sent and refused meanwhile, if they were
    const added = await server.http('POST', `/api/chat/threads/${group.id}/participants`, { token: carol.token, body: { participant_ids: [alice.id] } });
    assert.equal(added.status, 200, added.text);
    await threadLink(page, 'Group G').click();
    await page.getByRole('heading', { name: 'Group G' }).waitFor({ timeout: 10000 });
    await sleep(500);
    assert.equal(await messageLog(page).getByText(/queued (one|two)/).count(), 0, 'no queued message shown');
    assert.equal(await page.getByText(/Not sent/).count(), 0, 'nothing shown as not sent');
    const history = (await server.history(carol.token, group.id)).map((m) => m.content);
    assert.ok(!history.includes('queued one') && !history.includes('queued two'), `nothing stored: ${history}`);
    await ctx.close();
  });
});
