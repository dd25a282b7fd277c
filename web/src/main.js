// Entry point: restores the session, follows the URL's fragment (#/t/<id>
// opens a thread) and renders the screen for the current state.
import { html } from 'htm/preact';
import { render } from 'preact';
import { useLayoutEffect, useState } from 'preact/hooks';
import './app.css';
import * as store from './store.js';
import { state } from './store.js';
import { onSignal } from './calls.js';
import { Chat, SignIn } from './ui.js';

function App() {
  const [, setVersion] = useState(0);
  // Subscribed before the first paint, and catching up on any change made
  // before it (the session may be restored by then).
  useLayoutEffect(() => {
    const off = store.subscribe(() => setVersion((v) => v + 1));
    setVersion((v) => v + 1);
    return off;
  }, []);
  if (state.booting) return html`<p class="loading" role="status">Loading…</p>`;
  return state.session ? html`<${Chat} />` : html`<${SignIn} />`;
}

function followHash() {
  // A token handed over to a page that is already open: start again with it.
  if (location.hash.startsWith('#token=')) { location.reload(); return; }
  const m = /^#\/t\/([0-9a-f-]{36})$/.exec(location.hash);
  if (state.session) store.openThread(m ? m[1] : null);
}
window.addEventListener('hashchange', followHash);
window.addEventListener('online', () => store.client && store.client.reconnectNow());

let wiredFor = null;
store.subscribe(() => {
  // Calls are wired to each new client once.
  if (store.client && wiredFor !== store.client) {
    wiredFor = store.client;
    store.client.addEventListener('call', (e) => onSignal(e.detail));
  }
});

state.booting = true;
render(html`<${App} />`, document.getElementById('root'));
store.restore().finally(() => {
  state.booting = false;
  followHash();
  store.changed();
  // For the performance test (docs/webapp.md): the first screen is usable.
  requestAnimationFrame(() => performance.mark('parley-interactive'));
});
