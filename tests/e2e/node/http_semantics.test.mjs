// HTTP semantics at the edge: the status codes a well-behaved HTTP/1.1
// server gives (414, 431, 501, 405 with Allow before authentication, 413,
// 400), HEAD, OPTIONS and CORS preflight, security headers on every answer,
// slow clients cut off (slowloris), and the keep-alive request limit. Raw
// sockets where Node's http client would refuse to send the request.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { startServer, HOST } from './harness.mjs';

// Sends raw bytes on a new connection; resolves {status, headers, text, closed}
// with everything read until the server closes the connection or timeoutMs.
function rawExchange(port, bytes, { timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, HOST);
    const chunks = [];
    let done = false;
    const finish = (closed) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parseResponse(Buffer.concat(chunks).toString('latin1')), closed });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (c) => chunks.push(c));
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', (e) => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? finish(true) : reject(e)));
  });
}

function parseResponse(text) {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return { status: null, headers: {}, text, raw: text };
  const lines = text.slice(0, end).split('\r\n');
  const status = Number(lines[0].split(' ')[1]);
  const headers = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status, headers, text: text.slice(end + 4), raw: text };
}

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

function assertSecurityHeaders(headers, what) {
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) assert.equal(headers[name], value, `${what}: ${name}`);
  assert.match(headers['content-security-policy'] || '', /default-src 'none'.*frame-ancestors 'none'/, `${what}: CSP`);
}

