// The app's state and what changes it: one ParleyClient, the session in
// localStorage, threads, messages, receipts, typing and presence. Components
// read `state` and re-render on `subscribe`; nothing here touches the DOM.
// The server decides everything that is a rule (unread counts, statuses,
// who may do what); this file only shows what the server said.
import { ParleyClient } from './parley-client.js';
import { newerEdit } from './changes.js';

const SESSION_KEY = 'parley.session';
// Why the server ended the last session (its user, the notice): the other
// tabs say the same, not "You signed out in another tab."
const ENDED_KEY = 'parley.session-ended';
const OUTBOX_KEY = 'parley.outbox';
const TYPING_TTL_MS = 7000;  // the server stops a quiet typist after 6 s

export const state = {
  session: null,       // {token, user}
  conn: 'offline',
  threads: new Map(),  // id -> thread from GET /api/chat/threads (+ live updates)
  messages: new Map(), // id -> {list, hasMore, loading}
  loadError: null,     // {threadId, message}: the open conversation's first page failed
  drafts: new Map(),   // thread id -> what the composer held there (in memory only)
  pending: [],         // the client's outbox
  failed: [],          // messages the server refused: {item, code, message}
  typing: new Map(),   // thread id -> Map(user id -> expiry ms)
  presence: new Map(), // user id -> {online, last_seen}
  openId: null,
  unreadTotal: 0,
  notice: null,        // a one-line message for the user
  connNote: null,      // why the server closed the connection, while reconnecting
  removedFrom: [],     // [{id, text}]: groups this user is no longer in, until dismissed
  editing: null,       // id of the message of one's own being edited in the open conversation
  messageNote: null,   // {id, text}: why an edit or deletion of that message did not happen
  announcement: { text: '', n: 0 },  // what the app's live region says (announce())
  call: null,          // see calls.js
  sends: 0,            // messages written here so far: the conversation goes to its newest on each
};

const listeners = new Set();
let scheduled = false;
export function subscribe(fn) { listeners.add(fn); return () => listeners.delete(fn); }
export function changed() {
  if (scheduled) return;
  scheduled = true;
  queueMicrotask(() => { scheduled = false; for (const fn of listeners) fn(); });
}

export let client = null;

// ---------------------------------------------------------------- session

function outboxStore(userId) {
  const key = `${OUTBOX_KEY}.${userId}`;
  return {
    load() { try { return JSON.parse(localStorage.getItem(key)) || []; } catch { return []; } },
    save(list) { localStorage.setItem(key, JSON.stringify(list)); },
    // Another tab of this user saved its outbox (the event never fires in the
    // tab that saved); signing out removes it (null: nothing left to send).
    watch(fn) {
      const onStorage = (e) => {
        if (e.key !== key && e.key !== null) return;
        let list = [];
        try { list = JSON.parse(localStorage.getItem(key)) || []; } catch { /* none */ }
        fn(list);
      };
      window.addEventListener('storage', onStorage);
      return () => window.removeEventListener('storage', onStorage);
    },
  };
}

// Restores a session: a token handed over in the URL (#token=…) wins over
// the saved one, but one for another account than the one signed in here
// only if the user agrees (tryToken): a link must not switch accounts
// unseen, or what they then write goes to someone else's account. Returns
// false when there is none (show sign-in).
export async function restore() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const linked = hash.get('token');
  if (linked) {
    history.replaceState(null, '', location.pathname + location.search);
    return tryToken(linked, 0, { linked: true });
  }
  let token = null;
  try { token = (JSON.parse(localStorage.getItem(SESSION_KEY)) || {}).token; } catch { token = null; }
  if (!token) return false;
  return tryToken(token, 0);
}

// Opens the session of a token once the server has taken it. While the
// server is out of reach: with the profile saved on this device the app opens
// at once (offline, reconnecting); without one (a token just handed over) the
// sign-in screen says so and the token is tried again with backoff, so the
// app opens by itself once the server answers.
const RESTORE_RETRY_MAX_MS = 15000;
let restoreTimer = null;
async function tryToken(token, attempt, { linked = false } = {}) {
  const probe = new ParleyClient({ token });
  let user;
  try {
    user = await probe.me();
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(SESSION_KEY)); } catch { /* none */ }
    if (linked && saved?.token && saved.user && saved.user.id !== user.id &&
        !window.confirm(`This link signs in as ${user.username}. Sign out ${saved.user.username} and switch?`)) {
      return tryToken(saved.token, 0);
    }
  } catch (err) {
    if (state.session) return true;  // signed in by hand meanwhile
    if (err.status === 401) {
      // A link's token refused: the session saved here, if any, stays.
      let kept = null;
      try { kept = JSON.parse(localStorage.getItem(SESSION_KEY)); } catch { /* none */ }
      if (linked && kept?.token && kept.token !== token) return tryToken(kept.token, 0);
      localStorage.removeItem(SESSION_KEY);
      state.notice = signedOutNotice(err.code);
      changed();
      return false;
    }
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(SESSION_KEY)); } catch { /* none */ }
    if (!saved || saved.token !== token || !saved.user) {
      state.notice = `Cannot reach the server (${err.message}). Trying again…`;
      changed();
      const base = Math.min(RESTORE_RETRY_MAX_MS, 1000 * 2 ** attempt);
      clearTimeout(restoreTimer);
      restoreTimer = setTimeout(() => { if (!state.session) tryToken(token, attempt + 1); }, base / 2 + Math.random() * base / 2);
      return false;
    }
    user = saved.user;
  }
  if (state.session) return true;
  await start(token, user);
  return true;
}

// What the sign-in screen says after the server refused the session.
function signedOutNotice(code) {
  if (code === 'token_expired') return 'Your session has expired. Please sign in again.';
  if (code === 'account_disabled') return 'Your account has been disabled. Ask an administrator to enable it.';
  if (code === 'token_revoked') return 'You were signed out on all devices. Please sign in again.';
  return 'Please sign in again.';
}

