// The web app and what happens to a message after it was sent: edits and
// deletions reach every open screen at once (and a screen that was offline
// meanwhile once it is back), shown as the server says the message is now.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, randomId } from '../node/harness.mjs';
import { launchBrowser, openAs, threadLink, messageLog, messageTexts, until, waitOnline, Proxy } from './browser.mjs';

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

  it('a screen that was offline during an edit and a deletion shows them once it is back', async () => {
    const third = (await server.sendRest(alice.token, thread.id, { content: 'Meet at the gate' })).body.data;
    const fourth = (await server.sendRest(alice.token, thread.id, { content: 'My phone number is 555' })).body.data;
    await messageLog(bobPage).getByText('My phone number').waitFor();

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
    assert.deepEqual(alicePage.pageErrors, []);
    assert.deepEqual(bobPage.pageErrors, []);
  });

  function base() { return `http://127.0.0.1:${server.port}`; }
});
