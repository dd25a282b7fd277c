// Calls: the browser's WebRTC, signalled through Parley's relayed frames
// (call_offer, call_answer, ice_candidate, call_end; the server only relays).
// One call at a time. state.call = {id, threadId, kind, direction,
// status: 'calling'|'ringing'|'connecting'|'connected'|'ended', note, local, remote}.
import { client, state, changed, threadName, onSessionEnd } from './store.js';

// An offer rings on every device of the callee; the server relays an answer
// or a hang-up to the sender's other devices too (from_user_id is then our
// own id), which stop ringing.

// An unanswered call ends by itself: the caller gives up after RING_MS
// ("No answer.", and its call_end tells the callee), and a callee that hears
// nothing more (the caller's browser closed or lost its connection) stops
// ringing a little later ("Missed call.").
const RING_MS = 45000;
const RING_GRACE_MS = 5000;
let ringTimer = null;

let pc = null;
let localStream = null;
let remoteCandidates = [];
let offer = null;  // the incoming offer while ringing

function set(patch) {
  state.call = state.call ? { ...state.call, ...patch } : patch;
  changed();
}

function newPeer(threadId, callId) {
  const peer = new RTCPeerConnection({ iceServers: [] });
  peer.onicecandidate = (e) => {
    if (e.candidate) client.signal('ice_candidate', threadId, { call_id: callId, candidate: e.candidate.toJSON() });
  };
  peer.ontrack = (e) => set({ remote: e.streams[0] });
  peer.onconnectionstatechange = () => {
    if (peer !== pc) return;
    if (peer.connectionState === 'connected') set({ status: 'connected', note: null });
    if (peer.connectionState === 'failed') hangUp('The call failed.');
  };
  return peer;
}

async function media(kind) {
  return navigator.mediaDevices.getUserMedia({ audio: true, video: kind === 'video' });
}

// A camera and microphone granted after their call ended (hung up, or the
// session ended while the browser asked for them) are released at once.
async function mediaFor(id, kind) {
  const stream = await media(kind);
  if (state.call && state.call.id === id && state.call.status !== 'ended') return stream;
  for (const t of stream.getTracks()) t.stop();
  return null;
}

export async function startCall(threadId, kind) {
  if (state.call) return;
  const id = crypto.randomUUID();
  set({ id, threadId, kind, direction: 'out', status: 'calling', note: null, local: null, remote: null });
  ringUntil(RING_MS, id, 'calling', () => hangUp('No answer.', 'no_answer'));
  try {
    localStream = await mediaFor(id, kind);
    if (!localStream) return;
    set({ local: localStream });
    pc = newPeer(threadId, id);
    for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
    const desc = await pc.createOffer();
    await pc.setLocalDescription(desc);
    await client.signal('call_offer', threadId, { call_id: id, kind, sdp: desc.sdp });
  } catch (err) {
    // Ended meanwhile (the session, a hang-up on either side): nothing to undo.
    if (!state.call || state.call.id !== id || state.call.status === 'ended') return;
    const t = state.threads.get(threadId);
    const offline = t ? `${threadName(t)} is offline.` : 'Nobody else in this conversation is online.';
    finish(err.code === 'callee_offline' ? offline : `Could not call: ${err.message}`);
  }
}

export async function accept() {
  if (!state.call || state.call.status !== 'ringing') return;
  const { id, threadId, kind } = state.call;
  set({ status: 'connecting' });
  try {
    localStream = await mediaFor(id, kind);
    if (!localStream) return;
    set({ local: localStream });
    pc = newPeer(threadId, id);
    for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
    await pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp });
    await drainCandidates();
    const desc = await pc.createAnswer();
    await pc.setLocalDescription(desc);
    client.signal('call_answer', threadId, { call_id: id, sdp: desc.sdp });
  } catch (err) {
    // Ended meanwhile (the session, a hang-up on either side): nothing to undo.
    if (!state.call || state.call.id !== id || state.call.status === 'ended') return;
    hangUp(`Could not answer: ${err.message}`);
  }
}