export async function signIn(login, password) {
  const probe = new ParleyClient();
  const phone = /^\+?[\d\s-]{5,}$/.test(login.trim());
  const data = await probe.login(phone ? { phone_number: login.trim(), password } : { username: login.trim(), password });
  await start(data.token, data.user, { fresh: true });
}

// The server's GET /health, or null (the sign-in screen reads `registration`).
export function serverHealth() { return new ParleyClient().health(); }

export async function register(profile) {
  const probe = new ParleyClient();
  const data = await probe.register(profile);
  await start(data.token, data.user, { fresh: true });
}

// Signing out on purpose drops what was written and not yet sent; a session
// that ended by itself (an expired or revoked token) keeps it, and it goes
// once the same user signs in again.
export function signOut(notice = null, { keepOutbox = false } = {}) {
  if (state.session && !keepOutbox) localStorage.removeItem(`${OUTBOX_KEY}.${state.session.user.id}`);
  if (state.session && notice && keepOutbox) localStorage.setItem(ENDED_KEY, JSON.stringify({ user: state.session.user.id, notice }));
  else localStorage.removeItem(ENDED_KEY);
  localStorage.removeItem(SESSION_KEY);
  endSession(notice);
}

// The saved session is the device's: signed out in another tab (or signed in
// there as someone else), this tab signs out too, or it would go on
// receiving that user's messages. What is saved is the other tab's, and
// stays. A renewal saving a new token for the same user changes nothing.
window.addEventListener('storage', (e) => {
  if (!state.session || (e.key !== SESSION_KEY && e.key !== null)) return;
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(SESSION_KEY)); } catch { /* none */ }
  if (saved?.user?.id === state.session.user.id) return;
  let ended = null;
  try { ended = JSON.parse(localStorage.getItem(ENDED_KEY)); } catch { /* none */ }
  if (saved?.user) endSession(`Signed in as ${saved.user.username} in another tab.`);
  else endSession(ended?.user === state.session.user.id ? ended.notice : 'You signed out in another tab.');
});

// What else ends with a session (calls.js: a call's camera and microphone).
const sessionEndHooks = new Set();
export function onSessionEnd(fn) { sessionEndHooks.add(fn); }

// Ends this tab's session; what is saved on the device is left as it is.
function endSession(notice) {
  for (const fn of sessionEndHooks) fn();
  if (client) client.disconnect();
  client = null;
  Object.assign(state, {
    session: null, conn: 'offline', threads: new Map(), messages: new Map(), loadError: null, drafts: new Map(), pending: [], failed: [], typing: new Map(),
    presence: new Map(), openId: null, unreadTotal: 0, notice, connNote: null, removedFrom: [], editing: null, messageNote: null, call: null,
    announcement: { text: '', n: 0 },
  });
  // What the server refused belongs to this account: the next one starts with Edit offered.
  editClosedUpTo = 0;
  knownNames.clear();
  changesHeard.clear();
  leaving.clear();
  removedBy.clear();
  if (location.hash) history.replaceState(null, '', location.pathname);
  updateTitle();  // a hidden tab showed the last user's unread count
  changed();
}

// `fresh`: the token was just issued to this device (a sign-in's answer);
// one handed over in a link may be older.
async function start(token, user, { fresh = false } = {}) {
  clearTimeout(restoreTimer);
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(SESSION_KEY)); } catch { /* none */ }
  // When this device got the token, on its own clock (see scheduleRefresh).
  const receivedAt = saved?.token === token ? saved.received_at : fresh ? Date.now() : undefined;
  localStorage.setItem(SESSION_KEY, JSON.stringify({ token, user, received_at: receivedAt }));
  state.session = { token, user, received_at: receivedAt };
  state.notice = null;
  client = new ParleyClient({ token, outboxStore: outboxStore(user.id) });
  client.userId = user.id;
  state.pending = client.outbox;
  wire(client);
  await loadThreads().catch(() => {});  // offline: loaded when the connection comes
  client.connect();
  scheduleRefresh(token, receivedAt);
  changed();
}

// Renews the token before it expires (at 80 % of its life), so a tab left
// open for days stays signed in. The life is counted from when this device
// got the token, on its own clock (`receivedAt`), not from the token's
// times against the device's clock: a clock days ahead would renew every
// few seconds for ever, one behind would let the token expire first. A
// token handed over in a link, or saved by an older version, has no
// receipt time: its own times serve until its first renewal.
function scheduleRefresh(token, receivedAt) {
  let claims;
  try { claims = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))); } catch { return; }
  const { exp, iat } = claims;  // not a JWT we can read: no renewal
  if (typeof exp !== 'number') return;
  let ms;
  let expires;  // on this device's clock, in ms
  if (typeof iat === 'number' && exp > iat && typeof receivedAt === 'number') {
    ms = receivedAt + (exp - iat) * 800 - Date.now();
    expires = receivedAt + (exp - iat) * 1000;
  } else {
    const at = typeof iat === 'number' ? iat + (exp - iat) * 0.8 : exp - 60;
    ms = (at - Date.now() / 1000) * 1000;
    expires = exp * 1000;
  }
  // At least 5 s from now (a token just renewed is not renewed again at
  // once), but never later than a little before it expires: a reload late
  // in a short token's life must renew it while it is still good.
  const left = expires - Date.now();
  renewAt(token, expires, Date.now() + Math.min(Math.max(5000, ms), Math.max(0, left - Math.min(5000, left / 4))));
}

