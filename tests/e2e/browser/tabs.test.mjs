// The web app open in two tabs of one browser: they share one saved outbox
// (localStorage). Each tab used to save its own list over the other's, so a
// message written offline in one tab was dropped from storage by the other
// tab's next save, and lost for good when its tab was closed before the
// network came back. Now each tab merges its changes into what is stored and
// takes over what the other queued: every message is sent once.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, randomId } from '../node/harness.mjs';
import {
  launchBrowser, openAs, threadLink, messageLog, messageTexts, sendFromComposer, until, waitOnline, Proxy,
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
});
