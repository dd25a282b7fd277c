"""End-to-end tests of Parley's Socket.IO endpoint with Debian's python3-socketio
(socketio.Client, 5.x; polling via python3-requests, WebSocket via python3-websocket).

    PARLEY_BIN=build/parley /usr/bin/python3 -m unittest -v tests/e2e/python/test_socketio.py

The server helper is the one of test_chat.py (127.0.0.1, port 0, temp data dir).
"""

import queue
import time
import unittest

import socketio

from test_chat import HOST, ParleyServer


class SioClient:
    """A socketio.Client that queues every event it receives (acking the ones that ask)."""

    def __init__(self, server, token, transports):
        self.events = queue.Queue()
        self.kept = []  # received, not yet taken by next()
        self.sio = socketio.Client(reconnection=False)

        @self.sio.on("*")
        def any_event(event, *args):
            self.events.put((event, args[0] if args else None))
            return {"received": True}  # the ack, for events that ask for one

        self.sio.connect(f"http://{HOST}:{server.port}", auth={"token": token} if token else None,
                         transports=transports, wait_timeout=5)

    def next(self, name, timeout=5.0):
        """The first event called `name` not taken yet. Others are kept for later
        calls, not dropped: the Engine.IO client runs each message's handler on a
        thread of its own, so two events sent close together may be queued in
        either order (the server's order is not what this checks)."""
        for i, (event, data) in enumerate(self.kept):
            if event == name:
                del self.kept[i]
                return data
        deadline = time.monotonic() + timeout
        while True:
            event, data = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if event == name:
                return data
            self.kept.append((event, data))

    def call(self, event, data):
        return self.sio.call(event, data, timeout=5)

    def close(self):
        self.sio.disconnect()


class SocketIoTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = ParleyServer()
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_connect_send_and_receive_on_both_transports(self):
        for transports in (["websocket"], ["polling"]):
            with self.subTest(transports=transports):
                alice, bob = self.server.register(), self.server.register()
                a = SioClient(self.server, alice["token"], transports)
                b = SioClient(self.server, bob["token"], transports)
                try:
                    self.assertEqual(a.next("connection_success")["userId"], alice["id"])
                    a.next("test_message")
                    b.next("connection_success")
                    ack = a.call("send_message", {"username": bob["username"], "text": "hi from python"})
                    self.assertTrue(ack["success"], ack)
                    self.assertEqual(ack["message"]["content"], "hi from python")
                    got = b.next("new_message")
                    self.assertEqual(got["id"], ack["message"]["id"])
                    joined = b.call("join_chat", {"username": alice["username"]})
                    self.assertEqual(joined, {"success": True, "thread_id": got["thread_id"],
                                              "chatId": got["thread_id"]})
                    read = b.call("mark_as_read", {"chatId": joined["chatId"]})
                    self.assertTrue(read["success"], read)
                    self.assertEqual(a.next("message_delivered")["message_id"], got["id"])
                finally:
                    a.close()
                    b.close()

    def test_bad_and_missing_token_are_refused(self):
        for token in ("not-a-token", None):
            with self.subTest(token=token):
                with self.assertRaises(socketio.exceptions.ConnectionError):
                    SioClient(self.server, token, ["websocket"])


if __name__ == "__main__":
    unittest.main()
