// Calls in the web app: WebRTC between two browser contexts with Chromium's
// fake camera and microphone, signalled through Parley's relayed frames.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomId } from '../node/harness.mjs';
import { openAs, threadLink, screenshotPath, until, loopbackOnlyWebRTC, startScene } from './browser.mjs';

// Every context a test opens, closed after it whatever happened: a test
// that failed half-way must not leave its users connected (and ringing) for
// the next ones.
const contexts = new Set();

async function callContext(browser, options = {}) {
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'], ...options });
  contexts.add(ctx);
  await loopbackOnlyWebRTC(ctx);
  return ctx;
}

describe('web app: calls', () => {
  let server; let browser; let base; let alice; let bob;

  before(async () => {
    ({ server, base, browser, alice, bob } = await startScene());
    const thread = await server.createDirect(alice, bob);
    await server.sendRest(alice.token, thread.id, { content: 'Can I call you?' });
  });
  afterEach(async () => {
    for (const ctx of contexts) await ctx.close().catch(() => {});
    contexts.clear();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('"is offline" when the callee has no connection', async () => {
    const ctx = await callContext(browser);
    const page = await openAs(ctx, base, alice);
    await threadLink(page, 'Bob Parent').click();
    await page.getByRole('button', { name: 'Audio call' }).click();
    await page.getByRole('dialog', { name: 'Call' }).getByText('Bob Parent is offline.').waitFor();
    await ctx.close();
  });

  it('a video call rings, is accepted, reaches "connected" on both sides, and hangs up', async () => {
    const aliceCtx = await callContext(browser, { viewport: { width: 1100, height: 700 } });
    const bobCtx = await callContext(browser);
    const alicePage = await openAs(aliceCtx, base, alice);
    const bobPage = await openAs(bobCtx, base, bob);
    await threadLink(alicePage, 'Bob Parent').click();

    await alicePage.getByRole('button', { name: 'Video call' }).click();
    const ringing = bobPage.getByRole('dialog', { name: 'Call' });
    await ringing.getByText('Alice Teacher is calling (video)').waitFor();
    await ringing.getByRole('button', { name: 'Accept' }).click();

    const status = (page) => page.locator('.call-status').getAttribute('data-status');
    await until(async () => (await status(alicePage)) === 'connected', { timeout: 20000, what: "Alice's call connected" });
    await until(async () => (await status(bobPage)) === 'connected', { timeout: 20000, what: "Bob's call connected" });
    // Media flows: the remote video has frames.
    await until(() => alicePage.evaluate(() => {
      const v = document.querySelector('video[aria-label="Their video"]');
      return v && v.videoWidth > 0;
    }), { timeout: 10000, what: 'remote video frames' });
    await alicePage.screenshot({ path: screenshotPath('call') });

    await alicePage.getByRole('button', { name: 'Hang up' }).click();
    await bobPage.getByText('Call ended.').waitFor();
    assert.equal(await alicePage.locator('.call-status[data-status=connected]').count(), 0);
    await aliceCtx.close();
    await bobCtx.close();
  });

  it('a declined call says so to the caller', async () => {
    const aliceCtx = await callContext(browser);
    const bobCtx = await callContext(browser);
    const alicePage = await openAs(aliceCtx, base, alice);
    const bobPage = await openAs(bobCtx, base, bob);
    await threadLink(alicePage, 'Bob Parent').click();
    await alicePage.getByRole('button', { name: 'Audio call' }).click();
    await bobPage.getByRole('button', { name: 'Decline' }).click();
    await alicePage.getByText('Call declined.').waitFor();
    await aliceCtx.close();
    await bobCtx.close();
  });

  // An offer rings on every device of the callee; the server relays the
  // answer and the end to the callee's other devices too.
  it('rings on each of the callee\'s devices; answered or declined on one, the others stop ringing', async () => {
    const aliceCtx = await callContext(browser);
    const alicePage = await openAs(aliceCtx, base, alice);
    const bobPhone = await openAs(await callContext(browser), base, bob);
    const bobLaptop = await openAs(await callContext(browser), base, bob);
    await threadLink(alicePage, 'Bob Parent').click();
    const dialog = (page) => page.getByRole('dialog', { name: 'Call' });
    const status = (page) => page.locator('.call-status').getAttribute('data-status');
    const rings = async (page) => (await page.locator('.call-status[data-status=ringing]').count()) === 1;
    const stopsRinging = (page, what) => until(async () => !(await rings(page)), { timeout: 10000, what });

    // Declined on the phone: the laptop stops ringing too.
    await alicePage.getByRole('button', { name: 'Audio call' }).click();
    for (const page of [bobPhone, bobLaptop]) await dialog(page).getByText('Alice Teacher is calling (audio)').waitFor();
    await dialog(bobPhone).getByRole('button', { name: 'Decline' }).click();
    await alicePage.getByText('Call declined.').waitFor();
    await stopsRinging(bobLaptop, 'the laptop to stop ringing after the decline');
    await until(async () => (await alicePage.locator('.call').count()) === 0, { what: 'the caller\'s panel gone' });

    // Answered on the laptop: the phone stops ringing, the laptop's call goes on.
    await alicePage.getByRole('button', { name: 'Audio call' }).click();
    for (const page of [bobPhone, bobLaptop]) await dialog(page).getByText('Alice Teacher is calling (audio)').waitFor();
    await dialog(bobLaptop).getByRole('button', { name: 'Accept' }).click();
    await stopsRinging(bobPhone, 'the phone to stop ringing once the laptop answered');
    await until(async () => (await status(bobLaptop)) === 'connected', { timeout: 20000, what: 'the laptop connected' });
    await until(async () => (await status(alicePage)) === 'connected', { timeout: 20000, what: 'Alice connected' });

    // Hung up on the laptop: nothing rings anywhere afterwards.
    await dialog(bobLaptop).getByRole('button', { name: 'Hang up' }).click();
    await alicePage.getByText('Call ended.').waitFor();
    assert.equal(await rings(bobPhone), false);
    for (const page of [alicePage, bobPhone, bobLaptop]) assert.deepEqual(page.pageErrors, []);
    await aliceCtx.close();
    await bobPhone.context().close();
    await bobLaptop.context().close();
  });

  // Nobody answers (the time is moved on with Playwright's clock): the caller
  // gives up after 45 s and says so, and the callee stops ringing; a caller
  // whose browser went away without hanging up stops ringing the callee too.
  it('an unanswered call ends by itself on both sides, the caller\'s browser gone included', async () => {
    const aliceCtx = await callContext(browser);
    await aliceCtx.clock.install();
    const bobCtx = await callContext(browser);
    await bobCtx.clock.install();
    const alicePage = await openAs(aliceCtx, base, alice);
    const bobPage = await openAs(bobCtx, base, bob);
    await threadLink(alicePage, 'Bob Parent').click();
    const ringing = bobPage.getByRole('dialog', { name: 'Call' }).getByText('Alice Teacher is calling (audio)');

    await alicePage.getByRole('button', { name: 'Audio call' }).click();
    await ringing.waitFor();
    await alicePage.clock.fastForward(46000);
    await alicePage.getByText('No answer.').waitFor();
    await bobPage.getByText('Missed call.').waitFor();
    assert.equal(await ringing.count(), 0, 'the callee stopped ringing');

    // The caller's browser closes while it rings (no call_end is sent).
    await bobPage.clock.fastForward(5000);  // the "Missed call." note goes
    const caller = await openAs(await callContext(browser), base, alice);
    await threadLink(caller, 'Bob Parent').click();
    await caller.getByRole('button', { name: 'Audio call' }).click();
    await ringing.waitFor();
    await caller.context().close();
    await bobPage.clock.fastForward(51000);
    await bobPage.getByText('Missed call.').waitFor();
    assert.equal(await ringing.count(), 0, 'the callee stopped ringing');
    assert.deepEqual(bobPage.pageErrors, []);
    await aliceCtx.close();
    await bobCtx.close();
  });

  // The camera and microphone belong to the session: signing out during a
  // call (or while one rings) stops them and ends the call for the other side.
  it('signing out during a call or while it rings stops the camera and microphone and ends the call', async () => {
    // Records every capture stream the page opens, to read their tracks' state.
    const recording = async (ctx) => {
      await ctx.addInitScript(() => {
        window.__streams = [];
        const get = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
        navigator.mediaDevices.getUserMedia = async (...args) => { const st = await get(...args); window.__streams.push(st); return st; };
      });
      return ctx;
    };
    const liveTracks = (page) => page.evaluate(() => window.__streams.flatMap((st) => st.getTracks()).filter((t) => t.readyState === 'live').length);
    const aliceCtx = await recording(await callContext(browser));
    const bobCtx = await recording(await callContext(browser));
    const alicePage = await openAs(aliceCtx, base, alice);
    const bobPage = await openAs(bobCtx, base, bob);
    await threadLink(alicePage, 'Bob Parent').click();
    const status = (page) => page.locator('.call-status').getAttribute('data-status');

    // In a call: Bob signs out.
    await alicePage.getByRole('button', { name: 'Video call' }).click();
    await bobPage.getByRole('dialog', { name: 'Call' }).getByRole('button', { name: 'Accept' }).click();
    await until(async () => (await status(bobPage)) === 'connected', { timeout: 20000, what: "Bob's call connected" });
    assert.ok(await liveTracks(bobPage) > 0, "Bob's camera and microphone are on in the call");
    await bobPage.getByRole('button', { name: 'Sign out' }).click();
    await until(async () => (await liveTracks(bobPage)) === 0, { timeout: 5000, what: "Bob's camera and microphone stopped" });
    await alicePage.getByText('Call ended.').waitFor({ timeout: 10000 });
    await until(async () => (await liveTracks(alicePage)) === 0, { timeout: 10000, what: "Alice's camera and microphone stopped" });

    // Calling: Alice signs out while Bob's devices ring.
    const bobAgain = await openAs(await recording(await callContext(browser)), base, bob);
    await until(async () => (await alicePage.locator('.call').count()) === 0, { timeout: 10000, what: "Alice's panel gone" });
    await alicePage.getByRole('button', { name: 'Audio call' }).click();
    await bobAgain.getByRole('dialog', { name: 'Call' }).getByText('Alice Teacher is calling (audio)').waitFor();
    await until(async () => (await liveTracks(alicePage)) > 0, { timeout: 10000, what: "Alice's microphone on while calling" });
    await alicePage.getByRole('button', { name: 'Sign out' }).click();
    await until(async () => (await liveTracks(alicePage)) === 0, { timeout: 5000, what: "Alice's microphone stopped" });
    await until(async () => (await bobAgain.locator('.call-status[data-status=ringing]').count()) === 0,
      { timeout: 10000, what: "Bob's device stopped ringing" });
    assert.deepEqual([...alicePage.pageErrors, ...bobPage.pageErrors, ...bobAgain.pageErrors], []);
  });

  // A direct thread nobody has written in yet is not in the callee's list:
  // the ringing panel used to read "Call is calling (audio)". It names the
  // caller from the thread itself.
  it('a call in a new direct thread with no message yet names the caller', async () => {
    const carol = await server.register({ username: `carol_${randomId(3)}`, full_name: 'Carol Parent', role: 'parent' });
    const aliceCtx = await callContext(browser);
    const carolCtx = await callContext(browser);
    const alicePage = await openAs(aliceCtx, base, alice);
    const carolPage = await openAs(carolCtx, base, carol);
    await alicePage.getByRole('button', { name: 'New message' }).click();
    await alicePage.getByLabel('Find a person').fill(carol.username);
    await alicePage.getByRole('list', { name: 'People found' }).getByRole('button', { name: /Carol Parent/ }).click();
    await alicePage.getByRole('heading', { name: 'Carol Parent' }).waitFor();
    assert.equal(await threadLink(carolPage, 'Alice Teacher').count(), 0, "the thread is not in Carol's list (nothing written yet)");

    await alicePage.getByRole('button', { name: 'Audio call' }).click();
    const dialog = carolPage.getByRole('dialog', { name: 'Call' });
    await dialog.locator('.call-status[data-status=ringing]').waitFor();
    let said = '';
    await until(async () => (said = (await dialog.locator('.call-status').textContent()).trim()).includes('Alice Teacher is calling (audio)'),
      { timeout: 10000, what: 'the caller named' }).catch((err) => assert.fail(`${err.message}: the panel reads "${said}"`));
    assert.equal(await dialog.getByText('Call is calling').count(), 0);
    await dialog.getByRole('button', { name: 'Decline' }).click();
    await alicePage.getByText('Call declined.').waitFor();
    assert.deepEqual([...alicePage.pageErrors, ...carolPage.pageErrors], []);
    await aliceCtx.close();
    await carolCtx.close();
  });
});
