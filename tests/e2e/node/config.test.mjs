// Running the server: the CLI around `serve`, the Origin allow-list,
// disabling metrics, and settings from the environment.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startServer, randomId } from './harness.mjs';

describe('server configuration', () => {
  const servers = [];
  const start = async (opts) => { const s = await startServer(opts); servers.push(s); return s; };
  after(async () => { for (const s of servers) await s.stop(); });

  it('`parley user add` creates a user who can log in, by username and by phone', async () => {
    const server = await start();
    const username = `cli_${randomId(4)}`;
    const phone = `+1555${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
    await server.cli(['user', 'add', '--username', username, '--password', 'cli-password-1', '--full-name', 'Cli Made', '--role', 'teacher', '--phone', phone]);
    const byName = await server.http('POST', '/api/auth/login', { body: { username, password: 'cli-password-1' } });
    assert.equal(byName.status, 200, byName.text);
    assert.equal(byName.body.data.user.full_name, 'Cli Made');
    assert.equal(byName.body.data.user.role, 'teacher');
    const byPhone = await server.http('POST', '/api/auth/login', { body: { phone_number: phone, password: 'cli-password-1' } });
    assert.equal(byPhone.status, 200, byPhone.text);
  });

  it('`parley token --ttl` issues a token that expires', async () => {
    const server = await start();
    const u = await server.register();
    const { stdout } = await server.cli(['token', u.username, '--ttl', '1']);
    const token = stdout.trim();
    assert.equal((await server.http('GET', '/api/users/me', { token })).status, 200, 'valid at first');
    await new Promise((r) => setTimeout(r, 2100));
    const later = await server.http('GET', '/api/users/me', { token });
    assert.equal(later.status, 401, 'expired after its ttl');
    assert.equal(later.body.code, 'token_expired');
  });

  it('--allowed-origins refuses other browser Origins at the upgrade and admits listed ones and non-browsers', async () => {
    const server = await start({ args: ['--allowed-origins', 'http://good.example'] });
    const u = await server.register();
    const bad = await server.tryUpgrade(`/ws?token=${u.token}`, { headers: { Origin: 'http://evil.example' } });
    if (bad.opened) bad.client.terminate();
    assert.ok(!bad.opened, 'a foreign Origin must not open a WebSocket');
    assert.equal(bad.status, 403, `a foreign Origin is refused with 403, got ${bad.status}`);
    const good = await server.connect(u, { headers: { Origin: 'http://good.example' } });
    await good.ping();
    const none = await server.connect(u);
    await none.ping();
  });

  it('--no-metrics disables GET /metrics', async () => {
    const server = await start({ args: ['--no-metrics'] });
    const res = await server.http('GET', '/metrics');
    assert.equal(res.status, 404);
  });

  it('port, bind, data dir and secret can come from PARLEY_* environment variables', async () => {
    const server = await start({ viaEnv: true });
    const u = await server.register();
    assert.equal((await server.http('GET', '/api/users/me', { token: u.token })).status, 200);
    const { stdout } = await server.cli(['token', u.username]);
    assert.equal((await server.http('GET', '/api/users/me', { token: stdout.trim() })).status, 200,
      'a token minted with the same secret by the CLI works: the env secret was used');
    assert.ok(fs.readdirSync(server.dataDir).length > 0, 'the data went to PARLEY_DATA_DIR');
  });

  it('without a secret one is generated, persisted, and tokens survive a restart', async () => {
    const server = await start({ secret: null });
    const u = await server.register();
    await server.restart();
    const me = await server.http('GET', '/api/users/me', { token: u.token });
    assert.equal(me.status, 200, `a token from before the restart still works: ${me.text}`);
  });

  it('/metrics parley_connections and /health follow the open connections', async () => {
    const server = await start();
    const u = await server.register();
    const sample = async () => {
      const res = await server.http('GET', '/metrics');
      const m = res.text.match(/^parley_connections(?:\{[^}]*\})? (\d+(?:\.\d+)?)$/m);
      assert.ok(m, 'a parley_connections sample');
      return Number(m[1]);
    };
    const settle = async (expected) => {
      let value;
      for (let i = 0; i < 50; i++) {
        value = await sample();
        if (value === expected) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(value, expected, 'parley_connections');
    };
    await settle(0);
    const clients = [await server.connect(u), await server.connect(u), await server.connect(u)];
    await settle(3);
    const health = await server.http('GET', '/health');
    assert.ok(JSON.stringify(health.body).match(/connection[a-z_]*":\s*3\b/), `/health counts 3 connections: ${health.text}`);
    for (const c of clients) { c.close(); await c.waitClose(); }
    await settle(0);
  });

  it('HTTP keep-alive: many requests on one connection', async () => {
    const server = await start();
    const u = await server.register();
    const http = await import('node:http');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set();
    try {
      for (let i = 0; i < 20; i++) {
        const status = await new Promise((resolve, reject) => {
          const req = http.request({ host: '127.0.0.1', port: server.port, path: '/api/users/me', agent,
            headers: { Authorization: `Bearer ${u.token}` } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
          req.on('socket', (s) => sockets.add(s));
          req.on('error', reject);
          req.setTimeout(5000, () => req.destroy(new Error('timeout')));
          req.end();
        });
        assert.equal(status, 200, `request ${i + 1}`);
      }
      assert.equal(sockets.size, 1, 'all requests reused one connection');
    } finally {
      agent.destroy();
    }
  });
});
