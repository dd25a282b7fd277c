// The conversation's history in the web app: messages grouped by day (with
// messages of other days, dated in the store while the server is stopped),
// scroll-back that stays whole when live and replayed messages arrive while
// its first page is still loading, and the newest messages shown after a
// first page that failed (server down) or a gap too long to fill page by page.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { randomId } from '../node/harness.mjs';
import {
  openAs, trackErrors, threadLink, messageLog, messageTexts, until, waitOnline, startScene, Proxy,
} from './browser.mjs';

const DAY_MICROS = 86400 * 1e6;
// More than the app fills page by page after a gap (20 pages of 200).
const LONG = 4300;

// The day separators and messages of the open conversation, in order.
function rowsOf(page) {
  return messageLog(page).locator('li').evaluateAll((lis) => lis.map((li) => (li.classList.contains('day')
    ? `day: ${li.textContent.trim()}` : li.querySelector('.text')?.textContent)));
}

// Writes `${prefix}1` … `${prefix}${LONG}` into the thread over REST, from
// both people in turn, a few requests at a time.
async function seedLong(server, users, threadId, prefix) {
  let next = 1;
  async function worker() {
    while (next <= LONG) {
      const i = next++;
      const res = await server.sendRest(users[i % 2].token, threadId, { content: `${prefix}${i}`, client_msg_id: `${prefix}-${i}` });
      if (res.status !== 201) throw new Error(`seed ${i}: ${res.status} ${res.text}`);
    }
  }
  await Promise.all(Array.from({ length: 8 }, worker));
}

// The open conversation shows an unbroken run of the stored messages that
// ends at the newest one (the seed's writers commit out of their numbers'
// order, so the store says which is newest).
async function assertNewestRun(page, server, user, threadId) {
  const stored = (await server.history(user.token, threadId)).map((m) => m.content);
  let texts = [];
  await until(async () => {
    texts = await messageTexts(page);
    return texts.length >= 50 && texts.at(-1) === stored.at(-1);
  }, { timeout: 20000, what: `${stored.at(-1)} last on screen` }).catch((err) => {
    assert.fail(`${err.message}: shown ${texts.slice(0, 2)} … ${texts.slice(-2)} (${texts.length})`);
  });
  assert.deepEqual(texts, stored.slice(-texts.length), 'the newest, each once, in order');
}

