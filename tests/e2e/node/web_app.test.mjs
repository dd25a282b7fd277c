// The browser app served at /app/ (web/, embedded into the binary): the
// redirect of browsers from /, the plain text for everyone else, security
// headers, and caching by content hash.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import WebSocket from 'ws';
import { startServer, sleep, REPO_ROOT } from './harness.mjs';

const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

describe('web app at /app/', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('GET / from a browser (Accept: text/html) is redirected to /app/; curl still gets the plain text', async () => {
    const browser = await server.http('GET', '/', { headers: { Accept: BROWSER_ACCEPT } });
    assert.equal(browser.status, 302, browser.text);
    assert.equal(browser.headers.location, '/app/');
    const curl = await server.http('GET', '/', { headers: { Accept: '*/*' } });
    assert.equal(curl.status, 200);
    assert.match(curl.headers['content-type'], /^text\/plain/);
    assert.equal(curl.text, 'Parley chat server running');
    const bare = await server.http('GET', '/');
    assert.equal(bare.text, 'Parley chat server running');
    const noSlash = await server.http('GET', '/app');
    assert.equal(noSlash.status, 302);
    assert.equal(noSlash.headers.location, '/app/');
  });

  it('the app is read-only: another method is 405 with Allow, OPTIONS answers 204', async () => {
    const post = await server.http('POST', '/app/', { body: {} });
    assert.equal(post.status, 405, post.text);
    assert.equal(post.body.code, 'method_not_allowed');
    assert.equal(post.headers.allow, 'GET, HEAD, OPTIONS');
    const options = await server.http('OPTIONS', '/app/index.html');
    assert.equal(options.status, 204, options.text);
    assert.equal(options.headers.allow, 'GET, HEAD, OPTIONS');
  });

  it('index.html: strict CSP with no inline script, nosniff, no referrer, revalidated every time', async () => {
    const res = await server.http('GET', '/app/', { headers: { Accept: BROWSER_ACCEPT } });
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers['content-type'], /^text\/html; charset=utf-8/);
    const csp = res.headers['content-security-policy'];
    assert.ok(csp, 'a Content-Security-Policy header');
    assert.match(csp, /script-src 'self'(;|$)/, csp);
    assert.match(csp, /connect-src 'self'/, csp);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, csp);
    assert.match(csp, /frame-ancestors 'none'/, csp);
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.equal(res.headers['referrer-policy'], 'no-referrer');
    assert.equal(res.headers['cache-control'], 'no-cache');
    // No inline script or style in the page itself: every script has a src.
    assert.doesNotMatch(res.text, /<script(?![^>]*\bsrc=)[^>]*>/i, 'an inline <script>');
    assert.doesNotMatch(res.text, /<style|\sstyle=|\son[a-z]+=/i, 'inline style or handler');
    assert.doesNotMatch(res.text, /https?:\/\//, 'nothing from another host (no CDN)');
  });

  it('the hashed assets are immutable, typed, and under 150 KB compressed in all', async () => {
    const index = await server.http('GET', '/app/index.html');
    const assets = [...index.text.matchAll(/(?:src|href)="(assets\/[^"]+)"/g)].map((m) => m[1]);
    assert.ok(assets.some((a) => a.endsWith('.js')) && assets.some((a) => a.endsWith('.css')), `assets: ${assets}`);
    let compressed = 0;
    for (const a of assets) {
      assert.match(a, /-[A-Z0-9]{8}\.(js|css)$/, 'a content hash in the name');
      const res = await server.http('GET', `/app/${a}`);
      assert.equal(res.status, 200, a);
      assert.equal(res.headers['cache-control'], 'public, max-age=31536000, immutable', a);
      assert.match(res.headers['content-type'], a.endsWith('.js') ? /^text\/javascript/ : /^text\/css/);
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      compressed += zlib.gzipSync(Buffer.from(res.text)).length;
    }
    assert.ok(compressed < 150 * 1024, `first load is ${compressed} bytes compressed`);
  });

  it('an unknown file under /app/ is 404; the API is untouched', async () => {
    const missing = await server.http('GET', '/app/assets/nope-AAAAAAAA.js');
    assert.equal(missing.status, 404);
    const escape = await server.http('GET', '/app/../health');
    assert.notEqual(escape.status, 500);
    const health = await server.http('GET', '/health', { headers: { Accept: BROWSER_ACCEPT } });
    assert.equal(health.status, 200);
    assert.equal(health.body.status, 'ok');
  });
});

