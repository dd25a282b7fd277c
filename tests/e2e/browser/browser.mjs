// Helpers for the browser tests: Debian's Chromium driven by playwright-core
// against the real parley binary on loopback, and a small TCP proxy in front
// of the server so a test can cut the network or restart the server while the
// page keeps the same origin.
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { REPO_ROOT, HOST, sleep, startServer, randomId, listenOnTestPort } from '../node/harness.mjs';

export const CHROMIUM = process.env.PARLEY_CHROMIUM || '/usr/bin/chromium';

// The cast most browser tests start from: a server, a browser, and two
// users, a teacher and a parent. Resolves {server, base, browser, alice, bob}.
// serverArgs: extra flags for the server.
export async function startScene(serverArgs = []) {
  const server = await startServer({ args: serverArgs });
  const base = `http://127.0.0.1:${server.port}`;
  const browser = await launchBrowser();
  const alice = await server.register({ username: `alice_${randomId(3)}`, full_name: 'Alice Teacher', role: 'teacher' });
  const bob = await server.register({ username: `bob_${randomId(3)}`, full_name: 'Bob Parent', role: 'parent' });
  return { server, base, browser, alice, bob };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
    // Calls: fake camera and microphone, and ICE over loopback (the only
    // network a CI machine may have; Chromium skips it unless told).
    args: ['--no-sandbox', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      '--allow-loopback-in-peer-connection'],
  });
}

// Where the tests' screenshots go: docs/screenshots/ when
// PARLEY_UPDATE_SCREENSHOTS=1 (to refresh the committed ones), else a temp dir.
export function screenshotPath(name) {
  const dir = process.env.PARLEY_UPDATE_SCREENSHOTS === '1'
    ? path.join(REPO_ROOT, 'docs', 'screenshots')
    : path.join(process.env.TMPDIR || '/tmp', 'parley-screenshots');
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, `${name}.png`);
}

let axeSource = null;

// The serious and critical accessibility violations axe-core finds on the page as it is now.
export async function axeViolations(page) {
  axeSource ??= fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

// Opens the app as a user in a new page of the context, handing the token
// over in the URL fragment (the documented way for an outside sign-in).
export async function openAs(context, base, user) {
  const page = await context.newPage();
  trackErrors(page);
  await page.goto(`${base}/app/#token=${encodeURIComponent(user.token)}`);
  await page.getByRole('navigation', { name: 'Conversations' }).waitFor();
  await waitOnline(page);
  return page;
}

export async function waitOnline(page, timeout = 15000) {
  await page.waitForFunction(() => !document.querySelector('.banner') && !!document.querySelector('.threads-pane'), null, { timeout });
}

// Every uncaught page error and alert() is recorded; tests assert none happened.
export function trackErrors(page) {
  page.pageErrors = [];
  page.dialogs = [];
  page.on('pageerror', (e) => page.pageErrors.push(String(e)));
  page.on('dialog', (d) => { page.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
}

export function threadLink(page, name) {
  return page.getByRole('navigation', { name: 'Conversations' }).getByRole('link', { name: new RegExp(`^${name}`) });
}

export function messageLog(page) {
  return page.getByRole('log', { name: 'Messages' });
}

// The texts of the messages in the open conversation, in order.
export async function messageTexts(page) {
  return messageLog(page).locator('li.msg .text').allTextContents();
}

export async function sendFromComposer(page, text) {
  const box = page.getByRole('textbox', { name: 'Message' });
  await box.fill(text);
  await box.press('Enter');
}

// A TCP proxy on 127.0.0.1: cut() drops every connection and refuses new
// ones (the browser sees the network gone); resume() accepts again;
// stall() carries nothing but closes nothing; retarget(port) follows a
// restarted server.
export class Proxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.open = true;
  }

  async start() {
    this.server = net.createServer((client) => {
      if (!this.open) { client.destroy(); return; }
      const upstream = net.connect(this.targetPort, HOST);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {});
      }
      // Forwarded by hand, not piped, so that stall() can drop bytes.
      client.on('data', (d) => { if (!this.stalled) upstream.write(d); });
      upstream.on('data', (d) => { if (!this.stalled) client.write(d); });
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    this.port = await listenOnTestPort(this.server);
    this.base = `http://${HOST}:${this.port}`;
    return this;
  }

  cut() {
    this.open = false;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  resume() { this.open = true; }
  // Keeps every connection open but carries nothing (a network that went
  // silent: a NAT that forgot the connection); unstall() carries again.
  stall() { this.stalled = true; }
  unstall() { this.stalled = false; }
  retarget(port) { this.targetPort = port; }

  async close() {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

// Polls fn until it returns a truthy value (bounded).
export async function until(fn, { timeout = 10000, every = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}

// Keeps a test's WebRTC on loopback: remote ICE candidates other than
// 127.0.0.1 / ::1 are dropped before the browser sees them, so connectivity
// checks go to no other address (the machine's other interfaces included).
export async function loopbackOnlyWebRTC(context) {
  await context.addInitScript(() => {
    const isLoopback = (c) => / (127\.\d+\.\d+\.\d+|::1) \d+ typ /.test(` ${c} `.replace(/^ candidate:/, ' '));
    const add = RTCPeerConnection.prototype.addIceCandidate;
    RTCPeerConnection.prototype.addIceCandidate = function (candidate, ...rest) {
      const text = candidate && (candidate.candidate ?? '');
      if (text && !isLoopback(text)) return Promise.resolve();
      return add.call(this, candidate, ...rest);
    };
    const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
    RTCPeerConnection.prototype.setRemoteDescription = function (desc, ...rest) {
      if (desc && desc.sdp) {
        const sdp = desc.sdp.split('\r\n').filter((l) => !l.startsWith('a=candidate:') || isLoopback(l.slice(2))).join('\r\n');
        desc = { type: desc.type, sdp };
      }
      return setRemote.call(this, desc, ...rest);
    };
  });
}
