"""
The client core on fakes: a task.Clock reactor, StringTransports, a scripted
server.  Reconnect and backoff, ping timeout, outbox resend, typing expiry and
both transfer directions, each in milliseconds and without a socket.
"""

import hashlib
import os
import struct

from twisted.internet import task
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from tcpchat import pake, wire
from tcpchat.client.core import CONNECTED, RECONNECTING, ChatClient
from tcpchat.client.model import TYPING_SHOWN

from .clienttools import Recorder
from .helpers import PASSKEY, split_frames

DELAYS = [0.5, 1.0, 2.0, 4.0, 8.0]


class SyncPool:
    """A thread pool that runs the work at once (file I/O in these tests is on small temporary files)."""

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        try:
            result, ok = f(*args, **kwargs), True
        except BaseException:
            result, ok = Failure(), False
        onResult(ok, result)


class FakeReactor(task.Clock):
    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)

    def getThreadPool(self):
        return SyncPool()

    def callInThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class Connection:
    """The server's end of one connection the client made, driven by the test."""

    def __init__(self, proto):
        self.proto = proto
        self.transport = StringTransport()
        proto.makeConnection(self.transport)
        self._buffer = b""

    def received(self):
        """Frames (and data chunks) the client sent since the last call."""
        out, self._buffer = split_frames(self._buffer + self.transport.value())
        self.transport.clear()
        return out

    def send(self, frame):
        payload = wire.encode(frame) if isinstance(frame, dict) else frame
        self.proto.dataReceived(struct.pack(">I", len(payload)) + payload)

    def login(self, name="alice", users=("alice", "bob"), last=0):
        """Answer the client's hello (a SPAKE2 proof) with a welcome and the end of the replay."""
        hello = self.received()[-1]
        assert hello["type"] == "hello"
        msg, confirm, expected = pake.server_respond(PASSKEY, bytes.fromhex(hello["pake"]), b"")
        self.send({"type": "pake", "msg": msg.hex(), "confirm": confirm.hex()})
        assert self.received()[-1]["confirm"] == expected.hex()
        self.send({"type": "welcome", "version": 1, "name": name, "server": "fake", "users": list(users),
                   "session": "s" * 32, "features": ["rooms"], "limits": {"typing_interval": 2}})
        self.send({"type": "room", "room": "general", "members": list(users), "seen": {}})
        self.send({"type": "synced", "last": last})
        return hello

    def drop(self):
        self.proto.connectionLost(Failure(ConnectionDone()))


class FakeServer:
    """An endpoint whose connections come to the test; ``refuse`` attempts fail first."""

    def __init__(self):
        self.connections = []
        self.attempts = []
        self.refuse = 0
        self.reactor = None

    def connect(self, factory):
        self.attempts.append(self.reactor.seconds())
        if self.refuse:
            self.refuse -= 1
            return fail(ConnectionRefusedError())
        proto = factory.buildProtocol(None)
        self.connections.append(Connection(proto))
        return succeed(proto)


