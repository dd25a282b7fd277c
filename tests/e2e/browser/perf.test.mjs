// Web app performance, measured (not asserted: timings depend on the
// machine; docs/webapp.md records a run): the first load's size and time to
// interactive, and scrolling back through a 10,000-message conversation.
// What is asserted is what must hold on any machine: the size budget, that
// scroll-back reaches far back in order, and that the DOM keeps a bounded
// window of messages however far the reader scrolls.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { openAs, threadLink, messageLog, until, startScene } from './browser.mjs';

const TOTAL = 10000;

async function seed(server, users, threadId) {
  let next = 1;
  async function worker() {
    while (next <= TOTAL) {
      const i = next++;
      const who = users[i % 2];
      const res = await server.sendRest(who.token, threadId, { content: `message ${i} ${'lorem ipsum '.repeat(i % 7)}`, client_msg_id: `p-${i}` });
      if (res.status !== 201) throw new Error(`seed ${i}: ${res.status} ${res.text}`);
    }
  }
  await Promise.all(Array.from({ length: 12 }, worker));
}

describe('web app: performance', () => {
  let server; let browser; let base; let alice; let bob; let thread;
  const report = {};

  before(async () => {
    // The seed writes 10,000 messages over REST as fast as it can, past the
    // per-user limit on REST writes that a real client stays under.
    ({ server, base, browser, alice, bob } = await startScene(['--rest-rate-per-second', '100000', '--rest-rate-burst', '100000']));
    thread = await server.createDirect(alice, bob);
  });
  after(async () => {
    console.log(`web performance: ${JSON.stringify(report)}`);
    await browser?.close();
    await server?.stop();
  });

  it('first load: JS + CSS under 150 KB compressed; time to interactive measured', async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const sizes = [];
    page.on('response', async (res) => {
      if (/\.(js|css)$/.test(res.url())) sizes.push(zlib.gzipSync(await res.body()).length);
    });
    await page.goto(`${base}/app/`);
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    const t = await page.evaluate(() => ({
      interactive: performance.getEntriesByName('parley-interactive')[0]?.startTime,
      domContentLoaded: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
    }));
    const compressed = sizes.reduce((a, b) => a + b, 0);
    report.first_load_gzip_bytes = compressed;
    report.interactive_ms = Math.round(t.interactive);
    report.dom_content_loaded_ms = Math.round(t.domContentLoaded);
    assert.equal(sizes.length, 2, 'one script and one stylesheet');
    assert.ok(compressed < 150 * 1024, `${compressed} bytes`);
    assert.ok(t.interactive > 0, 'the app marks when it is interactive');
    await ctx.close();
  });

  it(`a ${TOTAL}-message conversation opens at its end and scrolls back page by page`, async () => {
    const started = Date.now();
    await seed(server, [alice, bob], thread.id);
    report.seed_seconds = (Date.now() - started) / 1000;

    const ctx = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    const page = await openAs(ctx, base, bob);
    const opened = Date.now();
    await threadLink(page, 'Alice Teacher').click();
    // (Seeded by 12 writers at once: seq order, not the text's number, is the order.)
    await messageLog(page).locator(`li[data-seq="${TOTAL}"]`).waitFor();
    report.open_conversation_ms = Date.now() - opened;

    // Frame intervals while scrolling back with the mouse wheel.
    await page.evaluate(() => {
      window.__frames = [];
      let last = performance.now();
      const loop = (now) => { window.__frames.push(now - last); last = now; if (window.__frames.length < 100000) requestAnimationFrame(loop); };
      requestAnimationFrame(loop);
    });
    await page.locator('.messages').hover();
    const steps = 150;
    for (let i = 0; i < steps; i++) {
      await page.mouse.wheel(0, -1200);
      await page.waitForTimeout(40);
    }
    await page.waitForTimeout(500);
    const result = await page.evaluate(() => {
      const frames = window.__frames.slice(1).sort((a, b) => a - b);
      const seqs = [...document.querySelectorAll('.log li[data-seq]')].map((li) => Number(li.dataset.seq));
      return {
        frames: frames.length,
        p50: frames[Math.floor(frames.length * 0.5)],
        p95: frames[Math.floor(frames.length * 0.95)],
        max: frames[frames.length - 1],
        over_50ms: frames.filter((f) => f > 50).length,
        seqs,
        dom_nodes: document.getElementsByTagName('*').length,
      };
    });
    const inDom = result.seqs.length;
    const oldest = result.seqs[0];
    Object.assign(report, {
      scroll_wheel_steps: steps,
      scrolled_back_messages: TOTAL - oldest,
      messages_in_dom: inDom,
      frame_ms_p50: Math.round(result.p50 * 10) / 10,
      frame_ms_p95: Math.round(result.p95 * 10) / 10,
      frame_ms_max: Math.round(result.max),
      frames_over_50ms: result.over_50ms,
      frames: result.frames,
      dom_nodes: result.dom_nodes,
    });
    assert.ok(TOTAL - oldest > 1000, `scrolling back went past 1000 older messages (at seq ${oldest})`);
    assert.ok(inDom <= 300, `the DOM holds a window of the conversation (${inDom} messages)`);
    for (let i = 1; i < result.seqs.length; i++) assert.equal(result.seqs[i], result.seqs[i - 1] + 1, 'gapless, ascending');
    assert.ok(result.frames > steps, 'frames kept coming while scrolling');

    // Scrolling down again slides the window forward; the button jumps to the newest.
    await page.mouse.wheel(0, 3000);
    await page.waitForTimeout(300);
    await page.getByRole('button', { name: 'Newest messages' }).click();
    await messageLog(page).locator(`li[data-seq="${TOTAL}"]`).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Newest messages' }).count(), 0);
    await ctx.close();
  });
});
