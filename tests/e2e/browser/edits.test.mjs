// The web app and what happens to a message after it was sent: edits and
// deletions reach every open screen at once (and a screen that was offline
// meanwhile once it is back), shown as the server says the message is now;
// a user edits and deletes their own messages from the page, and an edit
// the server refuses says why and leaves the message as it was.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, randomId, sleep } from '../node/harness.mjs';
import {
  launchBrowser, openAs, threadLink, messageLog, messageTexts, sendFromComposer, until, waitOnline, Proxy, startScene,
  axeViolations,
} from './browser.mjs';

const row = (page, text) => messageLog(page).locator('li.msg', { hasText: text });
const actionsShown = (page, text) => row(page, text).locator('.msg-actions').evaluate((el) => getComputedStyle(el).opacity === '1');

// Holds each PATCH of a message until the test releases it by its number
// (0 for the first): "Saving…" lasts as long as the checks made during it.
async function holdPatches(page) {
  const gates = [];
  const gate = (i) => (gates[i] ??= (() => { let open; const p = new Promise((r) => { open = r; }); p.open = open; return p; })());
  let n = 0;
  await page.route('**/api/chat/messages/*', async (route) => {
    if (route.request().method() === 'PATCH') await gate(n++);
    await route.continue().catch(() => {});
  });
  return { release: (i) => gate(i).open() };
}

