// The web app coming back: a conversation that began while this device was
// offline is caught up (and acknowledged) on reconnection, not left until
// the next one; what was written before a session ended by itself (revoked
// tokens) is kept and sent once the user is signed in again; a connection
// that went silent is noticed and opened again; a system message ("X added
// Y") seen in an open conversation is marked read like any other.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, randomId } from '../node/harness.mjs';
import { launchBrowser, openAs, threadLink, messageLog, sendFromComposer, until, waitOnline, Proxy } from './browser.mjs';

describe('web app: coming back after being away', () => {
  let server; let proxy; let browser;

  before(async () => {
    server = await startServer();
    proxy = await new Proxy(server.port).start();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await proxy?.close();
    await server?.stop();
  });

  const person = (name, role = 'parent') => server.register({ username: `${name}_${randomId(3)}`, full_name: `${name} ${randomId(2)}`, role });
  const myMarks = async (user, threadId) => {
    const res = await server.http('GET', `/api/chat/threads/${threadId}`, { token: user.token });
    assert.equal(res.status, 200, res.text);
    const thread = res.body.data;
    return thread.participants.find((p) => p.user_id === user.id);
  };

  it('a group created while the app was offline is caught up and acknowledged on the first reconnection', async () => {
    proxy.resume();
    const alice = await person('alice', 'teacher');
    const bob = await person('bob');
    // Bob already has a conversation, so the app has threads to resubscribe.
    const dm = await server.createDirect(alice, bob);
    assert.equal((await server.sendRest(alice.token, dm.id, { content: 'known' })).status, 201);
    const page = await openAs(await browser.newContext(), proxy.base, bob);
    proxy.cut();
    await page.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    const group = await server.createGroup(alice, [bob], `while away ${randomId(2)}`);
    for (let i = 1; i <= 3; i++) assert.equal((await server.sendRest(alice.token, group.id, { content: `away ${i}` })).status, 201);
    proxy.resume();
    await waitOnline(page, 30000);
    await threadLink(page, group.title).waitFor();
    // Subscribed on this connection: the three were replayed and acknowledged.
    await until(async () => (await myMarks(bob, group.id)).last_delivered_seq >= 3,
      { timeout: 10000, what: 'bob\'s delivery mark at 3 for the new group' });
  });

  it('a message written before the session was revoked is kept and sent once after signing in again', async () => {
    proxy.resume();
    const alice = await person('alice', 'teacher');
    const bob = await person('bob');
    const thread = await server.createDirect(alice, bob);
    const ctx = await browser.newContext();
    const page = await openAs(ctx, proxy.base, bob);
    await threadLink(page, alice.user.full_name).click();
    proxy.cut();
    await page.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    await sendFromComposer(page, 'written offline');
    await until(async () => (await messageLog(page).locator('li.pending').count()) === 1, { what: 'a pending message' });
    await server.cli(['user', 'revoke-tokens', bob.username]);
    proxy.resume();
    // Refused on reconnection: signed out with a notice, the message kept.
    await page.getByRole('button', { name: /sign in/i }).first().waitFor({ timeout: 30000 });
    const kept = await page.evaluate((id) => JSON.parse(localStorage.getItem(`parley.outbox.${id}`) || '[]').length, bob.id);
    assert.equal(kept, 1, 'the outbox survived the revocation');
    const login = await server.http('POST', '/api/auth/login', { body: { username: bob.username, password: bob.password } });
    assert.equal(login.status, 200, login.text);
    await openAs(ctx, proxy.base, { ...bob, token: login.body.data.token });
    await until(async () => (await server.history(alice.token, thread.id)).some((m) => m.content === 'written offline'),
      { timeout: 15000, what: 'the kept message on the server' });
    const history = await server.history(alice.token, thread.id);
    assert.equal(history.filter((m) => m.content === 'written offline').length, 1, 'sent once');
  });

  it('a connection that goes silent is given up and opened again; what was written meanwhile is sent', { timeout: 120000 }, async () => {
    proxy.resume();
    proxy.unstall();
    const alice = await person('alice', 'teacher');
    const bob = await person('bob');
    const thread = await server.createDirect(alice, bob);
    const page = await openAs(await browser.newContext(), proxy.base, bob);
    await threadLink(page, alice.user.full_name).click();
    proxy.stall();
    await sendFromComposer(page, 'into the silence');
    // A ping every 20 s, 10 s for an answer: offline within about 30 s.
    await page.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor({ timeout: 45000 });
    proxy.unstall();
    await waitOnline(page, 30000);
    await until(async () => (await server.history(alice.token, thread.id)).some((m) => m.content === 'into the silence'),
      { timeout: 15000, what: 'the message sent after the reconnection' });
  });

  it('a link with another account\'s token switches only after the user agrees', async () => {
    proxy.resume();
    const alice = await person('alice', 'teacher');
    const mallory = await person('mallory');
    const ctx = await browser.newContext();
    await openAs(ctx, proxy.base, alice);
    const signedIn = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('parley.session') || '{}').user?.id);
    const open = async (answer) => {
      const page = await ctx.newPage();
      const asked = [];
      page.on('dialog', (d) => { asked.push(d.message()); (answer ? d.accept() : d.dismiss()).catch(() => {}); });
      await page.goto(`${proxy.base}/app/#token=${encodeURIComponent(mallory.token)}`);
      await page.getByRole('navigation', { name: 'Conversations' }).waitFor();
      return { page, asked };
    };
    const declined = await open(false);
    assert.equal(declined.asked.length, 1, 'asked before switching');
    assert.match(declined.asked[0], new RegExp(mallory.username));
    assert.equal(await signedIn(declined.page), alice.id, 'declined: still alice');
    const accepted = await open(true);
    assert.equal(accepted.asked.length, 1);
    await until(async () => (await signedIn(accepted.page)) === mallory.id, { what: 'switched to mallory' });
  });

  it('a system message seen in an open group is marked read: the unread count goes to zero', async () => {
    proxy.resume();
    proxy.unstall();
    const alice = await person('alice', 'teacher');
    const bob = await person('bob');
    const carol = await person('carol');
    const group = await server.createGroup(alice, [bob], `with a notice ${randomId(2)}`);
    assert.equal((await server.sendRest(alice.token, group.id, { content: 'hello' })).status, 201);
    const added = await server.http('POST', `/api/chat/threads/${group.id}/participants`,
      { token: alice.token, body: { participant_ids: [carol.id] } });
    assert.ok(added.status === 200 || added.status === 201, added.text);
    const page = await openAs(await browser.newContext(), proxy.base, bob);
    await threadLink(page, group.title).click();
    await messageLog(page).locator('li.system').first().waitFor();
    await until(async () => {
      const res = await server.http('GET', '/api/chat/unread-count', { token: bob.token });
      return res.status === 200 && res.body.data.unread_count === 0;
    }, { timeout: 10000, what: 'bob\'s unread count at 0' });
  });
});
