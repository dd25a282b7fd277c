// The web app's session against time and an absent server: a token is
// renewed before it expires (the app stays signed in past the first token's
// expiry, its connection too), and the app opened while the server cannot be
// reached says so, then connects by itself once the server answers, without
// a reload. Signing out in one tab signs out the user's other tabs. (An
// expired token that cannot be renewed leading back to sign-in is in
// chat.test.mjs.)
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mintToken, sleep, randomId, startServer } from '../node/harness.mjs';
import { openAs, trackErrors, threadLink, messageLog, until, waitOnline, startScene } from './browser.mjs';

describe('web app: token renewal and an unreachable server', () => {
  let server; let browser; let base; let alice; let bob; let thread;

  before(async () => {
    ({ server, base, browser, alice, bob } = await startScene());
    thread = await server.createDirect(alice, bob);
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('renews its token before it expires and stays signed in, connection included, past the first expiry', async () => {
    const ctx = await browser.newContext();
    // The first renewal finds the server out of reach: it is tried again
    // while the token still lives.
    let refreshes = 0;
    await ctx.route(/\/api\/auth\/refresh$/, (route) => (++refreshes === 1 ? route.abort('connectionrefused') : route.continue()));
    const now = Math.floor(Date.now() / 1000);
    // 30 s of life: renewal due at now+24 (80 %), the retry after the refused
    // try a third of the 6 s left later (now+26), 4 s before exp; a shorter
    // life left too little room for a slow page load on a loaded machine.
    const first = mintToken(server.secret, { sub: alice.id, username: alice.username, iat: now, exp: now + 30 });
    const page = await openAs(ctx, base, { token: first });
    const saved = () => page.evaluate(() => JSON.parse(localStorage.getItem('parley.session') || 'null'));

    // Renewed at 80 % of its life (and again soon after the failed try): the
    // saved token changes before exp.
    await until(async () => { const s = await saved(); return s && s.token !== first; }, { timeout: 30000, what: 'a renewed token' });
    assert.equal(refreshes, 2, 'one refused try, then the renewal');
    const renewed = (await saved()).token;
    const payload = JSON.parse(Buffer.from(renewed.split('.')[1], 'base64url').toString());
    assert.ok(payload.exp > now + 60, 'the new token lives longer than the first');

    // Past the first token's exp (the server closes a connection whose token
    // expired about a second after it): still signed in, still live.
    await sleep(Math.max(0, (now + 32) * 1000 - Date.now()));
    assert.equal(await page.getByRole('button', { name: 'Sign in' }).count(), 0, 'still signed in');
    await waitOnline(page);
    await threadLink(page, 'Bob Parent').click();
    await server.sendRest(bob.token, thread.id, { content: 'after the first token expired' });
    await messageLog(page).getByText('after the first token expired').waitFor({ timeout: 10000 });
    assert.equal(await page.getByRole('button', { name: 'Sign in' }).count(), 0, 'still signed in');

    // A reload starts from the renewed token.
    await page.reload();
    await page.getByRole('navigation', { name: 'Conversations' }).waitFor();
    await waitOnline(page);
    assert.deepEqual(page.pageErrors, []);
    await ctx.close();
  });

  // A reload late in a short token's life: the renewal used to wait at
  // least 5 s from the load, past the expiry, so it was refused and the app
  // went to "Your session has expired". It must come while the token is good.
  it('a reload with 5 s of a 20-second token left renews it before it expires and stays signed in', async () => {
    const short = await startServer({ args: ['--token-ttl', '20'] });
    const ctx = await browser.newContext();
    try {
      const carol = await short.register({ username: `carol_${randomId(3)}`, full_name: 'Carol Parent', role: 'parent' });
      const { exp } = JSON.parse(Buffer.from(carol.token.split('.')[1], 'base64url').toString());
      // The first page's own renewal (due at 80 %, 4 s before exp) must not
      // come before the reload: refused as out of reach until then.
      const net = { renew: false };
      await ctx.route(/\/api\/auth\/refresh$/, (route) => (net.renew ? route.continue() : route.abort('connectionrefused')));
      const page = await openAs(ctx, short.baseUrl, carol);
      const renewals = [];  // statuses of POST /api/auth/refresh after the reload, and when
      page.on('response', (r) => {
        if (net.renew && r.url().endsWith('/api/auth/refresh')) renewals.push({ status: r.status(), at: Date.now() });
      });
      const saved = () => page.evaluate(() => JSON.parse(localStorage.getItem('parley.session') || 'null'));
      const reloadAt = exp * 1000 - 5000;
      assert.ok(Date.now() < reloadAt, `the page opened ${Date.now() - reloadAt} ms too late for the test`);
      await sleep(reloadAt - Date.now());
      assert.equal((await saved())?.token, carol.token, 'not renewed before the reload');
      net.renew = true;
      await page.reload();
      await page.getByRole('navigation', { name: 'Conversations' }).waitFor({ timeout: 5000 });

      // Past the first token's exp (the server closes a connection whose
      // token expired about a second after it): still signed in.
      await sleep(Math.max(0, (exp + 2) * 1000 - Date.now()));
      const granted = renewals.filter((r) => r.status === 200);
      assert.equal(await page.getByText('Your session has expired').count(), 0, `no "session expired" (renewals: ${JSON.stringify(renewals.map((r) => ({ status: r.status, ms_before_exp: exp * 1000 - r.at })))})`);
      assert.equal(await page.getByRole('button', { name: 'Sign in' }).count(), 0, 'still signed in');
      assert.ok(granted.length >= 1 && granted[0].at < exp * 1000, 'renewed (200) before the first token expired');
      assert.notEqual((await saved())?.token, carol.token, 'the renewed token is saved');
      await waitOnline(page);
      assert.deepEqual(page.pageErrors, []);
    } finally {
      await ctx.close();
      await short.stop();
    }
  });

  // Two tabs of one browser share the saved session. Signing out in one used
  // to leave the other signed in, and receiving the user's messages.
  it('signing out in one tab signs out the other; a renewed token does not, another account signing in does', async () => {
    const dora = await server.register({ username: `dora_${randomId(3)}`, full_name: 'Dora Parent', role: 'parent' });
    await server.createDirect(alice, dora);
    const ctx = await browser.newContext();
    const tabA = await ctx.newPage();
    trackErrors(tabA);
    const sockets = new Set();  // tab A's open WebSockets
    tabA.on('websocket', (ws) => { sockets.add(ws); ws.on('close', () => sockets.delete(ws)); });
    await tabA.goto(`${base}/app/#token=${encodeURIComponent(dora.token)}`);
    await waitOnline(tabA);
    const tabB = await openAs(ctx, base, dora);
    const signedIn = async (page) => (await page.getByRole('navigation', { name: 'Conversations' }).count()) === 1;

    // A renewal in tab B saves a new token for the same user.
    const now = Math.floor(Date.now() / 1000);
    const renewed = mintToken(server.secret, { sub: dora.id, username: dora.username, iat: now, exp: now + 3600 });
    await tabB.evaluate((token) => {
      const saved = JSON.parse(localStorage.getItem('parley.session'));
      localStorage.setItem('parley.session', JSON.stringify({ ...saved, token }));
    }, renewed);
    await sleep(500);
    assert.ok(await signedIn(tabA), 'tab A still signed in after the renewal');
    assert.equal(sockets.size, 1, "tab A's connection still open");

    await tabB.getByRole('button', { name: 'Sign out' }).click();
    await tabA.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 5000 });
    assert.match(await tabA.getByRole('status').textContent(), /signed out in another tab/);
    await until(() => sockets.size === 0, { timeout: 5000, what: "tab A's connection closed" });

    // Tab A signs in again; then tab B as another account: tab A goes, and
    // leaves tab B's saved session alone.
    await tabA.getByLabel('Username').fill(dora.username);
    await tabA.getByLabel('Password').fill(dora.password);
    await tabA.getByRole('button', { name: 'Sign in' }).click();
    await waitOnline(tabA);
    await tabB.getByLabel('Username').fill(alice.username);
    await tabB.getByLabel('Password').fill(alice.password);
    await tabB.getByRole('button', { name: 'Sign in' }).click();
    await waitOnline(tabB);
    await tabA.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 5000 });
    assert.match(await tabA.getByRole('status').textContent(), new RegExp(`Signed in as ${alice.username} in another tab`));
    await until(() => sockets.size === 0, { timeout: 5000, what: "tab A's connection closed" });
    assert.ok(await signedIn(tabB), 'tab B stays signed in');
    const saved = await tabB.evaluate(() => JSON.parse(localStorage.getItem('parley.session')));
    assert.equal(saved.user.id, alice.id, "tab B's session is the one saved");
    assert.deepEqual(tabA.pageErrors, []);
    assert.deepEqual(tabB.pageErrors, []);
    await ctx.close();
  });

  // A renewal whose answer comes while a reconnection is opening (its `auth`
  // sent with the old token, `connection_established` not back yet): the
  // connection takes the new token as soon as it is established. It used to
  // wait 5 s, and an old token that expired meanwhile signed the user out.
  it('a renewal landing while a reconnection opens: the new token goes as soon as the connection is established', async () => {
    const ctx = await browser.newContext();
    const now = Math.floor(Date.now() / 1000);
    // Renewal due at once (80 % of its life is past): 5 s after the app opens.
    const first = mintToken(server.secret, { sub: alice.id, username: alice.username, iat: now - 4 * 3600, exp: now + 3600 });
    const DELAY = 1500;  // what the server says reaches the page this late (a slow link)
    const sockets = [];
    await ctx.routeWebSocket(/\/ws$/, (ws) => {
      const entry = { ws, sent: [], establishedAt: 0 };
      sockets.push(entry);
      const upstream = ws.connectToServer();
      ws.onMessage((m) => { entry.sent.push({ at: Date.now(), m: String(m) }); upstream.send(m); });
      upstream.onMessage((m) => setTimeout(() => {
        if (String(m).includes('"connection_established"')) entry.establishedAt = Date.now();
        ws.send(m);
      }, DELAY));
      upstream.onClose(() => ws.close().catch(() => {}));
    });
    let renewed = null;
    await ctx.route(/\/api\/auth\/refresh$/, async (route) => {
      if (renewed) return route.continue();
      renewed = 'asked';
      // The connection drops just as the renewal is asked for; its answer
      // comes once the next connection has sent its auth (old token).
      const before = sockets.length;
      for (const s of sockets) s.ws.close().catch(() => {});
      await until(() => sockets.length > before && sockets.at(-1).sent.length > 0, { timeout: 10000, what: 'the next connection opening' });
      renewed = 'answered';
      await route.continue();
    });
    const page = await openAs(ctx, base, { token: first });
    await until(() => renewed === 'answered', { timeout: 15000, what: 'the renewal asked for during a reconnection' });
    const conn = sockets.at(-1);
    await until(() => conn.establishedAt > 0, { timeout: 10000, what: 'the connection established' });
    let renewal;
    await until(() => (renewal = conn.sent.find((e) => e.m.includes('"auth"') && !e.m.includes(first))), {
      timeout: 3000, what: 'the new token sent on the connection within 3 s of its establishment',
    });
    assert.ok(renewal.at - conn.establishedAt < 2500, `sent ${renewal.at - conn.establishedAt} ms after the connection was established`);
    await waitOnline(page);
    assert.equal(await page.getByRole('button', { name: 'Sign in' }).count(), 0, 'still signed in');
    assert.deepEqual(page.pageErrors, []);
    await ctx.close();
  });

  // The app's files load but its API and WebSocket are refused: what a
  // browser sees when it opens a cached app (or one served by a server whose
  // API is down) while the server is out of reach.
  async function unreachable(ctx) {
    const net = { down: true };
    await ctx.route(/\/api\//, (route) => (net.down ? route.abort('connectionrefused') : route.continue()));
    await ctx.routeWebSocket(/\/ws$/, (ws) => { if (net.down) ws.close(); else ws.connectToServer(); });
    return net;
  }

  it('opened with a handed-over token while the server is out of reach: says so, then opens by itself', async () => {
    const ctx = await browser.newContext();
    const net = await unreachable(ctx);
    const page = await ctx.newPage();
    trackErrors(page);
    await page.goto(`${base}/app/#token=${encodeURIComponent(alice.token)}`);
    await page.getByRole('status').filter({ hasText: 'Cannot reach the server' }).waitFor();
    assert.equal(await page.getByRole('navigation', { name: 'Conversations' }).count(), 0);

    net.down = false;
    await page.getByRole('navigation', { name: 'Conversations' }).waitFor({ timeout: 20000 });
    await waitOnline(page);
    await threadLink(page, 'Bob Parent').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Sign in' }).count(), 0);
    assert.deepEqual(page.pageErrors, []);
    await ctx.close();
  });

  it('opened with a saved session while the server is out of reach: a banner, then connected and live without a reload', async () => {
    const ctx = await browser.newContext();
    const first = await openAs(ctx, base, bob);  // saves the session on this device
    await first.close();
    const net = await unreachable(ctx);
    const page = await ctx.newPage();
    trackErrors(page);
    await page.goto(`${base}/app/`);
    await page.getByRole('navigation', { name: 'Conversations' }).waitFor();
    await page.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    await sleep(1500);  // a few refused reconnections
    assert.equal(await page.locator('.banner').count(), 1, 'the banner stays while the server is out of reach');

    net.down = false;
    await waitOnline(page, 30000);
    await threadLink(page, 'Alice Teacher').click();
    await server.sendRest(alice.token, thread.id, { content: 'you are connected' });
    await messageLog(page).getByText('you are connected').waitFor({ timeout: 10000 });
    await until(async () => (await page.locator('.banner').count()) === 0, { what: 'no banner' });
    assert.deepEqual(page.pageErrors, []);
    await ctx.close();
  });

  // An administrator acts on an open session (`parley user disable`,
  // `parley user revoke-tokens`): the server says why and closes the
  // connection with 4403. The app goes to sign-in saying so, and stops
  // connecting: every try would only be refused again.
  for (const [command, notice] of [['disable', /Your account has been disabled/], ['revoke-tokens', /signed out on all devices/]]) {
    it(`parley user ${command} on an open session: the sign-in screen says why, and no more connections`, async () => {
      const carol = await server.register({ username: `carol_${randomId(3)}`, full_name: 'Carol Parent', role: 'parent' });
      await server.createDirect(alice, carol);
      const ctx = await browser.newContext();
      const page = await openAs(ctx, base, carol);
      const other = await openAs(ctx, base, carol);  // another tab: it says why too, not "signed out in another tab"
      let sockets = 0;
      page.on('websocket', () => { sockets += 1; });
      await server.cli(['user', command, carol.username]);
      await page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 10000 });
      assert.match(await page.getByRole('status').textContent(), notice);
      await other.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 10000 });
      assert.match(await other.getByRole('status').textContent(), notice, 'the other tab');
      await sleep(3000);  // past a reconnection's first backoff
      assert.equal(sockets, 0, 'no connection after the refusal');
      assert.equal(await page.evaluate(() => localStorage.getItem('parley.session')), null, 'the session is forgotten');
      assert.deepEqual(page.pageErrors, []);
      await ctx.close();
    });
  }
});