describe('web app: edits and deletions', () => {
  let server; let proxy; let browser; let alice; let bob; let thread;
  let alicePage; let bobPage;

  const edit = (user, id, content) => server.http('PATCH', `/api/chat/messages/${id}`, { token: user.token, body: { content } });
  const remove = (user, id) => server.http('DELETE', `/api/chat/messages/${id}`, { token: user.token });
  const preview = (page, name) => threadLink(page, name).locator('.preview').textContent();
  // Waits for the conversation to read `expected`, then says what it reads.
  async function expectTexts(page, expected, timeout = 10000) {
    const want = expected.join('|');
    await until(async () => (await messageTexts(page)).join('|') === want, { timeout }).catch(() => {});
    assert.deepEqual(await messageTexts(page), expected);
  }

  before(async () => {
    server = await startServer();
    proxy = await new Proxy(server.port).start();
    browser = await launchBrowser();
    alice = await server.register({ username: `alice_${randomId(3)}`, full_name: 'Alice Teacher', role: 'teacher' });
    bob = await server.register({ username: `bob_${randomId(3)}`, full_name: 'Bob Parent', role: 'parent' });
    thread = await server.createDirect(alice, bob);
  });
  after(async () => {
    await browser?.close();
    await proxy?.close();
    await server?.stop();
  });

  it('an edit and a deletion show at once on both screens, the list\'s preview too', async () => {
    alicePage = await openAs(await browser.newContext(), base(), alice);
    bobPage = await openAs(await browser.newContext(), proxy.base, bob);
    await threadLink(alicePage, 'Bob Parent').click();
    await threadLink(bobPage, 'Alice Teacher').click();
    const first = (await server.sendRest(alice.token, thread.id, { content: 'The trip is on Friday' })).body.data;
    const second = (await server.sendRest(alice.token, thread.id, { content: 'Bring a coat for the secret' })).body.data;
    for (const page of [alicePage, bobPage]) await messageLog(page).getByText('Bring a coat').waitFor();

    assert.equal((await edit(alice, first.id, 'The trip is on Saturday')).status, 200);
    assert.equal((await remove(alice, second.id)).status, 200);
    for (const page of [alicePage, bobPage]) {
      await expectTexts(page, ['The trip is on Saturday', 'This message was deleted.']);
      assert.equal(await messageLog(page).locator('li.msg').first().locator('.edited').count(), 1, 'marked edited');
      assert.equal(await page.getByText('Bring a coat', { exact: false }).count(), 0, 'the deleted text is gone everywhere');
    }
    assert.equal(await preview(bobPage, 'Alice Teacher'), 'Message deleted');
    assert.equal(await preview(alicePage, 'Bob Parent'), 'You: Message deleted');
  });

  it('a screen that was offline during an edit and a deletion shows them once it is back, from the socket alone', async () => {
    const third = (await server.sendRest(alice.token, thread.id, { content: 'Meet at the gate' })).body.data;
    const fourth = (await server.sendRest(alice.token, thread.id, { content: 'My phone number is 555' })).body.data;
    await messageLog(bobPage).getByText('My phone number').waitFor();

    // The changes come over the socket from the page's change mark: the
    // messages held are not read again over REST (what is new may be).
    const historyReads = [];
    const onRequest = (req) => { if (/\/api\/chat\/threads\/[^/]+\/messages/.test(req.url())) historyReads.push(req.url()); };
    bobPage.on('request', onRequest);
    proxy.cut();
    await bobPage.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    assert.equal((await edit(alice, third.id, 'Meet at the main gate')).status, 200);
    assert.equal((await remove(alice, fourth.id)).status, 200);
    await server.sendRest(alice.token, thread.id, { content: 'See you' });
    proxy.resume();
    await waitOnline(bobPage, 30000);

    const expected = ['The trip is on Saturday', 'This message was deleted.', 'Meet at the main gate',
      'This message was deleted.', 'See you'];
    await expectTexts(bobPage, expected, 15000);
    assert.equal(await bobPage.getByText('My phone number', { exact: false }).count(), 0);
    bobPage.off('request', onRequest);
    const rereads = historyReads.filter((url) => {
      const after = new URL(url).searchParams.get('after_seq');
      return after === null || Number(after) < fourth.seq;
    });
    assert.deepEqual(rereads, [], `no read of the messages held after the reconnection (reads: ${historyReads.join(', ')})`);
    assert.deepEqual(alicePage.pageErrors, []);
    assert.deepEqual(bobPage.pageErrors, []);
  });

  it('a user edits and deletes their own messages from the page; the other screen follows; others\' messages offer neither', async () => {
    await sendFromComposer(alicePage, 'Pick-up at 3pm');
    await messageLog(bobPage).getByText('Pick-up at 3pm').waitFor();
    await sendFromComposer(bobPage, 'Which door?');
    await messageLog(alicePage).getByText('Which door?').waitFor();
    await sendFromComposer(alicePage, 'Wrong chat, sorry');
    await messageLog(bobPage).getByText('Wrong chat, sorry').waitFor();

    // Someone else's messages offer neither Edit nor Delete, nor does a tombstone.
    assert.equal(await row(bobPage, 'Pick-up at 3pm').getByRole('button').count(), 0, "none on Alice's message on Bob's screen");
    assert.equal(await row(alicePage, 'Which door?').getByRole('button').count(), 0, "none on Bob's message on Alice's screen");
    assert.equal(await messageLog(bobPage).getByRole('button', { name: /Edit message|Delete message/ }).count(), 2,
      'Bob is offered both on his own message only');
    assert.equal(await messageLog(alicePage).locator('li.msg', { hasText: 'This message was deleted.' }).getByRole('button').count(), 0);

    // The controls show on hover; Escape leaves the message as it was.
    const pickup = row(alicePage, 'Pick-up at 3pm');
    assert.equal(await actionsShown(alicePage, 'Pick-up at 3pm'), false, 'hidden until hovered');
    await pickup.hover();
    await until(() => actionsShown(alicePage, 'Pick-up at 3pm'), { what: 'Edit and Delete shown on hover' });
    await pickup.getByRole('button', { name: 'Edit message' }).click();
    const editor = alicePage.getByRole('textbox', { name: 'Edit message' });
    assert.equal(await editor.inputValue(), 'Pick-up at 3pm', 'the editor holds the text');
    await until(() => editor.evaluate((el) => el === document.activeElement), { what: 'the editor focused' });
    await editor.fill('Pick-up at 9pm');
    await editor.press('Escape');
    await editor.waitFor({ state: 'detached' });
    assert.equal(await pickup.locator('.text').textContent(), 'Pick-up at 3pm');
    assert.equal(await pickup.locator('.edited').count(), 0, 'cancelled: not edited');

    // Enter saves: both screens show the new text, marked edited.
    await pickup.hover();
    await pickup.getByRole('button', { name: 'Edit message' }).click();
    await editor.fill('Pick-up at 4pm');
    await editor.press('Enter');
    for (const page of [alicePage, bobPage]) {
      await row(page, 'Pick-up at 4pm').locator('.edited').waitFor();
      assert.equal(await messageLog(page).getByText('Pick-up at 3pm').count(), 0, 'the old text is gone');
    }
    await until(() => alicePage.evaluate(() => document.activeElement?.id === 'composer'), { what: 'focus back in the composer' });

    // A text the server refuses (blank): it says why, the editor stays, the message is as it was.
    const edited = row(alicePage, 'Pick-up at 4pm');
    await edited.hover();
    await edited.getByRole('button', { name: 'Edit message' }).click();
    await editor.fill('   ');
    await editor.press('Enter');
    await messageLog(alicePage).locator('.msg-note').filter({ hasText: 'A message cannot be empty.' }).waitFor();
    assert.equal(await editor.count(), 1, 'still editing');
    assert.deepEqual(await axeViolations(alicePage), [], 'the editor and its note');
    await editor.press('Escape');
    await editor.waitFor({ state: 'detached' });
    assert.equal(await messageLog(alicePage).locator('.msg-note').count(), 0, 'the note goes with the edit');
    assert.deepEqual((await messageTexts(bobPage)).slice(-3), ['Pick-up at 4pm', 'Which door?', 'Wrong chat, sorry']);

    // Up in the empty composer edits one's last message.
    await alicePage.getByRole('textbox', { name: 'Message' }).press('ArrowUp');
    assert.equal(await editor.inputValue(), 'Wrong chat, sorry');
    await editor.press('Escape');
    await editor.waitFor({ state: 'detached' });

    // Delete, from the keyboard: focus shows the controls, and the page asks first.
    const wrong = row(alicePage, 'Wrong chat, sorry');
    await alicePage.mouse.move(0, 0);
    await wrong.getByRole('button', { name: 'Delete message' }).focus();
    await until(() => actionsShown(alicePage, 'Wrong chat, sorry'), { what: 'Edit and Delete shown on keyboard focus' });
    await alicePage.keyboard.press('Enter');
    const dialog = alicePage.getByRole('dialog', { name: 'Delete this message?' });
    await dialog.waitFor();
    assert.equal(await dialog.getByRole('button', { name: 'Cancel' }).evaluate((el) => el === document.activeElement), true,
      'the dialog opens on Cancel');
    assert.deepEqual(await axeViolations(alicePage), [], 'the confirm dialog');
    await alicePage.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    assert.equal(await wrong.locator('.text').textContent(), 'Wrong chat, sorry', 'not deleted when the user backs out');
    await wrong.getByRole('button', { name: 'Delete message' }).press('Enter');
    await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
    for (const page of [alicePage, bobPage]) {
      await expectTexts(page, ['The trip is on Saturday', 'This message was deleted.', 'Meet at the main gate',
        'This message was deleted.', 'See you', 'Pick-up at 4pm', 'Which door?', 'This message was deleted.']);
      assert.equal(await page.getByText('Wrong chat', { exact: false }).count(), 0, 'the deleted text is gone everywhere');
    }
    assert.equal(await preview(bobPage, 'Alice Teacher'), 'Message deleted');
    assert.equal(await messageLog(alicePage).locator('li.msg').last().getByRole('button').count(), 0, 'nothing to do with a tombstone');
    assert.deepEqual([...alicePage.dialogs, ...bobPage.dialogs], [], 'no browser dialogs');
    assert.deepEqual([...alicePage.pageErrors, ...bobPage.pageErrors], []);
  });

  it('a group\'s admin may delete anyone\'s message from the page (but edit only their own); a member may not delete the admin\'s', async () => {
    const group = await server.createGroup(alice, [bob], 'Trip helpers');
    await server.sendRest(alice.token, group.id, { content: 'Helpers meet at 8' });
    await server.sendRest(bob.token, group.id, { content: 'Selling raffle tickets, DM me' });
    for (const page of [alicePage, bobPage]) {
      await threadLink(page, 'Trip helpers').click();
      await messageLog(page).getByText('Selling raffle tickets').waitFor();
    }
    assert.equal(await row(bobPage, 'Helpers meet at 8').getByRole('button').count(), 0, "a member: nothing on the admin's message");
    const advert = row(alicePage, 'Selling raffle tickets');
    assert.equal(await advert.getByRole('button', { name: 'Edit message' }).count(), 0, 'the admin may not edit it');
    await advert.hover();
    await advert.getByRole('button', { name: 'Delete message' }).click();
    await alicePage.getByRole('dialog', { name: 'Delete this message?' }).getByRole('button', { name: 'Delete', exact: true }).click();
    for (const page of [alicePage, bobPage]) await expectTexts(page, ['Helpers meet at 8', 'This message was deleted.']);
    const history = await server.history(bob.token, group.id);
    assert.equal(history.find((m) => m.sender_id === bob.id && m.message_type !== 'system').deleted, true, 'deleted on the server');
    assert.deepEqual([...alicePage.pageErrors, ...bobPage.pageErrors], []);
  });

  // One's own deleted message kept its delivery tick (✓, ✓✓) beside "This
  // message was deleted.": a tombstone is delivered to no one.
  it('one\'s own deleted message shows no delivery tick', async () => {
    const cleo = await server.register({ username: `cleo_${randomId(3)}`, full_name: 'Cleo Parent', role: 'parent' });
    const dm = await server.createDirect(alice, cleo);
    await server.sendRest(cleo.token, dm.id, { content: 'Is the trip on?' });
    const ctx = await browser.newContext();
    try {
      const page = await openAs(ctx, base(), alice);
      await threadLink(page, 'Cleo Parent').click();
      await messageLog(page).getByText('Is the trip on?').waitFor();
      await sendFromComposer(page, 'Yes, Friday');
      await sendFromComposer(page, 'Sent to the wrong person');
      for (const text of ['Yes, Friday', 'Sent to the wrong person']) {
        await until(async () => (await row(page, text).locator('.tick').getAttribute('data-status').catch(() => null)) === 'sent',
          { what: `the tick of "${text}"` });
      }
      const mine = (await server.history(alice.token, dm.id)).find((m) => m.content === 'Sent to the wrong person');
      assert.equal((await remove(alice, mine.id)).status, 200);
      await expectTexts(page, ['Is the trip on?', 'Yes, Friday', 'This message was deleted.']);
      const tomb = messageLog(page).locator('li.msg.mine', { hasText: 'This message was deleted.' });
      assert.equal(await tomb.count(), 1);
      assert.equal(await tomb.locator('.tick').count(), 0, 'no tick on the deleted message');
      assert.equal(await row(page, 'Yes, Friday').locator('.tick').count(), 1, 'the other message keeps its tick');
      assert.deepEqual(page.pageErrors, []);
    } finally {
      await ctx.close();
    }
  });

  function base() { return `http://127.0.0.1:${server.port}`; }
});