// The renewal is due at `due`, on this device's clock. It is waited for in
// steps of a tenth of what is left (1 minute to an hour), the clock read
// again at each: a timer cannot wait past 2^31 - 1 ms (about 24.8 days),
// and time the machine spends asleep counts for the token but not for
// timers. A renewal that fails for want of the server (not a refusal) is
// tried again while the token still lives: after a third of its remaining
// life, 1 to 15 s.
function renewAt(token, expires, due) {
  const wait = due - Date.now();
  const step = Math.min(3600e3, Math.max(60e3, wait / 10));
  if (wait > step) {
    setTimeout(() => { if (client && client.token === token) renewAt(token, expires, due); }, step);
    return;
  }
  setTimeout(async () => {
    const c = client;
    if (!c || c.token !== token) return;
    try {
      const data = await c.refresh();
      if (client !== c) return;  // signed out, or in as someone else, meanwhile
      state.session = { token: data.token, user: state.session.user, received_at: Date.now() };
      localStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
      scheduleRefresh(data.token, state.session.received_at);
    } catch (err) {
      if (err.status === 401 || client !== c || c.token !== token) return;  // refused: the expiry path signs out
      const left = expires - Date.now();
      if (left > 0) renewAt(token, expires, Date.now() + Math.max(1000, Math.min(15000, left / 3)));
    }
  }, Math.max(0, wait));
}

// ---------------------------------------------------------------- events

function wire(c) {
  let connectedBefore = false;
  c.addEventListener('state', (e) => {
    state.conn = e.detail.state;
    if (state.conn === 'online') state.connNote = null;
    // After a reconnection the list may have changed (new threads, previews):
    // a thread that appeared meanwhile is subscribed as it is tracked.
    if (state.conn === 'online') {
      loadThreads().catch(() => {});
      // Edits and deletions made while away come as events (the client's
      // change mark); a client that has none yet reads the open one again.
      if (connectedBefore && c.changeMark === null) refreshHeld().catch(() => {});
      // The open conversation whose first page failed loads now.
      if (state.openId && !state.messages.has(state.openId)) loadNewest(state.openId);
      connectedBefore = true;
    }
    changed();
  });
  // A closing the server explains: said in the offline banner until the
  // connection is back (the client keeps reconnecting with backoff).
  // The reconnection's own failed attempts (1006) say nothing, and leave it.
  c.addEventListener('closed', (e) => {
    const note = closeNote(e.detail.code);
    if (note && note !== state.connNote) { state.connNote = note; changed(); }
  });
  c.addEventListener('unauthorized', (e) => {
    if (c !== client) return;
    signOut(signedOutNotice(e.detail.code), { keepOutbox: true });
  });
  // Restored from a backup: what this page holds may name seqs given again.
  // A reload reads it all anew (the outbox stays and is sent again).
  c.addEventListener('store_changed', () => { if (c === client) location.reload(); });
  // A signed-out client's late events (a timer's) are not the session's now.
  c.addEventListener('outbox', (e) => { if (c === client) { state.pending = e.detail.pending; changed(); } });
  c.addEventListener('failed', (e) => {
    if (c !== client) return;
    state.failed = [...state.failed, e.detail];
    // Not a participant: removed while offline, perhaps; the list read again
    // says so, and the message goes with the thread (applyThreads).
    if (e.detail.code === 'forbidden') loadThreads().catch(() => {});
    changed();
  });
  // The reconnection's sync of edits and deletions failed: what is held is read again.
  c.addEventListener('changes_unsynced', () => { if (c === client) refreshHeld().catch(() => {}); });
  c.addEventListener('message', (e) => onMessage(e.detail.message, false));
  // A group this user is in was just made (by them elsewhere, or by someone else).
  c.addEventListener('thread_created', () => reloadThreadsSoon());
  c.addEventListener('sent', (e) => onMessage(e.detail.message, true));
  c.addEventListener('edited', (e) => {
    const m = e.detail.message;
    const held = heldMessage(m.thread_id, m.seq);
    // What changed while this device was away is shown, not announced one by one.
    if (held && !e.detail.synced && !mine(held) && newerEdit(held, m) && held.content !== m.content) sayChange(held, 'edited');
    applyEdit(m);
  });
  c.addEventListener('deleted', (e) => {
    const f = e.detail;
    const held = heldMessage(f.thread_id, f.seq);
    if (held && !f.synced && !held.deleted && !deletingHere.has(held.id)) sayChange(held, 'deleted');
    update(f.thread_id, f.seq, tombstone);
    refreshUnread();  // a deleted message no longer counts as unread
  });
  c.addEventListener('delivered', (e) => bumpReceipt(e.detail.thread_id, e.detail.user_id, 'last_delivered_seq', e.detail.seq));
  c.addEventListener('read_receipt', (e) => {
    const f = e.detail;
    bumpReceipt(f.thread_id, f.user_id, 'last_read_seq', f.seq);
    if (f.user_id === state.session.user.id) refreshUnread();  // read on this or another device
  });
  c.addEventListener('typing', (e) => {
    const f = e.detail;
    const who = f.user_id || f.from_user_id;
    if (!state.typing.has(f.thread_id)) state.typing.set(f.thread_id, new Map());
    const m = state.typing.get(f.thread_id);
    if (f.is_typing) m.set(who, Date.now() + TYPING_TTL_MS);
    else m.delete(who);
    changed();
    setTimeout(changed, TYPING_TTL_MS + 50);
  });
  c.addEventListener('presence', (e) => {
    presenceHeard.set(e.detail.user_id, ++eventsHeard);
    state.presence.set(e.detail.user_id, { online: e.detail.online, last_seen: e.detail.last_seen });
    changed();
  });
}

function closeNote(code) {
  if (code === 4429) {
    return 'This account has too many tabs or devices connected at once. Close some of them: this tab keeps trying.';
  }
  if (code === 1001) return 'The server is restarting.';
  if (code === 1008) return 'The server closed the connection (too many requests, or no answer to its ping).';
  return null;
}

