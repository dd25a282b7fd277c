// A raw RFC 6455 client for the conformance driver: it writes frames byte by
// byte as the Autobahn test suite does (any opcode, reserved bits, masked or
// not, fragments split anywhere), and records every frame the server sends.
// Written here because a real client library refuses to send broken frames.
import net from 'node:net';
import crypto from 'node:crypto';

export const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };

// One client frame: header, mask, payload. rsv: the three reserved bits (0..7).
export function frame(opcode, payload = Buffer.alloc(0), { fin = true, rsv = 0, masked = true, len } = {}) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const n = len ?? data.length;
  const head = [(fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f)];
  const m = masked ? 0x80 : 0;
  if (n < 126) head.push(m | n);
  else if (n <= 0xffff) head.push(m | 126, n >> 8, n & 0xff);
  else {
    head.push(m | 127);
    const big = BigInt(n);
    for (let i = 7; i >= 0; i--) head.push(Number((big >> BigInt(8 * i)) & 0xffn));
  }
  if (!masked) return Buffer.concat([Buffer.from(head), data]);
  const mask = crypto.randomBytes(4);
  const body = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) body[i] = data[i] ^ mask[i & 3];
  return Buffer.concat([Buffer.from(head), mask, body]);
}

export function closePayload(code, reason = Buffer.alloc(0)) {
  const r = Buffer.isBuffer(reason) ? reason : Buffer.from(reason);
  const b = Buffer.alloc(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

// A WebSocket connection after the opening handshake on `path`.
export class RawWs {
  static async open(host, port, path) {
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
    const key = crypto.randomBytes(16).toString('base64');
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                 `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    let buf = Buffer.alloc(0);
    const rest = await new Promise((resolve, reject) => {
      const onData = (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        const head = buf.subarray(0, end).toString('latin1');
        if (!/^HTTP\/1\.1 101/.test(head)) return reject(new Error(`no upgrade: ${head.split('\r\n')[0]}`));
        const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
        if (!head.includes(`Sec-WebSocket-Accept: ${accept}`) && !head.toLowerCase().includes(`sec-websocket-accept: ${accept.toLowerCase()}`))
          return reject(new Error('bad Sec-WebSocket-Accept'));
        resolve(buf.subarray(end + 4));
      };
      socket.on('data', onData);
      socket.once('error', reject);
    });
    return new RawWs(socket, rest);
  }

  constructor(socket, initial) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.events = [];     // {op, payload} for frames, {op:'end'} when the TCP stream ends
    this.waiters = [];
    this.ended = false;
    this.fragments = null;
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('end', () => this.finish());
    socket.on('close', () => this.finish());
    socket.on('error', () => this.finish());
    if (initial.length) this.onData(initial);
  }

  finish() {
    if (this.ended) return;
    this.ended = true;
    this.push({ op: 'end' });
  }

  push(event) {
    this.events.push(event);
    for (const w of [...this.waiters]) w();
  }

  onData(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      const fin = (b[0] & 0x80) !== 0;
      const op = b[0] & 0x0f;
      if (b[1] & 0x80) throw new Error('server frames must not be masked');
      let n = b[1] & 0x7f;
      let pos = 2;
      if (n === 126) { if (b.length < 4) return; n = b.readUInt16BE(2); pos = 4; }
      else if (n === 127) { if (b.length < 10) return; n = Number(b.readBigUInt64BE(2)); pos = 10; }
      if (b.length < pos + n) return;
      const payload = b.subarray(pos, pos + n);
      this.buf = b.subarray(pos + n);
      if (op === OP.CONT || ((op === OP.TEXT || op === OP.BINARY) && !fin)) {
        this.fragments = this.fragments || { op, parts: [] };
        this.fragments.parts.push(payload);
        if (!fin) continue;
        const whole = { op: this.fragments.op, payload: Buffer.concat(this.fragments.parts) };
        this.fragments = null;
        this.push(whole);
      } else {
        this.push({ op, payload: Buffer.from(payload) });
      }
    }
  }

  send(...frames) { this.socket.write(Buffer.concat(frames)); }

  // Writes bytes in pieces of `size`, each its own write (a frame split across TCP segments).
  async sendChunked(bytes, size = 1) {
    for (let i = 0; i < bytes.length; i += size) {
      this.socket.write(bytes.subarray(i, i + size));
      await new Promise((r) => setImmediate(r));
    }
  }

  // The first event from `from` on that matches, or an error after timeoutMs.
  waitFor(match, { timeoutMs = 5000, from = 0, what = 'event' } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = from; i < this.events.length; i++) {
          if (match(this.events[i])) { cleanup(); resolve(this.events[i]); return true; }
        }
        return false;
      };
      const timer = setTimeout(() => { cleanup(); reject(new Error(`timed out waiting for ${what}; got ${this.describe()}`)); }, timeoutMs);
      const cleanup = () => { clearTimeout(timer); this.waiters = this.waiters.filter((w) => w !== check); };
      if (!check()) this.waiters.push(check);
    });
  }

  // A JSON text reply carrying request_id `id`.
  reply(id, opts) {
    return this.waitFor((e) => e.op === OP.TEXT && parseJson(e.payload)?.request_id === id, { what: `reply ${id}`, ...opts });
  }

  // The server's close frame: {code, reason}; answers it as a client must, then waits for the TCP end.
  async closed(opts) {
    const e = await this.waitFor((ev) => ev.op === OP.CLOSE || ev.op === 'end', { what: 'close frame', ...opts });
    if (e.op === 'end') return { code: null, reason: '', noCloseFrame: true };
    const code = e.payload.length >= 2 ? e.payload.readUInt16BE(0) : 1005;
    if (!this.ended) this.socket.write(frame(OP.CLOSE, e.payload.subarray(0, 2)));
    await this.waitFor((ev) => ev.op === 'end', { what: 'TCP close after the close handshake', ...opts });
    return { code, reason: e.payload.subarray(2).toString() };
  }

  describe() {
    return JSON.stringify(this.events.map((e) => (e.op === 'end' ? 'end'
      : `${e.op}:${e.payload.length > 60 ? `${e.payload.length} bytes` : e.payload.toString()}`)));
  }

  destroy() { this.socket.destroy(); }
}

export function parseJson(buf) {
  try { return JSON.parse(buf.toString()); } catch { return null; }
}
