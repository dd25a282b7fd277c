// The screens: sign-in, the thread list, the conversation, the call panel.
// Message text is only ever rendered as text (Preact escapes it); there is no
// innerHTML anywhere in the app.
import { html } from 'htm/preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import * as store from './store.js';
import { state } from './store.js';
import * as calls from './calls.js';

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
const shortDayFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });

// The server's rule for blank text (src/common/utf8.cc): nothing but white
// space, control characters and characters that draw nothing. A message the
// server would refuse as empty is not sent (it would only fail in the outbox).
const BLANK = /^[\s\u0000-\u001f\u007f-\u009f\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\u{1bca0}-\u{1bca3}\u{1d173}-\u{1d17a}\u{e0000}-\u{e0fff}]*$/u;
function isBlank(text) { return BLANK.test(text); }

function dayKey(iso) { const d = new Date(iso); return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`; }
function dayLabel(iso) {
  const d = new Date(iso);
  const today = new Date();
  const yesterday = new Date(Date.now() - 86400000);
  if (dayKey(iso) === dayKey(today.toISOString())) return 'Today';
  if (dayKey(iso) === dayKey(yesterday.toISOString())) return 'Yesterday';
  return dayFmt.format(d);
}
function shortTime(iso) {
  if (!iso) return '';
  return dayKey(iso) === dayKey(new Date().toISOString()) ? timeFmt.format(new Date(iso)) : shortDayFmt.format(new Date(iso));
}
// While this device is offline, nobody's presence is known.
function lastSeen(p) {
  if (state.conn !== 'online') return 'presence unknown while offline';
  const pr = state.presence.get(p.user_id) || p;
  if (pr.online) return 'online';
  return pr.last_seen ? `last seen ${shortTime(pr.last_seen)}` : 'offline';
}
function isOnline(userId) { return state.conn === 'online' && !!(state.presence.get(userId) || {}).online; }
function nameOf(t, userId) { return store.participantName(t, userId) || 'Someone'; }

// ---------------------------------------------------------------- sign in

// What a refused sign-in or sign-up says, in the form's words rather than
// the API's (whose messages name fields: "phone_number must be…").
function signInError(err) {
  switch (err.code) {
    case 'invalid_credentials': return 'Wrong username or password.';
    case 'username_taken': return 'That username is taken: pick another (or sign in, if it is yours).';
    case 'phone_taken': return 'That phone number already has an account: sign in with it.';
    case 'invalid_username': return 'A username has 3 to 32 characters: a–z, 0–9, _ and dots.';
    case 'weak_password': return 'The password needs at least 8 characters.';
  }
  const m = err.message || String(err);
  if (err.code === 'invalid_field') {
    if (m.startsWith('phone_number')) return 'The phone number needs at least 3 digits, and at most 32 characters of digits, spaces, +, -, . and brackets.';
    if (m.startsWith('full_name')) return 'The full name cannot be blank, and must be at most 200 bytes of text without control characters.';
    if (m.startsWith('role')) return 'The role must be text, at most 64 bytes.';
    if (m.startsWith('password')) return 'The password is too long (at most 1024 bytes).';
  }
  return m.charAt(0).toUpperCase() + m.slice(1) + (/[.!?]$/.test(m) ? '' : '.');
}

export function SignIn() {
  const [mode, setMode] = useState('signin');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  // Closed registration (`--registration closed`, GET /health): accounts
  // come from the administrator, and "Create an account" is not offered.
  const [closed, setClosed] = useState(false);
  // The roles the server's registration takes (`--roles`), offered as a
  // choice; without them a role is free text (suggestions only).
  const [roles, setRoles] = useState(null);
  useEffect(() => {
    let live = true;
    store.serverHealth().then((h) => {
      if (!live) return;
      if (h?.registration === 'closed') { setClosed(true); setMode('signin'); }
      if (Array.isArray(h?.roles) && h.roles.length) setRoles(h.roles);
    });
    return () => { live = false; };
  }, []);
  async function submit(e) {
    e.preventDefault();
    const f = new FormData(e.target);
    setBusy(true);
    setError(null);
    try {
      if (mode === 'signin') await store.signIn(f.get('login'), f.get('password'));
      else {
        const profile = { username: f.get('login').trim().toLowerCase(), password: f.get('password'), full_name: f.get('full_name').trim() };
        if (f.get('phone').trim()) profile.phone_number = f.get('phone').trim();
        if (f.get('role').trim()) profile.role = f.get('role').trim();
        await store.register(profile);
      }
    } catch (err) {
      if (err.code === 'registration_closed') { setClosed(true); setMode('signin'); }
      setError(signInError(err));
      setBusy(false);
    }
  }
  const signin = mode === 'signin';
  return html`
    <main class="signin" aria-labelledby="signin-title">
      <form class="card" onSubmit=${submit}>
        <h1 id="signin-title">${signin ? 'Sign in to Parley' : 'Create an account'}</h1>
        ${state.notice && html`<p class="notice" role="status">${state.notice}</p>`}
        <label for="login">Username</label>
        <input id="login" name="login" autocomplete="username" required
          aria-describedby=${signin ? 'login-hint' : undefined} autofocus />
        ${signin && html`<small id="login-hint">or your phone number</small>`}
        ${!signin && html`
          <label for="full_name">Full name</label>
          <input id="full_name" name="full_name" autocomplete="name" required />
          <label for="phone">Phone number (optional)</label>
          <input id="phone" name="phone" type="tel" autocomplete="tel" />
          <label for="role">${roles ? 'Role' : 'Role (optional)'}</label>
          ${roles
            ? html`<select id="role" name="role" required>
                <option value="">Choose…</option>
                ${roles.map((r) => html`<option value=${r}>${r}</option>`)}
              </select>`
            : html`<input id="role" name="role" list="role-suggestions" maxlength="64" placeholder="teacher, parent, student…" />
              <datalist id="role-suggestions">
                <option value="teacher" /><option value="parent" /><option value="student" />
              </datalist>`}`}
        <label for="password">Password</label>
        <input id="password" name="password" type="password" required
          autocomplete=${signin ? 'current-password' : 'new-password'} minlength=${signin ? undefined : 8} />
        ${error && html`<p class="error" role="alert">${error}</p>`}
        <button type="submit" class="primary" disabled=${busy}>${signin ? 'Sign in' : 'Create account'}</button>
        ${closed ? html`<p class="hint">New here? Accounts on this server are made by its administrator.</p>`
          : html`<button type="button" class="link" onClick=${() => { setMode(signin ? 'register' : 'signin'); setError(null); }}>
          ${signin ? 'New here? Create an account' : 'I have an account: sign in'}
        </button>`}
      </form>
    </main>`;
}

// ---------------------------------------------------------------- the app

export function Chat() {
  const open = state.openId && state.threads.get(state.openId);
  return html`
    <div class=${`layout ${open ? 'has-open' : ''}`}>
      <${Banner} />
      <nav class="threads-pane" aria-label="Conversations">
        <${Header} />
        <${NewChat} />
        <${ThreadList} />
      </nav>
      <main class="conversation-pane" aria-label=${open ? store.threadName(open) : 'Conversation'}>
        ${open ? html`<${Conversation} key=${open.id} thread=${open} />`
               : html`<div class="empty"><p>Choose a conversation, or start one.</p></div>`}
      </main>
      <${CallPanel} />
      <${Announcer} />
    </div>`;
}

// The app's one polite live region: always here, visually hidden, so that
// what it is given to say ("Saving…", a refusal) is a change of its text,
// which screen readers announce.
function Announcer() {
  const a = state.announcement;
  // A no-break space every other time: the same words again are a change too.
  const text = a.text && `${a.text}${a.n % 2 ? '\u00a0' : ''}`;
  return html`<p id="announcer" class="visually-hidden" role="status" aria-live="polite" aria-atomic="true">${text}</p>`;
}

// One row above both panes: why the connection is down, and groups this
// user was removed from (until dismissed).
function Banner() {
  const removed = state.removedFrom.length > 0;
  const offline = state.conn !== 'online';
  if (!removed && !offline) return null;
  const text = state.conn === 'connecting' ? 'Connecting…' : 'Offline: reconnecting. Messages you send are kept and sent when the connection is back.';
  return html`<div class="banners">
    ${removed && html`<div class="removed-note" role="status">
      ${state.removedFrom.map((r) => r.text).join(' ')}
      <button type="button" class="link" onClick=${store.dismissRemoved}>Dismiss</button>
    </div>`}
    ${offline && html`<div class="banner" role="status">${state.connNote ? `${state.connNote} ` : ''}${text}</div>`}
  </div>`;
}

function Header() {
  const u = state.session.user;
  const canNotify = typeof Notification !== 'undefined' && Notification.permission === 'default';
  return html`
    <header class="me">
      <div title=${`${u.full_name || u.username} (${u.role})`}><strong>${u.full_name || u.username}</strong> <span class="role">${u.role}</span></div>
      <div class="actions">
        ${canNotify && html`<button type="button" onClick=${() => Notification.requestPermission().then(store.changed)}>Enable notifications</button>`}
        <button type="button" onClick=${() => store.signOut()}>Sign out</button>
      </div>
    </header>`;
}

function NewChat() {
  const [mode, setMode] = useState(null);  // null | 'dm' | 'group'
  const [q, setQ] = useState('');
  // The people found, with the query they were found for: the list lags
  // the typing, and Enter must not pick from an older query's answer.
  const [found, setFound] = useState({ q: '', users: [] });
  const [picked, setPicked] = useState([]);
  const [title, setTitle] = useState('');
  const [error, setError] = useState(null);
  const form = useRef(null);
  // The form's first field takes the focus as it opens (the button that
  // opened it is gone, and focus would fall to the page).
  useEffect(() => { if (mode) form.current?.querySelector('input')?.focus(); }, [mode]);
  useEffect(() => {
    const query = q.trim();
    if (!mode || !query) { setFound({ q: query, users: [] }); return; }
    let current = true;  // a late answer to an older query is dropped
    const t = setTimeout(() => store.client.searchUsers(query).then(
      (users) => { if (current) setFound({ q: query, users: users.filter((u) => u.id !== state.session.user.id) }); },
      () => { if (current) setFound({ q: query, users: [] }); }), 200);
    return () => { current = false; clearTimeout(t); };
  }, [q, mode]);
  const close = () => { setMode(null); setQ(''); setFound({ q: '', users: [] }); setPicked([]); setTitle(''); setError(null); };
  if (!mode) {
    return html`<div class="new-chat">
      <button type="button" onClick=${() => setMode('dm')}>New message</button>
      <button type="button" onClick=${() => setMode('group')}>New group</button>
    </div>`;
  }
  async function pick(u) {
    if (mode === 'dm') {
      try { await store.startDirect(u.username); close(); } catch (err) { setError(err.message); }
    } else if (!picked.some((p) => p.id === u.id)) setPicked([...picked, u]);
  }
  // Enter in the search field picks the first person found: it opens the
  // direct conversation, or adds them to the group being made. It never
  // submits the form (which, for a direct message, made an empty group).
  function searchKey(e) {
    if (e.key !== 'Enter' || e.isComposing || e.keyCode === 229) return;  // an IME's Enter confirms its text
    e.preventDefault();
    if (found.q !== q.trim() || !found.users.length) return;  // not yet found for what is typed
    pick(found.users[0]);
    if (mode === 'group') setQ('');
  }
  async function create(e) {
    e.preventDefault();
    if (mode !== 'group' || isBlank(title) || picked.length === 0) return;
    try { await store.createGroup(title.trim(), picked.map((p) => p.username)); close(); } catch (err) { setError(err.message); }
  }
  return html`
    <form class="new-chat-form" ref=${form} onSubmit=${create} aria-label=${mode === 'dm' ? 'New message' : 'New group'}>
      ${mode === 'group' && html`
        <label for="group-title">Group name</label>
        <input id="group-title" value=${title} onInput=${(e) => setTitle(e.target.value)} required />`}
      <label for="user-search">${mode === 'dm' ? 'Find a person' : 'Add members'}</label>
      <input id="user-search" type="search" value=${q} onInput=${(e) => setQ(e.target.value)} onKeyDown=${searchKey} autocomplete="off" />
      <ul class="found" aria-label="People found">
        ${found.users.map((u) => html`<li key=${u.id}>
          <button type="button" onClick=${() => pick(u)}>${u.full_name || u.username} <span class="role">@${u.username} · ${u.role}</span></button>
        </li>`)}
      </ul>
      ${mode === 'group' && picked.length > 0 && html`
        <ul class="picked" aria-label="Members picked">
          ${picked.map((p) => html`<li key=${p.id}>${p.full_name || p.username}
            <button type="button" class="link" aria-label=${`Remove ${p.full_name || p.username}`}
              onClick=${() => setPicked(picked.filter((x) => x.id !== p.id))}>×</button></li>`)}
        </ul>`}
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <div class="row">
        ${mode === 'group' && html`<button type="submit" class="primary" disabled=${isBlank(title) || picked.length === 0}>Create group</button>`}
        <button type="button" onClick=${close}>Cancel</button>
      </div>
    </form>`;
}

function ThreadList() {
  const threads = store.sortedThreads();
  if (!threads.length) return html`<p class="hint">No conversations yet.</p>`;
  return html`
    <ul class="thread-list">
      ${threads.map((t) => html`<li key=${t.id}><${ThreadItem} t=${t} /></li>`)}
    </ul>`;
}

function ThreadItem({ t }) {
  const name = store.threadName(t);
  const other = store.otherParticipant(t);
  const typists = store.typingIn(t.id);
  const m = t.last_message;
  const preview = typists.length ? `${typists.map((id) => nameOf(t, id)).join(', ')} typing…`
    : m ? (m.message_type === 'system' ? store.systemText(t, m)
      : `${m.sender_id === state.session.user.id ? 'You: ' : ''}${m.deleted ? 'Message deleted' : m.content}`) : 'No messages yet';
  const unread = t.unread_count || 0;
  return html`
    <a href=${`#/t/${t.id}`} class=${`thread ${state.openId === t.id ? 'current' : ''}`}
       aria-current=${state.openId === t.id ? 'page' : undefined}>
      <span class=${`dot ${other && isOnline(other.user_id) ? 'online' : ''}`} aria-hidden="true"></span>
      <span class="thread-main">
        <span class="thread-top">
          <span class="thread-name" dir="auto">${name}</span>
          ${other && html`<span class="role">${other.role}</span>`}
          <span class="time">${shortTime(t.last_activity)}</span>
        </span>
        <span class="thread-bottom">
          <span class=${`preview ${typists.length ? 'typing' : ''}`} dir="auto">${preview}</span>
          ${unread > 0 && html`<span class="badge"><span data-testid="unread">${unread}</span><span class="visually-hidden"> unread</span></span>`}
        </span>
      </span>
    </a>`;
}

// ---------------------------------------------------------------- conversation

function Conversation({ thread: t }) {
  const other = store.otherParticipant(t);
  const typists = store.typingIn(t.id);
  const [members, setMembers] = useState(false);
  const box = state.messages.get(t.id);
  return html`
    <section class="conversation" aria-labelledby="conv-title">
      <header class="conv-head">
        <a href="#" class="back"><span aria-hidden="true">‹</span><span class="visually-hidden">Back to conversations</span></a>
        <div class="conv-id">
          <h2 id="conv-title" dir="auto">${store.threadName(t)}</h2>
          <span class="sub">${other ? `${other.role} · ${lastSeen(other)}` : `${t.participants.length} ${t.participants.length === 1 ? 'member' : 'members'}`}</span>
        </div>
        <div class="actions">
          ${other && html`
            <button type="button" onClick=${() => calls.startCall(t.id, 'audio')} disabled=${!!state.call}>Audio call</button>
            <button type="button" onClick=${() => calls.startCall(t.id, 'video')} disabled=${!!state.call}>Video call</button>`}
          ${t.type === 'group' && html`<button type="button" aria-expanded=${members} onClick=${() => setMembers(!members)}>Members</button>`}
        </div>
      </header>
      ${members && html`<${Members} t=${t} />`}
      <${MessageList} t=${t} box=${box} />
      <p class="typing-line" aria-live="polite">${typists.length ? `${typists.map((id) => nameOf(t, id)).join(', ')} ${typists.length > 1 ? 'are' : 'is'} typing…` : ''}</p>
      <${Composer} t=${t} />
    </section>`;
}

// A class is 30 and more: admins first, then by name, in a list that
// scrolls inside its own box so the conversation stays on screen. Removing
// someone, or leaving, asks first (one click on a long list of links was
// enough to remove a parent).
function Members({ t }) {
  const me = t.participants.find((p) => p.user_id === state.session.user.id);
  const admin = me && me.is_admin;
  const [q, setQ] = useState('');
  const [error, setError] = useState(null);
  const [asking, setAsking] = useState(null);  // the user id whose removal waits for a yes
  const section = useRef(null);
  const lastAsking = useRef(null);  // `asking` as the last render had it
  const removed = useRef(null);     // the member whose removal was confirmed here, until their row goes
  // Focus follows the question, as the buttons it was on are replaced (it
  // would fall to the page): to its Cancel as it opens, back to that
  // member's Remove as it closes. Only then: others' changes to the list
  // move nobody's focus.
  useEffect(() => {
    const before = lastAsking.current;
    lastAsking.current = asking;
    const box = section.current;
    if (!box || asking === before) return;
    if (asking) box.querySelector('.confirm button:last-child')?.focus();
    else box.querySelector(`[data-remove="${CSS.escape(before)}"]`)?.focus();
  }, [asking]);
  // A removal confirmed here: once the row goes, and the focus with it, to the add field.
  useEffect(() => {
    const box = section.current;
    if (!box || !removed.current || t.participants.some((p) => p.user_id === removed.current)) return;
    removed.current = null;
    if (document.activeElement === document.body) (box.querySelector('#add-member') || box.querySelector('button'))?.focus();
  }, [t.participants]);
  const nameOfP = (p) => p.full_name || p.username;
  const sorted = [...t.participants].sort((a, b) =>
    (b.is_admin ? 1 : 0) - (a.is_admin ? 1 : 0) || nameOfP(a).localeCompare(nameOfP(b)));
  function remove(p) {
    removed.current = p.user_id;
    setAsking(null);
    const leaving = p.user_id === me?.user_id;
    store.removeMember(t.id, p.user_id).then(() => {
      // Left: the conversation closes with this box, and focus would fall to
      // the page. It goes to New message, at the head of the list.
      if (leaving) setTimeout(() => {
        const a = document.activeElement;
        if (!a || a === document.body) document.querySelector('.new-chat button')?.focus();
      }, 50);
    }, (err) => { removed.current = null; setError(err.message); });
  }
  async function add(e) {
    e.preventDefault();
    try {
      // The exact username, or else the one person the search finds (by
      // name, phone or part of a username) who is not a member yet.
      const wanted = q.trim();
      const users = await store.client.searchUsers(wanted);
      const outside = users.filter((x) => !t.participants.some((p) => p.user_id === x.id));
      // The search answers 50 at most: a single outsider among a full page
      // may not be the only one who matches.
      const complete = users.length < 50;
      const u = users.find((x) => x.username === wanted.toLowerCase()) || (outside.length === 1 && complete ? outside[0] : null);
      if (!u && !complete) {
        setError(`Too many people match ${wanted}: type more of the name, or the username.`);
        return;
      }
      if (!u && outside.length > 1) {
        const some = outside.slice(0, 5).map((x) => `${x.full_name || x.username} (@${x.username})`).join(', ');
        setError(`${outside.length} people match ${wanted}: ${some}${outside.length > 5 ? ', …' : ''}. Type the username.`);
        return;
      }
      if (!u) { setError(users.length ? `Everyone matching ${wanted} is already a member.` : `No one matches ${wanted}.`); return; }
      await store.addMember(t.id, u.id);
      setQ(''); setError(null);
    } catch (err) { setError(err.message); }
  }
  return html`
    <section class="members" aria-label="Members" ref=${section}>
      <ul>
        ${sorted.map((p) => {
          const self = p.user_id === me?.user_id;
          return html`<li key=${p.user_id}>
          <span class=${`dot ${isOnline(p.user_id) ? 'online' : ''}`} aria-hidden="true"></span>
          ${nameOfP(p)} <span class="role">${p.role}${p.is_admin ? ' · admin' : ''}</span>
          ${(admin || self) && asking !== p.user_id && html`<button type="button" class="link" data-remove=${p.user_id}
            onClick=${() => setAsking(p.user_id)}>${self ? 'Leave' : `Remove ${nameOfP(p)}`}</button>`}
          ${asking === p.user_id && html`<span class="confirm" role="group" aria-label=${self ? 'Leave the group?' : `Remove ${nameOfP(p)}?`}>
            ${self ? 'Leave the group?' : `Remove ${nameOfP(p)}?`}
            <button type="button" class="link danger" onClick=${() => remove(p)}>${self ? 'Yes, leave' : 'Yes, remove'}</button>
            <button type="button" class="link" onClick=${() => setAsking(null)}>Cancel</button>
          </span>`}
        </li>`;
        })}
      </ul>
      ${admin && html`<form onSubmit=${add} class="row">
        <label for="add-member">Add by username</label>
        <input id="add-member" value=${q} onInput=${(e) => setQ(e.target.value)} required />
        <button type="submit">Add</button>
      </form>`}
      ${error && html`<p class="error" role="alert">${error}</p>`}
    </section>`;
}

function tickOf(t, m) {
  const others = t.participants.filter((p) => p.user_id !== state.session.user.id);
  if (t.type === 'group') return groupTick(others, m);
  if (m.status === 'read' || others.some((p) => (p.last_read_seq || 0) >= m.seq)) return 'read';
  if (m.status === 'delivered' || others.some((p) => (p.last_delivered_seq || 0) >= m.seq)) return 'delivered';
  return 'sent';
}

// In a group the server's status is "read" once anyone read: a teacher
// needs to know whether the class did. Blue ticks when every member there
// when it was sent has read it; otherwise how many have.
function groupTick(others, m) {
  const sentAt = Date.parse(m.created_at);
  const due = others.filter((p) => !(Date.parse(p.joined_at) > sentAt));
  if (!due.length) return { status: m.status || 'sent', label: TICK_LABEL[m.status || 'sent'] };
  const read = due.filter((p) => (p.last_read_seq || 0) >= m.seq).length;
  const got = due.filter((p) => Math.max(p.last_delivered_seq || 0, p.last_read_seq || 0) >= m.seq).length;
  const of = ` of ${due.length}`;
  if (read === due.length) return { status: 'read', label: due.length === 1 ? 'Read' : 'Read by everyone' };
  if (read > 0) return { status: 'delivered', label: `Read by ${read}${of}` };
  if (got === due.length) return { status: 'delivered', label: due.length === 1 ? 'Delivered' : 'Delivered to everyone' };
  return { status: 'sent', label: got > 0 ? `Delivered to ${got}${of}` : 'Sent' };
}
const TICK_TEXT = { sent: '✓', delivered: '✓✓', read: '✓✓', pending: '🕓', failed: '!' };
const TICK_LABEL = { sent: 'Sent', delivered: 'Delivered', read: 'Read', pending: 'Waiting to send', failed: 'Not sent' };

// At most this many messages are in the DOM: a window over the loaded
// history that slides by STEP as the reader scrolls, so a conversation of any
// length costs the same to render and scroll.
const WINDOW_MAX = 300;
const WINDOW_STEP = 100;

function MessageList({ t, box }) {
  const ref = useRef(null);
  const stick = useRef(true);          // keep to the bottom while the reader is there
  const anchor = useRef(null);         // {seq, offset}: a message that must stay where it is on screen
  const view = useRef({ endSeq: null, count: WINDOW_MAX });  // endSeq null: the window ends at the newest
  const [, rerender] = useState(0);
  const [confirming, setConfirming] = useState(null);  // the message whose deletion awaits the user's yes
  const [selected, setSelected] = useState(null);      // on a touch screen: the tapped message, showing its actions
  const [current, setCurrent] = useState(null);        // seq of the message that is the log's one tab stop
  // A box replaced by the newest page (a gap too long to fill): the window
  // starts again at the newest, where the reader is taken.
  const shownBox = useRef(box);
  // A message written here takes the reader to the newest, where it shows
  // (scrolled back, it would go in below the window, out of sight).
  const sendsSeen = useRef(state.sends);
  if (shownBox.current !== box || sendsSeen.current !== state.sends) {
    shownBox.current = box;
    sendsSeen.current = state.sends;
    view.current = { endSeq: null, count: WINDOW_MAX };
    stick.current = true;
    anchor.current = null;
  }
  const me = state.session.user.id;
  const all = box ? box.list : [];
  const endIdx = view.current.endSeq === null ? all.length : lowerBound(all, view.current.endSeq + 1);
  const startIdx = Math.max(0, endIdx - view.current.count);
  const list = all.slice(startIdx, endIdx);
  const atNewest = view.current.endSeq === null;
  const pending = atNewest ? state.pending.filter((p) => p.thread_id === t.id) : [];
  const failed = atNewest ? state.failed.filter((f) => f.item.thread_id === t.id) : [];
  // The log is one stop in the Tab order (not one per message and button):
  // the current message, the newest shown until the user moves. Its own
  // Edit and Delete follow it; the others' are reached with the arrows.
  const ci = current === null ? -1 : lowerBound(list, current);
  const currentSeq = ci >= 0 && ci < list.length && list[ci].seq === current ? current
    : list.length ? list[list.length - 1].seq : null;

  // Whether focus is on a message or its actions as this render begins (the
  // DOM is still the last one's): a focused message the window slides past
  // must not take the focus with it to the page's body, where the arrow keys
  // reach nothing. (An editor that goes hands focus to the composer itself.)
  const focusWasIn = useRef(false);
  const active = document.activeElement;
  focusWasIn.current = !!ref.current && ref.current.contains(active) && !active.closest('form');

  // Older messages go in above: the message that was first stays where the
  // reader saw it (and the bottom stays the bottom while they are there).
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    if (focusWasIn.current && document.activeElement === document.body && currentSeq !== null) {
      el.querySelector(`li[data-seq="${currentSeq}"]`)?.focus({ preventScroll: true });
    }
    const a = anchor.current;
    if (a) {
      const li = el.querySelector(`li[data-seq="${a.seq}"]`);
      if (li) el.scrollTop = li.offsetTop - a.offset;
      if (!box || !box.loading) anchor.current = null;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
  });

  // Read marks: the highest seq of others' messages actually on screen, while the tab is visible.
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    let best = 0;
    let timer = null;
    let retry = null;
    // Re-rendered a little later: a mark lost with a dying connection goes again.
    const flush = () => {
      timer = null;
      if (best && !document.hidden) { store.markRead(t.id, best); retry = setTimeout(store.changed, 2500); }
    };
    const io = new IntersectionObserver((entries) => {
      for (const e of entries) {
        if (!e.isIntersecting) continue;
        const seq = Number(e.target.dataset.seq);
        if (seq > best) best = seq;
      }
      if (!timer) timer = setTimeout(flush, 250);
    }, { root: el, threshold: 0.6 });
    for (const node of el.querySelectorAll('[data-unseen]')) io.observe(node);
    const onVisible = () => { if (!document.hidden) flush(); };
    document.addEventListener('visibilitychange', onVisible);
    // A mark still waiting goes now: the conversation may be closing (a
    // message seen for less than the wait was otherwise never marked read).
    return () => {
      io.disconnect();
      document.removeEventListener('visibilitychange', onVisible);
      if (timer) { clearTimeout(timer); flush(); } else clearTimeout(retry);
    };
  });

  function keep(li) {
    const el = ref.current;
    anchor.current = { seq: Number(li.dataset.seq), offset: li.offsetTop - el.scrollTop };
  }

  // Moves the window to [newStart, newEnd) of the loaded messages.
  function slide(newStart, newEnd) {
    const loaded = box.list;
    // A window that starts at the oldest loaded message keeps its full size,
    // so messages arriving at the end do not push the oldest out of view.
    const count = newStart === 0 ? Math.max(WINDOW_MAX, newEnd) : newEnd - newStart;
    view.current = { endSeq: newEnd >= loaded.length ? null : loaded[newEnd - 1].seq, count };
    rerender((v) => v + 1);
  }

  async function onScroll() {
    const el = ref.current;
    const nearBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    stick.current = nearBottom && atNewest;
    if (!box || box.loading || anchor.current) return;
    if (el.scrollTop < 300) {
      const first = el.querySelector('li[data-seq]');
      if (!first) return;
      if (startIdx === 0) {
        if (!box.hasMore) return;
        keep(first);
        if (!(await store.loadOlder(t.id))) { anchor.current = null; return; }
      }
      // Older ones come in above; past the maximum the newest leave below.
      const end = view.current.endSeq === null ? box.list.length : lowerBound(box.list, view.current.endSeq + 1);
      const start = Math.max(0, end - view.current.count);
      const newStart = Math.max(0, start - WINDOW_STEP);
      keep(first);
      slide(newStart, Math.min(end, newStart + WINDOW_MAX));
    } else if (nearBottom && !atNewest) {
      const items = el.querySelectorAll('li[data-seq]');
      if (!items.length) return;
      keep(items[items.length - 1]);
      const newEnd = Math.min(box.list.length, endIdx + WINDOW_STEP);
      slide(Math.max(0, newEnd - WINDOW_MAX), newEnd);
    }
  }

  // Up and Down move between messages, Home and End to the first and last
  // shown; keys in an editor or on a button are theirs.
  function onLogKey(e) {
    if (!e.target.matches('.log > li[data-seq]') || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
    const items = [...e.currentTarget.querySelectorAll(':scope > li[data-seq]')];
    const i = items.indexOf(e.target);
    const to = { ArrowUp: items[i - 1], ArrowDown: items[i + 1], Home: items[0], End: items[items.length - 1] }[e.key];
    if (!(e.key in { ArrowUp: 1, ArrowDown: 1, Home: 1, End: 1 })) return;
    e.preventDefault();
    if (!to) return;
    // Away from the newest, the view must not keep to the bottom: the render
    // that setCurrent causes would come before the scroll event that says so.
    if (to !== items[items.length - 1]) stick.current = false;
    setCurrent(Number(to.dataset.seq));
    to.focus();
  }
  // Focus that lands in a message (a click, a tap, a button focused) makes it the current one.
  function onLogFocus(e) {
    const li = e.target.closest('.log > li[data-seq]');
    if (li) setCurrent(Number(li.dataset.seq));
  }

  function jumpToNewest() {
    view.current = { endSeq: null, count: WINDOW_MAX };
    stick.current = true;
    rerender((v) => v + 1);
  }

  const myRead = (t.participants.find((p) => p.user_id === me) || {}).last_read_seq || 0;
  const rows = [];
  let prevDay = null;
  let prevSender = null;
  for (const m of list) {
    const day = dayKey(m.created_at);
    if (day !== prevDay) {
      rows.push(html`<li class="day" key=${`d${day}`}><span>${dayLabel(m.created_at)}</span></li>`);
      prevDay = day; prevSender = null;
    }
    if (m.message_type === 'system') {
      // Counted unread like any message from someone else: seen, it is marked read.
      rows.push(html`<li class="system" key=${m.id} data-seq=${m.seq} dir="auto" tabIndex=${m.seq === currentSeq ? 0 : -1}
          data-unseen=${m.sender_id !== me && m.seq > myRead ? '' : undefined}>${store.systemText(t, m)}</li>`);
      prevSender = null;
      continue;
    }
    const mine = m.sender_id === me;
    const first = prevSender !== m.sender_id;
    prevSender = m.sender_id;
    const tickInfo = mine ? tickOf(t, m) : null;
    const tick = tickInfo && (typeof tickInfo === 'string' ? tickInfo : tickInfo.status);
    const tickLabel = tickInfo && (typeof tickInfo === 'string' ? TICK_LABEL[tickInfo] : tickInfo.label);
    const deletable = store.mayDelete(m);
    const editing = state.editing === m.id && !m.deleted;
    const note = state.messageNote?.id === m.id ? state.messageNote.text : null;
    const stop = m.seq === currentSeq ? 0 : -1;
    const textId = `msg-text-${m.id}`;
    rows.push(html`
      <li key=${m.id} class=${`msg ${mine ? 'mine' : 'theirs'} ${first ? 'first' : ''} ${editing ? 'editing' : ''} ${selected === m.id ? 'selected' : ''}`}
          data-seq=${m.seq} data-unseen=${!mine && m.seq > myRead ? '' : undefined} tabIndex=${stop}>
        ${first && !mine && t.type === 'group' && html`<div class="sender">${m.sender?.full_name || m.sender?.username} <span class="role">${m.sender?.role}</span></div>`}
        <div class="msg-line">
          ${deletable && !editing && html`<div class="msg-actions">
            ${store.mayEdit(m) && html`<button type="button" aria-label="Edit message" aria-describedby=${textId} tabIndex=${stop}
              onClick=${() => { setSelected(null); store.startEditing(m.id); }}>Edit</button>`}
            <button type="button" aria-label="Delete message" aria-describedby=${textId} tabIndex=${stop}
              onClick=${() => setConfirming(m)}>Delete</button>
          </div>`}
          <div class="bubble" onClick=${deletable && !editing && TOUCH.matches ? () => setSelected(selected === m.id ? null : m.id) : undefined}>
            ${m.deleted ? html`<p class="text deleted">This message was deleted.</p>`
              : editing ? html`<${EditBox} m=${m} />` : html`<p class="text" id=${textId} dir="auto">${m.content}</p>`}
            <span class="meta">${m.edited_at && !m.deleted && html`<span class="edited" title=${`Edited ${timeFmt.format(new Date(m.edited_at))}`}>edited</span> `}<time datetime=${m.created_at}>${timeFmt.format(new Date(m.created_at))}</time>
              ${tick && !m.deleted && html` <span class=${`tick ${tick}`} data-status=${tick} role="img" aria-label=${tickLabel} title=${tickLabel}>${TICK_TEXT[tick]}</span>`}
            </span>
          </div>
        </div>
        ${note && html`<p class="msg-note">${note}
          <button type="button" class="link" onClick=${() => store.noteOn(m.id, null)}>Dismiss</button></p>`}
      </li>`);
  }
  for (const p of pending) {
    if (list.some((m) => m.client_msg_id === p.client_msg_id)) continue;
    rows.push(html`
      <li key=${p.client_msg_id} class="msg mine pending">
        <div class="bubble">
          <p class="text" dir="auto">${p.content}</p>
          <span class="meta"><span class="tick pending" data-status="pending" role="img" aria-label=${TICK_LABEL.pending} title=${TICK_LABEL.pending}>${TICK_TEXT.pending}</span></span>
        </div>
      </li>`);
  }
  for (const { item, message } of failed) {
    rows.push(html`
      <li key=${item.client_msg_id} class="msg mine failed">
        <div class="bubble">
          <p class="text" dir="auto">${item.content}</p>
          <span class="meta"><span class="tick failed" data-status="failed" role="img" aria-label=${TICK_LABEL.failed} title=${TICK_LABEL.failed}>${TICK_TEXT.failed}</span></span>
        </div>
        <p class="failed-note" role="alert">Not sent: ${message}.
          <button type="button" class="link" onClick=${() => store.discardFailed(item.client_msg_id)}>Discard</button></p>
      </li>`);
  }
  return html`
    <div class="messages" ref=${ref} onScroll=${onScroll}>
      ${box && box.loading && html`<p class="loading" role="status">Loading…</p>`}
      ${!box && state.loadError?.threadId === t.id && html`<p class="load-error" role="alert">
        Could not load the conversation: ${state.loadError.message}. It loads again when the connection is back.
        <button type="button" class="link" onClick=${() => store.openThread(t.id)}>Try again</button></p>`}
      ${box && !box.hasMore && !box.loading && startIdx === 0 && html`<p class="start">This is the start of the conversation.</p>`}
      <div role="log" aria-label="Messages" aria-live="polite" aria-relevant="additions"><ol class="log" aria-describedby="log-keys" onKeyDown=${onLogKey} onfocusin=${onLogFocus}>${rows}</ol></div>
      <p id="log-keys" class="visually-hidden">Up and Down arrows move between messages, Home and End to the first and last; Tab reaches a message's Edit and Delete.</p>
      ${!atNewest && html`<button type="button" class="jump" onClick=${jumpToNewest}>Newest messages ↓</button>`}
      ${confirming && html`<${ConfirmDelete} m=${confirming} onDone=${() => { setConfirming(null); setSelected(null); }} />`}
    </div>`;
}

// A screen without a mouse shows a message's actions once it is tapped (there is no hover).
const TOUCH = matchMedia('(hover: none)');

// Why an edit or a deletion of one's own message did not happen, in plain words.
function refusal(err, action) {
  const done = action === 'edit' ? 'edited' : 'deleted';
  switch (err.code) {
    case 'edit_window_passed': return 'This message can no longer be edited: the time for editing it has passed.';
    case 'message_deleted': return 'This message was deleted, so it can no longer be edited.';
    case 'forbidden': return `You cannot ${action} this message.`;
    case 'empty_content': return 'A message cannot be empty. To remove it, delete it instead.';
    case 'content_too_long': return `The new text is too long (${err.message}).`;
    case 'network_error': return `The server cannot be reached, so the message was not ${done}. Try again.`;
    case 'rate_limited': return `Too many changes at once, so the message was not ${done}. Try again in a moment.`;
    default: return `The message was not ${done}: ${err.message}.`;
  }
}
const CHANGED_ELSEWHERE = 'This message was changed elsewhere while you were editing it. Saving replaces that change with your text.';

// Trying the same edit again cannot change these: the editor closes.
const FINAL_EDIT_REFUSALS = new Set(['edit_window_passed', 'message_deleted', 'forbidden']);

function focusComposer() { document.getElementById('composer')?.focus(); }

// As tall as its lines, up to the stylesheet's max-height; past that it scrolls.
function fitToLines(el) {
  el.style.height = 'auto';
  el.style.height = `${el.scrollHeight + el.offsetHeight - el.clientHeight}px`;
}

// A message of one's own, its text in an editor: Enter saves, Shift+Enter
// starts a new line, Escape leaves the message as it was. The message shows
// the new text once the server has taken it; while it is asked, Escape and
// Cancel wait (the edit would land anyway, the opposite of what they say).
function EditBox({ m }) {
  const [text, setText] = useState(m.content);
  const [saving, setSaving] = useState(false);
  const busy = useRef(false);
  const opened = useRef(m.content);  // the text the user started from
  const sent = useRef(null);         // the text last sent to the server
  const form = useRef(null);
  const input = useRef(null);
  useEffect(() => {
    const el = input.current;
    el.focus();
    el.setSelectionRange(el.value.length, el.value.length);
    el.scrollIntoView({ block: 'nearest' });
    // Gone with focus in it (the message deleted elsewhere meanwhile), the
    // editor would leave focus on the page's body: the composer takes it.
    const box = form.current;
    return () => {
      store.unannounce('Saving…');
      store.unannounce(CHANGED_ELSEWHERE);
      if (!box.contains(document.activeElement)) return;
      setTimeout(() => { if (!document.activeElement || document.activeElement === document.body) focusComposer(); });
    };
  }, []);
  useLayoutEffect(() => fitToLines(input.current), [text]);
  // Changed on another device while open: the user's text stays, and they are
  // told that saving it replaces the newer one.
  const changedElsewhere = m.content !== opened.current && m.content !== sent.current;
  // The app's live region says these (and a refusal, see noteOn): the texts
  // below come and go with their elements, which screen readers may not announce.
  useEffect(() => { if (changedElsewhere) store.announce(CHANGED_ELSEWHERE); }, [changedElsewhere]);
  useEffect(() => { if (saving) store.announce('Saving…'); else store.unannounce('Saving…'); }, [saving]);
  function close() {
    const hadFocus = form.current?.contains(document.activeElement);
    store.stopEditing(m.id);
    if (hadFocus) focusComposer();
  }
  function cancel() {
    if (busy.current) return;
    store.noteOn(m.id, null);
    close();
  }
  async function save(e) {
    e.preventDefault();
    if (busy.current) return;
    if (text === m.content) { cancel(); return; }
    busy.current = true;
    sent.current = text;
    setSaving(true);
    try {
      await store.editMessage(m, text);
      // The user may have gone on to another message meanwhile: that one keeps focus and its note.
      if (state.editing === m.id) { store.noteOn(m.id, null); close(); }
    } catch (err) {
      store.noteOn(m.id, refusal(err, 'edit'));
      if (FINAL_EDIT_REFUSALS.has(err.code) && state.editing === m.id) close();
    } finally {
      busy.current = false;
      setSaving(false);
    }
  }
  function onKeyDown(e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) save(e);
    else if (e.key === 'Escape') { e.preventDefault(); cancel(); }
  }
  return html`
    <form class="edit" ref=${form} onSubmit=${save} aria-busy=${saving ? 'true' : undefined} aria-live="off">
      <label for="edit-box" class="visually-hidden">Edit message</label>
      <textarea id="edit-box" ref=${input} rows="1" value=${text} dir="auto" readOnly=${saving}
        aria-describedby=${changedElsewhere ? 'edit-hint edit-changed' : 'edit-hint'}
        onInput=${(e) => setText(e.target.value)} onKeyDown=${onKeyDown}></textarea>
      ${changedElsewhere && html`<p id="edit-changed" class="edit-changed">${CHANGED_ELSEWHERE}</p>`}
      <div class="row">
        <span id="edit-hint" class=${`edit-hint ${saving ? 'saving' : ''}`}>${saving ? 'Saving…' : 'Enter to save, Escape to cancel'}</span>
        <button type="button" onClick=${cancel} aria-disabled=${saving ? 'true' : undefined}>Cancel</button>
        <button type="submit" class="primary" aria-disabled=${saving ? 'true' : undefined}>Save</button>
      </div>
    </form>`;
}

// Asks before a message is deleted for everyone. A modal <dialog>: focus
// stays in it, Escape closes it, and focus goes back to where it was.
function ConfirmDelete({ m, onDone }) {
  const ref = useRef(null);
  useEffect(() => { if (!ref.current.open) ref.current.showModal(); }, []);
  async function remove() {
    ref.current.close();
    // The Delete button goes with the message's text.
    focusComposer();
    try {
      await store.deleteMessage(m);
    } catch (err) {
      store.noteOn(m.id, refusal(err, 'delete'));
    }
  }
  return html`
    <dialog ref=${ref} class="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-text" onClose=${onDone}>
      <h2 id="confirm-title">Delete this message?</h2>
      <p id="confirm-text">It will be deleted for everyone in the conversation. This cannot be undone.</p>
      <div class="row">
        <button type="button" autofocus onClick=${() => ref.current.close()}>Cancel</button>
        <button type="button" class="danger" onClick=${remove}>Delete</button>
      </div>
    </dialog>`;
}

// The index of the first message whose seq is at least `seq` (the list is in seq order).
function lowerBound(list, seq) {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid].seq < seq) lo = mid + 1; else hi = mid;
  }
  return lo;
}

function Composer({ t }) {
  const [text, setText] = useState(() => store.draftOf(t.id));
  const typingSent = useRef(0);
  const input = useRef(null);
  useEffect(() => { input.current && input.current.focus(); }, [t.id]);
  useLayoutEffect(() => { if (input.current) fitToLines(input.current); }, [text]);
  function submit(e) {
    e.preventDefault();
    const content = text;
    if (isBlank(content)) return;
    store.send(t.id, content);
    typingSent.current = 0;
    setText('');
  }
  function onInput(e) {
    setText(e.target.value);
    store.keepDraft(t.id, e.target.value);
    const now = Date.now();
    if (e.target.value && now - typingSent.current > 3000) {
      typingSent.current = now;
      store.client.typing(t.id, true);
    } else if (!e.target.value && typingSent.current) {
      typingSent.current = 0;
      store.client.typing(t.id, false);
    }
  }
  function onKeyDown(e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) submit(e);
    // Up in an empty composer edits one's last message, as in most chat apps.
    // Only a message on screen: the window may be far from the newest.
    else if (e.key === 'ArrowUp' && !text && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey) {
      const shown = document.querySelectorAll('.log > li[data-seq]');
      const m = shown.length && store.lastEditable(t.id, Number(shown[0].dataset.seq), Number(shown[shown.length - 1].dataset.seq));
      if (m) { e.preventDefault(); store.startEditing(m.id); }
    }
  }
  return html`
    <form class="composer" onSubmit=${submit}>
      <label for="composer" class="visually-hidden">Message</label>
      <textarea id="composer" ref=${input} rows="1" value=${text} onInput=${onInput} onKeyDown=${onKeyDown}
        placeholder="Write a message" dir="auto"></textarea>
      <button type="submit" class="primary">Send</button>
    </form>`;
}

// ---------------------------------------------------------------- calls

function Video({ stream, muted, label }) {
  const ref = useRef(null);
  useEffect(() => { if (ref.current && ref.current.srcObject !== stream) ref.current.srcObject = stream || null; });
  return html`<video ref=${ref} autoplay playsinline muted=${muted} aria-label=${label}></video>`;
}

function CallPanel() {
  const c = state.call;
  if (!c) return null;
  const t = state.threads.get(c.threadId);
  // A thread not in the list yet (a new direct one) is named once calls.js
  // has read it; until then the panel names nobody.
  const who = t ? store.threadName(t) : c.name;
  const statusText = {
    calling: who ? `Calling ${who}…` : 'Calling…', ringing: who ? `${who} is calling (${c.kind})` : `Incoming ${c.kind} call`,
    connecting: 'Connecting…', connected: who ? `In call with ${who}` : 'In call', ended: c.note || 'Call ended.',
  }[c.status];
  return html`
    <section class="call" role="dialog" aria-label="Call" aria-live="assertive">
      <p class="call-status" data-status=${c.status}>${statusText}</p>
      ${c.kind === 'video' && c.status !== 'ended' && html`<div class="videos">
        <${Video} stream=${c.remote} muted=${false} label="Their video" />
        <${Video} stream=${c.local} muted=${true} label="Your video" />
      </div>`}
      ${c.kind === 'audio' && c.remote && html`<${Video} stream=${c.remote} muted=${false} label="Their audio" />`}
      <div class="row">
        ${c.status === 'ringing' && html`<button type="button" class="primary" onClick=${calls.accept}>Accept</button>
          <button type="button" onClick=${calls.decline}>Decline</button>`}
        ${(c.status === 'calling' || c.status === 'connecting' || c.status === 'connected') &&
          html`<button type="button" class="danger" onClick=${() => calls.hangUp()}>Hang up</button>`}
      </div>
    </section>`;
}
