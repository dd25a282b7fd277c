// The web app keeps at most 300 messages in the DOM, a window over the loaded
// history that slides by 100 as the reader scrolls (ui.js, MessageList). A
// message with keyboard focus keeps it when the window slides past others;
// one the window leaves behind hands focus to the log's current tab stop, the
// newest message shown, never to the page's body.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openAs, threadLink, messageLog, until, startScene } from './browser.mjs';

const TOTAL = 450;  // the first page of 50, three pages of 100 back (past the window's 300), one more to spare

describe('web app: focus while the message window slides', () => {
  let server; let base; let browser; let alice; let bob;

  before(async () => {
    ({ server, base, browser, alice, bob } = await startScene());
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('a focused message keeps focus as the window slides up and down; one left behind hands it to the newest shown', async () => {
    const thread = await server.createDirect(alice, bob);
    await server.sendBacklog(bob, thread.id, TOTAL, 'backlog');
    const page = await openAs(await browser.newContext(), base, alice);
    await threadLink(page, 'Bob Parent').click();
    const log = messageLog(page);
    await log.getByText(`backlog ${TOTAL - 1}`, { exact: true }).waitFor();

    // What the window holds (texts of its first and last message, how many) and what has focus.
    const shown = () => page.evaluate(() => {
      const lis = [...document.querySelectorAll('.log > li[data-seq]')];
      const text = (li) => li?.querySelector('.text')?.textContent ?? null;
      const el = document.activeElement;
      return {
        first: text(lis[0]), last: text(lis.at(-1)), count: lis.length,
        focused: el.matches('.log > li[data-seq]') ? text(el) : el === document.body ? 'body' : el.tagName,
        stop: lis.filter((li) => li.tabIndex === 0).map(text),
      };
    });
    // Scrolls the conversation as the scrollbar would, again until `done`: a
    // render in the same frame as the scroll may put the view back at the
    // newest message, where it keeps while the reader is there.
    const messages = page.locator('.messages');
    const scrollUntil = (top, done, what) => until(async () => {
      if (await done()) return true;
      await messages.evaluate((el, to) => { el.scrollTop = to === 'bottom' ? el.scrollHeight : to < 0 ? el.scrollTop + to : to; }, top);
      return false;
    }, { every: 300, what });
    const loadingDone = () => until(async () => await page.locator('.messages .loading').count() === 0, { what: 'no page loading' });

    // Into the log from the composer (Bob's messages have no buttons): the newest message.
    await page.getByRole('textbox', { name: 'Message' }).focus();
    await page.keyboard.press('Shift+Tab');
    assert.equal((await shown()).focused, `backlog ${TOTAL - 1}`);

    // The reader scrolls up a little (the view no longer keeps to the newest
    // message), then presses Home again and again: the first message shown
    // takes focus and scrolls to the top, so older pages load above it, until
    // the window is full and slides: the newest messages leave it below.
    // Focus stays where Home put it.
    await scrollUntil(-400, () => messages.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight > 300), 'scrolled up');
    let s;
    for (let i = 0; i < 6; i++) {
      const before = await shown();
      await page.keyboard.press('Home');
      assert.equal((await shown()).focused, before.first, `Home ${i + 1}: the first shown has focus`);
      await until(async () => (s = await shown()).first !== before.first, { timeout: 15000, what: `older messages above ${before.first}` });
      await loadingDone();
      s = await shown();
      assert.equal(s.focused, before.first, `Home ${i + 1}: focus kept on ${before.first} while older messages came in`);
      if (s.last !== `backlog ${TOTAL - 1}`) break;
    }
    assert.equal(s.count, 300, 'the window is full');
    assert.notEqual(s.last, `backlog ${TOTAL - 1}`, 'the window slid: the newest left it');
    assert.equal(await log.getByText(`backlog ${TOTAL - 1}`, { exact: true }).count(), 0);
    const kept = s.focused;
    assert.deepEqual(s.stop, [kept], 'the focused message is the log\'s tab stop');
    await page.getByRole('button', { name: 'Newest messages ↓' }).waitFor();

    // End, then scrolling to the bottom: the window slides down past the
    // oldest ones, and the message End focused keeps focus.
    const oldest = s.first;
    await page.keyboard.press('End');
    const atEnd = (await shown()).focused;
    assert.equal(atEnd, s.last, 'End: the last shown has focus');
    await scrollUntil('bottom', async () => (s = await shown()).last === `backlog ${TOTAL - 1}`, 'the window back at the newest');
    assert.equal(s.count, 300);
    assert.equal(await log.getByText(oldest, { exact: true }).count(), 0, `the oldest shown (${oldest}) left the window`);
    assert.equal(s.focused, atEnd, 'focus kept on the message End reached');

    // The newest message focused, then the reader scrolls to the top (the
    // scrollbar, not the keyboard): the window slides up and leaves the
    // focused message behind. Focus goes to the newest message shown, the
    // log's tab stop, and the arrows go on from there.
    await page.keyboard.press('End');
    assert.equal((await shown()).focused, `backlog ${TOTAL - 1}`);
    await scrollUntil(0, async () => (s = await shown()).last !== `backlog ${TOTAL - 1}`, 'the window slid up');
    await loadingDone();
    s = await shown();
    assert.equal(await log.getByText(`backlog ${TOTAL - 1}`, { exact: true }).count(), 0, 'the focused message left the DOM');
    assert.equal(s.focused, s.last, 'focus on the newest message shown, not the page\'s body');
    assert.deepEqual(s.stop, [s.last], 'which is the log\'s tab stop');
    const fallback = s.last;
    await page.keyboard.press('ArrowUp');
    const up = await shown();
    assert.notEqual(up.focused, fallback, 'ArrowUp moves on from there');
    assert.match(up.focused, /^backlog \d+$/);
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });

  // At the newest message the view keeps to the bottom; Home from there must
  // leave the message it focuses in view (the view once snapped back).
  it('Home pressed at the newest message shows the message it focuses', async () => {
    const thread = await server.createDirect(alice, bob);
    await server.sendBacklog(bob, thread.id, 80, 'short');  // after the test above's 450, in the same thread
    const page = await openAs(await browser.newContext(), base, alice);
    try {
      await threadLink(page, 'Bob Parent').click();
      const log = messageLog(page);
      await log.getByText('short 79', { exact: true }).waitFor();
      await page.getByRole('textbox', { name: 'Message' }).focus();
      await page.keyboard.press('Shift+Tab');
      const focusedText = () => page.evaluate(() => document.activeElement.querySelector?.('.text')?.textContent ?? null);
      assert.equal(await focusedText(), 'short 79');
      await page.keyboard.press('Home');
      const first = await focusedText();
      assert.match(first ?? '', /^(short|backlog) \d+$/, 'Home focuses the first message shown');
      assert.notEqual(first, 'short 79');
      // In view (within the scroller's box), now and after any older page came in.
      const inView = () => page.evaluate(() => {
        const box = document.querySelector('.messages').getBoundingClientRect();
        const r = document.activeElement.getBoundingClientRect();
        return r.bottom > box.top && r.top < box.bottom;
      });
      await until(async () => await page.locator('.messages .loading').count() === 0, { what: 'no page loading' });
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(await focusedText(), first, 'focus stays on it');
      assert.ok(await inView(), 'the focused message is in view, not scrolled away to the newest');
      assert.deepEqual(page.pageErrors, []);
    } finally {
      await page.context().close();
    }
  });
});