// The web app's client (web/src/parley-client.js, in Node with ws) names the
// threads it knows in its auth frame (docs/protocol.md, "Reconnecting in
// order"); what a server refuses of that list must not cost it a reconnect,
// a queued message or a thread's replay.
describe("the web app's client and its auth frame's subscribe list", () => {
  let ParleyClient;
  before(async () => {
    globalThis.WebSocket ??= WebSocket;
    ({ ParleyClient } = await import(pathToFileURL(path.join(REPO_ROOT, 'web', 'src', 'parley-client.js')).href));
  });

  const until = async (pred, what, ms = 10000) => {
    for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) if (await pred()) return;
    assert.fail(`waited in vain for ${what}`);
  };

  // `n` groups of `admin` with `member`, each with one message (seq 1); the client tracks each at 0.
  async function groups(server, admin, member, n) {
    const ids = [];
    for (let i = 0; i < n; i++) {
      const g = await server.createGroup(admin, [member], `g${i}`);
      await server.sendRest(admin.token, g.id, { content: `in g${i}` });
      ids.push(g.id);
    }
    return ids;
  }

  it('a server whose frame limit the list exceeds: the client reconnects without a list and keeps its queued message', async () => {
    const server = await startServer({ args: ['--max-frame-bytes', '2048'] });
    const c = new ParleyClient({ baseUrl: server.baseUrl, token: null });
    try {
      const [admin, bob] = await server.registerMany(2);
      c.token = bob.token;
      const ids = await groups(server, admin, bob, 30);  // 30 entries: about 3.5 KB
      for (const id of ids) c.track(id, 0);
      const closes = [];
      c.addEventListener('closed', (e) => closes.push(e.detail.code));
      const failed = [];
      c.addEventListener('failed', (e) => failed.push(e.detail));
      c.send(ids[0], 'queued before the first connection');
      c.connect();
      await until(() => c.state === 'online', 'online', 15000);
      assert.equal(closes[0], 1009, `the first auth frame was too large: ${closes}`);
      await until(async () => (await server.history(bob.token, ids[0])).some((m) => m.content === 'queued before the first connection'),
        'the queued message stored');
      assert.deepEqual(failed, [], 'nothing dropped as too large');
      for (const id of ids) await until(() => c.cursors.get(id) >= 1, `the replay of ${id}`);
    } finally {
      c.disconnect();
      await server.stop();
    }
  });

  it('entries cut by the rate limit are subscribed again a moment later', async () => {
    const server = await startServer({ args: ['--rate-burst', '12', '--rate-per-second', '50'] });
    const c = new ParleyClient({ baseUrl: server.baseUrl, token: null });
    try {
      const [admin, bob] = await server.registerMany(2);
      c.token = bob.token;
      const ids = await groups(server, admin, bob, 20);
      for (const id of ids) c.track(id, 0);
      const errors = [];
      c.addEventListener('frame', (e) => { if (e.detail.type === 'error') errors.push(e.detail); });
      // As the app does once online: the thread list tracks every thread,
      // which subscribes at once those the cut left out (refused again).
      c.addEventListener('state', async (e) => {
        if (e.detail.state !== 'online') return;
        for (const t of await c.threads()) c.track(t.id, 0);
      });
      c.connect();
      await until(() => c.state === 'online', 'online');
      for (const id of ids) await until(() => c.cursors.get(id) >= 1, `the replay of ${id}`, 15000);
      assert.ok(errors.some((f) => f.code === 'rate_limited' && String(f.request_id).startsWith('a:')),
        `the list was cut by the limit: ${JSON.stringify(errors.slice(0, 3))}`);
    } finally {
      c.disconnect();
      await server.stop();
    }
  });
});

// Copies of one message cross on their way to the web app (a history page
// read while an edit's event was in flight): the store keeps the newer
// (web/src/changes.js). Edits made on two nodes carry two clocks; the
// store's change numbers order them whatever those clocks say.
describe("the web app's order of a message's copies", () => {
  it('the copy with the higher change_no is the newer, whatever edited_at says; without numbers, edited_at decides', async () => {
    const { newerEdit } = await import(pathToFileURL(path.join(REPO_ROOT, 'web', 'src', 'changes.js')).href);
    const server = await startServer();
    try {
      const [alice, bob] = await server.registerMany(2);
      const dm = await server.createDirect(alice, bob);
      const sent = (await server.sendRest(alice.token, dm.id, { content: 'at 9' })).body.data;
      const edit = async (content) => {
        const r = await server.http('PATCH', `/api/chat/messages/${sent.id}`, { token: alice.token, body: { content } });
        assert.equal(r.status, 200, r.text);
        return r.body.data;
      };
      const first = await edit('at 10');
      const second = await edit('at 11');
      assert.ok(second.change_no > first.change_no, `numbered in order: ${first.change_no}, ${second.change_no}`);
      // The first edit as a node whose clock runs a minute fast stamps it.
      const skewed = { ...first, edited_at: new Date(Date.parse(second.edited_at) + 60000).toISOString() };
      assert.equal(newerEdit(skewed, second), true, 'the later edit replaces the earlier one');
      assert.equal(newerEdit(second, skewed), false, 'the earlier edit never replaces the later one');
      assert.equal(newerEdit(sent, first), true, 'an edit replaces the message as sent');
      const { change_no: _skewedNo, ...skewedWithout } = skewed;
      const { change_no: _secondNo, ...secondWithout } = second;
      assert.equal(newerEdit(secondWithout, skewedWithout), true, 'without numbers, the later edited_at wins');
      const gone = await server.http('DELETE', `/api/chat/messages/${sent.id}`, { token: alice.token });
      assert.equal(gone.status, 200, gone.text);
      assert.equal(newerEdit(gone.body.data, second), false, 'nothing comes after a deletion');
    } finally {
      await server.stop();
    }
  });
});
