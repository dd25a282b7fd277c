// Group conversations in the web app, seen from three accounts in three
// browser contexts: an admin creates a group from the UI and manages its
// members; the member added sees the group appear live, the member removed
// loses it live; a non-admin gets no add/remove controls; everyone else's
// messages carry their sender's name and role, once per run of messages.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomId, sleep } from '../node/harness.mjs';
import { openAs, threadLink, messageLog, sendFromComposer, until, startScene } from './browser.mjs';

const GROUP = 'Class 4B parents';

describe('web app: group management from the UI', () => {
  let server; let browser; let base; let alice; let bob; let carol;
  let alicePage; let bobPage; let carolPage;

  before(async () => {
    ({ server, base, browser, alice, bob } = await startScene());
    carol = await server.register({ username: `carol_${randomId(3)}`, full_name: 'Carol Parent', role: 'parent' });
    const viewport = { width: 1200, height: 760 };
    alicePage = await openAs(await browser.newContext({ viewport }), base, alice);
    bobPage = await openAs(await browser.newContext({ viewport }), base, bob);
    carolPage = await openAs(await browser.newContext({ viewport }), base, carol);
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  const members = (page) => page.getByRole('region', { name: 'Members' });

  it('the admin creates a group with a member; the member sees it appear live', async () => {
    await alicePage.getByRole('button', { name: 'New group' }).click();
    await alicePage.getByLabel('Group name').fill(GROUP);
    await alicePage.getByLabel('Add members').fill(bob.username);
    await alicePage.getByRole('list', { name: 'People found' }).getByRole('button', { name: /Bob Parent/ }).click();
    await alicePage.getByRole('button', { name: 'Create group' }).click();
    await alicePage.getByRole('heading', { name: GROUP }).waitFor();

    // No reload, and before any message: the new group is in Bob's list (thread_created).
    await threadLink(bobPage, GROUP).waitFor();
    assert.equal(await threadLink(carolPage, GROUP).count(), 0, 'Carol is not in it');
    await sendFromComposer(alicePage, 'Welcome to the group');
  });

  it('a non-admin sees the members but no add or remove controls', async () => {
    await threadLink(bobPage, GROUP).click();
    await messageLog(bobPage).getByText('Welcome to the group').waitFor();
    await bobPage.getByRole('button', { name: 'Members' }).click();
    await members(bobPage).getByText('Alice Teacher').waitFor();
    assert.equal(await members(bobPage).getByRole('button', { name: /^Remove/ }).count(), 0, 'no Remove buttons');
    assert.equal(await members(bobPage).getByLabel('Add by username').count(), 0, 'no add form');
    assert.equal(await members(bobPage).getByRole('button', { name: 'Leave' }).count(), 1, 'a member may leave');
    await bobPage.getByRole('button', { name: 'Members' }).click();
  });

  it('the admin adds a member by username: the group appears live for them', async () => {
    await alicePage.getByRole('button', { name: 'Members' }).click();
    await members(alicePage).getByLabel('Add by username').fill(carol.username);
    await members(alicePage).getByRole('button', { name: 'Add' }).click();
    await members(alicePage).getByText('Carol Parent').waitFor();
    assert.equal(await members(alicePage).getByRole('button', { name: 'Remove Carol Parent' }).count(), 1);

    await threadLink(carolPage, GROUP).waitFor({ timeout: 10000 });
    await threadLink(carolPage, GROUP).click();
    await carolPage.getByRole('heading', { name: GROUP }).waitFor();
    await carolPage.getByText('3 members').waitFor();
    // Bob's open conversation learns of the new member too (the system
    // message), which names both by their full names, not their usernames.
    await bobPage.getByText('3 members').waitFor();
    await messageLog(bobPage).locator('li.system', { hasText: 'Alice Teacher added Carol Parent' }).waitFor();
  });

  it("others' messages show the sender's name and role, once per run", async () => {
    await sendFromComposer(bobPage, 'Hi all, Bob here');
    await sendFromComposer(alicePage, 'Trip on Friday');
    await sendFromComposer(alicePage, 'Bring a coat');
    const log = messageLog(carolPage);
    await log.getByText('Bring a coat').waitFor();
    const sender = (text) => log.locator('li.msg', { hasText: text }).locator('.sender');
    assert.equal((await sender('Hi all, Bob here').textContent()).trim(), 'Bob Parent parent');
    assert.equal((await sender('Trip on Friday').textContent()).trim(), 'Alice Teacher teacher');
    assert.equal(await sender('Bring a coat').count(), 0, 'the second of a run is not named again');
    // One's own messages are not named.
    await messageLog(bobPage).getByText('Bring a coat').waitFor();
    assert.equal(await messageLog(bobPage).locator('li.msg.mine .sender').count(), 0);
    assert.equal((await messageLog(bobPage).locator('li.msg', { hasText: 'Trip on Friday' }).locator('.sender').textContent()).trim(),
      'Alice Teacher teacher');
  });

  // The server's status is "read" once anyone read; in a group the ticks go
  // blue only when every member has, and say how many have.
  it('group ticks: "Read by 1 of 2" while one member has read, blue once both have', async () => {
    await bobPage.evaluate(() => { location.hash = ''; });  // Bob has no conversation open
    await bobPage.getByText('Choose a conversation, or start one.').waitFor();
    await sendFromComposer(alicePage, 'Ticks for the class');
    await messageLog(carolPage).getByText('Ticks for the class').waitFor();  // Carol has it open: read
    const tick = messageLog(alicePage).locator('li.msg.mine', { hasText: 'Ticks for the class' }).locator('.tick');
    await until(async () => (await tick.getAttribute('aria-label')) === 'Read by 1 of 2', { what: 'Read by 1 of 2' });
    assert.equal(await tick.getAttribute('data-status'), 'delivered', 'not blue yet');
    await threadLink(bobPage, GROUP).click();
    await messageLog(bobPage).getByText('Ticks for the class').waitFor();
    await until(async () => (await tick.getAttribute('data-status')) === 'read', { what: 'blue once Bob read it too' });
    assert.equal(await tick.getAttribute('aria-label'), 'Read by everyone');
  });

  it('the admin removes a member: the group leaves their list live and they can no longer send', async () => {
    // One click asks first; Cancel keeps him. From the keyboard, focus goes
    // to the question's Cancel, back to Remove after it, and stays in the
    // members' box once he is gone: never to the page.
    const focused = () => alicePage.evaluate(() => (document.activeElement === document.body ? 'BODY'
      : `${document.activeElement.closest('[aria-label="Members"]') ? 'members: ' : ''}${document.activeElement.textContent.trim() || document.activeElement.id}`));
    await members(alicePage).getByRole('button', { name: 'Remove Bob Parent' }).focus();
    await alicePage.keyboard.press('Enter');
    await until(async () => (await focused()) === 'members: Cancel', { what: 'focus on the question\'s Cancel' });
    await alicePage.keyboard.press('Enter');
    await until(async () => (await focused()) === 'members: Remove Bob Parent', { what: 'focus back on Remove' });
    await sleep(300);
    assert.equal(await members(alicePage).getByText('Bob Parent').count(), 1, 'still a member after Cancel');
    await alicePage.keyboard.press('Enter');
    await members(alicePage).getByRole('button', { name: 'Yes, remove' }).focus();
    await alicePage.keyboard.press('Enter');
    await until(async () => (await members(alicePage).getByText('Bob Parent').count()) === 0, { what: 'Bob gone from the members' });
    await until(async () => (await focused()).startsWith('members: '), { what: `focus kept in the members' box (${await focused()})` });

    // Bob had the group open: it closes and leaves his list, without a reload.
    await until(async () => (await threadLink(bobPage, GROUP).count()) === 0, { what: 'the group gone from Bob\'s list' });
    await bobPage.getByText('Choose a conversation, or start one.').waitFor();
    const thread = (await server.http('GET', '/api/chat/threads', { token: alice.token })).body.data.threads
      .find((t) => t.title === GROUP);
    const res = await server.sendRest(bob.token, thread.id, { content: 'still here?' });
    assert.equal(res.status, 403, 'the server refuses his messages');

    // He is told why it went, until he dismisses it.
    const note = bobPage.locator('.removed-note');
    await note.getByText(`Alice Teacher removed you from ${GROUP}.`).waitFor();
    await note.getByRole('button', { name: 'Dismiss' }).click();
    assert.equal(await note.count(), 0, 'dismissed');

    // Carol, still a member, sees the group with two members, and the
    // system line names Bob by his full name though he is no longer in it.
    await carolPage.getByText('2 members').waitFor();
    await messageLog(carolPage).locator('li.system', { hasText: 'Alice Teacher removed Bob Parent' }).waitFor();
    assert.equal(await alicePage.locator('.removed-note').count(), 0, 'the admin who removed him is told nothing');
    for (const page of [alicePage, bobPage, carolPage]) assert.deepEqual(page.pageErrors, [], 'no uncaught errors');
  });

  // A group title of one long word (a pasted code, a name run together):
  // cut with … in the header and the list, never widening the page, on a
  // desktop and on a phone, and never under the header's buttons.
  it('Enter in "Find a person" opens the direct conversation, never a group; in "Add members" it picks the person', async () => {
    const ctx = await alicePage.context().browser().newContext({ viewport: { width: 1200, height: 760 } });
    const page = await openAs(ctx, base, alice);
    const created = [];
    page.on('request', (r) => { if (r.method() === 'POST' && r.url().endsWith('/api/chat/threads')) created.push(JSON.parse(r.postData())); });
    await page.getByRole('button', { name: 'New message' }).click();
    await until(() => page.evaluate(() => document.activeElement?.id === 'user-search'), { what: 'the search field focused' });
    await page.keyboard.type(carol.username);
    await page.getByRole('list', { name: 'People found' }).getByRole('button', { name: /Carol Parent/ }).waitFor();
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Carol Parent' }).waitFor();
    assert.ok(created.every((b) => b.type !== 'group'), `no group made: ${JSON.stringify(created)}`);

    await page.getByRole('button', { name: 'New group' }).click();
    await until(() => page.evaluate(() => document.activeElement?.id === 'group-title'), { what: 'the group name focused' });
    await page.keyboard.type('Enter test');
    await page.getByLabel('Add members').fill(carol.username);
    await page.getByRole('list', { name: 'People found' }).getByRole('button', { name: /Carol Parent/ }).waitFor();
    await page.getByLabel('Add members').press('Enter');
    await page.getByRole('list', { name: 'Members picked' }).getByText('Carol Parent').waitFor();
    assert.ok(created.every((b) => b.type !== 'group'), 'picked, not made yet');
    await page.getByRole('button', { name: 'Create group' }).click();
    await page.getByRole('heading', { name: 'Enter test' }).waitFor();
    assert.deepEqual(page.pageErrors, []);
    await ctx.close();
  });

  it('a long one-word group title never widens the page, on a desktop or a phone', async () => {
    const title = `Class5B_${'W'.repeat(150)}`;
    await server.createThread(alice.token, { type: 'group', title, usernames: [bob.username] });
    for (const viewport of [{ width: 1200, height: 760 }, { width: 390, height: 760 }]) {
      await bobPage.setViewportSize(viewport);
      await bobPage.goto(`${base}/app/`);
      const link = threadLink(bobPage, 'Class5B_');
      await link.waitFor();
      const wide = () => bobPage.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.equal(await wide(), 0, `${viewport.width} px: the list widens the page`);
      await link.click();
      const heading = bobPage.getByRole('heading', { name: title });
      await heading.waitFor();
      assert.equal(await wide(), 0, `${viewport.width} px: the conversation widens the page`);
      const h = await heading.boundingBox();
      const button = await bobPage.getByRole('button', { name: 'Members' }).boundingBox();
      assert.ok(h.x + h.width <= button.x, `${viewport.width} px: the title runs under the Members button`);
    }
    await bobPage.setViewportSize({ width: 1200, height: 760 });
  });

  it('a long name of one\'s own, or of a member, never widens the page either', async () => {
    const longName = `Maximiliana${'x'.repeat(150)} Featherstonehaugh`;
    const max = await server.register({ username: `max_${randomId(3)}`, full_name: longName, role: 'parent' });
    await server.createThread(alice.token, { type: 'group', title: 'Long names', usernames: [max.username] });
    for (const viewport of [{ width: 1200, height: 760 }, { width: 390, height: 760 }]) {
      const ctx = await alicePage.context().browser().newContext({ viewport });
      const page = await openAs(ctx, base, max);
      const wide = () => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.equal(await wide(), 0, `${viewport.width} px: one's own name in the header widens the page`);
      await threadLink(page, 'Long names').click();
      await page.getByRole('button', { name: 'Members' }).click();
      const leave = members(page).getByRole('button', { name: 'Leave' });
      await leave.waitFor();
      assert.equal(await wide(), 0, `${viewport.width} px: the members' list widens the page`);
      const box = await leave.boundingBox();
      assert.ok(box.x + box.width <= viewport.width, `${viewport.width} px: Leave is on screen (x ${box.x})`);
      await ctx.close();
    }
  });
});