export function typingIn(threadId) {
  const m = state.typing.get(threadId);
  if (!m) return [];
  const now = Date.now();
  return [...m].filter(([, until]) => until > now).map(([id]) => id);
}

function onMessage(m, own) {
  const t = state.threads.get(m.thread_id);
  // A new conversation: known once the list is read again, then shown (and notified) as any other.
  if (!t) {
    if (settleRemovalNote(m)) return;
    loadThreads().then(() => { if (state.threads.has(m.thread_id)) onMessage(m, own); }, () => {});
    return;
  }
  const box = state.messages.get(m.thread_id);
  if (box) accept(m.thread_id, box, m);
  if (!t.last_message || t.last_message.seq < m.seq) {
    t.last_message = m;
    t.last_seq = Math.max(t.last_seq || 0, m.seq);
    t.last_activity = m.created_at;
  }
  // The sender stopped typing: it is shown as soon as their message is.
  state.typing.get(m.thread_id)?.delete(m.sender_id);
  // Sending marks the sender's thread read up to their message (docs/protocol.md),
  // and the server announces no read_receipt for that: the ticks learn it here.
  bumpReceipt(m.thread_id, m.sender_id, 'last_read_seq', m.seq);
  bumpReceipt(m.thread_id, m.sender_id, 'last_delivered_seq', m.seq);
  // Sending marks one's own thread read on the server, so any message may change the counts.
  refreshUnread();
  // Someone joined or left (the server records it as a system message): the
  // members, or whether this user is still in the thread at all, changed.
  if (m.message_type === 'system') {
    noteRemoval(t, m);
    reloadThreadsSoon();
  }
  if (!own && m.sender_id !== state.session.user.id) notify(t, m);
  changed();
}

// A box holds one unbroken run of a thread's messages (history pages and
// live ones). A live or replayed message outside it would leave a hole that
// neither scroll-back (before the oldest) nor gap filling (after the newest)
// ever looks into, so: while the first page loads, live messages wait for it
// (loadNewest fills up to the thread's last_seq afterwards); one older than
// the run is left to scroll-back; one past its end fills the gap in between.
function accept(threadId, box, m) {
  if (box.loading && !box.list.length) return;
  const list = box.list;
  if (list.length && m.seq < list[0].seq) return;
  const last = list.length ? list[list.length - 1].seq : null;
  insert(box, m);
  if (last !== null && m.seq > last + 1) fillGap(threadId, last, m.seq).catch(() => {});
}

// An edit or a deletion (from any device of anyone): the copies held of the
// message, in its conversation and as its thread's last message, change.
function update(threadId, seq, change) {
  noteChange(threadId, seq, change);
  const box = state.messages.get(threadId);
  const i = box ? indexOfSeq(box.list, seq) : -1;
  if (i >= 0) { box.list[i] = change(box.list[i]); stopEditingIfDeleted(box.list[i]); }
  const t = state.threads.get(threadId);
  if (t && t.last_message && t.last_message.seq === seq) t.last_message = change(t.last_message);
  changed();
}

// The answer to one's own edit and its event both come, in either order, and
// may cross a deletion or a later edit from another device: a deleted message
// stays deleted, and an older edit does not replace a newer one.
function applyEdit(m) {
  update(m.thread_id, m.seq, editTo(m));
}

function editTo(m) {
  const change = (old) => (newerEdit(old, m) ? { ...old, ...m } : old);
  change.edit = m;
  return change;
}

// REST answers (history pages, the thread list) are read at one moment and
// land later: an edit or deletion heard meanwhile over the socket would be
// undone by them (a deleted message shown again). The newest change heard of
// each message is kept for CHANGES_KEPT_MS, longer than any request may take
// (20 s), and applied to every copy that arrives from a page. Kept that
// short, the list stays small, and a seq given again after a restore of
// PostgreSQL (which tells pages nothing) is not taken for the old message.
// Timed by the monotonic clock: a wall clock set forward while a page is on
// its way must not drop a change.
const CHANGES_KEPT_MS = 120e3;
const CHANGES_KEPT_MAX = 2000;
const changesHeard = new Map();  // "thread id/seq" -> {change: tombstone or editTo(m), at}, oldest first
function noteChange(threadId, seq, change) {
  const key = `${threadId}/${seq}`;
  const had = recent(changesHeard.get(key))?.change;
  if (had === tombstone) return;  // nothing comes after a deletion
  if (had && change !== tombstone && !(change.edit && newerEdit(had.edit, change.edit))) return;
  changesHeard.delete(key);
  const now = performance.now();
  changesHeard.set(key, { change, at: now });
  for (const [k, c] of changesHeard) {
    if (c.at > now - CHANGES_KEPT_MS && changesHeard.size <= CHANGES_KEPT_MAX) break;
    changesHeard.delete(k);
  }
}

// The message as the changes heard of it lately say it is now.
function asHeard(threadId, m) {
  const heard = m && recent(changesHeard.get(`${threadId}/${m.seq}`));
  if (!heard || (heard.change === tombstone && m.deleted)) return m;
  return heard.change(m);
}

function recent(heard) {
  return heard && heard.at > performance.now() - CHANGES_KEPT_MS ? heard : undefined;
}

// The open conversation's copy of a message, if it is on screen.
function heldMessage(threadId, seq) {
  if (threadId !== state.openId) return null;
  const box = state.messages.get(threadId);
  const i = box ? indexOfSeq(box.list, seq) : -1;
  return i >= 0 ? box.list[i] : null;
}

// The log announces new messages only (ui.js), so a change inside one on
// screen would go unheard until the reader reached it: someone else's edit,
// and a deletion this screen did not ask for (by an admin, or on another
// device), are said by the live region as they happen. One's own edits are
// not: they come from this user, here or on another device of theirs.
function sayChange(held, what) {
  const who = held.sender?.full_name || held.sender?.username || 'someone';
  if (what === 'edited') announce(`${who} edited a message`);
  else announce(mine(held) ? 'Your message was deleted' : `A message from ${who} was deleted`);
}

