// ParleyClient: one small client of the Parley protocol (docs/protocol.md) for
// browsers, with no UI in it, so any web app can reuse it.
//
// - REST: login/register/refresh, users, threads, history, mark-read,
//   editing and deleting a message.
// - WebSocket: connects to /ws, authenticates with an `auth` frame (the token
//   never goes into a URL), reconnects with exponential backoff, and on every
//   (re)connection catches up each known thread from its `since_seq` (named
//   in the auth frame's `subscribe` list, so each comes back in seq order;
//   threads learnt later with `subscribe_thread`) so nothing is missed or
//   doubled. Edits and deletions made meanwhile come too: the auth frame
//   carries the change mark of the connection before (`changes_after`,
//   docs/protocol.md "Edits and deletions missed while away").
// - Sending: every message gets a `client_msg_id`; it waits in an outbox while
//   offline and is (re)sent until the server answers `message_sent`. The server
//   stores a retried `client_msg_id` once, so a resend can never double it.
//   At most SEND_WINDOW of them are unanswered at a time, one per thread, in
//   outbox order.
// - Delivery receipts (`message_received`) are sent for others' messages.
//
// Events (it is an EventTarget; `event.detail` carries the data):
//   state        {state: 'connecting'|'online'|'offline'|'signed_out'}
//   message      {message, replay}     a message from another connection
//   sent         {message}             our message is durably stored
//   failed       {item, code, message} the server refused a queued message for good
//   edited       {message, synced}     a message was edited (by its sender, on any device);
//                                      synced: while away (the reconnection's sync)
//   deleted      {thread_id, message_id, seq, synced}   a message was deleted
//   changes_synced {change_mark}       the edits and deletions missed while away have come
//   changes_unsynced {code}            they could not be read (the store is down): read what is held again
//   outbox       {pending: [...]}      the queue changed
//   delivered, read_receipt, typing, presence, call   the server frame
//   unauthorized {code}                the token is refused or expired
//   closed       {code, reason}        the server closed the connection (a reconnect follows)
//   frame        the raw server frame, for anything else

// What a failed request without Parley's JSON says: a proxy in front of the
// server answered (502-504: the server behind it is down or restarting), or
// something else did.
function httpFailure(status) {
  if (status >= 502 && status <= 504) return `the server is not answering (HTTP ${status} from the proxy in front of it); try again shortly`;
  return `the server answered HTTP ${status}`;
}

export class ParleyError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

// A refused token or account: signing in again is the only way on.
const AUTH_FAILURES = new Set(['token_expired', 'invalid_token', 'unauthorized', 'account_disabled', 'token_revoked']);
// Refusals of a queued message worth trying again (the server or its store
// was busy or stopping); any other refusal (too long, blank, not a
// participant...) would repeat forever: the message leaves the outbox, `failed`.
const SEND_RETRYABLE = new Set(['rate_limited', 'internal_error', 'storage_unavailable', 'store_closed',
  'shutting_down', 'server_busy']);
const SEND_RETRY_MS = 2000;
const SEND_REQUEST = 's:';  // request_id of send_message: this prefix and the client_msg_id
// Queued messages transmitted and not yet answered, at most: a long outbox sent
// at once would be refused by the rate limit (and 50 refusals in a row close
// the connection), while a small window stays far under the burst.
const SEND_WINDOW = 20;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
// The `auth` frame that hands the connection a renewed token. Refused by a
// server that could not check it (its storage down), it is sent again this
// much later: the connection stays on the old token, which would expire on it.
const RENEW_REQUEST = 'renew';
const RENEW_RETRY_MS = 5000;
const PING_EVERY_MS = 20000;
const AUTH_SUBSCRIBE_MAX = 500;  // the server's bound on an auth frame's subscribe list
// A quarter of the server's default frame limit (64 KiB). A server set lower
// closes the auth frame (1009): the next connections send no list.
const AUTH_SUBSCRIBE_BYTES = 16384;
const AUTH_ENTRY = 'a:';  // request_id of an auth frame's subscribe entry: this prefix and the thread id
const SUBSCRIBE_REQUEST = 'sub:';  // request_id of a subscribe_thread frame: this prefix and the thread id
const SUBSCRIBE_RETRY_MS = 1000;
const PONG_WAIT_MS = 10000;
// A message another tab sent while this one was offline is shown pending here
// at most this long after this tab is online again (see sentElsewhere).
const SENT_ELSEWHERE_MS = 10000;
// A REST request not answered within this is given up as a network error.
const REST_TIMEOUT_MS = 20000;

