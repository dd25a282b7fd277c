// The part of Parley's wire protocol the benchmark peers implement, shared by
// bench/peers/bun/server.js, bench/peers/node/server.js and
// bench/peers/socketio/server.js: HS256 tokens,
// membership by the seed rule (docs/benchmarks.md), validation of
// `send_message`, and the message object of docs/protocol.md.
// Everything is in memory: no storage, no history, no idempotent retries.
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';

export const WS_PATHS = new Set(['/ws', '/api/v1/ws/chat', '/']);
export const MAX_FRAME_BYTES = 64 * 1024;
export const MAX_OUTBOUND_BYTES = 8 * 1024 * 1024; // a client this far behind is dropped, as Parley does
const MAX_CONTENT_CHARS = 4000;
const MESSAGE_TYPES = new Set(['text', 'image', 'file']);

const USER_PREFIX = '00000000-0000-4000-8000-';
const THREAD_PREFIX = '00000000-0000-4000-9000-';

export function config() {
  const secret = process.env.JWT_SECRET || process.env.PARLEY_JWT_SECRET;
  if (!secret) throw new Error('JWT_SECRET is required');
  const groupSize = Number.parseInt(process.env.GROUP_SIZE || '', 10);
  if (!(groupSize >= 2)) throw new Error('GROUP_SIZE (>= 2) is required');
  return {
    secret,
    groupSize,
    port: Number.parseInt(process.env.PORT || '3000', 10),
    host: process.env.HOST || '127.0.0.1',
  };
}

// HS256 only; `exp` required; 30 s of skew, as Parley allows.
export function verifyToken(token, secret) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return null;
  }
  if (!header || header.alg !== 'HS256') return null;
  const expected = createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.exp !== 'number' || claims.exp + 30 < now) return null;
  if (typeof claims.nbf === 'number' && claims.nbf - 30 > now) return null;
  if (typeof claims.sub !== 'string') return null;
  return claims;
}

// The user behind a deterministic id, with the one thread the seed rule puts them in.
export function benchUser(sub, groupSize) {
  const id = sub.toLowerCase();
  if (id.length !== 36 || !id.startsWith(USER_PREFIX)) return null;
  const index = Number.parseInt(id.slice(USER_PREFIX.length), 16);
  if (!Number.isSafeInteger(index) || index < 0) return null;
  const group = Math.floor(index / groupSize);
  return {
    id,
    index,
    threadId: THREAD_PREFIX + group.toString(16).padStart(12, '0'),
    ref: { id, username: `bench_${index}`, full_name: `Bench ${index}`, role: 'bench' },
  };
}

export function establishedFrame(user, sessionId) {
  return JSON.stringify({
    type: 'connection_established',
    user_id: user.id,
    session_id: sessionId,
    timestamp: new Date().toISOString(),
  });
}

export function errorFrame(code, message, requestId) {
  const frame = { type: 'error', code, message };
  if (requestId !== undefined && requestId !== null) frame.request_id = requestId;
  return JSON.stringify(frame);
}

function codePoints(s) {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

// One chat's state: the next seq of each thread.
export class Chat {
  constructor() {
    this.seqs = new Map();
  }

  // Handles one text frame from `user`. Returns {reply} (a frame for the
  // sender only) or {reply, broadcast, threadId} for a new message: `broadcast`
  // goes to every other connection in the thread.
  handle(user, text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return { reply: errorFrame('invalid_json', 'frame is not valid JSON') };
    }
    if (frame === null || typeof frame !== 'object' || Array.isArray(frame))
      return { reply: errorFrame('invalid_json', 'frame must be a JSON object') };
    const rid = frame.request_id;
    switch (frame.type) {
      case 'ping':
        return { reply: JSON.stringify(rid === undefined ? { type: 'pong' } : { type: 'pong', request_id: rid }) };
      case 'send_message':
        return this.send(user, frame, rid);
      case undefined:
        return { reply: errorFrame('missing_field', '`type` is required', rid) };
      default:
        return { reply: errorFrame('unknown_type', `unknown type ${String(frame.type)}`, rid) };
    }
  }

  send(user, frame, rid) {
    const made = this.create(user, frame);
    if (made.error) return { reply: errorFrame(made.error.code, made.error.message, rid) };
    // The message is serialised once; both frames are built around that text.
    const data = JSON.stringify(made.message);
    const ridPart = rid === undefined || rid === null ? '' : `,"request_id":${JSON.stringify(rid)}`;
    return {
      reply: `{"type":"message_sent"${ridPart},"data":${data}}`,
      broadcast: `{"type":"new_message","data":${data}}`,
      threadId: user.threadId,
    };
  }

  // Validates a send_message payload ({thread_id, content | text,
  // message_type, client_msg_id}) from `user` and makes the message with the
  // thread's next seq. Returns {message} or {error: {code, message}}.
  create(user, frame) {
    if (frame === null || typeof frame !== 'object' || Array.isArray(frame))
      return { error: { code: 'invalid_json', message: 'payload must be a JSON object' } };
    const threadId = frame.thread_id;
    if (typeof threadId !== 'string') return { error: { code: 'missing_field', message: '`thread_id` is required' } };
    if (threadId.toLowerCase() !== user.threadId)
      return { error: { code: 'forbidden', message: 'thread not found or you are not a participant' } };
    const content = frame.content !== undefined ? frame.content : frame.text;
    if (typeof content !== 'string') return { error: { code: 'missing_field', message: '`content` is required' } };
    if (content.trim() === '') return { error: { code: 'empty_content', message: 'content is blank' } };
    if (content.length > MAX_CONTENT_CHARS && codePoints(content) > MAX_CONTENT_CHARS)
      return { error: { code: 'content_too_long', message: `content is over ${MAX_CONTENT_CHARS} characters` } };
    const messageType = frame.message_type === undefined ? 'text' : frame.message_type;
    if (!MESSAGE_TYPES.has(messageType))
      return { error: { code: 'invalid_message_type', message: 'message_type must be text, image or file' } };
    const clientMsgId = frame.client_msg_id;
    if (clientMsgId !== undefined && clientMsgId !== null && typeof clientMsgId !== 'string')
      return { error: { code: 'invalid_field', message: '`client_msg_id` must be a string' } };

    const seq = (this.seqs.get(user.threadId) || 0) + 1;
    this.seqs.set(user.threadId, seq);
    return {
      message: {
        id: randomUUID(),
        thread_id: user.threadId,
        seq,
        sender_id: user.id,
        content,
        message_type: messageType,
        client_msg_id: clientMsgId ?? null,
        status: 'sent',
        created_at: new Date().toISOString(),
        edited_at: null,
        sender: user.ref,
      },
    };
  }
}