// A message being edited and deleted meanwhile (on another device, or by a
// group's admin) has nothing left to edit: its editor goes, and Up or a later
// render must not bring it back.
function stopEditingIfDeleted(m) {
  if (m.deleted && state.editing === m.id) state.editing = null;
}

function tombstone(old) { return { ...old, content: '', deleted: true }; }

// Edits and deletions made while this device was offline come as events
// after a reconnection, from the client's change mark (ParleyClient). A
// client that has no mark (its first connection's changes_synced never
// came), or whose sync failed (changes_unsynced), reads the conversations
// held again instead: the open one's newest
// messages (up to REFRESH_MAX) are fetched and replace the copies held; the
// others are dropped and load afresh when opened.
const REFRESH_MAX = 600;
async function refreshHeld() {
  for (const id of [...state.messages.keys()]) {
    if (id !== state.openId) state.messages.delete(id);
  }
  const id = state.openId;
  const box = id && state.messages.get(id);
  if (!box || !box.list.length) return;
  const list = box.list;
  let after = Math.max(list[0].seq, list[list.length - 1].seq - REFRESH_MAX + 1) - 1;
  for (let page = 0; page < REFRESH_MAX / 200; page++) {
    const msgs = await client.history(id, { after_seq: after, limit: 200 });
    if (state.messages.get(id) !== box) return;
    for (const m of msgs) {
      const now = asHeard(id, m);
      const i = indexOfSeq(box.list, m.seq);
      if (i >= 0) box.list[i] = now; else insert(box, now);
      stopEditingIfDeleted(now);
    }
    changed();
    if (msgs.length < 200) return;
    after = msgs[msgs.length - 1].seq;
  }
}

let reloadTimer = null;
function reloadThreadsSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => { if (client) loadThreads().catch(() => {}); }, 100);
}

function insert(box, m) {
  m = asHeard(m.thread_id, m);
  const list = box.list;
  if (list.length && list[list.length - 1].seq < m.seq) { list.push(m); return; }
  const i = list.findIndex((x) => x.seq >= m.seq);
  if (i >= 0 && list[i].seq === m.seq) return;
  if (i < 0) list.push(m); else list.splice(i, 0, m);
}

// The index of the message with this seq in a list in seq order, or -1.
function indexOfSeq(list, seq) {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid].seq < seq) lo = mid + 1; else hi = mid;
  }
  return lo < list.length && list[lo].seq === seq ? lo : -1;
}

// A thread `t` from a REST answer, made no older than `held`, what the app
// had (from events heard while the answer was on its way): receipts never go
// back, the newer last message stays, and changes heard of it apply.
function keepNewer(held, t) {
  if (held) {
    for (const p of t.participants || []) {
      const old = held.participants.find((x) => x.user_id === p.user_id);
      if (!old) continue;
      p.last_read_seq = Math.max(p.last_read_seq || 0, old.last_read_seq || 0);
      p.last_delivered_seq = Math.max(p.last_delivered_seq || 0, old.last_delivered_seq || 0);
    }
    if (held.last_message && (!t.last_message || t.last_message.seq < held.last_message.seq)) {
      t.last_message = held.last_message;
    }
    if ((held.last_activity || '') > (t.last_activity || '')) t.last_activity = held.last_activity;
    t.last_seq = Math.max(t.last_seq || 0, held.last_seq || 0);
  }
  t.last_message = asHeard(t.id, t.last_message);
}

function bumpReceipt(threadId, userId, field, seq) {
  const t = state.threads.get(threadId);
  const p = t && t.participants.find((x) => x.user_id === userId);
  if (p && (p[field] || 0) < seq) { p[field] = seq; changed(); }
}

// Unread counts are the server's: asked again whenever they may have changed.
// One question at a time, and one more after it if something changed while it
// was asked: two answers on two connections can arrive out of order, and an
// older answer applied last would leave a stale badge (1 for 2 messages).
let unreadTimer = null;
let unreadAsking = false;
let unreadAgain = false;
function refreshUnread() {
  clearTimeout(unreadTimer);
  unreadTimer = setTimeout(askUnread, 100);
}

async function askUnread() {
  if (!client) return;
  if (unreadAsking) { unreadAgain = true; return; }
  unreadAsking = true;
  try {
    const data = await client.unreadCount();
    state.unreadTotal = data.unread_count;
    const byThread = new Map(data.threads.map((x) => [x.thread_id, x.unread_count]));
    for (const t of state.threads.values()) t.unread_count = byThread.get(t.id) || 0;
    updateTitle();
    changed();
  } catch { /* offline: refreshed on reconnect */ } finally {
    unreadAsking = false;
    if (unreadAgain) { unreadAgain = false; askUnread(); }
  }
}

// ---------------------------------------------------------------- loading

// username -> full name of everyone seen in this session's thread lists: a
// system line may name someone no longer in its thread (systemText).
const knownNames = new Map();

// One list request at a time. Answers applied out of order would put back a
// list older than one already applied: a group just joined would vanish
// again, and its queued messages be forgotten with it. A call made while a
// request is in flight is answered by the next one, which starts when that
// one ends (one for every such call: they share it).
let threadsLoading = null;
let threadsNext = null;
let eventsHeard = 0;             // presence events so far
const presenceHeard = new Map(); // user id -> eventsHeard at their latest
export function loadThreads() {
  if (!threadsLoading) {
    threadsLoading = applyThreads().finally(() => { threadsLoading = null; });
    return threadsLoading;
  }
  threadsNext ??= threadsLoading.catch(() => {}).then(() => {
    threadsNext = null;
    return loadThreads();
  });
  return threadsNext;
}

