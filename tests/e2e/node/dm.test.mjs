// Direct messages over WebSocket: live delivery without any join or
// subscribe, the message_sent reply, and no echo to the sending connection.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, assertMessageShape, UUID_RE } from './harness.mjs';

describe('direct messages over WebSocket', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  it('a DM by username creates the thread and the recipient gets it live as new_message', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);

    const reply = await aliceWs.request({
      type: 'send_message', username: bob.username, content: 'Hello Bob!', message_type: 'text', client_msg_id: 'dm-1',
    });
    assert.equal(reply.type, 'message_sent', `send_message answered ${JSON.stringify(reply)}`);
    const sent = reply.data;
    assertMessageShape(assert, sent, {
      seq: 1, sender_id: alice.id, content: 'Hello Bob!', message_type: 'text', client_msg_id: 'dm-1', status: 'sent',
    });
    assert.equal(sent.sender.username, alice.username, 'sender.username');
    assert.equal(sent.sender.full_name, alice.user.full_name, 'sender.full_name');
    assert.equal(sent.sender.role, alice.user.role, 'sender.role');

    const got = await bobWs.next((f) => f.type === 'new_message', 5000, "Bob's new_message");
    assertMessageShape(assert, got.data);
    assert.equal(got.data.id, sent.id, 'Bob receives the very message Alice sent');
    assert.equal(got.data.thread_id, sent.thread_id);
    assert.equal(got.data.content, 'Hello Bob!');
    assert.equal(got.data.sender.username, alice.username);
  });

  it('the reply goes the other way on the same thread, and both sides see it live', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);

    const first = await aliceWs.sendMessage({ username: bob.username, content: 'ping from alice' });
    await bobWs.next((f) => f.type === 'new_message' && f.data.id === first.id, 5000, 'first message at Bob');

    const answer = await bobWs.sendMessage({ thread_id: first.thread_id, content: 'pong from bob' });
    assert.equal(answer.thread_id, first.thread_id, 'reply lands in the same thread');
    assert.equal(answer.seq, 2, 'second message of the thread has seq 2');
    const atAlice = await aliceWs.next((f) => f.type === 'new_message', 5000, "Alice's new_message");
    assert.equal(atAlice.data.id, answer.id);
    assert.equal(atAlice.data.sender_id, bob.id);
    assert.equal(atAlice.data.content, 'pong from bob');

    // Bob writing to Alice by username reuses the one direct thread.
    const again = await bobWs.sendMessage({ username: alice.username, content: 'by username again' });
    assert.equal(again.thread_id, first.thread_id, 'a DM by username reuses the existing direct thread');
    assert.equal(again.seq, 3);
  });

  it('the sending connection gets message_sent and never its own new_message', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);

    const ids = [];
    for (let i = 0; i < 5; i++) {
      const m = await aliceWs.sendMessage({ username: bob.username, content: `no echo ${i}` });
      ids.push(m.id);
    }
    for (const id of ids) {
      await bobWs.next((f) => f.type === 'new_message' && f.data.id === id, 5000, `message ${id} at Bob`);
    }
    await aliceWs.expectNone((f) => f.type === 'new_message', 500, 'new_message on the sending connection');
  });

  it("the sender's other connections get the message as new_message", async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs1 = await server.connect(alice);
    const aliceWs2 = await server.connect(alice);
    await server.connect(bob);

    const sent = await aliceWs1.sendMessage({ username: bob.username, content: 'seen on my phone too' });
    const mirrored = await aliceWs2.next((f) => f.type === 'new_message', 5000, "new_message on Alice's second connection");
    assert.equal(mirrored.data.id, sent.id);
    await aliceWs1.expectNone((f) => f.type === 'new_message', 300, 'new_message on the sending connection');
    await aliceWs2.expectNone((f) => f.type === 'message_sent', 100, 'message_sent on a connection that did not send');
  });

  it('an offline recipient is not needed: the message is stored and delivered on connect through history', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const sent = await aliceWs.sendMessage({ username: bob.username, content: 'you were away' });
    const history = await server.history(bob.token, sent.thread_id);
    assert.deepEqual(history.map((m) => m.id), [sent.id], "Bob's history holds the message");
  });

  it('content alias "text" is accepted, and message_type defaults to text', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const sent = await aliceWs.sendMessage({ username: bob.username, text: 'via the text alias' });
    assert.equal(sent.content, 'via the text alias');
    assert.equal(sent.message_type, 'text');
    assert.match(sent.id, UUID_RE);
  });

  it('image and file message types are accepted and kept', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);
    const img = await aliceWs.sendMessage({ username: bob.username, content: 'https://example.invalid/cat.png', message_type: 'image' });
    const file = await aliceWs.sendMessage({ thread_id: img.thread_id, content: 'report.pdf', message_type: 'file' });
    assert.equal(img.message_type, 'image');
    assert.equal(file.message_type, 'file');
    const a = await bobWs.next((f) => f.type === 'new_message' && f.data.id === img.id, 5000, 'image at Bob');
    const b = await bobWs.next((f) => f.type === 'new_message' && f.data.id === file.id, 5000, 'file at Bob');
    assert.equal(a.data.message_type, 'image');
    assert.equal(b.data.message_type, 'file');
  });

  it('content is stored and returned exactly as sent (Unicode, markup, whitespace)', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);
    const samples = [
      '  leading and trailing spaces  ',
      'line one\nline two\r\n\ttabbed',
      'émoji 😀👍🏽 and 中文 and עברית',
      '<script>alert("x")</script> & "quotes" \\ backslash',
      'zero\u200bwidth and combining e\u0301',
    ];
    let threadId;
    for (const content of samples) {
      const sent = await aliceWs.sendMessage(threadId ? { thread_id: threadId, content } : { username: bob.username, content });
      threadId = sent.thread_id;
      assert.equal(sent.content, content, 'message_sent echoes the content verbatim');
      const live = await bobWs.next((f) => f.type === 'new_message' && f.data.id === sent.id, 5000, 'live copy');
      assert.equal(live.data.content, content, 'new_message carries the content verbatim');
    }
    const history = await server.history(bob.token, threadId);
    assert.deepEqual(history.map((m) => m.content), samples, 'history returns every content verbatim');
  });

  it('both sides writing by username at the same moment share one direct thread', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const bobWs = await server.connect(bob);
    const [a, b] = await Promise.all([
      aliceWs.sendMessage({ username: bob.username, content: 'hi at the same time' }),
      bobWs.sendMessage({ username: alice.username, content: 'hi at the same time too' }),
    ]);
    assert.equal(a.thread_id, b.thread_id, 'one thread for the pair');
    assert.deepEqual([a.seq, b.seq].sort(), [1, 2], 'seqs 1 and 2');
    const list = await server.http('GET', '/api/chat/threads', { token: alice.token });
    assert.equal(list.body.data.threads.filter((t) => t.type === 'direct').length, 1, 'Alice has one direct thread');
  });

  it('a NUL character and other control characters round-trip exactly', async () => {
    const [alice, bob] = await server.registerMany(2);
    const aliceWs = await server.connect(alice);
    const content = 'before\u0000after \u0001\u001f\u007f end';
    const sent = await aliceWs.sendMessage({ username: bob.username, content });
    assert.equal(sent.content, content, 'message_sent');
    const [stored] = await server.history(bob.token, sent.thread_id);
    assert.equal(stored.content, content, 'history');
  });

  it('request_id is echoed with its JSON type (string or number)', async () => {
    const [alice] = await server.registerMany(1);
    const ws = await server.connect(alice);
    ws.send({ type: 'ping', request_id: 42 });
    const pong = await ws.next((f) => f.type === 'pong', 5000, 'pong');
    assert.strictEqual(pong.request_id, 42);
    ws.send({ type: 'no_such_type', request_id: 'r-x' });
    const err = await ws.next((f) => f.type === 'error', 5000, 'error');
    assert.strictEqual(err.request_id, 'r-x');
  });
});
