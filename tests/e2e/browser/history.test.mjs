// The conversation's history in the web app: messages grouped by day (with
// messages of other days, dated in the store while the server is stopped),
// and scroll-back that stays whole when live and replayed messages arrive
// while its first page is still loading.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { randomId } from '../node/harness.mjs';
import { openAs, trackErrors, messageLog, messageTexts, until, startScene } from './browser.mjs';

const DAY_MICROS = 86400 * 1e6;

// The day separators and messages of the open conversation, in order.
function rowsOf(page) {
  return messageLog(page).locator('li').evaluateAll((lis) => lis.map((li) => (li.classList.contains('day')
    ? `day: ${li.textContent.trim()}` : li.querySelector('.text')?.textContent)));
}

describe('web app: days and scroll-back', () => {
  let server; let browser; let alice; let bob;

  before(async () => {
    ({ server, browser, alice, bob } = await startScene());
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

    const ctx = await browser.newContext({ timezoneId: 'UTC', locale: 'en-US' });
    const page = await openAs(ctx, base, bob);
    await page.goto(`${base}/app/#/t/${thread.id}`);
    await messageLog(page).getByText('today A').waitFor();
    const threeDaysAgo = new Intl.DateTimeFormat('en-US', {
      weekday: 'long', day: 'numeric', month: 'long', year: 'numeric', timeZone: 'UTC',
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
});