describe('web app: an edit after the edit window', () => {
  let server; let base; let browser; let alice; let bob;

  before(async () => {
    ({ server, base, browser, alice, bob } = await startScene(['--edit-window', '2']));
    await server.createDirect(alice, bob);
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('is refused in plain words, the message stays as it was, and Edit is no longer offered on it or older ones', async () => {
    const alicePage = await openAs(await browser.newContext({ colorScheme: 'dark' }), base, alice);
    const bobPage = await openAs(await browser.newContext(), base, bob);
    await threadLink(alicePage, 'Bob Parent').click();
    await threadLink(bobPage, 'Alice Teacher').click();
    await sendFromComposer(alicePage, 'Older one');
    await sendFromComposer(alicePage, 'Too late to fix');
    await messageLog(bobPage).getByText('Too late to fix').waitFor();
    await sleep(3000);

    // The app cannot know the server's window, so Edit is offered until the server refuses.
    const late = row(alicePage, 'Too late to fix');
    await late.hover();
    await late.getByRole('button', { name: 'Edit message' }).click();
    const editor = alicePage.getByRole('textbox', { name: 'Edit message' });
    await editor.fill('Fixed too late');
    await editor.press('Enter');
    const note = messageLog(alicePage).locator('.msg-note');
    const tooLate = 'This message can no longer be edited: the time for editing it has passed.';
    await note.filter({ hasText: tooLate }).waitFor();
    assert.equal((await alicePage.locator('#announcer').textContent()).trim(), tooLate, 'said by the live region');
    await editor.waitFor({ state: 'detached' });
    for (const page of [alicePage, bobPage]) {
      assert.deepEqual(await messageTexts(page), ['Older one', 'Too late to fix']);
      assert.equal(await messageLog(page).locator('.edited').count(), 0);
    }
    for (const text of ['Older one', 'Too late to fix']) {
      assert.equal(await row(alicePage, text).getByRole('button', { name: 'Edit message' }).count(), 0, `no Edit on "${text}"`);
      assert.equal(await row(alicePage, text).getByRole('button', { name: 'Delete message' }).count(), 1, `Delete still on "${text}"`);
    }
    assert.deepEqual(await axeViolations(alicePage), [], 'the note, dark theme');
    await note.getByRole('button', { name: 'Dismiss' }).click();
    assert.equal(await note.count(), 0);
    assert.equal(await alicePage.locator('#announcer').textContent(), '', 'no longer said once dismissed');

    // Delete is still offered: its dialog in the dark theme.
    await late.getByRole('button', { name: 'Delete message' }).click();
    const dialog = alicePage.getByRole('dialog', { name: 'Delete this message?' });
    await dialog.waitFor();
    assert.deepEqual(await axeViolations(alicePage), [], 'the confirm dialog, dark theme');
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'detached' });

    // A message sent since is offered Edit again.
    await sendFromComposer(alicePage, 'A new one');
    await row(alicePage, 'A new one').getByRole('button', { name: 'Edit message' }).waitFor({ state: 'attached' });
    assert.deepEqual([...alicePage.pageErrors, ...bobPage.pageErrors], []);
  });
});

