// The web app in a real browser (Debian's Chromium via playwright-core)
// against the real parley binary: sign-in, DMs both ways, ticks, unread
// badges on two tabs, typing, HTML shown as text, keyboard-only use, reload
// and scroll-back, drafts and the composer's height, the phone layout,
// accessibility (axe-core), token expiry.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomId, mintToken, sleep } from '../node/harness.mjs';
import {
  openAs, trackErrors, threadLink, messageLog, messageTexts, sendFromComposer,
  screenshotPath, until, startScene, axeViolations } from './browser.mjs';

const tick = (page, text) => messageLog(page).locator('li.msg.mine', { hasText: text }).locator('.tick');

describe('web app: two people chatting in two browsers', () => {
  let server; let browser; let base; let alice; let bob;
  let aliceCtx; let bobCtx; let alicePage; let bobPage; let bobPage2;

  before(async () => {
    ({ server, base, browser, alice, bob } = await startScene());
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('signs in with username and password, stays signed in across a reload, signs out', async () => {
    aliceCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
    const page = await aliceCtx.newPage();
    trackErrors(page);
    await page.goto(`${base}/`);
    assert.match(page.url(), /\/app\/$/, 'a browser asking for / lands on /app/');

    await page.getByLabel('Username').fill(alice.username);
    await page.getByLabel('Password').fill('not-the-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'Wrong username or password.' }).waitFor();
    await page.getByLabel('Password').fill(alice.password);
    await page.screenshot({ path: screenshotPath('sign-in') });
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('navigation', { name: 'Conversations' }).waitFor();

    await page.reload();
    await page.getByRole('navigation', { name: 'Conversations' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Sign in' }).count(), 0, 'still signed in after a reload');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    await page.reload();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();

    await page.getByLabel('Username').fill(alice.username);
    await page.getByLabel('Password').fill(alice.password);
    await page.keyboard.press('Enter');
    await page.getByRole('navigation', { name: 'Conversations' }).waitFor();
    alicePage = page;
  });

  it('starts a DM by searching; the ticks go sent → delivered → read; replies arrive live', async () => {
    const page = alicePage;
    await page.getByRole('button', { name: 'New message' }).click();
    await page.getByLabel('Find a person').fill(bob.username.slice(0, 6));
    await page.getByRole('list', { name: 'People found' }).getByRole('button', { name: /Bob Parent/ }).click();
    await page.getByRole('heading', { name: 'Bob Parent' }).waitFor();

    await sendFromComposer(page, 'Hello Bob, the trip is on Friday');
    await until(async () => (await tick(page, 'Hello Bob').getAttribute('data-status')) === 'sent', { what: 'tick sent' });

    // Bob's first visit: his device catches up and acknowledges (delivered).
    bobCtx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
    bobPage = await openAs(bobCtx, base, bob);
    const link = threadLink(bobPage, 'Alice Teacher');
    await link.waitFor();
    assert.equal(await link.locator('[data-testid=unread]').textContent(), '1');
    await until(async () => (await tick(page, 'Hello Bob').getAttribute('data-status')) === 'delivered', { what: 'tick delivered' });

    // He opens the thread: the message is on screen, so it is marked read.
    await link.click();
    await messageLog(bobPage).getByText('Hello Bob, the trip is on Friday').waitFor();
    await until(async () => (await tick(page, 'Hello Bob').getAttribute('data-status')) === 'read', { what: 'tick read' });
    await until(async () => (await link.locator('[data-testid=unread]').count()) === 0, { what: "Bob's badge cleared" });

    await sendFromComposer(bobPage, 'Great, thanks! 👍 شكرا');
    await messageLog(page).getByText('Great, thanks! 👍 شكرا').waitFor();
    await sendFromComposer(page, 'See you there');
    await messageLog(bobPage).getByText('See you there').waitFor();
    // Read once on screen: the next test counts on Bob having read it (under
    // load the read mark can come after the text shows).
    await until(async () => (await tick(page, 'See you there').getAttribute('data-status')) === 'read', { what: 'tick read on the reply' });
    assert.deepEqual(await messageTexts(bobPage), ['Hello Bob, the trip is on Friday', 'Great, thanks! 👍 شكرا', 'See you there']);
    assert.deepEqual(await messageTexts(page), await messageTexts(bobPage), 'both see the same conversation');
    const aliceBadge = threadLink(page, 'Bob Parent').locator('[data-testid=unread]');
    await until(async () => (await aliceBadge.count()) === 0, { what: 'no unread badge on the open conversation' });
    await page.screenshot({ path: screenshotPath('conversation') });
  });

  it('the unread badge rises and clears on both tabs of the same user', async () => {
    bobPage2 = await openAs(bobCtx, base, bob);
    await bobPage.evaluate(() => { location.hash = ''; });
    // Tab 1 has closed the conversation (else it would read what arrives).
    await until(async () => (await bobPage.getByRole('heading', { name: 'Alice Teacher' }).count()) === 0,
      { what: 'the conversation closed on tab 1' });
    const badge1 = threadLink(bobPage, 'Alice Teacher').locator('[data-testid=unread]');
    const badge2 = threadLink(bobPage2, 'Alice Teacher').locator('[data-testid=unread]');

    await sendFromComposer(alicePage, 'First of two');
    await sendFromComposer(alicePage, 'Second of two');
    await until(async () => (await badge1.count()) && (await badge1.textContent()) === '2', { what: 'badge 2 on tab 1' });
    await until(async () => (await badge2.count()) && (await badge2.textContent()) === '2', { what: 'badge 2 on tab 2' });

    await threadLink(bobPage, 'Alice Teacher').click();
    await messageLog(bobPage).getByText('Second of two').waitFor();
    await until(async () => (await badge2.count()) === 0, { what: 'the badge cleared on the other tab' });
    await until(async () => (await badge1.count()) === 0, { what: 'the badge cleared on this tab' });
  });

  it('typing shows in the conversation and the list, and clears', async () => {
    const box = bobPage.getByRole('textbox', { name: 'Message' });
    await box.pressSequentially('I am wri');
    await alicePage.locator('.typing-line', { hasText: 'Bob Parent is typing…' }).waitFor();
    await until(async () => (await alicePage.locator('.preview.typing').count()) === 1, { what: 'typing in the thread list' });
    await box.fill('');
    await box.press('Backspace');
    await until(async () => (await alicePage.locator('.typing-line').textContent()) === '', { what: 'typing line cleared' });
  });

  it('a message with HTML is shown as text and runs nothing', async () => {
    const evil = '<img src=x onerror=alert(1)><script>window.__pwned=1</script>';
    await sendFromComposer(alicePage, evil);
    await messageLog(bobPage).getByText(evil, { exact: true }).waitFor();
    assert.equal(await messageLog(bobPage).locator('img, script').count(), 0, 'no element made from the text');
    assert.equal(await bobPage.evaluate(() => window.__pwned), undefined);
    assert.deepEqual(bobPage.dialogs, [], 'no alert()');
    assert.deepEqual(alicePage.dialogs, [], 'no alert()');

    // A long message without spaces wraps inside the conversation instead of widening it.
    const long = 'x'.repeat(3990);
    await sendFromComposer(alicePage, long);
    await messageLog(bobPage).getByText(long, { exact: true }).waitFor();
    const overflow = await bobPage.locator('.messages').evaluate((el) => el.scrollWidth - el.clientWidth);
    assert.ok(overflow <= 0, `no horizontal overflow (${overflow}px)`);
  });

  it('works with the keyboard alone: Tab to the thread, Enter, type, Enter sends', async () => {
    const page = bobPage2;
    await page.evaluate(() => { location.hash = ''; document.activeElement?.blur(); });
    let found = false;
    for (let i = 0; i < 40 && !found; i++) {
      await page.keyboard.press('Tab');
      found = await page.evaluate(() => document.activeElement?.querySelector('.thread-name')?.textContent === 'Alice Teacher');
    }
    assert.ok(found, 'the thread link is reachable with Tab');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Alice Teacher' }).waitFor();
    await until(() => page.evaluate(() => document.activeElement?.id === 'composer'), { what: 'the composer focused' });
    await page.keyboard.type('Typed without a mouse');
    await page.keyboard.press('Enter');
    await messageLog(alicePage).getByText('Typed without a mouse').waitFor();
  });

  it('a reload keeps the conversation, and scrolling back loads older history', async () => {
    const thread = (await server.http('GET', '/api/chat/threads', { token: alice.token })).body.data.threads[0];
    for (let i = 1; i <= 130; i++) {
      const res = await server.sendRest(alice.token, thread.id, { content: `history ${i}`, client_msg_id: `h-${i}` });
      assert.equal(res.status, 201);
    }
    await bobPage.reload();
    await bobPage.getByRole('heading', { name: 'Alice Teacher' }).waitFor();
    await messageLog(bobPage).getByText('history 130', { exact: true }).waitFor();
    assert.equal(await messageLog(bobPage).getByText('Hello Bob, the trip is on Friday').count(), 0, 'only the newest page at first');

    const start = bobPage.getByText('This is the start of the conversation.');
    for (let i = 0; i < 20 && !(await start.count()); i++) {
      await bobPage.locator('.messages').evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
      await bobPage.waitForTimeout(300);
    }
    await start.waitFor();
    const texts = await messageTexts(bobPage);
    assert.equal(texts[0], 'Hello Bob, the trip is on Friday');
    const seeded = texts.filter((t) => t.startsWith('history '));
    const seqs = await messageLog(bobPage).locator('li[data-seq]').evaluateAll((els) => els.map((e) => e.dataset.seq).join(','));
    assert.deepEqual(seeded, Array.from({ length: 130 }, (_, i) => `history ${i + 1}`), `each once, in order (seqs on screen: ${seqs})`);
  });

  it('creates a group with a name and members; senders are named in it; the admin manages members', async () => {
    const page = alicePage;
    await page.getByRole('button', { name: 'New group' }).click();
    await page.getByLabel('Group name').fill('Class 4B parents');
    await page.getByLabel('Add members').fill(bob.username);
    await page.getByRole('list', { name: 'People found' }).getByRole('button', { name: /Bob Parent/ }).click();
    await page.getByRole('button', { name: 'Create group' }).click();
    await page.getByRole('heading', { name: 'Class 4B parents' }).waitFor();
    await sendFromComposer(page, 'Welcome to the group');
    const names = () => page.locator('.thread-list .thread-name').allTextContents();
    await until(async () => (await names())[0] === 'Class 4B parents', { what: 'the newest activity first' });

    await threadLink(bobPage2, 'Class 4B parents').click();
    const msg = messageLog(bobPage2).locator('li.msg', { hasText: 'Welcome to the group' });
    await msg.waitFor();
    assert.equal((await msg.locator('.sender').textContent()).trim(), 'Alice Teacher teacher', "the sender's name and role");

    await page.getByRole('button', { name: 'Members' }).click();
    const members = page.getByRole('region', { name: 'Members' });
    await members.getByText('Bob Parent').waitFor();
    assert.equal(await members.getByRole('button', { name: 'Remove Bob Parent' }).count(), 1, 'the admin may remove');
    await bobPage2.getByRole('button', { name: 'Members' }).click();
    assert.equal(await bobPage2.getByRole('region', { name: 'Members' }).getByRole('button', { name: /^Remove/ }).count(), 0,
      'a member may not remove others');
    await page.screenshot({ path: screenshotPath('group') });
    await page.getByRole('button', { name: 'Members' }).click();
  });

  it('a draft stays with its conversation when switching away and back, and goes once sent', async () => {
    const page = alicePage;
    const box = page.getByRole('textbox', { name: 'Message' });
    const open = async (name) => {
      await threadLink(page, name).click();
      await page.getByRole('heading', { name }).waitFor();
    };
    await open('Bob Parent');
    await box.fill('Draft for Bob');
    await open('Class 4B parents');
    assert.equal(await box.inputValue(), '', 'no draft in the group');
    await box.fill('Draft for the group');
    await open('Bob Parent');
    assert.equal(await box.inputValue(), 'Draft for Bob', 'the draft is back');

    await open('Class 4B parents');
    assert.equal(await box.inputValue(), 'Draft for the group');
    await box.press('Enter');
    await messageLog(page).getByText('Draft for the group').waitFor();
    assert.equal(await box.inputValue(), '');
    await open('Bob Parent');
    await open('Class 4B parents');
    assert.equal(await box.inputValue(), '', 'a sent draft does not come back');
    await open('Bob Parent');
    // Text that draws nothing (a word joiner, a zero-width space) is blank to
    // the server: it is not sent, so it cannot fail in the outbox.
    await box.fill('\u2060\u200b ');
    await box.press('Enter');
    await sleep(300);
    assert.equal(await box.inputValue(), '\u2060\u200b ', 'kept in the composer, not sent');
    assert.equal(await page.locator('.failed, [data-status="failed"]').count(), 0, 'nothing failed');
    await box.fill('');
  });

  it('the composer grows with its lines up to seven, then scrolls', async () => {
    const page = alicePage;
    const box = page.getByRole('textbox', { name: 'Message' });
    const size = () => box.evaluate((el) => ({
      height: el.offsetHeight, line: parseFloat(getComputedStyle(el).lineHeight), scrolls: el.scrollHeight > el.clientHeight,
    }));
    await threadLink(page, 'Bob Parent').click();
    await page.getByRole('heading', { name: 'Bob Parent' }).waitFor();
    const one = await size();
    await box.pressSequentially('first line');
    for (let i = 2; i <= 3; i++) {
      await box.press('Shift+Enter');
      await box.pressSequentially(`line ${i}`);
    }
    const three = await size();
    assert.ok(Math.abs(three.height - one.height - 2 * one.line) <= 2, `three lines tall (${one.height} → ${three.height} px)`);
    assert.equal(three.scrolls, false, 'nothing hidden');

    for (let i = 4; i <= 20; i++) {
      await box.press('Shift+Enter');
      await box.pressSequentially(`line ${i}`);
    }
    const tall = await size();
    assert.ok(Math.abs(tall.height - one.height - 6 * one.line) <= 2, `seven lines tall at most (${tall.height} px)`);
    assert.equal(tall.scrolls, true, 'the rest scrolls');
    await box.press('Enter');
    await messageLog(page).getByText(/first line\s+line 2/).waitFor();
    assert.equal((await size()).height, one.height, 'one line again once sent');
  });

  it('axe-core finds no serious or critical accessibility violations', async () => {
    const chat = await axeViolations(alicePage);
    assert.deepEqual(chat, [], 'the chat screen');
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${base}/app/`);
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    assert.deepEqual(await axeViolations(page), [], 'the sign-in screen');
    await ctx.close();
  });

  it('on a phone-sized screen shows one pane at a time; dark theme follows the system', async () => {
    const ctx = await browser.newContext({ viewport: { width: 390, height: 780 }, colorScheme: 'dark', isMobile: true, hasTouch: true });
    const page = await openAs(ctx, base, alice);
    const list = page.getByRole('navigation', { name: 'Conversations' });
    assert.ok(await list.isVisible());
    await page.screenshot({ path: screenshotPath('phone-threads-dark') });
    await threadLink(page, 'Bob Parent').click();
    await page.getByRole('heading', { name: 'Bob Parent' }).waitFor();
    assert.equal(await list.isVisible(), false, 'the list is hidden while a conversation is open');
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, 'rgb(17, 19, 24)', 'the dark background');
    await page.screenshot({ path: screenshotPath('phone-conversation-dark') });
    await page.getByRole('link', { name: 'Back to conversations' }).click();
    await list.waitFor();
    assert.deepEqual(await axeViolations(page), [], 'dark phone layout');
    await ctx.close();
  });

  // A direct conversation's status line (role · last seen) at phone width:
  // an inline span, it was not cut and ran on under the call buttons.
  it('at phone width a long status line is cut with an ellipsis before the call buttons', async () => {
    const dave = await server.register({ username: `dave_${randomId(3)}`, full_name: 'Dave Parent',
      role: 'parent and class representative for year four' });
    // Two new people: the other tests' users and threads stay as they were.
    const erin = await server.register({ username: `erin_${randomId(3)}`, full_name: 'Erin Teacher', role: 'teacher' });
    const thread = await server.createDirect(erin, dave);
    await server.sendRest(dave.token, thread.id, { content: 'Hello from Dave' });
    const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    try {
      const page = await openAs(ctx, base, erin);
      await threadLink(page, 'Dave Parent').click();
      await page.getByRole('heading', { name: 'Dave Parent' }).waitFor();
      const sub = page.locator('.conv-head .sub');
      await until(async () => /^parent and class representative for year four · /.test(await sub.textContent()), { what: 'the status line' });
      const subBox = await sub.boundingBox();
      const callBox = await page.locator('.conv-head').getByRole('button', { name: 'Audio call' }).boundingBox();
      assert.ok(subBox.x + subBox.width <= callBox.x + 0.5,
        `the status line ends (${subBox.x + subBox.width}) before the first call button starts (${callBox.x})`);
      const cut = await sub.evaluate((el) => {
        const cs = getComputedStyle(el);
        return { textOverflow: cs.textOverflow, overflow: cs.overflowX, display: cs.display, overflows: el.scrollWidth > el.clientWidth };
      });
      assert.deepEqual(cut, { textOverflow: 'ellipsis', overflow: 'hidden', display: 'block', overflows: true }, 'cut with an ellipsis');
      assert.deepEqual(page.pageErrors, []);
    } finally {
      await ctx.close();
    }
  });

  it('registers a new account from the sign-in screen', async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    trackErrors(page);
    await page.goto(`${base}/app/`);
    await page.getByRole('button', { name: 'New here? Create an account' }).click();
    const username = `carol_${randomId(3)}`;
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Full name').fill('Carol Student');
    const phone = `+1 555 ${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
    await page.getByLabel('Phone number (optional)').fill(phone);
    await page.getByLabel('Role (optional)').fill('student');
    await page.getByLabel('Password').fill('carol-password');
    // Refusals read in the form's words, not the API's field names.
    await page.getByLabel('Phone number (optional)').fill('12');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('alert').getByText('The phone number needs at least 3 digits', { exact: false }).waitFor();
    await page.getByLabel('Phone number (optional)').fill(phone);
    await page.getByLabel('Username').fill(alice.username);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('alert').getByText('That username is taken: pick another (or sign in, if it is yours).').waitFor();
    await page.getByLabel('Username').fill(username);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('navigation', { name: 'Conversations' }).getByText('Carol Student').waitFor();
    const login = await server.http('POST', '/api/auth/login', { body: { username, password: 'carol-password' } });
    assert.equal(login.status, 200, 'the account exists on the server');
    assert.equal(login.body.data.user.role, 'student', 'with the role typed in');

    // Signing in with the phone number instead of the username.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Username').fill(phone);
    await page.getByLabel('Password').fill('carol-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('navigation', { name: 'Conversations' }).getByText('Carol Student').waitFor();
    await ctx.close();
  });

  it('while the tab is hidden: a desktop notification and the unread total in the title', async () => {
    const ctx = await browser.newContext({ permissions: ['notifications'] });
    // Bob's other tabs show no conversation, so nothing marks the new message read behind the test's back.
    for (const other of [bobPage, bobPage2]) {
      await other.evaluate(() => { location.hash = ''; });
      await until(async () => (await other.locator('.conv-head').count()) === 0, { what: 'the conversation closed' });
    }
    // Closed whatever happens: a Bob left connected would keep him online for the presence test.
    try {
      const page = await openAs(ctx, base, bob);
      await page.evaluate(() => {
        window.__notes = [];
        const Real = window.Notification;
        window.Notification = class extends Real {
          constructor(title, options) { super(title, options); window.__notes.push([title, options.body]); }
        };
        Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
        Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
        document.dispatchEvent(new Event('visibilitychange'));
      });
      const dm = (await server.http('GET', '/api/chat/threads', { token: alice.token })).body.data.threads
        .find((t) => t.type === 'direct');
      // Bob may already have unread messages from earlier tests, so the title can show a total before
      // this message arrives: wait for the message itself, then check the title counts it.
      const unreadBefore = (await server.http('GET', '/api/chat/unread-count', { token: bob.token })).body.data.unread_count;
      await server.sendRest(alice.token, dm.id, { content: 'Are you there?' });
      await until(() => page.evaluate(() => window.__notes.length > 0), { what: 'the desktop notification' });
      const notes = await page.evaluate(() => window.__notes);
      assert.deepEqual(notes, [['Alice Teacher', 'Are you there?']]);
      // The total comes from the server shortly after the message (GET /api/chat/unread-count).
      const expected = `(${unreadBefore + 1}) Parley`;
      await until(async () => (await page.evaluate(() => document.title)) === expected,
        { what: `the title to read ${expected}` });
      // Signed out in another tab: the hidden tab's title no longer counts that user's messages.
      const other = await openAs(ctx, base, bob);
      await other.getByRole('button', { name: 'Sign out' }).click();
      await page.getByText('You signed out in another tab.').waitFor();
      assert.equal(await page.evaluate(() => document.title), 'Parley', 'no unread count left in the title');
    } finally {
      await ctx.close();
    }
  });

  it('an expired token leads back to sign-in, at load and while connected', async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    trackErrors(page);
    const now = Math.floor(Date.now() / 1000);
    const expired = mintToken(server.secret, { sub: alice.id, username: alice.username, iat: now - 100, exp: now - 10 });
    await page.goto(`${base}/app/#token=${expired}`);
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    await page.getByText('Your session has expired').waitFor();

    // A token that cannot be renewed (every renewal fails to reach the
    // server) runs out while the page is connected. 10 s of life from now,
    // not from before the first page load: a slow load must not use it up
    // before the app has connected with it.
    await ctx.route(/\/api\/auth\/refresh$/, (route) => route.abort('connectionrefused'));
    const later = Math.floor(Date.now() / 1000);
    const shortLived = mintToken(server.secret, { sub: alice.id, username: alice.username, iat: later, exp: later + 10 });
    await page.goto(`${base}/app/#token=${shortLived}`);
    await page.getByRole('navigation', { name: 'Conversations' }).waitFor();
    await page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 20000 });
    assert.equal(await page.evaluate(() => localStorage.getItem('parley.session')), null, 'the token is forgotten');
    await ctx.close();
    assert.deepEqual([...alicePage.pageErrors, ...bobPage.pageErrors], [], 'no uncaught errors in the pages');
  });

  it('presence: the dot and "online" while the other person is connected, "last seen" after', async () => {
    await threadLink(alicePage, 'Bob Parent').click();
    const sub = alicePage.locator('.conv-head .sub');
    await until(async () => (await sub.textContent()) === 'parent · online', { what: 'Bob online' });
    assert.equal(await threadLink(alicePage, 'Bob Parent').locator('.dot.online').count(), 1);
    await bobCtx.close();
    await until(async () => /^parent · last seen /.test(await sub.textContent()), { timeout: 15000, what: 'Bob last seen' });
    assert.equal(await threadLink(alicePage, 'Bob Parent').locator('.dot.online').count(), 0);
  });
});