async function applyThreads() {
  const c = client;
  const asked = eventsHeard;
  const list = await c.threads();
  if (c !== client) return;  // signed out, or in as someone else, meanwhile
  const threads = new Map();
  let total = 0;
  for (const t of list) {
    threads.set(t.id, t);
    total += t.unread_count || 0;
    // The answer may be older than receipts and presence events that came
    // over the socket while it was on its way (a reconnection reloads the
    // list as the other side reads): those stay. Receipts never go back.
    keepNewer(state.threads.get(t.id), t);
    // What the server says now (presence events missed while offline included).
    for (const p of t.participants) {
      if (p.full_name) knownNames.set(p.username, p.full_name);
      if ((presenceHeard.get(p.user_id) || 0) <= asked) state.presence.set(p.user_id, { online: p.online, last_seen: p.last_seen });
    }
    // This device catches up from what it last acknowledged (at most the
    // newest 200: older ones are in the history when the thread is opened).
    const mine = t.participants.find((p) => p.user_id === state.session.user.id);
    client.track(t.id, Math.max((mine && mine.last_delivered_seq) || 0, t.last_seq - 200, 0));
  }
  // Threads this user is no longer in (removed from a group): their
  // messages, unsent messages and the open conversation go, and the user is
  // told, unless they left themselves.
  for (const [id, old] of state.threads) {
    if (threads.has(id)) continue;
    if (!leaving.has(id)) {
      const name = threadName(old);
      const by = removedBy.get(id);
      const said = by ? `${by} removed you from ${name}.` : `You are no longer in ${name}.`;
      state.removedFrom = [...state.removedFrom.filter((r) => r.id !== id), { id, text: said, thread: old }];
      announce(said);
    }
    leaving.delete(id);
    removedBy.delete(id);
    state.messages.delete(id);
    client.forget(id);
    if (state.openId === id) location.hash = '';
  }
  state.threads = threads;
  // Back in a group this user was told they left (added again after a list
  // read in between): the note about it goes, as the "added" line's would.
  if (state.removedFrom.some((r) => threads.has(r.id))) state.removedFrom = state.removedFrom.filter((r) => !threads.has(r.id));
  // Refused as not a participant, in a thread this user is not in: dropped
  // with the thread's queue (a later re-add does not show them as unsent).
  state.failed = state.failed.filter((f) => f.code !== 'forbidden' || threads.has(f.item.thread_id));
  state.unreadTotal = total;
  updateTitle();
  // The list's counts may be older than an answer already applied: ask again.
  refreshUnread();
  // A thread on screen that missed messages while offline: fill the gap
  // (a box still waiting for its first page fills after it).
  for (const [id, box] of state.messages) {
    const t = threads.get(id);
    if (box.loading && !box.list.length) continue;
    const last = box.list.length ? box.list[box.list.length - 1].seq : 0;
    if (t && t.last_seq > last) fillGap(id, last, t.last_seq).catch(() => {});
  }
  changed();
}

// Gaps are filled page by page up to GAP_PAGES_MAX pages; a longer one (a
// device offline for days in a busy group) would take minutes, so the
// conversation starts again from its newest page, as when it opens.
const GAP_PAGE = 200;
const GAP_PAGES_MAX = 20;

// Fetches the messages after `after` (up to about `upTo`, the newest known)
// into the thread's box, keeping it one unbroken run (see accept).
async function fillGap(threadId, after, upTo) {
  const box = state.messages.get(threadId);
  if (!box) return;
  // With nothing held there is no run to continue: the newest page is what
  // opening the conversation would show.
  if (!box.list.length || upTo - after > GAP_PAGE * GAP_PAGES_MAX) { replaceWithNewest(threadId); return; }
  if (!(await fillPages(threadId, box, after))) replaceWithNewest(threadId);
}

// Returns false when GAP_PAGES_MAX full pages did not reach the end.
async function fillPages(threadId, box, after) {
  for (let page = 0; page < GAP_PAGES_MAX; page++) {
    const msgs = await client.history(threadId, { after_seq: after, limit: GAP_PAGE });
    if (state.messages.get(threadId) !== box) return true;  // replaced or dropped meanwhile
    for (const m of msgs) insert(box, m);
    changed();
    if (msgs.length < GAP_PAGE) return true;
    after = msgs[msgs.length - 1].seq;
  }
  return false;
}

// The open conversation reloads from its newest page; another one is
// dropped and loads afresh when opened.
function replaceWithNewest(threadId) {
  if (threadId === state.openId) loadNewest(threadId);
  else state.messages.delete(threadId);
  changed();
}

export function openThread(id) {
  if (id !== state.openId) { state.editing = null; state.messageNote = null; }
  state.openId = id;
  changed();
  if (id && !state.messages.has(id)) loadNewest(id);
}

// Loads a conversation's newest page into a new box. If that fails no box is
// left behind (it would pass for an empty conversation, and gap filling would
// start from its first message): the pane says why, and the conversation
// loads again when the connection is back.
const FIRST_PAGE = 50;
async function loadNewest(id) {
  const box = { list: [], hasMore: true, loading: true };
  state.messages.set(id, box);
  if (state.loadError?.threadId === id) state.loadError = null;
  changed();
  let msgs;
  try {
    msgs = await client.history(id, { limit: FIRST_PAGE });
  } catch (err) {
    if (state.messages.get(id) !== box) return;
    state.messages.delete(id);
    if (id === state.openId) state.loadError = { threadId: id, message: err.message };
    changed();
    return;
  }
  if (state.messages.get(id) !== box) return;  // replaced or dropped meanwhile
  for (const m of msgs) insert(box, m);
  box.hasMore = msgs.length === FIRST_PAGE && msgs[0].seq > 1;
  box.loading = false;
  // Messages that came live while the page loaded were not kept (see accept).
  // An empty page means the thread was empty: all it has now came since, so
  // it is filled from the start (not reloaded, which would only come back empty).
  const t = state.threads.get(id);
  const last = box.list.length ? box.list[box.list.length - 1].seq : 0;
  if (t && t.last_seq > last) {
    if (box.list.length) fillGap(id, last, t.last_seq).catch(() => {});
    else fillPages(id, box, 0).then((done) => { if (!done) replaceWithNewest(id); }, () => {});
  }
  changed();
}