describe('HTTP status codes', () => {
  let server, user;
  before(async () => {
    server = await startServer({ args: ['--max-frame-bytes', '4096'] });
    user = await server.register();
  });
  after(async () => { await server?.stop(); });

  it('a request target over 8 KiB gets 414', async () => {
    const res = await server.http('GET', `/api/users?search=${'a'.repeat(9000)}`, { token: user.token });
    assert.equal(res.status, 414);
    assert.equal(res.body.code, 'uri_too_long');
  });

  it('a request line longer than the whole header limit gets 414 too', async () => {
    const res = await rawExchange(server.port, `GET /${'a'.repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal(res.status, 414, res.raw.slice(0, 200));
  });

  it('headers over 16 KiB get 431', async () => {
    const res = await server.http('GET', '/health', { headers: { 'X-Big': 'b'.repeat(17000) } });
    assert.equal(res.status, 431);
    assert.equal(res.body.code, 'headers_too_large');
    assertSecurityHeaders(res.headers, '431');
  });

  it('a target in absolute form is served by its path (RFC 9112 3.2.2)', async () => {
    const health = await rawExchange(server.port, `GET http://${HOST}:${server.port}/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.equal(health.status, 200, health.raw.slice(0, 200));
    assert.equal(JSON.parse(health.text).status, 'ok');
    // The scheme's case does not matter, and the request is the path's.
    const me = await rawExchange(server.port,
      `GET HTTP://example.test/api/users/me HTTP/1.1\r\nHost: x\r\n` +
      `Authorization: Bearer ${user.token}\r\nConnection: close\r\n\r\n`);
    assert.equal(me.status, 200, me.raw.slice(0, 200));
    assert.ok(me.text.includes(user.username), me.text.slice(0, 200));
    // Only http and https URLs are rewritten: another scheme is no target of ours.
    const odd = await rawExchange(server.port, 'GET ftp://x/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(odd.status, 400);
  });

  it('an unknown method gets 501', async () => {
    const res = await rawExchange(server.port, 'BREW /health HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(res.status, 501);
    assert.equal(JSON.parse(res.text).code, 'not_implemented');
  });

  it('a known route with the wrong method gets 405 with Allow, before authentication', async () => {
    const login = await server.http('GET', '/api/auth/login');
    assert.equal(login.status, 405);
    assert.equal(login.headers.allow, 'POST, OPTIONS');
    assert.equal(login.body.code, 'method_not_allowed');
    // A route that needs a token: still 405 without one (not 401).
    const me = await server.http('DELETE', '/api/users/me');
    assert.equal(me.status, 405);
    assert.equal(me.headers.allow, 'GET, HEAD, OPTIONS');
    const threads = await server.http('PUT', '/api/chat/threads');
    assert.equal(threads.status, 405);
    assert.equal(threads.headers.allow, 'POST, GET, HEAD, OPTIONS');
    const health = await server.http('POST', '/health', { body: {} });
    assert.equal(health.status, 405);
    assert.equal(health.headers.allow, 'GET, HEAD, OPTIONS');
    // An unknown path stays 404, under /api too, token or not.
    assert.equal((await server.http('DELETE', '/nowhere')).status, 404);
  });

  it('a body over the limit gets 413, a malformed request 400', async () => {
    const big = await server.http('POST', '/api/auth/login', { body: { username: 'x', password: 'p'.repeat(5000) } });
    assert.equal(big.status, 413);
    const bad = await rawExchange(server.port, 'GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n');
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(bad.text).code, 'bad_request');
  });

  // RFC 9112 6.3: the body's length is unknown, so the request is refused
  // and the connection closed; read as bodiless, its body was served as the
  // next request (smuggling past a proxy that reads it otherwise).
  it('a Transfer-Encoding other than one final chunked, or a target not starting with /, gets 400; such a body is never served as a request', async () => {
    const hidden = `GET /api/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${user.token}\r\n\r\n`;
    for (const te of ['gzip', 'identity', 'chunked, identity', 'chunked, chunked', 'gzip, chunked', 'xchunked']) {
      const res = await rawExchange(server.port, `GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${te}\r\n\r\n${hidden}`);
      assert.equal(res.status, 400, `${te}: ${res.raw.slice(0, 120)}`);
      assert.equal(res.raw.split('HTTP/1.1 ').length - 1, 1, `${te}: one answer only: ${res.raw.slice(0, 300)}`);
      assert.ok(res.closed, `${te}: the connection is closed`);
    }
    for (const target of ['health', 'api/users/me', 'x:y']) {
      const res = await rawExchange(server.port, `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
      assert.equal(res.status, 400, `target ${target}: ${res.raw.slice(0, 120)}`);
    }
    const two = await rawExchange(server.port, 'POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n' +
      'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    assert.equal(two.status, 400, 'two Transfer-Encoding headers');
    const good = await rawExchange(server.port, 'POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n' +
      'Connection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n');
    assert.equal(good.status, 400, 'a chunked body is read');
    assert.equal(JSON.parse(good.text).code, 'missing_field', `the chunked body reached the route: ${good.text}`);
  });

  // Beast bounds headers and bodies, not these lines: each was held whole
  // until the body timeout, megabytes per connection, no token needed.
  it('a chunk-size line or a trailer section that never ends gets 400 at once, not a buffer held until the body timeout', async () => {
    const start = 'POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n';
    for (const [what, tail] of [['a chunk-size line', 'f'.repeat(300_000)], ['trailers', `0\r\nX-A: ${'b'.repeat(300_000)}`]]) {
      const began = Date.now();
      const res = await rawExchange(server.port, start + tail, { timeoutMs: 8000 });
      assert.equal(res.status, 400, `${what}: ${res.raw.slice(0, 120)}`);
      assert.ok(Date.now() - began < 5000, `${what}: answered after ${Date.now() - began} ms`);
    }
  });

  it('an HTTP/1.1 request without a Host, or any request with two (or two Authorization headers), gets 400 (RFC 9112 3.2); HTTP/1.0 may omit it', async () => {
    for (const [what, req] of [
      ['no Host', 'GET /health HTTP/1.1\r\nConnection: close\r\n\r\n'],
      ['two Hosts', 'GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n'],
      ['two Hosts, HTTP/1.0', 'GET /health HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n'],
      ['two Authorization headers', `GET /api/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${user.token}\r\n` +
        'Authorization: Bearer forged\r\nConnection: close\r\n\r\n'],
      ['a WebSocket upgrade without Host', `GET /ws?token=${encodeURIComponent(user.token)} HTTP/1.1\r\nUpgrade: websocket\r\n` +
        'Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'],
    ]) {
      const res = await rawExchange(server.port, req);
      assert.equal(res.status, 400, `${what}: ${res.raw.slice(0, 120)}`);
      assert.equal(JSON.parse(res.text).code, 'bad_request', what);
    }
    const old = await rawExchange(server.port, 'GET /health HTTP/1.0\r\n\r\n');
    assert.equal(old.status, 200, 'HTTP/1.0 without Host is answered');
  });

  it('a WebSocket upgrade for another protocol version gets 426 naming version 13 (RFC 6455 4.4)', async () => {
    const res = await rawExchange(server.port, `GET /ws?token=${encodeURIComponent(user.token)} HTTP/1.1\r\nHost: x\r\n` +
      'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    assert.equal(res.status, 426, res.raw.slice(0, 200));
    assert.match(res.raw, /\r\nSec-WebSocket-Version: 13\r\n/i);
    assert.match(res.raw, /"code":"upgrade_required"/, 'the code the error table gives a 426');
    const noKey = await rawExchange(server.port, `GET /ws?token=${encodeURIComponent(user.token)} HTTP/1.1\r\nHost: x\r\n` +
      'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n');
    assert.equal(noKey.status, 400, 'no key: a bad request');
    assert.match(noKey.raw, /"code":"bad_request"/);
  });

  it('a WebSocket upgrade with a key that is not 16 bytes of base64, or with two keys or versions, gets 400 (RFC 6455 4.2.1)', async () => {
    const upgrade = (headers) => rawExchange(server.port, `GET /ws?token=${encodeURIComponent(user.token)} HTTP/1.1\r\nHost: x\r\n` +
      `Upgrade: websocket\r\nConnection: Upgrade\r\n${headers}\r\n`);
    const good = 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
    for (const [what, headers] of [
      ['a short key', 'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n'],
      ['a key that is not base64', `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${'!'.repeat(22)}==\r\n`],
      ['a key of 32 bytes', `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${Buffer.alloc(32, 7).toString('base64')}\r\n`],
      ['two keys', `Sec-WebSocket-Version: 13\r\n${good}${good}`],
      ['two versions', `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n${good}`],
    ]) {
      const res = await upgrade(headers);
      assert.equal(res.status, 400, `${what}: ${res.raw.slice(0, 120)}`);
      assert.equal(JSON.parse(res.text).code, 'bad_request', what);
    }
    const ok = await upgrade(`Sec-WebSocket-Version: 13\r\n${good}`);
    assert.equal(ok.status, 101, 'one good key and version');
  });

  it('a REST body announced over the limit gets 413 before it is sent (Expect: 100-continue)', async () => {
    // Under the parser's own limit (Engine.IO's 1 MB), over the REST limit (4096 here): no body follows.
    const res = await rawExchange(server.port,
      'POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500000\r\n' +
      'Expect: 100-continue\r\n\r\n', { timeoutMs: 3000 });
    assert.equal(res.status, 413, `answered without waiting for the body: ${res.raw.slice(0, 200)}`);
    assert.equal(JSON.parse(res.text).code, 'payload_too_large');
  });

  it('HEAD on a GET route: the headers of GET, Content-Length included, and no body', async () => {
    const get = await rawExchange(server.port, 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const head = await rawExchange(server.port, 'HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(head.status, 200);
    assert.equal(head.text, '', 'no body after the headers');
    assert.ok(Number(head.headers['content-length']) > 0);
    assert.ok(Math.abs(Number(head.headers['content-length']) - get.text.length) < 8, 'about the GET body length (uptime varies)');
    assert.equal(head.headers['content-type'], get.headers['content-type']);
    const me = await rawExchange(server.port, `HEAD /api/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${user.token}\r\nConnection: close\r\n\r\n`);
    assert.equal(me.status, 200);
    assert.equal(me.text, '');

    // The web app's files too: its page and a script it loads.
    const page = await rawExchange(server.port, 'GET /app/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const script = /src="([^"]+\.js)"/.exec(page.text)?.[1];
    for (const target of ['/app/', ...(script ? [`/app/${script}`] : [])]) {
      const full = await rawExchange(server.port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      const bare = await rawExchange(server.port, `HEAD ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.equal(bare.status, full.status, target);
      assert.equal(bare.text, '', `${target}: no body after the headers`);
      assert.ok(full.text.length > 0, `${target}: GET has a body`);
      assert.equal(bare.headers['content-length'], String(full.text.length), `${target}: HEAD's Content-Length is GET's`);
      assert.equal(bare.headers['content-type'], full.headers['content-type'], target);
    }
  });

  it('no token or password reaches the log (info level), whatever the request carried', async () => {
    const secret = `pw-${Date.now()}-secret-0123456789abcdef`;
    const u = await server.register({ password: secret });
    await server.http('POST', '/api/auth/login', { body: { username: u.username, password: `${secret}-wrong` } });
    await server.http('POST', '/api/auth/login', { body: { username: 'nobody_here', password: secret } });
    await server.http('GET', `/api/users/me?token=${u.token}`, { headers: { Authorization: `Bearer ${u.token}x` } });
    const ws = await server.connect(u);
    ws.ws.close();
    await server.tryUpgrade(`/ws?token=${u.token}x`);
    const log = server.log.join('\n');
    assert.ok(log.includes('event=login_failed'), 'the failures were logged');
    assert.ok(!log.includes(secret), 'no password in the log');
    assert.ok(!log.includes(u.token.split('.')[2]), 'no token in the log');
  });

  it('every answer carries the security headers', async () => {
    for (const [method, path, opts] of [['GET', '/', {}], ['GET', '/health', {}], ['GET', '/api/users/me', { token: user.token }],
      ['GET', '/api/users/me', {}], ['GET', '/nowhere', {}], ['GET', '/ws', {}], ['OPTIONS', '/api/users/me', {}]]) {
      const res = await server.http(method, path, opts);
      assertSecurityHeaders(res.headers, `${method} ${path} (${res.status})`);
    }
  });
});

describe('OPTIONS and CORS preflight', () => {
  let server;
  before(async () => { server = await startServer({ args: ['--allowed-origins', 'https://app.example'] }); });
  after(async () => { await server?.stop(); });

  const preflight = (path, origin, method = 'POST') => server.http('OPTIONS', path, {
    headers: { Origin: origin, 'Access-Control-Request-Method': method, 'Access-Control-Request-Headers': 'authorization, content-type' },
  });

  it('an allowed Origin gets the Access-Control headers for that path', async () => {
    const res = await preflight('/api/chat/threads', 'https://app.example');
    assert.equal(res.status, 204);
    assert.equal(res.headers['access-control-allow-origin'], 'https://app.example');
    assert.equal(res.headers['access-control-allow-methods'], 'POST, GET, HEAD, OPTIONS');
    assert.match(res.headers['access-control-allow-headers'], /Authorization/);
    assert.match(res.headers['access-control-allow-headers'], /Content-Type/);
    assert.equal(res.headers['access-control-max-age'], '600');
    assert.equal(res.headers.vary, 'Origin');
    assert.equal(res.headers.allow, 'POST, GET, HEAD, OPTIONS');
  });

  it('an Origin not allowed gets no CORS headers', async () => {
    const res = await preflight('/api/chat/threads', 'https://evil.example');
    for (const h of ['access-control-allow-origin', 'access-control-allow-methods', 'access-control-allow-headers', 'access-control-max-age']) {
      assert.equal(res.headers[h], undefined, h);
    }
    assert.equal(res.headers.vary, 'Origin');
  });

  it('the actual request from an allowed Origin carries Access-Control-Allow-Origin, another Origin none', async () => {
    const ok = await server.http('GET', '/health', { headers: { Origin: 'https://app.example' } });
    assert.equal(ok.headers['access-control-allow-origin'], 'https://app.example');
    const evil = await server.http('GET', '/health', { headers: { Origin: 'https://evil.example' } });
    assert.equal(evil.headers['access-control-allow-origin'], undefined);
  });

  it('OPTIONS on an unknown path is 404; without an Origin it lists Allow', async () => {
    assert.equal((await preflight('/nowhere', 'https://app.example')).status, 404);
    const plain = await server.http('OPTIONS', '/api/auth/login');
    assert.equal(plain.status, 204);
    assert.equal(plain.headers.allow, 'POST, OPTIONS');
  });
});

describe('slow clients and keep-alive limits', () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--header-timeout', '1', '--body-timeout', '2', '--keepalive-requests', '3'] });
  });
  after(async () => { await server?.stop(); });

  it('headers that never finish are cut off after the header timeout', async () => {
    const started = Date.now();
    const res = await rawExchange(server.port, 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ', { timeoutMs: 8000 });
    assert.equal(res.closed, true, 'the server closed the connection');
    assert.equal(res.status, null, 'no answer');
    assert.ok(Date.now() - started >= 900, 'not before the timeout');
  });

  it('a body that never finishes is cut off after the body timeout', async () => {
    const started = Date.now();
    const res = await rawExchange(server.port,
      'POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"user', { timeoutMs: 10000 });
    assert.equal(res.closed, true);
    assert.equal(res.status, null);
    assert.ok(Date.now() - started >= 1900, 'the body timeout, not the header timeout');
  });

  it('the third request on a connection is answered with Connection: close, then the connection ends', async () => {
    const req = 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n';
    const res = await rawExchange(server.port, req + req + req + req, { timeoutMs: 5000 });
    assert.equal(res.closed, true);
    const answers = res.raw.split('HTTP/1.1 ').slice(1);
    assert.equal(answers.length, 3, 'three answers, the fourth request is not served');
    assert.doesNotMatch(answers[0], /Connection: close/i);
    assert.match(answers[2], /Connection: close/i);
  });
});