describe('web app: days and scroll-back', () => {
  let server; let browser; let alice; let bob;

  before(async () => {
    // Long conversations are written over REST as fast as the test can,
    // past the per-user limit on REST writes that a real client stays under.
    ({ server, browser, alice, bob } = await startScene(['--rest-rate-per-second', '100000', '--rest-rate-burst', '100000']));
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('groups messages by day: a separator per day, "Yesterday" and "Today" by name', async () => {
    const thread = await server.createDirect(alice, bob);
    for (const content of ['three days ago A', 'three days ago B', 'yesterday A']) {
      assert.equal((await server.sendRest(alice.token, thread.id, { content })).status, 201);
    }
    assert.equal((await server.sendRest(bob.token, thread.id, { content: 'today A' })).status, 201);
    // Older days, written into the store while the server is stopped (the
    // API dates every message itself, as it should).
    await server.stop({ removeData: false });
    const db = path.join(server.dataDir, 'parley.db');
    execFileSync('sqlite3', [db,
      `UPDATE messages SET created_at = created_at - ${3 * DAY_MICROS} WHERE content LIKE 'three days ago %';` +
      `UPDATE messages SET created_at = created_at - ${DAY_MICROS} WHERE content = 'yesterday A';`]);
    await server.restart();
    const base = `http://127.0.0.1:${server.port}`;

    // A zone where it is far from midnight now, so that "Today" cannot turn
    // into "Yesterday" between the sends and the page (a run near 00:00 UTC).
    const utcHour = new Date().getUTCHours();
    const timeZone = utcHour >= 6 && utcHour < 18 ? 'UTC' : 'Etc/GMT+12';
    const ctx = await browser.newContext({ timezoneId: timeZone, locale: 'en-US' });
    const page = await openAs(ctx, base, bob);
    await page.goto(`${base}/app/#/t/${thread.id}`);
    await messageLog(page).getByText('today A').waitFor();
    const threeDaysAgo = new Intl.DateTimeFormat('en-US', {
      weekday: 'long', day: 'numeric', month: 'long', year: 'numeric', timeZone,
    }).format(new Date(Date.now() - 3 * 86400 * 1000));
    assert.deepEqual(await rowsOf(page), [
      `day: ${threeDaysAgo}`, 'three days ago A', 'three days ago B',
      'day: Yesterday', 'yesterday A',
      'day: Today', 'today A',
    ]);
    // Grouped by sender within a day: the first of a run starts a new group.
    const firsts = await messageLog(page).locator('li.msg.first .text').allTextContents();
    assert.deepEqual(firsts, ['three days ago A', 'yesterday A', 'today A']);
    assert.deepEqual(page.pageErrors, []);
    await ctx.close();
  });

  // The first page of a conversation (the newest 50) is held back while the
  // replay of the thread (subscribe_thread since_seq) streams in, and the
  // replay misses some messages (the client's cursor already counted them,
  // as when another tab of the same user acknowledged them). Messages that
  // arrived before the page must not make a run of their own: scroll-back
  // goes on from the page's oldest message, so a hole between such a run and
  // the page was never filled (seqs 31-80 were once missing this way).
  it('scroll-back is whole when the replay outruns the first page', async () => {
    const dan = await server.register({ username: `dan_${randomId(3)}`, full_name: 'Dan Parent', role: 'parent' });
    const thread = await server.createDirect(alice, dan);
    const base = `http://127.0.0.1:${server.port}`;
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
    const first = await openAs(ctx, base, dan);  // the session is saved; nothing delivered yet
    await first.close();
    for (let i = 1; i <= 130; i++) {
      assert.equal((await server.sendRest(alice.token, thread.id, { content: `history ${i}`, client_msg_id: `h-${i}` })).status, 201);
    }
    // A slow server: the first page takes 1.5 s, the thread list 0.7 s (so
    // the list reloaded on connecting, which fills gaps at the end of a
    // conversation, comes after the replay).
    const slow = (ms) => async (route) => { await new Promise((r) => setTimeout(r, ms)); await route.continue(); };
    await ctx.route(/\/messages\?limit=50$/, slow(1500));
    await ctx.route(/\/api\/chat\/threads$/, slow(700));
    let replayed = 0;
    await ctx.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => {
        const f = JSON.parse(m);
        if (f.type === 'new_message' && f.data.seq >= 31 && f.data.seq <= 80) return;
        if (f.type === 'new_message') replayed += 1;
        ws.send(m);
      });
    });
    const page = await ctx.newPage();
    trackErrors(page);
    await page.goto(`${base}/app/#/t/${thread.id}`);
    await messageLog(page).getByText('history 130', { exact: true }).waitFor();
    assert.ok(replayed > 0, 'the replay reached the page');

    const start = page.getByText('This is the start of the conversation.');
    for (let i = 0; i < 20 && !(await start.count()); i++) {
      await page.locator('.messages').evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
      await page.waitForTimeout(300);
    }
    await start.waitFor();
    await until(async () => (await messageTexts(page)).length >= 130, { timeout: 5000, what: 'the whole history' });
    assert.deepEqual(await messageTexts(page), Array.from({ length: 130 }, (_, i) => `history ${i + 1}`), 'each once, in order');
    assert.deepEqual(page.pageErrors, []);
    await ctx.close();
  });

  // Opening a conversation while the server is down: its first page fails.
  // That used to leave an empty box behind (the pane blank, the error shown
  // only on the sign-in screen), which the reconnection then filled from the
  // first message for 20 pages: about m3700…m4000 shown as the newest.
  it('a conversation opened while the server is down says so, then shows its newest messages once it is back', async () => {
    const erin = await server.register({ username: `erin_${randomId(3)}`, full_name: 'Erin Parent', role: 'parent' });
    const thread = await server.createDirect(alice, erin);
    await seedLong(server, [alice, erin], thread.id, 'm');
    const proxy = await new Proxy(server.port).start();
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
    try {
      const page = await openAs(ctx, proxy.base, erin);
      await server.stop({ removeData: false });
      await page.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
      await threadLink(page, 'Alice Teacher').click();
      await page.getByRole('alert').filter({ hasText: 'Could not load the conversation' }).waitFor({ timeout: 10000 });
      assert.equal(await page.getByText('Loading…').count(), 0, 'not loading any more');

      await server.start();
      proxy.retarget(server.port);
      await page.evaluate(() => window.dispatchEvent(new Event('online')));
      await waitOnline(page, 30000);
      await assertNewestRun(page, server, erin, thread.id);
      assert.equal(await page.getByRole('alert').count(), 0, 'the error is gone');
      assert.deepEqual(page.pageErrors, []);
    } finally {
      if (!server.child) await server.start();  // for the next test, after a failure
      await ctx.close();
      await proxy.close();
    }
  });

  // A conversation on screen while more messages than 20 pages came, none
  // of which reached the screen through the WebSocket (its replay is
  // dropped here, as a replay can miss messages in the test above): gap
  // filling used to stop after 20 pages from the last message held, showing
  // about g3700…g4000 as the newest. Now the conversation starts again from
  // its newest page, as when it opens.
  it('a gap too long to fill page by page: the conversation starts again from its newest page', async () => {
    const fay = await server.register({ username: `fay_${randomId(3)}`, full_name: 'Fay Parent', role: 'parent' });
    const thread = await server.createDirect(alice, fay);
    assert.equal((await server.sendRest(alice.token, thread.id, { content: 'before the gap' })).status, 201);
    const proxy = await new Proxy(server.port).start();
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
    try {
      await ctx.routeWebSocket(/\/ws$/, (ws) => {
        const upstream = ws.connectToServer();
        ws.onMessage((m) => upstream.send(m));
        upstream.onMessage((m) => {
          const f = JSON.parse(m);
          if (f.type === 'new_message' && /^g\d+$/.test(f.data.content)) return;
          ws.send(m);
        });
      });
      const page = await openAs(ctx, proxy.base, fay);
      await threadLink(page, 'Alice Teacher').click();
      await messageLog(page).getByText('before the gap').waitFor();

      proxy.cut();
      await page.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
      await seedLong(server, [alice, fay], thread.id, 'g');
      proxy.resume();
      await page.evaluate(() => window.dispatchEvent(new Event('online')));
      await waitOnline(page, 30000);
      await assertNewestRun(page, server, fay, thread.id);
      assert.deepEqual(page.pageErrors, []);
    } finally {
      await ctx.close();
      await proxy.close();
    }
  });

  // Scrolled far back (the window of messages on screen no longer holds the
  // newest), a message sent from the composer went in below the window, out
  // of sight. Sending takes the reader to the newest, where it shows.
  it('a message sent while scrolled far back shows, with the newest messages', async () => {
    const gus = await server.register({ username: `gus_${randomId(3)}`, full_name: 'Gus Parent', role: 'parent' });
    const thread = await server.createDirect(alice, gus);
    const SEEDED = 650;
    let next = 1;
    async function worker() {
      while (next <= SEEDED) {
        const i = next++;
        const res = await server.sendRest([alice, gus][i % 2].token, thread.id, { content: `old ${i}`, client_msg_id: `old-${i}` });
        if (res.status !== 201) throw new Error(`seed ${i}: ${res.status} ${res.text}`);
      }
    }
    await Promise.all(Array.from({ length: 4 }, worker));
    const newest = (await server.history(gus.token, thread.id)).at(-1).content;
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
    try {
      const page = await openAs(ctx, `http://127.0.0.1:${server.port}`, gus);
      await threadLink(page, 'Alice Teacher').click();
      await messageLog(page).getByText(newest, { exact: true }).waitFor();

      // Back until the newest message has left the window (bounded: 60 scrolls).
      const shown = () => messageLog(page).getByText(newest, { exact: true }).count();
      for (let i = 0; i < 60 && (await shown()); i++) {
        await page.locator('.messages').evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
        await page.waitForTimeout(250);
      }
      assert.equal(await shown(), 0, 'scrolled back past the window that holds the newest');

      const text = 'sent while scrolled back';
      const box = page.getByRole('textbox', { name: 'Message' });
      await box.fill(text);
      await box.press('Enter');
      let texts = [];
      await until(async () => (texts = await messageTexts(page)).at(-1) === text,
        { timeout: 10000, what: 'the sent message last in the log' }).catch((err) => {
        assert.fail(`${err.message}: the log shows ${texts.slice(0, 2)} … ${texts.slice(-2)} (${texts.length})`);
      });
      const stored = (await server.history(gus.token, thread.id)).map((m) => m.content);
      assert.equal(stored.at(-1), text, 'stored last');
      assert.deepEqual(texts, stored.slice(-texts.length), 'the newest messages, each once, in order');
      // On screen: the log is scrolled to it.
      await until(() => page.evaluate((t) => {
        const log = document.querySelector('.messages');
        const li = [...log.querySelectorAll('li.msg')].find((el) => el.querySelector('.text')?.textContent === t);
        if (!li) return false;
        const a = log.getBoundingClientRect(); const b = li.getBoundingClientRect();
        return b.top >= a.top - 1 && b.bottom <= a.bottom + 1;
      }, text), { timeout: 5000, what: 'the sent message in view' });
      assert.deepEqual(page.pageErrors, []);
    } finally {
      await ctx.close();
    }
  });
});