describe('web app: messages and the keyboard', () => {
  let server; let base; let browser; let alice; let bob;

  before(async () => {
    ({ server, base, browser, alice, bob } = await startScene());
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  // What has focus: a message (its text), a button (its name and the text it
  // is described by), or an element's id.
  const focused = (page) => page.evaluate(() => {
    const el = document.activeElement;
    if (el.matches('.log > li')) return `message: ${el.querySelector('.text')?.textContent}`;
    if (el.tagName === 'BUTTON') {
      const about = el.getAttribute('aria-describedby');
      return `button: ${el.getAttribute('aria-label') || el.textContent}${about ? ` (${document.getElementById(about)?.textContent})` : ''}`;
    }
    return el.id || el.tagName;
  });
  // Tab presses until the composer has focus (at most 50).
  async function tabsToComposer(page) {
    for (let n = 1; n <= 50; n++) {
      await page.keyboard.press('Tab');
      if (await page.evaluate(() => document.activeElement?.id === 'composer')) return n;
    }
    return Infinity;
  }

  it('the log is one tab stop: arrows move between messages, Tab reaches the current one\'s Edit and Delete, then the composer', async () => {
    const thread = await server.createDirect(alice, bob);
    await server.sendRest(alice.token, thread.id, { content: 'One' });
    await server.sendRest(bob.token, thread.id, { content: 'Two' });
    await server.sendRest(alice.token, thread.id, { content: 'Three' });
    const page = await openAs(await browser.newContext(), base, alice);
    await threadLink(page, 'Bob Parent').click();
    await messageLog(page).getByText('Three').waitFor();
    const video = page.getByRole('button', { name: 'Video call' });

    // From the header's last control, Tab goes to the newest message, then its actions, then out.
    await video.focus();
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'message: Three', 'Tab from the header: the newest message');
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'button: Edit message (Three)');
    await until(() => actionsShown(page, 'Three'), { what: 'the current message\'s actions shown on focus' });
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'button: Delete message (Three)');
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'composer', 'then the composer: no other message is a stop');

    // Shift+Tab comes back to the current message; the arrows, Home and End move it.
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(page), 'message: Three');
    await page.keyboard.press('ArrowUp');
    assert.equal(await focused(page), 'message: Two');
    assert.equal(await tabsToComposer(page), 1, 'someone else\'s message: nothing to stop at');
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(page), 'message: Two', 'the log remembers the current message');
    await page.keyboard.press('Home');
    assert.equal(await focused(page), 'message: One');
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'button: Edit message (One)', 'the actions of the current message, not the newest');
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('End');
    assert.equal(await focused(page), 'message: Three');
    await page.keyboard.press('ArrowDown');
    assert.equal(await focused(page), 'message: Three', 'nothing past the last');
    assert.equal(await messageLog(page).locator('[tabindex="0"]').count(), 3, 'one message and its two buttons');
    assert.deepEqual(await axeViolations(page), [], 'the log with a current message');

    // Many more messages change nothing in the Tab order.
    for (let i = 0; i < 40; i++) await server.sendRest(i % 2 ? bob.token : alice.token, thread.id, { content: `More ${i}` });
    await messageLog(page).getByText('More 39').waitFor();
    await video.focus();
    await page.keyboard.press('Tab');
    assert.match(await focused(page), /^message: /, 'Tab from the header: into the log');
    await page.keyboard.press('End');
    assert.equal(await focused(page), 'message: More 39');
    assert.equal(await tabsToComposer(page), 1, 'Bob\'s newest: straight to the composer');
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('ArrowUp');
    assert.equal(await focused(page), 'message: More 38');
    assert.equal(await tabsToComposer(page), 3, 'Alice\'s own: Edit, Delete, composer, as with three messages');

    // Up in the empty composer still edits one's last message.
    await page.keyboard.press('ArrowUp');
    const editor = page.getByRole('textbox', { name: 'Edit message' });
    assert.equal(await editor.inputValue(), 'More 38');
    await editor.press('Escape');
    await editor.waitFor({ state: 'detached' });
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });

  it('an editor whose message is deleted by someone else goes, and focus is back in the composer', async () => {
    const group = await server.createGroup(bob, [alice], 'Class 3B');
    await server.sendRest(alice.token, group.id, { content: 'Homework is page 12' });
    const mine = (await server.sendRest(alice.token, group.id, { content: 'Bring crayons' })).body.data;
    const page = await openAs(await browser.newContext(), base, alice);
    await threadLink(page, 'Class 3B').click();
    await messageLog(page).getByText('Bring crayons').waitFor();

    // Changed on another device while open: said so, and the user's text stays.
    const homework = row(page, 'Homework is page 12');
    await homework.hover();
    await homework.getByRole('button', { name: 'Edit message' }).click();
    const editor = page.getByRole('textbox', { name: 'Edit message' });
    await editor.fill('Homework is page 14');
    const first = (await server.history(alice.token, group.id)).find((m) => m.content === 'Homework is page 12');
    assert.equal((await server.http('PATCH', `/api/chat/messages/${first.id}`, { token: alice.token, body: { content: 'Homework is page 13' } })).status, 200);
    await page.getByRole('status').filter({ hasText: 'This message was changed elsewhere' }).waitFor();
    assert.equal(await editor.inputValue(), 'Homework is page 14', 'the user\'s text kept');
    assert.deepEqual(await axeViolations(page), [], 'the editor with its note');
    await editor.press('Escape');
    await editor.waitFor({ state: 'detached' });
    assert.equal(await row(page, 'Homework is page 13').count(), 1, 'cancelled: the newer edit stays');

    // Deleted by the group's admin while open: the editor goes, focus is in the composer.
    await page.getByRole('textbox', { name: 'Message' }).press('ArrowUp');
    assert.equal(await editor.inputValue(), 'Bring crayons');
    await editor.fill('Bring crayons and glue');
    assert.equal((await server.http('DELETE', `/api/chat/messages/${mine.id}`, { token: bob.token })).status, 200);
    await editor.waitFor({ state: 'detached' });
    await until(() => page.evaluate(() => document.activeElement?.id === 'composer'), { what: 'focus in the composer' });
    assert.deepEqual(await messageTexts(page), ['Homework is page 13', 'This message was deleted.']);
    // Nothing left open: Up edits the message still there.
    await page.getByRole('textbox', { name: 'Message' }).press('ArrowUp');
    assert.equal(await editor.inputValue(), 'Homework is page 13');
    await editor.press('Escape');
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });

  it('while a save is under way it says so, and Escape does not pretend to cancel it', async () => {
    const thread = await server.createGroup(alice, [bob], 'Slow line');
    await server.sendRest(alice.token, thread.id, { content: 'Lunch at noon' });
    const page = await openAs(await browser.newContext(), base, alice);
    await threadLink(page, 'Slow line').click();
    await messageLog(page).getByText('Lunch at noon').waitFor();
    const held = await holdPatches(page);
    await page.getByRole('textbox', { name: 'Message' }).press('ArrowUp');
    const editor = page.getByRole('textbox', { name: 'Edit message' });
    await editor.fill('Lunch at one');
    await editor.press('Enter');
    await messageLog(page).getByText('Saving…').waitFor();
    await editor.press('Escape');
    assert.equal(await editor.count(), 1, 'still open while the server is asked');
    held.release(0);
    await editor.waitFor({ state: 'detached' });
    await row(page, 'Lunch at one').locator('.edited').waitFor();
    await until(() => page.evaluate(() => document.activeElement?.id === 'composer'), { what: 'focus back in the composer' });
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });

  // The log announces additions only, so a change inside a message on screen
  // is said by the live region: someone else's edit, and a deletion this
  // screen did not ask for; never the user's own edits, nor a deletion made here.
  it('someone else\'s edit, and a deletion not made here, are said by the live region as they happen', async () => {
    const group = await server.createGroup(alice, [bob], 'Trip planning');
    const lunch = (await server.sendRest(alice.token, group.id, { content: 'Lunch at noon' })).body.data;
    const kit = (await server.sendRest(alice.token, group.id, { content: 'Swim kit on Monday' })).body.data;
    const gotIt = (await server.sendRest(bob.token, group.id, { content: 'Got it' })).body.data;
    await server.sendRest(bob.token, group.id, { content: 'Thanks, typo here' });
    const page = await openAs(await browser.newContext(), base, bob);
    await threadLink(page, 'Trip planning').click();
    await messageLog(page).getByText('Thanks, typo here').waitFor();
    const region = page.locator('#announcer');
    await region.evaluate((el) => {
      window.said = [];
      let last = el.textContent;
      new MutationObserver(() => {
        if (el.textContent !== last) window.said.push((last = el.textContent).trim());
      }).observe(el, { childList: true, subtree: true, characterData: true });
    });
    const edit = (user, id, content) => server.http('PATCH', `/api/chat/messages/${id}`, { token: user.token, body: { content } });
    const remove = (user, id) => server.http('DELETE', `/api/chat/messages/${id}`, { token: user.token });
    const said = () => page.evaluate(() => window.said);
    const saysNext = async (expected, what) => {
      await until(async () => (await said()).length === expected.length, { what }).catch(() => {});
      assert.deepEqual(await said(), expected, what);
    };

    assert.equal((await edit(alice, lunch.id, 'Lunch at one')).status, 200);
    await row(page, 'Lunch at one').waitFor();
    await saysNext(['Alice Teacher edited a message'], 'someone else\'s edit');
    // One's own edit on another device: shown, not said.
    assert.equal((await edit(bob, gotIt.id, 'Got it, thanks')).status, 200);
    await row(page, 'Got it, thanks').waitFor();
    // Deleted by the group's admin: one's own message, then the admin's.
    assert.equal((await remove(alice, gotIt.id)).status, 200);
    await saysNext(['Alice Teacher edited a message', 'Your message was deleted'], 'one\'s message deleted by the admin');
    assert.equal((await remove(alice, kit.id)).status, 200);
    await saysNext(['Alice Teacher edited a message', 'Your message was deleted', 'A message from Alice Teacher was deleted'],
      'someone else\'s deletion');
    // Deleted here: the page did it, nothing to say.
    const typo = row(page, 'Thanks, typo here');
    await typo.getByRole('button', { name: 'Delete message' }).focus();
    await typo.getByRole('button', { name: 'Delete message' }).press('Enter');
    const dialog = page.getByRole('dialog', { name: 'Delete this message?' });
    await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
    const tombstones = ['Lunch at one', 'This message was deleted.', 'This message was deleted.', 'This message was deleted.'];
    await until(async () => (await messageTexts(page)).join('|') === tombstones.join('|'), { what: 'the deletion shown' });
    await sleep(500);  // the deletion's own event, if it comes after the answer
    assert.deepEqual(await said(), ['Alice Teacher edited a message', 'Your message was deleted',
      'A message from Alice Teacher was deleted'], 'nothing said of one\'s own edit or of the deletion made here');
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });

  it('the editor\'s state is said by one live region, there and empty before the edit starts', async () => {
    const changed = 'This message was changed elsewhere while you were editing it. Saving replaces that change with your text.';
    const empty = 'A message cannot be empty. To remove it, delete it instead.';
    const group = await server.createGroup(alice, [bob], 'Said aloud');
    const choir = (await server.sendRest(alice.token, group.id, { content: 'Choir at five' })).body.data;
    const page = await openAs(await browser.newContext(), base, alice);
    await threadLink(page, 'Said aloud').click();
    await messageLog(page).getByText('Choir at five').waitFor();
    // The log says new messages, not each change inside one (a tick turning
    // to "read", an edit's label): those are heard when the message is read.
    assert.equal(await messageLog(page).getAttribute('aria-relevant'), 'additions');

    // Before any edit: a polite live region, empty, whose every change is recorded from now on.
    const region = page.locator('#announcer');
    assert.deepEqual(await region.evaluate((el) => [el.getAttribute('role'), el.getAttribute('aria-live'), el.textContent]),
      ['status', 'polite', '']);
    await region.evaluate((el) => {
      window.announcer = el;
      window.said = [];
      // Only changes of its text (Preact may write the same text again, which says nothing).
      let last = el.textContent;
      new MutationObserver(() => {
        if (el.textContent !== last) window.said.push((last = el.textContent).trim());
      }).observe(el, { childList: true, subtree: true, characterData: true });
    });
    const says = (text, what) => until(async () => (await region.textContent()).trim() === text, { what: `the live region saying ${what}` });

    await page.getByRole('textbox', { name: 'Message' }).press('ArrowUp');
    const editor = page.getByRole('textbox', { name: 'Edit message' });
    assert.equal(await editor.inputValue(), 'Choir at five');
    assert.equal(await region.textContent(), '', 'opening the editor says nothing');

    // Changed elsewhere: the note shows, and the region says it (the note is no live region of its own).
    await editor.fill('Choir at half five');
    assert.equal((await server.http('PATCH', `/api/chat/messages/${choir.id}`, { token: alice.token, body: { content: 'Choir at 5pm' } })).status, 200);
    await says(changed, 'the change elsewhere');
    assert.equal(await page.locator('#edit-changed').textContent(), changed, 'the visible note');
    assert.deepEqual(await page.locator('#edit-changed').evaluate((el) => [el.getAttribute('role'), el.getAttribute('aria-live')]), [null, null]);
    assert.deepEqual(await axeViolations(page), [], 'the editor with its note and the live region');

    // A slow save: "Saving…", then the server's refusal, then (saved) nothing.
    const held = await holdPatches(page);
    await editor.fill('   ');
    await editor.press('Enter');
    await says('Saving…', '"Saving…"');
    assert.equal(await page.locator('#edit-hint').textContent(), 'Saving…', 'the visible hint');
    // The editor sits in the message log, itself a live region: it is turned
    // off there, so "Saving…" is said once, by the region above.
    assert.equal(await page.locator('#edit-hint').evaluate((el) => el.closest('[aria-live]').getAttribute('aria-live')), 'off',
      'the hint is in no live region');
    held.release(0);
    await says(empty, 'the refusal');
    await messageLog(page).locator('.msg-note').filter({ hasText: empty }).waitFor();
    assert.equal(await editor.count(), 1, 'still editing');
    await editor.fill('Choir at six');
    await editor.press('Enter');
    await says('Saving…', '"Saving…" again');
    held.release(1);
    await editor.waitFor({ state: 'detached' });
    await row(page, 'Choir at six').locator('.edited').waitFor();
    await says('', 'nothing once saved');
    assert.deepEqual(await page.evaluate(() => window.said), [changed, 'Saving…', empty, 'Saving…', ''],
      'each step a change of the same region\'s text, "Saving…" twice');
    assert.equal(await page.evaluate(() => document.getElementById('announcer') === window.announcer), true, 'never replaced');
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });
});