export function decline() { hangUp(null, 'declined'); }

export function hangUp(note = null, reason = 'hangup') {
  if (!state.call) return;
  client.signal('call_end', state.call.threadId, { call_id: state.call.id, reason });
  finish(note);
}

// Gives up on a call still in `status` after ms.
function ringUntil(ms, id, status, giveUp) {
  clearTimeout(ringTimer);
  ringTimer = setTimeout(() => { if (state.call && state.call.id === id && state.call.status === status) giveUp(); }, ms);
}

// Releases the call; with a note, the panel says it for a few seconds.
function finish(note) {
  clearTimeout(ringTimer);
  if (pc) { pc.close(); pc = null; }
  if (localStream) { for (const t of localStream.getTracks()) t.stop(); localStream = null; }
  remoteCandidates = [];
  offer = null;
  if (note) {
    set({ status: 'ended', note, local: null, remote: null });
    setTimeout(() => { if (state.call && state.call.status === 'ended') { state.call = null; changed(); } }, 4000);
  } else {
    state.call = null;
    changed();
  }
}

// Signed out (here, in another tab, or everywhere) during a call or while
// calling: the other side is told while the connection lasts, and the camera
// and microphone stop, whatever the next user of this tab does.
// A callee who only rings here lets it ring on: their other devices may answer.
onSessionEnd(() => {
  const c = state.call;
  if (c && c.status !== 'ended' && c.status !== 'ringing' && client)
    client.signal('call_end', c.threadId, { call_id: c.id, reason: 'hangup' });
  if (state.call || pc || localStream) finish(null);
});

// What the panel says when the other side ends the call, by reason.
const END_NOTES = { declined: 'Call declined.', busy: 'Busy.', no_answer: 'Missed call.' };

async function drainCandidates() {
  for (const c of remoteCandidates) await pc.addIceCandidate(c).catch(() => {});
  remoteCandidates = [];
}

// Wired once the client exists (main.js).
export async function onSignal(f) {
  const p = f.payload || {};
  if (f.type === 'call_offer') {
    if (state.call && state.call.status !== 'ended') {
      client.signal('call_end', f.thread_id, { call_id: p.call_id, reason: 'busy' });
      return;
    }
    offer = p;
    set({ id: p.call_id, threadId: f.thread_id, kind: p.kind === 'video' ? 'video' : 'audio', direction: 'in',
      status: 'ringing', note: null, local: null, remote: null, from: f.from_user_id, name: null });
    // A direct thread with no message yet is not in the list: the panel
    // names the caller from the thread itself.
    if (!state.threads.has(f.thread_id)) {
      client.thread(f.thread_id).then((t) => {
        if (state.call && state.call.id === p.call_id) set({ name: threadName(t) });
      }, () => {});
    }
    ringUntil(RING_MS + RING_GRACE_MS, p.call_id, 'ringing', () => finish('Missed call.'));
    return;
  }
  if (!state.call || p.call_id !== state.call.id) return;
  if (f.from_user_id === client.userId) {  // our other device answered, declined or hung up
    if (f.type !== 'ice_candidate' && state.call.status === 'ringing')
      finish(f.type === 'call_answer' ? 'Answered on another device.' : null);
    return;
  }
  if (f.type === 'call_answer' && pc && state.call.direction === 'out') {
    set({ status: 'connecting' });
    await pc.setRemoteDescription({ type: 'answer', sdp: p.sdp });
    await drainCandidates();
  } else if (f.type === 'ice_candidate' && p.candidate) {
    if (pc && pc.remoteDescription) await pc.addIceCandidate(p.candidate).catch(() => {});
    else remoteCandidates.push(p.candidate);
  } else if (f.type === 'call_end') {
    finish(Object.prototype.hasOwnProperty.call(END_NOTES, p.reason) ? END_NOTES[p.reason] : 'Call ended.');
  }
}
