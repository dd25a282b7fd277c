// The web app on a touch screen (Playwright's touch emulation: no hover, a
// tap leaves the tapped message hovered and focused): a tap on one of one's
// messages shows its Edit and Delete, a second tap hides them again, and the
// keyboard still moves through the log as on any screen.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startScene, openAs, threadLink, messageLog, until } from './browser.mjs';

const row = (page, text) => messageLog(page).locator('li.msg', { hasText: text });
// Whether a message's actions are shown (opaque) and take taps, once their transition is over.
const actions = (page, text) => row(page, text).locator('.msg-actions').evaluate((el) => {
  const s = getComputedStyle(el);
  return `${s.opacity === '1' ? 'shown' : s.opacity === '0' ? 'hidden' : 'fading'}${s.pointerEvents === 'none' ? '' : ', tappable'}`;
});
async function expectActions(page, text, want, what) {
  await until(async () => (await actions(page, text)) === want, { timeout: 3000, what }).catch(() => {});
  assert.equal(await actions(page, text), want, what);
}
// The message that has focus (its text), a button (its label), or an element's id.
const focused = (page) => page.evaluate(() => {
  const el = document.activeElement;
  if (el.matches('.log > li')) return `message: ${el.querySelector('.text')?.textContent}`;
  if (el.tagName === 'BUTTON') return `button: ${el.getAttribute('aria-label') || el.textContent}`;
  return el.id || el.tagName;
});

describe('web app: a touch screen', () => {
  let server; let base; let browser; let alice; let bob;

  before(async () => {
    ({ server, base, browser, alice, bob } = await startScene());
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('a tap shows a message\'s actions, a second tap hides them; the arrows, Home and End still move through the log', async () => {
    const thread = await server.createDirect(alice, bob);
    await server.sendRest(alice.token, thread.id, { content: 'One' });
    await server.sendRest(bob.token, thread.id, { content: 'Two' });
    await server.sendRest(alice.token, thread.id, { content: 'Three' });
    const page = await openAs(await browser.newContext({ hasTouch: true, viewport: { width: 390, height: 800 } }), base, alice);
    assert.equal(await page.evaluate(() => matchMedia('(hover: none)').matches), true, 'the page sees a screen without hover');
    await threadLink(page, 'Bob Parent').tap();
    await messageLog(page).getByText('Three').waitFor();
    const one = row(page, 'One').locator('.bubble');

    await expectActions(page, 'One', 'hidden', 'hidden before any tap');
    await one.tap();
    await expectActions(page, 'One', 'shown, tappable', 'the first tap shows them');
    assert.equal(await focused(page), 'message: One', 'the tap focused the message');
    await one.tap();
    await expectActions(page, 'One', 'hidden', 'the second tap hides them, though the message is still hovered and focused');
    assert.equal(await row(page, 'One').evaluate((el) => el.matches(':hover') && el === document.activeElement), true,
      'hidden in spite of the hover and the focus the taps left');
    await one.tap();
    await expectActions(page, 'One', 'shown, tappable', 'a third tap shows them again');
    await row(page, 'One').getByRole('button', { name: 'Edit message' }).tap();
    const editor = page.getByRole('textbox', { name: 'Edit message' });
    assert.equal(await editor.inputValue(), 'One', 'Edit taken by a tap once shown');
    await editor.press('Escape');
    await editor.waitFor({ state: 'detached' });
    await expectActions(page, 'One', 'hidden', 'hidden again once the editor is closed');

    // The keyboard (a tablet's): the log's one tab stop moves with the arrows, Home and End, and shows what it reaches.
    await one.tap();
    await one.tap();
    await expectActions(page, 'One', 'hidden', 'hidden by the second tap');
    await page.keyboard.press('ArrowDown');
    assert.equal(await focused(page), 'message: Two');
    await page.keyboard.press('ArrowDown');
    assert.equal(await focused(page), 'message: Three');
    await expectActions(page, 'Three', 'shown, tappable', 'keyboard focus shows the actions');
    await expectActions(page, 'One', 'hidden', 'not shown by the hover the last tap left');
    await page.keyboard.press('Home');
    assert.equal(await focused(page), 'message: One');
    await expectActions(page, 'One', 'shown, tappable', 'reached from the keyboard: shown');
    await expectActions(page, 'Three', 'hidden', 'left: hidden');
    assert.deepEqual(await messageLog(page).locator('li[data-seq]').evaluateAll((els) => els.map((el) => el.tabIndex)), [0, -1, -1],
      'the current message is the only tab stop among the messages');
    await page.keyboard.press('End');
    assert.equal(await focused(page), 'message: Three');
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'button: Edit message', 'Tab: the current message\'s Edit');
    await expectActions(page, 'Three', 'shown, tappable', 'shown while its Edit has keyboard focus');
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('ArrowUp');
    assert.equal(await focused(page), 'message: Two');
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });
});