export async function loadOlder(id) {
  const box = state.messages.get(id);
  if (!box || box.loading || !box.hasMore || !box.list.length) return false;
  box.loading = true;
  changed();
  try {
    const msgs = await client.history(id, { before_seq: box.list[0].seq, limit: 100 });
    box.list.unshift(...msgs.filter((m) => m.seq < box.list[0].seq).map((m) => asHeard(id, m)));
    box.hasMore = msgs.length === 100 && msgs[0].seq > 1;
  } finally {
    box.loading = false;
    changed();
  }
  return true;
}

// ---------------------------------------------------------------- actions

// Forgets a message the server refused (its note has been read).
export function discardFailed(clientMsgId) {
  state.failed = state.failed.filter((f) => f.item.client_msg_id !== clientMsgId);
  changed();
}

// What is written and not sent stays with its conversation while the user
// looks at another one (the composer is made anew for each).
export function draftOf(threadId) { return state.drafts.get(threadId) || ''; }
export function keepDraft(threadId, text) {
  if (text) state.drafts.set(threadId, text); else state.drafts.delete(threadId);
}

export function send(threadId, text) {
  state.drafts.delete(threadId);
  state.sends += 1;
  client.send(threadId, text);
  client.typing(threadId, false);
  changed();
}

// ---------------------------------------------------------------- editing and deleting

// The server does not publish its edit window (--edit-window), so Edit is
// offered until the server refuses a message as too old. Every message sent
// before that one is too old as well (the server's clock only moves on), so
// from then on Edit is offered on none of them.
let editClosedUpTo = 0;  // ms: created_at of the newest message refused as too old

// Edit is offered on one's own messages; Delete on those and, to an admin of
// a group, on everyone's (docs/protocol.md, "Moderation and edits"). The
// server has the last word (its refusal is shown).
function deletable(m) { return !!m.id && m.message_type !== 'system' && !m.deleted; }
function mine(m) { return m.sender_id === state.session.user.id; }
function adminOf(threadId) {
  const t = state.threads.get(threadId);
  return !!t && t.type === 'group' && t.participants.some((p) => p.user_id === state.session.user.id && p.is_admin);
}
export function mayDelete(m) { return deletable(m) && (mine(m) || adminOf(m.thread_id)); }
export function mayEdit(m) { return deletable(m) && mine(m) && Date.parse(m.created_at) > editClosedUpTo; }

// The newest message of one's own that may still be edited among those with
// seq in [fromSeq, toSeq] (Up in an empty composer edits it). Only the ones
// on screen: an editor opened on a message outside the window would never show.
export function lastEditable(threadId, fromSeq, toSeq) {
  const list = state.messages.get(threadId)?.list || [];
  for (let i = list.length - 1; i >= 0 && list[i].seq >= fromSeq; i--) {
    if (list[i].seq <= toSeq && mayEdit(list[i])) return list[i];
  }
  return null;
}

export function startEditing(id) {
  state.editing = id;
  state.messageNote = null;
  changed();
}

// Only the edit that asked: the user may have started another meanwhile.
export function stopEditing(id) {
  if (state.editing !== id) return;
  state.editing = null;
  changed();
}

// Clearing (text null) clears only that message's note: a late answer about
// one message must not take away what is said about another.
export function noteOn(id, text) {
  if (!text && state.messageNote?.id !== id) return;
  if (text) announce(text); else unannounce(state.messageNote.text);
  state.messageNote = text ? { id, text } : null;
  changed();
}

// Said by the app's live region (ui.js), which is on the page, empty, before
// anything is said: a region inserted together with its text may go unheard.
// n counts what was said, so the same words twice still change its text.
export function announce(text) {
  state.announcement = { text, n: state.announcement.n + 1 };
  changed();
}

// Empties the live region if it still says `text` (and nothing said since).
export function unannounce(text) {
  if (state.announcement.text !== text) return;
  announce('');
}

// Shows the message as the server answers it; a refusal is thrown for the
// caller to explain, and the message stays as it was.
export async function editMessage(m, content) {
  try {
    applyEdit(await client.editMessage(m.id, content));
  } catch (err) {
    if (err.code === 'edit_window_passed') editClosedUpTo = Math.max(editClosedUpTo, Date.parse(m.created_at));
    // Deleted meanwhile, and its event not here yet: shown as the server has it.
    if (err.code === 'message_deleted') update(m.thread_id, m.seq, tombstone);
    throw err;
  }
}

// Deletions asked for on this screen, whose event is not said (sayChange):
// it may come before or after the answer, so each is kept a while after it.
const deletingHere = new Set();
export async function deleteMessage(m) {
  deletingHere.add(m.id);
  try {
    await client.deleteMessage(m.id);
  } catch (err) {
    deletingHere.delete(m.id);  // refused: a deletion by someone else is said again
    throw err;
  }
  update(m.thread_id, m.seq, tombstone);
  setTimeout(() => deletingHere.delete(m.id), 30000);
}

// The read mark counts once the server's read_receipt says so: a mark sent
// into a connection that was dying is sent again (after 2 s, on a render).
const readSent = new Map();  // thread id -> {seq, at}
export function markRead(threadId, seq) {
  const t = state.threads.get(threadId);
  const me = t && t.participants.find((p) => p.user_id === state.session.user.id);
  if (!me || (me.last_read_seq || 0) >= seq) return;
  const sent = readSent.get(threadId);
  if (sent && sent.seq >= seq && Date.now() - sent.at < 2000) return;
  if (client.markRead(threadId, seq)) readSent.set(threadId, { seq, at: Date.now() });
}

