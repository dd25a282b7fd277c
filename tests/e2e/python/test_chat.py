"""End-to-end tests of Parley with Python's `websockets` (Debian's python3-websockets, 10.x).

Run with the system interpreter (the one that has python3-websockets):
    PARLEY_BIN=build/parley /usr/bin/python3 -m unittest -v tests/e2e/python/test_chat.py

Only the standard library and websockets are used. The server is started on
127.0.0.1 with --port 0 and its own temporary data dir, and stopped at the end.

The store is SQLite in that data dir, or with PARLEY_TEST_STORE=postgres a
fresh database on the PostgreSQL that tests/db/pg.sh started (its state dir in
PARLEY_TEST_PG_STATE; CTest's parley_pg fixture sets both), as the Node
harness does.
"""

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
PARLEY_BIN = os.environ.get("PARLEY_BIN") or os.path.join(REPO_ROOT, "build", "parley")
HOST = "127.0.0.1"
TEST_STORE = os.environ.get("PARLEY_TEST_STORE", "sqlite")
PG_SH = os.path.join(REPO_ROOT, "tests", "db", "pg.sh")


def fresh_database_url():
    """A new, empty database on the test PostgreSQL; returns its URL."""
    state = os.environ.get("PARLEY_TEST_PG_STATE")
    if not state:
        raise RuntimeError("PARLEY_TEST_PG_STATE is not set (start one: tests/db/pg.sh start DIR)")
    return subprocess.run([PG_SH, "createdb", state], check=True, capture_output=True, text=True,
                          timeout=30).stdout.strip()