class FakeClockTests(unittest.TestCase):
    def setUp(self):
        self.reactor = FakeReactor()
        self.server = FakeServer()
        self.server.reactor = self.reactor
        self.rec = Recorder()
        self.client = ChatClient("fake", 1, "alice", PASSKEY, self.rec, self.reactor, tls=False,
                                 endpoint=self.server, retry=lambda attempt: DELAYS[min(attempt, len(DELAYS) - 1)],
                                 known_servers=os.path.join(self.mktemp() + "-known.json"))
        self.welcomed = self.client.start()
        self.conn = self.server.connections[-1]
        self.conn.login()
        self.assertEqual(self.client.state, CONNECTED)

    def test_reconnect_backs_off_then_resends_the_outbox_with_the_same_cid(self):
        """A drop: reconnect attempts follow the retry policy (refused ones too); once back, the hello asks for
        what was missed and the unacknowledged message goes again, with the cid it had."""
        self.conn.send({"type": "event", "id": 7, "ts": 1.0, "kind": "message", "name": "bob", "text": "hi"})
        cid = self.client.send("are you there?")
        first = [f for f in self.conn.received() if f["type"] == "say"]
        self.assertEqual([f["cid"] for f in first], [cid])
        self.server.refuse = 2
        dropped_at = self.reactor.seconds()
        self.conn.drop()
        self.assertEqual(self.client.state, RECONNECTING)
        for _ in range(40):  # 20 s of fake time, in steps: far more than the three attempts need
            self.reactor.advance(0.5)
        # ClientService asks the policy with the count of failures so far: 1 after the drop, then 2, then 3
        self.assertEqual([round(t - dropped_at, 1) for t in self.server.attempts[1:]],
                         [DELAYS[1], DELAYS[1] + DELAYS[2], DELAYS[1] + DELAYS[2] + DELAYS[3]])
        again = self.server.connections[-1]
        hello = again.login()
        self.assertEqual((hello["after"], hello["session"]), (7, "s" * 32))
        resent = [f for f in again.received() if f["type"] == "say"]
        self.assertEqual([(f["cid"], f["text"]) for f in resent], [(cid, "are you there?")])
        again.send({"type": "ack", "id": 8, "ts": 2.0, "cid": cid})
        self.assertEqual(self.client.outbox, {})
        self.assertEqual(self.client.state, CONNECTED)

    def test_silent_server_is_pinged_then_dropped_after_the_timeout(self):
        """Quiet for ping_interval: a ping; no answer for ping_timeout more: the client drops it and reconnects."""
        self.conn.received()
        self.reactor.advance(15)
        self.reactor.advance(1)
        self.assertEqual([f["type"] for f in self.conn.received()], ["ping"])
        self.assertFalse(self.conn.transport.disconnecting)
        for _ in range(14):
            self.reactor.advance(1)
        self.assertFalse(self.conn.transport.disconnecting)  # 15 s without an answer: not yet
        self.reactor.advance(1)
        self.reactor.advance(1)
        self.assertTrue(self.conn.transport.disconnecting)  # more than 15 s: aborted by the client
        self.conn.drop()
        self.reactor.advance(DELAYS[1])
        self.assertEqual(len(self.server.connections), 2)

    def test_an_answer_keeps_the_connection(self):
        self.reactor.advance(16)
        self.conn.send({"type": "pong"})
        for _ in range(20):
            self.reactor.advance(1)
        self.assertFalse(self.conn.transport.disconnecting)

    def test_typing_hint_expires_on_the_clock_and_ends_with_a_message(self):
        changes = []
        self.rec.typingChanged = lambda conv, names: changes.append((conv, names))
        self.conn.send({"type": "typing", "name": "bob", "room": "general"})
        self.assertEqual(self.client.model.typingIn("#general"), ["bob"])
        self.reactor.advance(TYPING_SHOWN - 0.1)
        self.assertEqual(self.client.model.typingIn("#general"), ["bob"])
        self.reactor.advance(0.2)
        self.assertEqual(self.client.model.typingIn("#general"), [])
        self.conn.send({"type": "typing", "name": "bob", "room": "general"})
        self.conn.send({"type": "event", "id": 3, "ts": 1.0, "kind": "message", "name": "bob", "text": "done",
                        "room": "general"})
        self.assertEqual(self.client.model.typingIn("#general"), [])
        self.assertEqual(changes, [("#general", ["bob"]), ("#general", []), ("#general", ["bob"]), ("#general", [])])
        self.assertEqual(self.client.model.unreadIn("#general"), 1)

    def test_upload_follows_backpressure_and_finishes(self):
        data = os.urandom(5 * wire.CHUNK_SIZE + 123)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        self.conn.received()
        transfer = self.client.share(path)
        offer = self.conn.received()
        self.assertEqual(offer[0]["type"], "upload")
        self.assertEqual((offer[0]["size"], offer[0]["sha256"]), (len(data), hashlib.sha256(data).hexdigest()))
        chunks = [f for f in offer if isinstance(f, wire.Chunk)]
        self.assertEqual(b"".join(bytes(c.data) for c in chunks), data)  # all of it: the transport never paused

        # the same upload with the peer not reading: nothing is read ahead of what the connection takes
        self.conn.send({"type": "upload-done", "tid": transfer.tid, "id": 9,
                        "file": {"id": 1, "name": "f", "size": len(data)}})
        self.assertEqual(transfer.state, "finished")
        self.conn.proto.pauseProducing()
        second = self.client.share(path)
        sent = self.conn.received()
        chunks = [f for f in sent if isinstance(f, wire.Chunk)]
        self.assertLessEqual(len(chunks), 1)
        self.conn.proto.resumeProducing()
        chunks += [f for f in self.conn.received() if isinstance(f, wire.Chunk)]
        self.assertEqual(b"".join(bytes(c.data) for c in chunks), data)
        self.assertEqual(second.done, len(data))

    def test_download_is_verified_then_renamed_and_a_damaged_one_removed(self):
        data = os.urandom(3 * wire.CHUNK_SIZE)
        info = {"id": 5, "name": "report.pdf", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        dest = self.mktemp()
        self.conn.received()
        transfer = self.client.download(info, dest)
        asked = self.conn.received()[-1]
        self.assertEqual((asked["type"], asked["file"], asked["offset"]), ("download", 5, 0))
        self.conn.send({"type": "download-start", "tid": transfer.tid, "offset": 0, "file": info})
        for i in range(0, len(data), wire.CHUNK_SIZE):
            self.conn.send(wire.encode_chunk(transfer.tid, data[i: i + wire.CHUNK_SIZE]))
        self.conn.send({"type": "download-done", "tid": transfer.tid})
        self.assertEqual(transfer.state, "finished")
        with open(dest, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertFalse(os.path.exists(dest + ".part"))

        damaged = self.client.download(info, dest + "-2")
        self.conn.received()
        self.conn.send({"type": "download-start", "tid": damaged.tid, "offset": 0, "file": info})
        self.conn.send(wire.encode_chunk(damaged.tid, b"not the file"))
        self.conn.send({"type": "download-done", "tid": damaged.tid})
        self.assertEqual(damaged.state, "failed")
        self.assertIn("damaged", damaged.error)
        self.assertFalse(os.path.exists(dest + "-2") or os.path.exists(dest + "-2.part"))

    def test_answers_are_matched_by_request_id(self):
        """Two searches in flight: each gets its own answer, whatever the order they come back in."""
        self.conn.received()
        first = self.client.search("apples")
        second = self.client.search("pears")
        asked = self.conn.received()
        self.assertEqual([f["q"] for f in asked], ["apples", "pears"])
        got = []
        first.addCallback(lambda events: got.append(("apples", events)))
        second.addCallback(lambda events: got.append(("pears", events)))
        self.conn.send({"type": "search-results", "q": "pears", "events": [{"id": 2}], "more": False,
                        "req": asked[1]["req"]})
        self.conn.send({"type": "search-results", "q": "apples", "events": [{"id": 1}], "more": False,
                        "req": asked[0]["req"]})
        self.assertEqual(got, [("pears", [{"id": 2}]), ("apples", [{"id": 1}])])