export async function startDirect(username) {
  const t = await client.createThread({ type: 'direct', usernames: [username] });
  await loadThreads();
  location.hash = `#/t/${t.id}`;
}

export async function createGroup(title, usernames) {
  const t = await client.createThread({ type: 'group', title, usernames });
  await loadThreads();
  location.hash = `#/t/${t.id}`;
}

export async function addMember(threadId, userId) {
  const t = await client.addParticipants(threadId, [userId]);
  const held = state.threads.get(threadId);
  if (!held) return;
  const merged = { ...held, ...t };
  keepNewer(held, merged);
  state.threads.set(threadId, merged);
  changed();
  reloadThreadsSoon();  // members changed by others while the answer was on its way
}

// Groups this user is leaving on purpose (here, or on another device: its
// "… left" line): their going from the list is not news. Who removed this
// user, from the "… removed …" line, names the remover in the note.
const leaving = new Set();
const removedBy = new Map();  // thread id -> the remover's name
function noteRemoval(t, m) {
  const me = state.session.user.username;
  if (m.content === `${me} left`) leaving.add(t.id);
  const removed = /^(\S+) removed (\S+)$/.exec(m.content);
  if (removed && removed[2] === me) removedBy.set(t.id, nameOfUsername(t, removed[1]));
  // Back in it (added again before the list was read): nothing of the
  // removal holds, and a note about it goes.
  const added = /^(\S+) added (\S+)$/.exec(m.content);
  if (added && added[2] === me) {
    leaving.delete(t.id);
    removedBy.delete(t.id);
    state.removedFrom = state.removedFrom.filter((r) => r.id !== t.id);
  }
}
// The list read on reconnecting can answer before the catch-up brings the
// lines that say how this user went from a thread it no longer holds: the
// note said "You are no longer in …". Each line, in seq order, does what it
// would have done first: "… removed <me>" names the remover, and the user's
// own "… left" (on another device) takes the note back. An "… added <me>"
// line changes nothing here: the list it has read again says whether they
// are in the group now (applyThreads then takes the note back).
function settleRemovalNote(m) {
  if (m.message_type !== 'system') return false;
  const note = state.removedFrom.find((r) => r.id === m.thread_id);
  if (!note) return false;
  const me = state.session.user.username;
  if (m.content === `${me} left`) {
    state.removedFrom = state.removedFrom.filter((r) => r !== note);
    unannounce(note.text);
    changed();
    return true;
  }
  const removed = /^(\S+) removed (\S+)$/.exec(m.content);
  if (!removed || removed[2] !== me) return false;
  const said = `${nameOfUsername(note.thread, removed[1])} removed you from ${threadName(note.thread)}.`;
  state.removedFrom = state.removedFrom.map((r) => (r === note ? { ...r, text: said } : r));
  if (said !== note.text) announce(said);
  changed();
  return true;
}
export async function removeMember(threadId, userId) {
  const self = userId === state.session.user.id;
  if (self) leaving.add(threadId);
  try {
    await client.removeParticipant(threadId, userId);
  } catch (err) {
    if (self) leaving.delete(threadId);
    throw err;
  }
  await loadThreads();
  if (!state.threads.has(threadId)) location.hash = '';
}

export function dismissRemoved() {
  state.removedFrom = [];
  changed();
}

// ---------------------------------------------------------------- naming

export function threadName(t) {
  if (t.type === 'group') return t.title || 'Group';
  const other = t.participants.find((p) => p.user_id !== state.session.user.id);
  return other ? (other.full_name || other.username) : 'Just you';
}

export function participantName(t, userId) {
  const p = t.participants.find((x) => x.user_id === userId);
  return p ? (p.full_name || p.username) : null;
}

// A system line ("alice added bob", "alice removed bob", "alice left", as the
// server stores it) with people's full names where this app knows them; a
// line of another shape is shown as it is.
export function systemText(t, m) {
  const named = (username) => nameOfUsername(t, username);
  const two = /^(\S+) (added|removed) (\S+)$/.exec(m.content);
  if (two) return `${named(two[1])} ${two[2]} ${named(two[3])}`;
  const left = /^(\S+) left$/.exec(m.content);
  if (left) return `${named(left[1])} left`;
  const admin = /^(\S+) is now an admin$/.exec(m.content);
  if (admin) return `${named(admin[1])} is now an admin`;
  return m.content;
}

function nameOfUsername(t, username) {
  const p = t.participants.find((x) => x.username === username);
  return p?.full_name || knownNames.get(username) || username;
}

export function otherParticipant(t) {
  return t.type === 'direct' ? t.participants.find((p) => p.user_id !== state.session.user.id) : null;
}

export function sortedThreads() {
  return [...state.threads.values()].sort((a, b) => (b.last_activity || '').localeCompare(a.last_activity || ''));
}

// ---------------------------------------------------------------- attention

export function updateTitle() {
  document.title = document.hidden && state.unreadTotal > 0 ? `(${state.unreadTotal}) Parley` : 'Parley';
}
document.addEventListener('visibilitychange', updateTitle);

function notify(t, m) {
  if (!document.hidden || typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
  try {
    // In a group the title names the group: the body says who wrote (a
    // system line names its people itself).
    const system = m.message_type === 'system';
    const who = t.type === 'group' && !system ? participantName(t, m.sender_id) : null;
    const text = system ? systemText(t, m) : m.content;
    const body = who ? `${who}: ${text}` : text;
    const n = new Notification(threadName(t), { body: body.slice(0, 140), tag: t.id });
    n.onclick = () => { window.focus(); location.hash = `#/t/${t.id}`; };
  } catch { /* some browsers only allow notifications from a service worker */ }
}
