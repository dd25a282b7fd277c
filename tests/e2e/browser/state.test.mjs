// The web app's state against what the server says, in Debian's Chromium
// driven by playwright-core (skipped when there is none): the unread badge
// and the tab title after the sender deletes an unread message, a stale
// thread-list answer that arrives last, and the renewal of the token over
// weeks of a tab left open (Playwright's fake clock), with a lifetime past
// setTimeout's 2^31 - 1 ms and with an ordinary one.
//
// Each test starts its own server and browser context and closes both; one
// browser serves the file (one at a time on a small machine). Loopback only;
// every wait is bounded in time.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startServer, randomId, sleep } from '../node/harness.mjs';
import { CHROMIUM, Proxy, launchBrowser, openAs, trackErrors, threadLink, messageLog, messageTexts, until } from './browser.mjs';

const DAY_MS = 86400 * 1000;
const skip = fs.existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM}`;

// A server with a teacher and a parent; resolves {server, base, alice, bob}.
async function scene(args = []) {
  const server = await startServer({ args });
  try {
    const alice = await server.register({ username: `alice_${randomId(3)}`, full_name: 'Alice Teacher', role: 'teacher' });
    const bob = await server.register({ username: `bob_${randomId(3)}`, full_name: 'Bob Parent', role: 'parent' });
    return { server, base: server.baseUrl, alice, bob };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

async function assertOk(res, what) {
  assert.ok(res.status >= 200 && res.status < 300, `${what} answered ${res.status}: ${res.text.slice(0, 300)}`);
  return res.body?.data;
}

describe('web app state against the server', { skip }, () => {
  let browser;
  before(async () => { browser = await launchBrowser(); });
  after(async () => { await browser?.close(); });

  it('an unread message deleted by its sender: the badge and the tab title drop to the server\'s count', async () => {
    const { server, base, alice, bob } = await scene();
    let ctx;
    try {
      const dm = await server.createDirect(alice, bob);
      ctx = await browser.newContext();
      const page = await openAs(ctx, base, bob);
      // A hidden tab shows the unread total in its title (as a background tab would).
      await page.evaluate(() => {
        Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
        Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
        document.dispatchEvent(new Event('visibilitychange'));
      });
      await assertOk(await server.sendRest(alice.token, dm.id, { content: 'First' }), 'sending the first message');
      const wrong = await assertOk(await server.sendRest(alice.token, dm.id, { content: 'Oops, wrong family' }), 'sending the second message');

      const badge = threadLink(page, 'Alice Teacher').locator('[data-testid=unread]');
      const shown = async () => ({
        badge: await badge.textContent({ timeout: 1000 }).catch(() => '(none)'),
        title: await page.title(),
      });
      let seen;
      await until(async () => { seen = await shown(); return seen.badge === '2' && seen.title === '(2) Parley'; },
        { timeout: 10000, what: 'the badge and the title to count 2 unread' }).catch((err) => {
        throw new Error(`${err.message}; shown: ${JSON.stringify(seen)}`);
      });

      await assertOk(await server.http('DELETE', `/api/chat/messages/${wrong.id}`, { token: alice.token }), 'deleting the second message');
      const count = await assertOk(await server.http('GET', '/api/chat/unread-count', { token: bob.token }), 'GET /api/chat/unread-count');
      assert.equal(count.unread_count, 1, 'the server no longer counts the deleted message');
      const listed = (await assertOk(await server.http('GET', '/api/chat/threads', { token: bob.token }), 'GET /api/chat/threads'))
        .threads.find((t) => t.id === dm.id);
      assert.equal(listed.unread_count, 1, 'the thread list agrees');

      const want = { badge: '1', title: '(1) Parley' };
      await until(async () => { seen = await shown(); return seen.badge === want.badge && seen.title === want.title; },
        { timeout: 5000, what: 'the app to count 1 unread' }).catch(() => {});
      assert.deepEqual(seen, want, 'the badge and the title show the server\'s count after the deletion');
      assert.deepEqual(page.pageErrors, [], 'no uncaught page error');
    } finally {
      await ctx?.close().catch(() => {});
      await server.stop();
    }
  });

  it('a stale thread-list answer arriving last does not remove a group the user was just added to', async () => {
    const { server, base, alice, bob } = await scene();
    let ctx;
    try {
      const carol = await server.register({ username: `carol_${randomId(3)}`, full_name: 'Carol Parent', role: 'parent' });
      const first = await server.createGroup(alice, [bob], 'Class 4B');
      ctx = await browser.newContext();
      const page = await openAs(ctx, base, bob);
      await threadLink(page, 'Class 4B').waitFor({ timeout: 10000 });

      // The next thread-list answer is slow: read from the server now
      // (before the new group exists), delivered 2 s later (a slow mobile link).
      const list = await delayOnce(page, /\/api\/chat\/threads$/);
      // Alice adds Carol to Class 4B: Bob's app reloads its list (the slow answer).
      await assertOk(await server.http('POST', `/api/chat/threads/${first.id}/participants`,
        { token: alice.token, body: { participant_ids: [carol.id] } }), 'adding Carol');
      await until(() => list.fetched, { timeout: 5000, what: 'the app to ask for its thread list again' });
      // Alice makes a new group with Bob: a second reload, answered at once.
      await server.createGroup(alice, [bob], 'Trip to the zoo');
      const zoo = threadLink(page, 'Trip to the zoo');
      await zoo.waitFor({ timeout: 8000 });

      // The older answer lands; whatever the app does with it, the group stays.
      await until(() => list.landed, { timeout: 8000, what: 'the delayed thread-list answer' });
      const onServer = (await assertOk(await server.http('GET', '/api/chat/threads', { token: bob.token }), 'GET /api/chat/threads'))
        .threads.map((t) => t.title);
      assert.ok(onServer.includes('Trip to the zoo'), `the server lists the group for Bob: ${onServer}`);
      const end = Date.now() + 1500;
      while (Date.now() < end) {
        assert.equal(await zoo.count(), 1, 'the group just joined is still in the list after the stale answer');
        await sleep(100);
      }
      assert.equal(await threadLink(page, 'Class 4B').count(), 1, 'the older group is listed too');
      assert.deepEqual(page.pageErrors, [], 'no uncaught page error');
    } finally {
      await ctx?.close().catch(() => {});
      await server.stop();
    }
  });

  it('a read receipt that comes while an older thread-list answer is on its way stays', async () => {
    const { server, base, alice, bob } = await scene();
    let ctx;
    let bobWs;
    try {
      const dm = await server.createDirect(alice, bob);
      ctx = await browser.newContext();
      const page = await openAs(ctx, base, alice);
      await threadLink(page, 'Bob Parent').click();
      const sent = await assertOk(await server.sendRest(alice.token, dm.id, { content: 'Is Tom coming today?' }), 'sending');
      const tick = messageLog(page).locator('li.msg.mine .tick');
      await tick.waitFor({ timeout: 10000 });

      // The next thread-list answer is read from the server now and
      // delivered 2 s later; meanwhile Bob reads the message.
      const list = await delayOnce(page, /\/api\/chat\/threads$/);
      // Bob adds Alice to a group: her app reloads its list (the slow answer).
      await server.createGroup(bob, [alice], 'Parents and teacher');
      await until(() => list.fetched, { timeout: 5000, what: 'the app to ask for its thread list again' });
      bobWs = await server.connect(bob);
      const mark = await bobWs.request({ type: 'mark_as_read', thread_id: dm.id, up_to_seq: sent.seq });
      assert.notEqual(mark.type, 'error', `Bob's read mark: ${JSON.stringify(mark)}`);
      await until(async () => (await tick.getAttribute('data-status')) === 'read',
        { timeout: 5000, what: 'the read tick from the receipt' });

      // The older answer lands: the tick stays read.
      await until(() => list.landed, { timeout: 8000, what: 'the delayed thread-list answer' });
      await holds(async () => assert.equal(await tick.getAttribute('data-status'), 'read', 'the tick after the older list answer'));
      assert.deepEqual(page.pageErrors, [], 'no uncaught page error');
    } finally {
      bobWs?.close();
      await ctx?.close().catch(() => {});
      await server.stop();
    }
  });

  // Delays the page's next GET whose URL matches `re` (and `pred`): read from
  // the server at once, delivered `ms` later. Resolves {fetched, landed}.
  async function delayOnce(page, re, { ms = 2000, method = 'GET', pred = () => true } = {}) {
    const st = { fetched: false, landed: false };
    let done = false;
    await page.route(re, async (route) => {
      const req = route.request();
      // Another route's (or none's): the handler set before this one decides.
      if (done || req.method() !== method || !pred(req.url())) return route.fallback().catch(() => {});
      done = true;
      try {
        const response = await route.fetch();
        st.fetched = true;
        await sleep(ms);
        await route.fulfill({ response });
      } catch { /* the context closed meanwhile */ } finally {
        st.landed = true;
      }
    });
    return st;
  }

  // What the screen shows for a while after a slow answer landed: `check`
  // must hold all along.
  async function holds(check, ms = 1500) {
    const end = Date.now() + ms;
    while (Date.now() < end) { await check(); await sleep(100); }
  }

  it('an edit and a deletion made while a history page is on its way stay: the first page, a gap fill, a scroll-back page', async () => {
    const { server, base, alice, bob } = await scene();
    let ctx;
    try {
      const dm = await server.createDirect(alice, bob);
      await server.sendBacklog(alice, dm.id, 70, 'old');
      const all = await server.history(alice.token, dm.id);
      const bySeq = (seq) => all.find((m) => m.seq === seq);
      const change = async (seq, content) => {
        const m = bySeq(seq);
        if (content === null) await assertOk(await server.http('DELETE', `/api/chat/messages/${m.id}`, { token: alice.token }), `deleting ${seq}`);
        else await assertOk(await server.http('PATCH', `/api/chat/messages/${m.id}`, { token: alice.token, body: { content } }), `editing ${seq}`);
      };
      ctx = await browser.newContext();
      const page = await openAs(ctx, base, bob);
      const text = (seq) => messageLog(page).locator(`li[data-seq="${seq}"] .text`).textContent({ timeout: 2000 }).catch(() => '(not shown)');

      // The first page (no before/after) is slow, and so is the gap fill
      // after it (messages sent while the first page was on its way).
      const first = await delayOnce(page, /\/messages\?/, { pred: (u) => !/before_seq|after_seq/.test(u) });
      const gap = await delayOnce(page, /\/messages\?/, { pred: (u) => /after_seq/.test(u) });
      await threadLink(page, 'Alice Teacher').click();
      await until(() => first.fetched, { timeout: 5000, what: 'the first page asked for' });
      await change(70, 'seventy, edited');
      await change(69, null);
      const late = await assertOk(await server.sendRest(alice.token, dm.id, { content: 'late one' }), 'sending');
      await until(() => gap.fetched, { timeout: 8000, what: 'the gap fill asked for' });
      await assertOk(await server.http('PATCH', `/api/chat/messages/${late.id}`, { token: alice.token, body: { content: 'late one, edited' } }), 'editing 71');
      await until(() => gap.landed, { timeout: 8000, what: 'the gap page' });
      await holds(async () => {
        assert.equal(await text(70), 'seventy, edited', 'an edit heard while the first page was on its way');
        assert.match(await text(69), /deleted/i, 'a deletion heard while the first page was on its way');
        assert.equal(await text(71), 'late one, edited', 'an edit heard while the gap fill was on its way');
      });

      // Scroll-back: the page before the first one is slow.
      const older = await delayOnce(page, /\/messages\?/, { pred: (u) => /before_seq/.test(u) });
      const top = () => page.locator('.messages').evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
      await top();
      await until(() => older.fetched, { timeout: 5000, what: 'the older page asked for' });
      await change(5, null);
      await change(6, 'six, edited');
      await until(() => older.landed, { timeout: 8000, what: 'the older page' });
      await until(async () => { await top(); return (await messageLog(page).locator('li[data-seq="5"]').count()) > 0; },
        { timeout: 8000, what: 'seq 5 on screen' });
      assert.match(await text(5), /deleted/i, 'a deletion heard while the older page was on its way');
      assert.equal(await text(6), 'six, edited', 'an edit heard while the older page was on its way');
      assert.deepEqual(page.pageErrors, [], 'no uncaught page error');
    } finally {
      await ctx?.close().catch(() => {});
      await server.stop();
    }
  });

  // A page with no change mark (its connection's changes_synced never came:
  // dropped here) reads the open conversation again after a reconnection,
  // instead of being sent what changed (docs/webapp.md).
  it('after a reconnection, the open conversation read again keeps an edit and a deletion heard while it was on its way', async () => {
    const { server, alice, bob } = await scene();
    let ctx;
    const proxy = await new Proxy(server.port).start();
    try {
      const dm = await server.createDirect(alice, bob);
      await assertOk(await server.sendRest(alice.token, dm.id, { content: 'one' }), 'sending');
      const two = await assertOk(await server.sendRest(alice.token, dm.id, { content: 'SECRET to delete' }), 'sending');
      const three = await assertOk(await server.sendRest(alice.token, dm.id, { content: 'typo here' }), 'sending');
      ctx = await browser.newContext();
      await ctx.routeWebSocket(/\/ws$/, (ws) => {
        const upstream = ws.connectToServer();
        ws.onMessage((m) => upstream.send(m));
        upstream.onMessage((m) => {
          if (JSON.parse(m).type === 'changes_synced') return;
          ws.send(m);
        });
      });
      const page = await openAs(ctx, proxy.base, bob);
      await threadLink(page, 'Alice Teacher').click();
      await messageLog(page).locator(`li[data-seq="${three.seq}"]`).waitFor({ timeout: 10000 });
      const reread = await delayOnce(page, /\/messages\?/, { pred: (u) => /after_seq/.test(u) });
      proxy.cut();
      await page.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor({ timeout: 10000 });
      proxy.resume();
      await until(() => reread.fetched, { timeout: 20000, what: 'the conversation read again after the reconnection' });
      await assertOk(await server.http('DELETE', `/api/chat/messages/${two.id}`, { token: alice.token }), 'deleting');
      await assertOk(await server.http('PATCH', `/api/chat/messages/${three.id}`, { token: alice.token, body: { content: 'fixed text' } }), 'editing');
      await until(() => reread.landed, { timeout: 8000, what: 'the slow page' });
      await holds(async () => {
        const shown = await messageTexts(page);
        assert.equal(shown.length, 3, `three messages: ${shown}`);
        assert.match(shown[1], /deleted/i, 'the deletion stays');
        assert.equal(shown[2], 'fixed text', 'the edit stays');
      });
      assert.deepEqual(page.pageErrors, [], 'no uncaught page error');
    } finally {
      await ctx?.close().catch(() => {});
      await proxy.close();
      await server.stop();
    }
  });

  it('a presence heard while a list answer is on its way: the list still names the member in later system lines', async () => {
    const { server, base, alice, bob } = await scene();
    let ctx;
    let carolWs;
    try {
      const carol = await server.register({ username: `carol_${randomId(3)}`, full_name: 'Carol Parent', role: 'parent' });
      ctx = await browser.newContext();
      const page = await openAs(ctx, base, bob);
      await page.getByText('No conversations yet.').waitFor({ timeout: 10000 });  // the first list is in
      const list = await delayOnce(page, /\/api\/chat\/threads$/);
      const group = await server.createGroup(alice, [bob, carol], 'Class 4B');  // Bob's app reloads its list (slow)
      await until(() => list.fetched, { timeout: 5000, what: 'the list asked for again' });
      carolWs = await server.connect(carol);  // her presence reaches Bob while the answer is on its way
      await until(() => list.landed, { timeout: 8000, what: 'the slow list' });
      await assertOk(await server.http('DELETE', `/api/chat/threads/${group.id}/participants/${carol.id}`, { token: carol.token }), 'Carol leaving');
      await sleep(1500);  // the list read again after her leaving names her no more
      await threadLink(page, 'Class 4B').click();
      const line = messageLog(page).locator('li', { hasText: / left$/ });
      await line.waitFor({ timeout: 8000 });
      await holds(async () => assert.equal((await line.textContent()).trim(), 'Carol Parent left', 'her name in the system line'), 1000);
      assert.deepEqual(page.pageErrors, [], 'no uncaught page error');
    } finally {
      carolWs?.close();
      await ctx?.close().catch(() => {});
      await server.stop();
    }
  });

  it('the thread list: a slow answer keeps a newer preview, a deletion heard meanwhile, and the order', async () => {
    const { server, base, alice, bob } = await scene();
    let ctx;
    try {
      const dm = await server.createDirect(alice, bob);
      await assertOk(await server.sendRest(alice.token, dm.id, { content: 'hello' }), 'sending');
      const secret = await assertOk(await server.sendRest(alice.token, dm.id, { content: 'SECRET wrong family' }), 'sending');
      const group = await server.createGroup(alice, [bob], 'Class 4B');
      await assertOk(await server.sendRest(alice.token, group.id, { content: 'old news' }), 'sending');
      ctx = await browser.newContext();
      const page = await openAs(ctx, base, bob);
      await threadLink(page, 'Class 4B').waitFor({ timeout: 10000 });
      const preview = (name) => threadLink(page, name).locator('.preview').textContent({ timeout: 2000 });

      const list = await delayOnce(page, /\/api\/chat\/threads$/);
      await server.createGroup(alice, [bob], 'Trip to the zoo');  // Bob's app reloads its list (the slow answer)
      await until(() => list.fetched, { timeout: 5000, what: 'the list asked for again' });
      await assertOk(await server.http('DELETE', `/api/chat/messages/${secret.id}`, { token: alice.token }), 'deleting');
      await assertOk(await server.sendRest(alice.token, group.id, { content: 'NEWEST in class' }), 'sending');
      await until(async () => (await preview('Class 4B')).includes('NEWEST in class'), { timeout: 5000, what: 'the new preview' });
      await until(() => list.landed, { timeout: 8000, what: 'the slow list' });
      await holds(async () => {
        assert.ok((await preview('Class 4B')).includes('NEWEST in class'), 'the newer preview stays');
        assert.ok(!(await preview('Alice Teacher')).includes('SECRET'), 'the deleted text does not come back');
        const names = await page.locator('.thread-list .thread-name').allTextContents();
        const at = (n) => names.findIndex((x) => x.includes(n));
        assert.ok(at('Class 4B') >= 0 && at('Class 4B') < at('Trip to the zoo'), `the thread with the newest message first: ${names}`);
      });
      assert.deepEqual(page.pageErrors, [], 'no uncaught page error');
    } finally {
      await ctx?.close().catch(() => {});
      await server.stop();
    }
  });

  it('an admin\'s Add whose answer is slow does not undo a read receipt heard meanwhile', async () => {
    const { server, base, alice, bob } = await scene();
    let ctx;
    let aliceWs;
    try {
      const carol = await server.register({ username: `carol_${randomId(3)}`, full_name: 'Carol Parent', role: 'parent' });
      const group = await server.createGroup(bob, [alice], 'Class 4B');
      const mine = await assertOk(await server.sendRest(bob.token, group.id, { content: 'Trip on Friday' }), 'sending');
      ctx = await browser.newContext();
      const page = await openAs(ctx, base, bob);
      await threadLink(page, 'Class 4B').click();
      const tick = messageLog(page).locator(`li[data-seq="${mine.seq}"] .tick`);
      await tick.waitFor({ timeout: 10000 });
      const add = await delayOnce(page, /\/participants$/, { method: 'POST', ms: 2500 });
      await page.getByRole('button', { name: 'Members' }).click();
      await page.locator('#add-member').fill(carol.username);
      await page.getByRole('button', { name: 'Add', exact: true }).click();
      await until(() => add.fetched, { timeout: 5000, what: 'the Add answered by the server' });
      aliceWs = await server.connect(alice);
      const mark = await aliceWs.request({ type: 'mark_as_read', thread_id: group.id, up_to_seq: mine.seq });
      assert.notEqual(mark.type, 'error', `Alice's read mark: ${JSON.stringify(mark)}`);
      await until(async () => (await tick.getAttribute('data-status')) === 'read', { timeout: 5000, what: 'the read tick' });
      await until(() => add.landed, { timeout: 8000, what: 'the slow Add answer' });
      await holds(async () => assert.equal(await tick.getAttribute('data-status'), 'read', 'the tick after the Add answer'));
      assert.deepEqual(page.pageErrors, [], 'no uncaught page error');
    } finally {
      aliceWs?.close();
      await ctx?.close().catch(() => {});
      await server.stop();
    }
  });

  it('token renewal over weeks: made before a 40-day token expires, and a 7-day one is not renewed every few seconds', async (t) => {
    // Opens the app as a fresh user of a server whose tokens live ttlDays,
    // lets `days` pass on the page's fake clock, and resolves how many
    // renewals the app completed. Time jumps 12 hours at a time (a laptop
    // lid closed and opened: each due timer fires once), and a renewal under
    // way is let finish before the next jump: one long runFor() would fire
    // each request's 20 s timeout at once and abort it, and a count of 200
    // answers would then say little.
    async function renewalsOver(ttlDays, days) {
      const server = await startServer({ args: ['--token-ttl', String(ttlDays * 86400)] });
      let ctx;
      try {
        const bob = await server.register({ username: `bob_${randomId(3)}`, full_name: 'Bob Parent', role: 'parent' });
        ctx = await browser.newContext();
        await ctx.addInitScript(() => {
          // Each renewal saves the session again (a token made in the same
          // second as the last may be the same string): saves after the first.
          const seen = { inflight: 0, adopted: -1 };
          window.__renewals = seen;
          const setItem = Storage.prototype.setItem;
          Storage.prototype.setItem = function (key, value) {
            if (key === 'parley.session') seen.adopted++;
            return setItem.call(this, key, value);
          };
          const realFetch = window.fetch;
          window.fetch = function (input, init) {
            if (!String(input.url ?? input).endsWith('/api/auth/refresh')) return realFetch.call(this, input, init);
            seen.inflight++;
            const done = () => { seen.inflight--; };
            return realFetch.call(this, input, init).then((res) => {
              res.clone().text().then(done, done);
              return res;
            }, (err) => { done(); throw err; });
          };
        });
        const page = await ctx.newPage();
        trackErrors(page);
        await page.clock.install();
        let granted = 0;  // 200 answers, for the failure message
        page.on('response', (r) => {
          if (r.url().endsWith('/api/auth/refresh') && r.status() === 200) granted++;
        });
        await page.goto(`${server.baseUrl}/app/#token=${encodeURIComponent(bob.token)}`);
        await page.getByRole('navigation', { name: 'Conversations' }).waitFor({ timeout: 15000 });
        const stepMs = 12 * 3600 * 1000;
        for (let passed = 0; passed < days * DAY_MS; passed += stepMs) {
          await page.clock.fastForward(stepMs);
          await until(() => page.evaluate(() => window.__renewals.inflight === 0),
            { timeout: 5000, every: 20, what: 'a renewal under way to finish' });
        }
        const { adopted } = await page.evaluate(() => window.__renewals);
        const signedIn = await page.getByRole('navigation', { name: 'Conversations' }).isVisible();
        return { adopted, granted, signedIn, errors: page.pageErrors };
      } finally {
        await ctx?.close().catch(() => {});
        await server.stop();
      }
    }

    const problems = [];
    // 40 days: past the 2^31 - 1 ms a timer can wait; the renewal is due at day 32.
    const long = await renewalsOver(40, 39);
    if (long.adopted < 1) problems.push(`40-day token: ${long.adopted} renewals in 39 days, ${long.granted} answered 200 (the tab is signed out at day 40)`);
    // 7 days: one renewal about every 5.6 days, 6 in 39 days (at least 5 keep it alive).
    const week = await renewalsOver(7, 39);
    if (week.adopted < 5 || week.adopted > 12) problems.push(`7-day token: ${week.adopted} renewals in 39 days, ${week.granted} answered 200 (expected 5 to 12)`);
    t.diagnostic(`renewals in 39 days: ${long.adopted} of a 40-day token, ${week.adopted} of a 7-day one`);
    assert.deepEqual(problems, []);
    assert.ok(long.signedIn && week.signedIn, 'still signed in');
    assert.deepEqual([...long.errors, ...week.errors], [], 'no uncaught page error');
  });
});
