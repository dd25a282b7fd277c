// The web app and a long outbox: more messages written offline than the
// server's rate limit lets through in one burst. Sent all at once on
// reconnection, most were refused and 50 refusals in a row closed the
// connection (1008), round after round, so they never all went. Paced by the
// server's answers, they all arrive once each, in order, on one connection.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, randomId } from '../node/harness.mjs';
import {
  launchBrowser, openAs, threadLink, messageLog, messageTexts, sendFromComposer, until, Proxy,
} from './browser.mjs';

const QUEUED = 120;
const BURST = 30;

describe('web app: an outbox longer than the rate limit allows at once', () => {
  let server; let proxy; let browser; let alice; let bob; let thread;

  before(async () => {
    server = await startServer({ args: ['--rate-burst', String(BURST), '--rate-per-second', '1000'] });
    proxy = await new Proxy(server.port).start();
    browser = await launchBrowser();
    alice = await server.register({ username: `alice_${randomId(3)}`, full_name: 'Alice Teacher', role: 'teacher' });
    bob = await server.register({ username: `bob_${randomId(3)}`, full_name: 'Bob Parent', role: 'parent' });
    thread = await server.createDirect(alice, bob);
    await server.sendRest(alice.token, thread.id, { content: 'before', client_msg_id: 'b0' });
  });
  after(async () => {
    await browser?.close();
    await proxy?.close();
    await server?.stop();
  });

  it(`${QUEUED} messages queued offline (burst ${BURST}) reach the other side once each, in order, without a 1008`, async () => {
    // Alice goes through the proxy (so her network can be cut), Bob straight to the server.
    const aliceCtx = await browser.newContext();
    // Every close code of the page's WebSockets, to tell a 1008 (flooding) apart.
    await aliceCtx.addInitScript(() => {
      const Native = window.WebSocket;
      window.closeCodes = [];
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          this.addEventListener('close', (e) => window.closeCodes.push(e.code));
        }
      };
    });
    const alicePage = await openAs(aliceCtx, proxy.base, alice);
    const bobPage = await openAs(await browser.newContext(), `http://127.0.0.1:${server.port}`, bob);
    await threadLink(alicePage, 'Bob Parent').click();
    await threadLink(bobPage, 'Alice Teacher').click();
    await messageLog(alicePage).getByText('before').waitFor();
    await messageLog(bobPage).getByText('before').waitFor();

    proxy.cut();
    await alicePage.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor();
    const texts = Array.from({ length: QUEUED }, (_, i) => `queued ${i + 1}`);
    for (const t of texts) await sendFromComposer(alicePage, t);
    await until(async () => (await messageLog(alicePage).locator('li.pending').count()) === QUEUED,
      { what: `${QUEUED} pending messages` });

    let refused = 0;
    alicePage.on('websocket', (ws) => ws.on('framereceived', (f) => {
      if (String(f.payload).includes('"rate_limited"')) refused += 1;
    }));
    proxy.resume();
    // The browser's "online" event reconnects at once instead of after the backoff.
    await alicePage.evaluate(() => window.dispatchEvent(new Event('online')));

    const expected = ['before', ...texts];
    let shown = [];
    await until(async () => JSON.stringify(shown = await messageTexts(bobPage)) === JSON.stringify(expected),
      { timeout: 60000, what: `all ${QUEUED} on Bob's screen, once each, in order` }).catch(async (err) => {
      const codes = await alicePage.evaluate(() => window.closeCodes);
      assert.fail(`${err.message}: ${shown.length} shown, ${refused} refusals, close codes ${codes}`);
    });
    const stored = (await server.history(bob.token, thread.id)).map((m) => m.content);
    assert.deepEqual(stored, expected, 'stored once each, in the order written');
    await until(async () => (await messageLog(alicePage).locator('li.pending').count()) === 0, { what: 'nothing pending' });
    assert.deepEqual(await messageTexts(alicePage), expected, "Alice's screen");
    const codes = await alicePage.evaluate(() => window.closeCodes);
    assert.ok(!codes.includes(1008), `no connection closed for flooding (close codes ${codes})`);
    console.log(`outbox: ${refused} rate_limited refusals, close codes ${JSON.stringify(codes)}`);
    assert.deepEqual(alicePage.pageErrors, []);
  });
});

// Messages written quickly while online, faster than the server's rate limit
// lets through: the server refuses some with rate_limited, a refusal that may
// pass, and the app sends each again 2 s later. With several of one
// conversation's messages in flight at once, the ones sent meanwhile were
// stored before the refused one: the conversation was stored scrambled.
describe('web app: messages written faster than the rate limit', () => {
  const WRITTEN = 36;
  let server; let browser; let alice; let bob; let thread;

  before(async () => {
    server = await startServer({ args: ['--rate-per-second', '4', '--rate-burst', '8'] });
    browser = await launchBrowser();
    alice = await server.register({ username: `alice_${randomId(3)}`, full_name: 'Alice Teacher', role: 'teacher' });
    bob = await server.register({ username: `bob_${randomId(3)}`, full_name: 'Bob Parent', role: 'parent' });
    thread = await server.createDirect(alice, bob);
    await server.sendRest(bob.token, thread.id, { content: 'first', client_msg_id: 'f0' });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it(`${WRITTEN} messages typed quickly in one conversation, some refused as rate_limited, are stored in the order written`, async () => {
    const ctx = await browser.newContext();
    // The rate_limited refusals the page receives, on any of its connections.
    await ctx.addInitScript(() => {
      const Native = window.WebSocket;
      window.rateLimited = 0;
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          this.addEventListener('message', (e) => { if (String(e.data).includes('"rate_limited"')) window.rateLimited += 1; });
        }
      };
    });
    const page = await openAs(ctx, server.baseUrl, alice);
    const refusals = () => page.evaluate(() => window.rateLimited);
    await threadLink(page, 'Bob Parent').click();
    await messageLog(page).getByText('first').waitFor();

    const texts = Array.from({ length: WRITTEN }, (_, i) => `quick ${i + 1}`);
    for (const t of texts) await sendFromComposer(page, t);
    const expected = ['first', ...texts];
    let stored = [];
    await until(async () => (stored = (await server.history(bob.token, thread.id)).map((m) => m.content)).length >= expected.length,
      { timeout: 90000, every: 500, what: `all ${WRITTEN} stored` }).catch((err) => {
      assert.fail(`${err.message}: ${stored.length - 1} stored`);
    });
    const refused = await refusals();
    assert.ok(refused > 0, 'the rate limit refused some (else this test shows nothing)');
    assert.deepEqual(stored, expected, `stored once each, in the order written (${refused} rate_limited refusals)`);
    await until(async () => (await messageLog(page).locator('li.pending').count()) === 0, { what: 'nothing pending' });
    assert.deepEqual(await messageTexts(page), expected, "Alice's screen");
    assert.deepEqual(page.pageErrors, []);
    await ctx.close();
  });
});
