// The web app and a message the server refuses for good (here: over the
// 4,000-character limit): the writer is told, the message leaves the outbox
// (not "waiting to send" forever, nor sent again on every connection or
// after a reload), and what is written next goes as usual.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openAs, threadLink, messageLog, messageTexts, sendFromComposer, until, startScene } from './browser.mjs';

describe('web app: a message the server refuses', () => {
  let server; let browser; let base; let alice; let bob; let thread;

  before(async () => {
    ({ server, base, browser, alice, bob } = await startScene());
    thread = await server.createDirect(alice, bob);
    await server.sendRest(alice.token, thread.id, { content: 'Please send the form back' });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('is shown as not sent with the reason, leaves the outbox, and can be discarded', async () => {
    const ctx = await browser.newContext();
    const page = await openAs(ctx, base, bob);
    await threadLink(page, 'Alice Teacher').click();
    await messageLog(page).getByText('Please send the form back').waitFor();

    await sendFromComposer(page, 'x'.repeat(4001));
    const note = messageLog(page).getByRole('alert');
    await note.waitFor({ timeout: 10000 });
    assert.match(await note.textContent(), /Not sent: .*4000/);
    assert.equal(await messageLog(page).locator('li.pending').count(), 0, 'not waiting to send');
    assert.equal(await messageLog(page).locator('li.failed [data-status=failed]').count(), 1);
    const outbox = () => page.evaluate(() => Object.keys(localStorage)
      .filter((k) => k.startsWith('parley.outbox')).flatMap((k) => JSON.parse(localStorage.getItem(k))));
    assert.deepEqual(await outbox(), [], 'not kept to be sent again');

    // What is written next goes as usual, and lands before nothing stuck.
    await sendFromComposer(page, 'Sorry, here is the short version');
    await until(async () => (await messageLog(page).locator('[data-status=sent], [data-status=delivered], [data-status=read]').count()) === 1,
      { what: 'the next message sent' });

    await note.getByRole('button', { name: 'Discard' }).click();
    assert.equal(await messageLog(page).locator('li.failed').count(), 0);

    // A reload (a new connection) does not send it again.
    const resent = [];
    page.on('websocket', (ws) => ws.on('framesent', (f) => { if (String(f.payload).includes('xxxxxxxx')) resent.push(f.payload); }));
    await page.reload();
    await threadLink(page, 'Alice Teacher').click();
    await messageLog(page).getByText('Sorry, here is the short version').waitFor();
    await page.waitForTimeout(1000);
    assert.equal(resent.length, 0, 'not sent again');
    assert.deepEqual(await messageTexts(page), ['Please send the form back', 'Sorry, here is the short version']);
    assert.deepEqual(page.pageErrors, []);
    await ctx.close();
  });
  it('one over the server\'s frame limit (the connection closes with 1009) is not sent again on each connection', async () => {
    const ctx = await browser.newContext();
    // Every frame over 64 KiB the page sends, and every close code it sees.
    await ctx.addInitScript(() => {
      const Native = window.WebSocket;
      window.bigSends = 0;
      window.closeCodes = [];
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          this.addEventListener('close', (e) => window.closeCodes.push(e.code));
        }
        send(data) {
          if (String(data).length > 65536) window.bigSends += 1;
          return super.send(data);
        }
      };
    });
    const page = await openAs(ctx, base, bob);
    await threadLink(page, 'Alice Teacher').click();
    await messageLog(page).getByText('Please send the form back').waitFor();
    // Over 64 KiB in one frame: the server closes the connection (1009)
    // before it reads the content's length.
    await sendFromComposer(page, 'y'.repeat(70000));
    const note = messageLog(page).getByRole('alert');
    await note.waitFor({ timeout: 10000 });
    assert.match(await note.textContent(), /Not sent: .*too large/);
    await page.getByRole('status').filter({ hasText: /Offline|Connecting/ }).waitFor({ state: 'detached', timeout: 15000 }).catch(() => {});
    await sendFromComposer(page, 'the short one');
    await until(async () => (await messageTexts(page)).includes('the short one') &&
      (await messageLog(page).locator('[data-status=sent], [data-status=delivered], [data-status=read]').count()) >= 1,
    { what: 'the next message sent' });
    await page.waitForTimeout(1500);  // a resend would follow the reconnection at once
    assert.equal(await page.evaluate(() => window.bigSends), 1, 'sent once, not again on the next connection');
    assert.deepEqual(await page.evaluate(() => window.closeCodes), [1009], 'one connection closed for it');
    assert.deepEqual(page.pageErrors, []);
    await ctx.close();
  });
});