export class ParleyClient extends EventTarget {
  // baseUrl: the server ('' = the page's own origin). token: a Parley or
  // identity-provider JWT. outboxStore: optional {load(), save(list),
  // watch(fn)} so unsent messages survive a reload; several clients (tabs)
  // may share one, and watch(fn), when given, calls fn(list) when another
  // changed it and returns a function that stops watching.
  constructor({ baseUrl = '', token = null, outboxStore = null } = {}) {
    super();
    this.baseUrl = baseUrl;
    this.token = token;
    this.userId = null;
    this.state = 'offline';
    // thread id -> seq up to which this client has seen everything; seqs seen
    // above it (a reply can overtake a replay) wait in `ahead` until the gap fills.
    this.cursors = new Map();
    this.ahead = new Map();  // thread id -> Set of seqs
    // The change_mark of the last changes_synced: edits and deletions up to it
    // have reached this client (null: none yet, the first connection asks for one).
    this.changeMark = null;
    this.subscribed = new Set();  // thread ids subscribed on the current connection
    this.authListBytes = AUTH_SUBSCRIBE_BYTES;  // 0 once a server refused a list for its size
    // Threads the app forgot (no longer the user's) until it tracks them
    // again: a replay of one still under way when it was forgotten must not
    // give it a position back, or every reconnect would ask for it again.
    this.forgotten = new Set();
    this.outboxStore = outboxStore;
    this.outbox = outboxStore ? outboxStore.load() : [];  // [{thread_id, content, client_msg_id, created_at}]
    // The client_msg_ids of the shared store as this client last read or wrote it.
    this.stored = new Set(this.outbox.map((i) => i.client_msg_id));
    this.unwatch = outboxStore?.watch ? outboxStore.watch((list) => this.outboxChangedElsewhere(list)) : null;
    // Queued items another tab got stored while this one was not online: still
    // shown here as pending (this tab has not seen them stored) until their
    // message comes, or a while after this tab is online again.
    this.sentElsewhere = new Map();  // client_msg_id -> item
    // client_msg_ids of the outbox transmitted on this connection and not yet
    // answered; a new Set per connection, so a retry timer of an older one is void.
    this.inFlight = new Set();
    this.ws = null;
    this.wanted = false;
    this.attempt = 0;
    this.timer = null;
    this.pinger = null;
    this.nextRequest = 1;
    this.waiting = new Map();  // request_id -> {resolve, reject}
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  // ------------------------------------------------------------------ REST

  async rest(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      // Bounded: a request the server never answers (a half-open connection)
      // must end as a network error, not leave the user waiting on it for good.
      res = await fetch(this.baseUrl + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(REST_TIMEOUT_MS),
      });
    } catch (err) {
      throw new ParleyError(0, 'network_error', 'the server cannot be reached');
    }
    let json = null;
    try { json = await res.json(); } catch { /* not JSON */ }
    if (!res.ok || !json || json.status !== 'success') {
      const code = (json && json.code) || `http_${res.status}`;
      if (res.status === 401 && this.token && AUTH_FAILURES.has(code)) this.emit('unauthorized', { code });
      throw new ParleyError(res.status, code, (json && json.message) || httpFailure(res.status));
    }
    return json.data;
  }

  // The server's /health (not in an envelope); null when it cannot be read.
  async health() {
    try {
      const res = await fetch(`${this.baseUrl}/health`, { headers: { Accept: 'application/json' }, signal: AbortSignal.timeout(REST_TIMEOUT_MS) });
      return await res.json();
    } catch {
      return null;
    }
  }

  async login(credentials) { return this.adopt(await this.rest('POST', '/api/auth/login', credentials)); }
  async register(profile) { return this.adopt(await this.rest('POST', '/api/auth/register', profile)); }
  async refresh() {
    const data = await this.adopt(await this.rest('POST', '/api/auth/refresh'));
    this.renewSocket();
    return data;
  }
  // Offline, nothing to do: the next connection authenticates with the new
  // token. Connecting (its `auth` sent with the old token, no answer yet), it
  // is tried again once the connection may be online.
  renewSocket() {
    clearTimeout(this.renewTimer);
    const sent = this.sendFrame({ type: 'auth', token: this.token, request_id: RENEW_REQUEST });
    if (sent) this.ws.renewing = this.token;
    else if (this.ws) this.renewTimer = setTimeout(() => this.renewSocket(), RENEW_RETRY_MS);
  }
  // The connection still stands on a token older than the one held (a
  // renewal came while it was opening, or is not answered yet): its end for
  // that token's expiry is not this session's, and the next connection uses
  // the new one.
  onOlderToken(ws) { return Boolean(ws) && ws.authToken !== this.token; }
  adopt(data) {
    this.token = data.token;
    if (data.user) this.userId = data.user.id;
    return data;
  }

  me() { return this.rest('GET', '/api/users/me'); }
  searchUsers(q) { return this.rest('GET', `/api/users?search=${encodeURIComponent(q)}`).then((d) => d.users); }
  threads() { return this.rest('GET', '/api/chat/threads').then((d) => d.threads); }
  thread(id) { return this.rest('GET', `/api/chat/threads/${id}`); }
  createThread(body) { return this.rest('POST', '/api/chat/threads', body); }
  addParticipants(threadId, ids) { return this.rest('POST', `/api/chat/threads/${threadId}/participants`, { participant_ids: ids }); }
  removeParticipant(threadId, userId) { return this.rest('DELETE', `/api/chat/threads/${threadId}/participants/${userId}`); }
  unreadCount() { return this.rest('GET', '/api/chat/unread-count'); }
  // One's own message (docs/protocol.md, "Moderation and edits"). Over REST
  // rather than the WebSocket: the user waits for the answer, and it comes
  // even while the WebSocket is between connections. Each resolves the
  // message as it is now (edited, or the tombstone); every connection of
  // every participant also gets `message_edited` / `message_deleted`.
  editMessage(messageId, content) { return this.rest('PATCH', `/api/chat/messages/${messageId}`, { content }); }
  deleteMessage(messageId) { return this.rest('DELETE', `/api/chat/messages/${messageId}`); }

  // History in ascending seq: {before_seq} pages back, {after_seq} forward.
  async history(threadId, { before_seq, after_seq, limit = 50 } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before_seq !== undefined) q.set('before_seq', String(before_seq));
    if (after_seq !== undefined) q.set('after_seq', String(after_seq));
    const { messages } = await this.rest('GET', `/api/chat/threads/${threadId}/messages?${q}`);
    for (const m of messages) this.seen(m.thread_id, m.seq);
    return messages;
  }

  // ------------------------------------------------------------------ WebSocket

  connect() {
    this.wanted = true;
    if (this.ws) return;
    this.setState('connecting');
    const url = new URL('/ws', this.baseUrl || location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      ws.authToken = this.token;
      // The threads this device knows, from its cursors: named in the auth
      // frame, each comes back in seq order, what was missed before anything
      // newer (docs/protocol.md, "Reconnecting in order"). The rest, if more,
      // are subscribed once the connection is established.
      const subscribe = [];
      let bytes = 0;
      for (const [thread_id, since_seq] of this.cursors) {
        const entry = { thread_id, since_seq, request_id: AUTH_ENTRY + thread_id };
        bytes += JSON.stringify(entry).length + 1;
        if (subscribe.length >= AUTH_SUBSCRIBE_MAX || bytes > this.authListBytes) break;
        subscribe.push(entry);
      }
      ws.authList = subscribe.map((e) => e.thread_id);
      ws.subscribedAtAuth = new Set(ws.authList);
      // Until changes_synced, the edits and deletions that come may be ones missed while away.
      ws.syncing = true;
      ws.send(JSON.stringify({
        type: 'auth', token: this.token, changes_after: this.changeMark, ...(subscribe.length ? { subscribe } : {}),
      }));
    };
    ws.onmessage = (e) => {
      clearTimeout(this.pongTimer);
      let frame;
      try { frame = JSON.parse(e.data); } catch { return; }
      this.onFrame(frame);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pinger);
      clearTimeout(this.pongTimer);
      for (const w of this.waiting.values()) w.reject(new ParleyError(0, 'disconnected', 'connection lost'));
      this.waiting.clear();
      // 4401: the token was refused; 4403: the account was disabled or its
      // tokens revoked. Reconnecting would only be refused again.
      if (e.code === 4401 && !this.onOlderToken(ws)) return this.emit('unauthorized', { code: 'token_expired' });
      if (e.code === 4403) return this.emit('unauthorized', { code: 'account_disabled' });
      if (!this.wanted) return this.setState('offline');
      // 1009: a frame over the server's size limit, which only a queued
      // message can be (a pasted book). Sent again on each connection it
      // would close each one: the largest one in flight is refused for good.
      // Before connection_established it was the auth frame's list (a server
      // with a lower frame limit): the next connections go without one.
      if (e.code === 1009 && ws.established) this.dropOversize();
      else if (e.code === 1009 && ws.authList?.length) this.authListBytes = 0;
      this.emit('closed', { code: e.code, reason: e.reason || '' });
      this.setState('offline');
      this.scheduleReconnect();
    };
  }

  // Stops for good (sign-out): no reconnect, the outbox is dropped.
  disconnect() {
    this.wanted = false;
    clearTimeout(this.renewTimer);
    clearTimeout(this.sentElsewhereTimer);
    this.unwatch?.();
    this.unwatch = null;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.ws) { const ws = this.ws; this.ws = null; ws.close(1000); }
    this.setState('signed_out');
  }

  // Reconnects now instead of after the backoff (the browser says it is back online).
  reconnectNow() {
    clearTimeout(this.timer);
    this.attempt = 0;
    if (!this.ws && this.wanted) this.connect();
  }

  // A connection that stopped carrying anything (a network change, a NAT
  // that forgot it) can stay open for minutes: no frame within PONG_WAIT_MS
  // of a ping, and it is given up and opened again (the outbox resends).
  ping() {
    if (!this.sendFrame({ type: 'ping' })) return;
    clearTimeout(this.pongTimer);
    const ws = this.ws;
    this.pongTimer = setTimeout(() => {
      if (this.ws !== ws) return;
      ws.onclose({ code: 1006 });  // as if it had closed: state, waiters, reconnect
      ws.onclose = null;
      ws.close();
    }, PONG_WAIT_MS);
  }

  scheduleReconnect() {
    clearTimeout(this.timer);
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    this.attempt += 1;
    const delay = base / 2 + Math.random() * base / 2;  // jitter: a restarted server is not hit by all at once
    this.timer = setTimeout(() => this.connect(), delay);
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', { state });
  }

  sendFrame(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== 'online') return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // A frame whose reply (or error) carries our request_id; rejects on error.
  // Frames that have no reply (call signalling) resolve after quietMs without one.
  request(frame, { quietMs = 0 } = {}) {
    const request_id = `q${this.nextRequest++}`;
    return new Promise((resolve, reject) => {
      if (!this.sendFrame({ ...frame, request_id })) return reject(new ParleyError(0, 'offline', 'not connected'));
      this.waiting.set(request_id, { resolve, reject });
      if (quietMs) setTimeout(() => { if (this.waiting.delete(request_id)) resolve(null); }, quietMs);
    });
  }

  onFrame(f) {
    if (f.request_id !== undefined && this.waiting.has(f.request_id) && f.type !== 'new_message') {
      const w = this.waiting.get(f.request_id);
      this.waiting.delete(f.request_id);
      if (f.type === 'error') w.reject(new ParleyError(0, f.code, f.message));
      else w.resolve(f);
    }
    switch (f.type) {
      case 'connection_established':
        // Another store than before: the server was restored from a backup,
        // and seqs past the backup's end were given again to new messages.
        // The cursors here would skip those: the app starts over.
        if (f.store_id && this.storeId && f.store_id !== this.storeId) {
          this.storeId = f.store_id;
          this.cursors = new Map();
          this.changeMark = null;  // numbers of the old store too
          // The auth frame's subscriptions counted in the old store: each
          // thread is subscribed again as the app tracks it.
          if (this.ws) this.ws.subscribedAtAuth = null;
          this.subscribed = new Set();
          this.emit('store_changed', { store_id: f.store_id });
        }
        if (f.store_id) this.storeId = f.store_id;
        if (this.ws) this.ws.established = true;
        this.userId = f.user_id;
        this.attempt = 0;
        this.setState('online');
        // Renewed while this connection was opening: it takes the new token now.
        if (this.onOlderToken(this.ws)) this.renewSocket();
        clearInterval(this.pinger);
        this.pinger = setInterval(() => this.ping(), PING_EVERY_MS);
        this.catchUp();
        // Everything unanswered goes again: the server answers a repeated
        // client_msg_id with the stored original.
        this.inFlight = new Set();
        this.pump();
        // Those still shown as sent elsewhere come with the catch-up; any
        // left (a thread past the catch-up's reach) stop showing soon, if
        // this connection is still up then.
        if (this.sentElsewhere.size) {
          const ws = this.ws;
          const held = [...this.sentElsewhere.keys()];
          clearTimeout(this.sentElsewhereTimer);
          this.sentElsewhereTimer = setTimeout(() => {
            if (this.ws !== ws || this.state !== 'online') return;
            for (const id of held) this.sentElsewhere.delete(id);
            this.emitOutbox();
          }, SENT_ELSEWHERE_MS);
        }
        break;
      case 'new_message': {
        const m = f.data;
        const fresh = this.seen(m.thread_id, m.seq);
        if (m.sender_id !== this.userId) this.acknowledge(m);
        // Ours, sent by another tab or device: stored, so no longer to send.
        else if (m.client_msg_id) {
          this.dropFromOutbox(m.client_msg_id);
          this.settledElsewhere(m.client_msg_id);
        }
        if (fresh) this.emit('message', { message: m });
        break;
      }
      case 'message_sent': {
        const m = f.data;
        this.seen(m.thread_id, m.seq);
        this.dropFromOutbox(m.client_msg_id);
        this.settledElsewhere(m.client_msg_id);
        this.emit('sent', { message: m });
        break;
      }
      case 'message_edited': this.emit('edited', { message: f.data, synced: Boolean(this.ws?.syncing) }); break;
      case 'message_deleted': this.emit('deleted', { ...f, synced: Boolean(this.ws?.syncing) }); break;
      case 'changes_synced':
        // Kept only now: a connection lost before this leaves the old mark, and
        // the next one is sent those changes again.
        this.changeMark = f.change_mark;
        if (this.ws) this.ws.syncing = false;
        this.emit('changes_synced', f);
        break;
      case 'message_delivered': this.emit('delivered', f); break;
      case 'read_receipt': this.emit('read_receipt', f); break;
      case 'typing': this.emit('typing', f); break;
      case 'presence': this.emit('presence', f); break;
      case 'thread_created': this.emit('thread_created', f); break;
      case 'call_offer': case 'call_answer': case 'ice_candidate': case 'call_end':
        this.emit('call', f); break;
      case 'error':
        // The sync could not read the store (it gave up after a few tries):
        // the mark stays, and what changed is not here until the next sync.
        if (f.request_id === undefined && f.code === 'storage_unavailable' && this.ws?.syncing) {
          this.ws.syncing = false;
          this.emit('changes_unsynced', { code: f.code });
        }
        if (typeof f.request_id === 'string' && f.request_id.startsWith(SEND_REQUEST)) {
          this.refused(f.request_id.slice(SEND_REQUEST.length), f);
        }
        if (typeof f.request_id === 'string' && f.code === 'rate_limited') {
          // The auth frame's list was run up to this entry, not the rest;
          // a subscribe_thread frame was not run.
          if (f.request_id.startsWith(AUTH_ENTRY)) {
            const list = this.ws?.authList || [];
            const from = list.indexOf(f.request_id.slice(AUTH_ENTRY.length));
            if (from >= 0) this.resubscribeLater(list.slice(from));
          } else if (f.request_id.startsWith(SUBSCRIBE_REQUEST)) {
            this.resubscribeLater([f.request_id.slice(SUBSCRIBE_REQUEST.length)]);
          }
        }
        if (AUTH_FAILURES.has(f.code)) {
          if (f.request_id === RENEW_REQUEST || f.code === 'account_disabled' || f.code === 'token_revoked' || !this.onOlderToken(this.ws)) {
            this.emit('unauthorized', { code: f.code });
          }
        } else if (f.request_id === RENEW_REQUEST) this.renewTimer = setTimeout(() => this.renewSocket(), RENEW_RETRY_MS);
        break;
      case 'auth_renewed':
        if (this.ws && this.ws.renewing) this.ws.authToken = this.ws.renewing;
        break;
      default: break;
    }
    this.emit('frame', f);
  }

  // Delivery receipts: acknowledging a message moves the whole thread's
  // delivered mark up to it, so a burst (a replay after reconnecting) is
  // acknowledged by its newest message only, staying far under the rate limit.
  acknowledge(m) {
    this.acks = this.acks || new Map();
    const prev = this.acks.get(m.thread_id);
    if (prev && prev.seq >= m.seq) return;
    this.acks.set(m.thread_id, m);
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      for (const msg of this.acks.values()) this.sendFrame({ type: 'message_received', message_id: msg.id });
      this.acks.clear();
    }, 50);
  }

  // Records that seq of a thread was seen; false when it was seen already.
  seen(threadId, seq) {
    if (this.forgotten.has(threadId)) return true;  // the app decides (it may learn the user is back)
    let cursor = this.cursors.get(threadId) || 0;
    let ahead = this.ahead.get(threadId);
    if (seq <= cursor || (ahead && ahead.has(seq))) return false;
    if (!ahead) { ahead = new Set(); this.ahead.set(threadId, ahead); }
    ahead.add(seq);
    while (ahead.has(cursor + 1)) ahead.delete(++cursor);
    this.cursors.set(threadId, cursor);
    return true;
  }

  // Tells the client that everything up to lastSeq of a thread is known, so
  // the next (re)connection replays from there.
  // A thread not yet subscribed on this connection (one that appeared while
  // this device was offline) is subscribed at once, from its cursor.
  track(threadId, lastSeq) {
    this.forgotten.delete(threadId);
    let cursor = this.cursors.get(threadId) || 0;
    if (!this.cursors.has(threadId) || cursor < lastSeq) {
      cursor = lastSeq;
      const ahead = this.ahead.get(threadId);
      if (ahead) {
        for (const s of ahead) if (s <= cursor) ahead.delete(s);
        while (ahead.has(cursor + 1)) ahead.delete(++cursor);
      }
      this.cursors.set(threadId, cursor);
    }
    this.subscribe(threadId);
  }

  // Replays, on each connection, every message after the contiguous cursor;
  // those already seen above it are not emitted twice.
  catchUp() {
    this.subscribed = new Set(this.ws?.subscribedAtAuth || []);
    for (const threadId of this.cursors.keys()) this.subscribe(threadId);
  }

  // Subscriptions the rate limit refused: subscribed again a moment later
  // (a refusal then comes back here), unless a new connection does it first.
  resubscribeLater(threadIds) {
    const ws = this.ws;
    for (const id of threadIds) this.subscribed.delete(id);
    setTimeout(() => {
      if (this.ws !== ws) return;
      for (const id of threadIds) if (this.cursors.has(id)) this.subscribe(id);
    }, SUBSCRIBE_RETRY_MS);
  }

  subscribe(threadId) {
    if (this.subscribed.has(threadId)) return;
    const since_seq = this.cursors.get(threadId) || 0;
    if (this.sendFrame({ type: 'subscribe_thread', thread_id: threadId, since_seq, request_id: SUBSCRIBE_REQUEST + threadId }))
      this.subscribed.add(threadId);
  }

  // ------------------------------------------------------------------ sending

  // Queues a message and returns its pending form at once; 'sent' follows.
  send(threadId, content) {
    const item = {
      thread_id: threadId,
      content,
      client_msg_id: `w-${crypto.randomUUID()}`,
      created_at: new Date().toISOString(),
    };
    this.outbox.push(item);
    this.saveOutbox();
    this.pump();  // not straight away: it would overtake older queued messages
    return item;
  }

  // Transmits the oldest queued messages not yet transmitted on this
  // connection while fewer than SEND_WINDOW are unanswered, one per thread:
  // each answer makes room for the next, so the outbox goes in order at the
  // server's pace. One per thread because a refusal that may pass (say,
  // rate_limited) is sent again later: a message of the same thread sent
  // meanwhile would be stored before it, out of the order it was written.
  pump() {
    const busy = new Set();  // threads with a message unanswered
    for (const item of this.outbox) if (this.inFlight.has(item.client_msg_id)) busy.add(item.thread_id);
    for (const item of this.outbox) {
      if (this.inFlight.size >= SEND_WINDOW) return;
      if (busy.has(item.thread_id)) continue;
      if (!this.transmit(item)) return;  // offline: the next connection pumps
      this.inFlight.add(item.client_msg_id);
      busy.add(item.thread_id);
    }
  }

  transmit(item) {
    return this.sendFrame({ type: 'send_message', request_id: `${SEND_REQUEST}${item.client_msg_id}`, thread_id: item.thread_id,
      content: item.content, client_msg_id: item.client_msg_id });
  }

  // The server refused a queued message: sent again a little later when the
  // refusal may pass, else dropped from the outbox and reported.
  refused(clientMsgId, f) {
    const item = this.outbox.find((i) => i.client_msg_id === clientMsgId);
    if (!item) return;
    if (SEND_RETRYABLE.has(f.code)) {
      // It keeps its place in the window; a new connection has sent it already.
      const flight = this.inFlight;
      setTimeout(() => { if (flight === this.inFlight && this.outbox.includes(item)) this.transmit(item); }, SEND_RETRY_MS);
      return;
    }
    this.dropFromOutbox(clientMsgId);
    this.emit('failed', { item, code: f.code, message: f.message || f.code });
  }

  // Stops following a thread this user has left: its unsent messages could
  // never be sent, and resending them on each connection would only be refused.
  forget(threadId) {
    this.forgotten.add(threadId);
    this.cursors.delete(threadId);
    this.ahead.delete(threadId);
    this.subscribed.delete(threadId);
    const before = this.outbox.length;
    for (const i of this.outbox) if (i.thread_id === threadId) this.inFlight.delete(i.client_msg_id);
    this.outbox = this.outbox.filter((i) => i.thread_id !== threadId);
    if (this.outbox.length !== before) { this.saveOutbox(); this.pump(); }
  }

  dropOversize() {
    let largest = null;
    for (const item of this.outbox)
      if (this.inFlight.has(item.client_msg_id) && (!largest || item.content.length > largest.content.length)) largest = item;
    if (!largest) return;
    this.dropFromOutbox(largest.client_msg_id);
    this.emit('failed', { item: largest, code: 'payload_too_large', message: 'the message is too large to send' });
  }

  // Answered for good (stored, or refused for good): it leaves the outbox and
  // its place in the window goes to the next queued message.
  dropFromOutbox(clientMsgId) {
    const before = this.outbox.length;
    this.outbox = this.outbox.filter((i) => i.client_msg_id !== clientMsgId);
    this.inFlight.delete(clientMsgId);
    if (this.outbox.length !== before) this.saveOutbox();
    this.pump();
  }

  // Other tabs of the same user share the stored outbox, so this client's
  // changes are merged into what is stored now, never written over it: what
  // another tab queued meanwhile is kept (and taken over here: the tab that
  // queued it may be closed before the network is back), and only what this
  // client answered leaves. Two tabs may then both send a message; the server
  // stores a repeated client_msg_id once.
  saveOutbox() {
    if (this.outboxStore) {
      const mine = new Set(this.outbox.map((i) => i.client_msg_id));
      const kept = this.outboxStore.load().filter((i) => mine.has(i.client_msg_id) || !this.stored.has(i.client_msg_id));
      this.outbox = this.merged(kept, this.outbox);
      this.outboxStore.save(this.outbox);
      this.stored = new Set(this.outbox.map((i) => i.client_msg_id));
    }
    this.emitOutbox();
  }

  // Another tab changed the stored outbox: what it queued is taken over, and
  // what left it there (answered in that tab) leaves here too.
  outboxChangedElsewhere(list) {
    const ids = new Set(list.map((i) => i.client_msg_id));
    const gone = this.outbox.filter((i) => !ids.has(i.client_msg_id) && this.stored.has(i.client_msg_id));
    for (const i of gone) {
      this.inFlight.delete(i.client_msg_id);
      if (this.state !== 'online') this.sentElsewhere.set(i.client_msg_id, i);
    }
    this.outbox = this.merged(list, this.outbox.filter((i) => !gone.includes(i)));
    this.stored = ids;
    this.emitOutbox();
    this.pump();
  }

  emitOutbox() {
    const queued = new Set(this.outbox.map((i) => i.client_msg_id));
    const shown = [...this.sentElsewhere.values()].filter((i) => !queued.has(i.client_msg_id));
    this.emit('outbox', { pending: shown.length ? [...this.outbox, ...shown] : this.outbox });
  }

  // A message this tab showed as sent elsewhere has come: it is shown as stored.
  settledElsewhere(clientMsgId) {
    if (clientMsgId && this.sentElsewhere.delete(clientMsgId)) this.emitOutbox();
  }

  // The stored list in its order, then local items it lacks; an item this
  // client holds keeps its object (a pending retry checks it is still queued).
  merged(stored, local) {
    const byId = new Map(local.map((i) => [i.client_msg_id, i]));
    const out = stored.map((i) => byId.get(i.client_msg_id) || i);
    const present = new Set(out.map((i) => i.client_msg_id));
    for (const i of local) if (!present.has(i.client_msg_id)) out.push(i);
    return out;
  }

  // ------------------------------------------------------------------ the rest

  markRead(threadId, upToSeq) { return this.sendFrame({ type: 'mark_as_read', thread_id: threadId, up_to_seq: upToSeq }); }
  typing(threadId, isTyping) { return this.sendFrame({ type: 'typing', thread_id: threadId, is_typing: isTyping }); }
  // Call signalling: type is call_offer, call_answer, ice_candidate or call_end.
  signal(type, threadId, payload) {
    return type === 'call_offer'
      ? this.request({ type, thread_id: threadId, payload }, { quietMs: 1000 })
      : Promise.resolve(this.sendFrame({ type, thread_id: threadId, payload }));
  }
}
