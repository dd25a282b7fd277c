// The web app across `parley restore`: the restored server gives seqs past
// the backup's end again to new messages, so a page that kept its positions
// would skip them (seq 4 "seen" before the restore hides the new seq 4).
// connection_established carries the store's new store_id, and the app
// reloads itself: the messages sent on the restored server all show.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, PARLEY_BIN, TEST_STORE } from '../node/harness.mjs';
import { launchBrowser, openAs, threadLink, messageLog, messageTexts, until, Proxy } from './browser.mjs';

function parley(args) {
  return new Promise((resolve) => {
    execFile(PARLEY_BIN, args, { timeout: 60000 }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
  });
}

describe('web app: a server restored from a backup', { skip: TEST_STORE !== 'sqlite' && 'SQLite backups only' }, () => {
  const servers = [];
  let browser; let proxy; let dir;
  after(async () => {
    await browser?.close();
    await proxy?.close();
    for (const s of servers) await s.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reloads when the store changed, and shows the messages whose seqs it had seen before the restore', async () => {
    const secret = `restore-${crypto.randomBytes(16).toString('hex')}`;
    const server = await startServer({ secret });
    servers.push(server);
    const alice = await server.register({ full_name: 'Alice Teacher', role: 'teacher' });
    const bob = await server.register({ full_name: 'Bob Parent', role: 'parent' });
    const thread = await server.createDirect(alice, bob);
    const send = async (srv, texts) => {
      for (const content of texts) assert.equal((await srv.sendRest(alice.token, thread.id, { content })).status, 201);
    };
    await send(server, ['pre 1', 'pre 2', 'pre 3']);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-web-restore-'));
    const backup = path.join(dir, 'b.db');
    assert.equal((await parley(['backup', '--data-dir', server.dataDir, '--to', backup])).code, 0);

    proxy = await new Proxy(server.port).start();
    browser = await launchBrowser();
    const page = await openAs(await browser.newContext(), proxy.base, bob);
    await threadLink(page, 'Alice Teacher').click();
    await send(server, ['lost 4', 'lost 5']);  // not in the backup
    await messageLog(page).getByText('lost 5').waitFor();
    await page.evaluate(() => { window.__beforeRestore = true; });

    await server.stop({ removeData: false });
    const restoredDir = path.join(dir, 'restored');
    const restored = await parley(['restore', '--from', backup, '--data-dir', restoredDir]);
    assert.equal(restored.code, 0, restored.stderr);
    const again = await startServer({ secret, dataDir: restoredDir });
    servers.push(again);
    proxy.retarget(again.port);
    await send(again, ['after 4', 'after 5', 'after 6']);  // seqs 4..6 again

    // The page reloaded itself (its window is new) and shows the restored history.
    await until(async () => (await page.evaluate(() => window.__beforeRestore === undefined).catch(() => false)),
      { timeout: 30000, what: 'the page to reload itself' });
    await page.getByRole('navigation', { name: 'Conversations' }).waitFor();
    await threadLink(page, 'Alice Teacher').click();
    const want = ['pre 1', 'pre 2', 'pre 3', 'after 4', 'after 5', 'after 6'];
    let shown = [];
    await until(async () => JSON.stringify(shown = await messageTexts(page)) === JSON.stringify(want),
      { timeout: 15000, what: 'the restored history on screen' }).catch((err) => assert.deepEqual(shown, want, err.message));
    assert.deepEqual(page.pageErrors, []);
  });
});