class ParleyServer:
    """One `parley serve` process on a free loopback port with a temp data dir
    (and, with PARLEY_TEST_STORE=postgres, a fresh PostgreSQL database)."""

    def __init__(self):
        self.database = fresh_database_url() if TEST_STORE == "postgres" else None
        self.data_dir = tempfile.mkdtemp(prefix="parley-e2e-py-")
        self.secret = "py-secret-" + secrets.token_hex(16)
        self.proc = None
        self.port = None
        self.log = []

    def start(self, timeout=20.0):
        if not os.path.exists(PARLEY_BIN):
            raise RuntimeError(f"parley binary not found at {PARLEY_BIN} (set PARLEY_BIN)")
        self.proc = subprocess.Popen(
            [PARLEY_BIN, "serve", "--port", "0", "--bind", HOST, "--data-dir", self.data_dir,
             "--jwt-secret", self.secret, "--log-level", "info"]
            + (["--database", self.database] if self.database else []),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace")
        port_found = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.log.append(line.rstrip("\n"))
                if self.port is None and "event=listening" in line:
                    m = re.search(r"\bport=(\d+)", line)
                    if m:
                        self.port = int(m.group(1))
                        port_found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not port_found.wait(timeout):
            self.stop()
            raise RuntimeError("server never logged event=listening:\n" + "\n".join(self.log[-40:]))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("GET /health never answered 200")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # ----- REST ------------------------------------------------------------

    def http(self, method, path, body=None, token=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{HOST}:{self.port}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def register(self):
        username = "u_" + secrets.token_hex(5)
        status, body = self.http("POST", "/api/auth/register", {
            "username": username, "password": "pw-" + secrets.token_hex(6),
            "full_name": f"Py {username}", "role": "student"})
        if status != 201:
            raise AssertionError(f"register answered {status}: {body}")
        data = body["data"]
        return {"token": data["token"], "id": data["user"]["id"], "username": username}

    def history(self, token, thread_id):
        status, body = self.http("GET", f"/api/chat/threads/{thread_id}/messages?limit=200", token=token)
        if status != 200:
            raise AssertionError(f"history answered {status}: {body}")
        return body["data"]["messages"]


class Client:
    """A WebSocket connection that buffers every frame; next() takes the first match."""

    def __init__(self, ws):
        self.ws = ws
        self.frames = []  # [frame, consumed]
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())
        self.counter = 0

    @classmethod
    async def connect(cls, server, user):
        ws = await websockets.connect(f"ws://{HOST}:{server.port}/ws?token={user['token']}",
                                      open_timeout=5, max_size=2**24)
        client = cls(ws)
        client.established = await client.next(lambda f: f.get("type") == "connection_established")
        return client

    async def _read(self):
        try:
            async for raw in self.ws:
                self.frames.append([json.loads(raw), False])
                self.changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.changed.set()

    async def send(self, frame):
        await self.ws.send(json.dumps(frame))

    async def next(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.frames:
                if not entry[1] and pred(entry[0]):
                    entry[1] = True
                    return entry[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.reader.done():
                tail = [e[0] for e in self.frames[-5:]]
                raise AssertionError(f"no matching frame within {timeout}s; last frames: {tail}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def request(self, frame, timeout=5.0):
        self.counter += 1
        rid = f"py-{self.counter}"
        await self.send({**frame, "request_id": rid})
        return await self.next(lambda f: f.get("request_id") == rid, timeout)

    async def send_message(self, **fields):
        reply = await self.request({"type": "send_message", **fields})
        if reply.get("type") != "message_sent":
            raise AssertionError(f"send_message answered {reply}")
        return reply["data"]

    def all(self, pred):
        return [e[0] for e in self.frames if pred(e[0])]

    async def close(self):
        await self.ws.close()
        await asyncio.wait_for(self.reader, 5)


SERVER = None


def setUpModule():
    global SERVER
    SERVER = ParleyServer()
    try:
        SERVER.start()
    except BaseException:
        SERVER.stop()  # tearDownModule does not run when setUpModule fails
        raise


def tearDownModule():
    if SERVER:
        SERVER.stop()


class ChatTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.clients = []

    async def asyncTearDown(self):
        for c in self.clients:
            try:
                await c.close()
            except Exception:  # already closed or broken: nothing to clean
                pass

    # REST calls are blocking (urllib): run them off the event loop.
    async def register(self):
        return await asyncio.to_thread(SERVER.register)

    async def http(self, *args, **kwargs):
        return await asyncio.to_thread(SERVER.http, *args, **kwargs)

    async def history(self, token, thread_id):
        return await asyncio.to_thread(SERVER.history, token, thread_id)

    async def connect(self, user):
        c = await Client.connect(SERVER, user)
        self.clients.append(c)
        return c

    async def test_dm_round_trip(self):
        alice, bob = await self.register(), await self.register()
        a, b = await self.connect(alice), await self.connect(bob)
        self.assertEqual(a.established["user_id"], alice["id"])

        sent = await a.send_message(username=bob["username"], content="hi from python", client_msg_id="py-1")
        self.assertEqual(sent["seq"], 1)
        self.assertEqual(sent["sender_id"], alice["id"])
        self.assertEqual(sent["client_msg_id"], "py-1")
        got = await b.next(lambda f: f.get("type") == "new_message")
        self.assertEqual(got["data"]["id"], sent["id"])
        self.assertEqual(got["data"]["content"], "hi from python")
        self.assertEqual(got["data"]["sender"]["username"], alice["username"])

        answer = await b.send_message(thread_id=sent["thread_id"], content="héllo back 👋")
        back = await a.next(lambda f: f.get("type") == "new_message")
        self.assertEqual(back["data"]["id"], answer["id"])
        self.assertEqual(back["data"]["content"], "héllo back 👋")
        self.assertEqual(back["data"]["seq"], 2)
        await asyncio.sleep(0.3)
        self.assertEqual(a.all(lambda f: f.get("type") == "new_message" and f["data"]["id"] == sent["id"]), [],
                         "the sender does not get its own message as new_message")

    async def test_group_fan_out(self):
        users = [await self.register() for _ in range(3)]
        status, body = await self.http("POST", "/api/chat/threads", {
            "type": "group", "title": "py group", "participant_ids": [u["id"] for u in users[1:]]}, token=users[0]["token"])
        self.assertEqual(status, 201, body)
        thread_id = body["data"]["id"]
        conns = [await self.connect(u) for u in users]

        per_user = 5
        sends = []
        for i, c in enumerate(conns):
            for k in range(per_user):
                sends.append(c.send_message(thread_id=thread_id, content=f"user{i} msg{k}"))
        sent = await asyncio.gather(*sends)
        total = len(sent)
        self.assertEqual(len({m["id"] for m in sent}), total)

        for i, c in enumerate(conns):
            expected = total - per_user
            for _ in range(expected):
                await c.next(lambda f: f.get("type") == "new_message" and f["data"]["thread_id"] == thread_id, 10)
        await asyncio.sleep(0.3)
        for i, c in enumerate(conns):
            live = c.all(lambda f: f.get("type") == "new_message" and f["data"]["thread_id"] == thread_id)
            seqs = [f["data"]["seq"] for f in live]
            self.assertEqual(len(seqs), total - per_user, f"user{i}: one new_message per message of the others")
            self.assertEqual(seqs, sorted(set(seqs)), f"user{i}: strictly increasing seq, none twice")
            self.assertTrue(all(f["data"]["sender_id"] != users[i]["id"] for f in live), f"user{i}: no own messages")

    async def test_reconnect_since_seq(self):
        alice, bob = await self.register(), await self.register()
        a = await self.connect(alice)
        b = await self.connect(bob)
        first = await a.send_message(username=bob["username"], content="before")
        thread_id = first["thread_id"]
        await b.next(lambda f: f.get("type") == "new_message")
        await b.close()

        missed = [await a.send_message(thread_id=thread_id, content=f"missed {i}") for i in range(4)]
        b2 = await self.connect(bob)
        reply = await b2.request({"type": "subscribe_thread", "thread_id": thread_id, "since_seq": first["seq"]})
        self.assertEqual(reply["type"], "thread_subscribed", reply)
        self.assertEqual(reply["last_seq"], missed[-1]["seq"])
        replayed = b2.all(lambda f: f.get("type") == "new_message" and f["data"]["thread_id"] == thread_id)
        self.assertEqual([f["data"]["id"] for f in replayed], [m["id"] for m in missed],
                         "exactly the missed messages, in order, before thread_subscribed")

        live = await a.send_message(thread_id=thread_id, content="live again")
        got = await b2.next(lambda f: f.get("type") == "new_message" and f["data"]["id"] == live["id"])
        self.assertEqual(got["data"]["seq"], missed[-1]["seq"] + 1)
        self.assertEqual(len(await self.history(bob["token"], thread_id)), 6)


if __name__ == "__main__":
    unittest.main(verbosity=2)
