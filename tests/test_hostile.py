"""
Hostile clients against a real server (the installed twistd, plaintext so raw
frames can be sent).  Each test ends by checking that a well-behaved client,
connected the whole time, still chats normally, that the server's memory
stayed within its bound, and that no traceback reached the log.
"""

import asyncio
import json
import os
import random
import socket
import struct
import time

import pytest

from tcpchat import wire

from .helpers import PASSKEY
from .procs import TWISTD, RawClient, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")

#: documented bound (docs/SECURITY.rst): growth of the server's RSS under any one of these attacks
MEMORY_BOUND_KIB = 64 * 1024


def rss_kib(server):
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path).start()
    yield proc
    proc.close()


@pytest.fixture
def witness(server):
    """A normal user logged in before the attack and checked after it."""
    w = RawClient(server.port)
    w.login("witness")
    w.recv_until(lambda f: f.get("kind") == "join" and f.get("name") == "witness")
    friend = RawClient(server.port)
    friend.login("friend")
    w.recv_until(lambda f: f.get("kind") == "join" and f.get("name") == "friend")
    w.friend = friend
    w.base_rss = rss_kib(server)
    return w


def still_fine(server, witness):
    """The witness can still send and receive; memory and log are clean."""
    text = f"still here {time.monotonic()}"
    witness.send({"type": "say", "text": text, "cid": text})
    ack = witness.recv_until(lambda f: f["type"] == "ack" and f.get("cid") == text)[-1]
    got = witness.friend.recv_until(lambda f: f.get("kind") == "message" and f.get("text") == text)[-1]
    assert got["id"] == ack["id"]
    witness.friend.send({"type": "say", "text": "and you?", "cid": "r" + text})
    witness.recv_until(lambda f: f.get("text") == "and you?")
    assert rss_kib(server) - witness.base_rss < MEMORY_BOUND_KIB
    log = server.log()
    assert "Traceback" not in log and "Unhandled" not in log


def test_two_gib_length_prefix(server, witness):
    """A 2 GiB length prefix is refused at once; the payload is never awaited or buffered."""
    attacker = RawClient(server.port)
    attacker.sock.sendall(struct.pack(">I", 2**31 - 1) + os.urandom(64 * 1024))
    frame = attacker.recv()
    assert frame["code"] == "frame-too-large"
    assert attacker.closed_by_server()
    still_fine(server, witness)


def random_frame(rng):
    kind = rng.random()
    if kind < 0.3:
        return rng.randbytes(rng.randint(0, 200))
    if kind < 0.4:
        return wire.encode_chunk(rng.randint(1, 50), rng.randbytes(rng.randint(0, 2000)))
    fields = {}
    for name in rng.sample(["version", "name", "passkey", "text", "cid", "after", "before", "limit", "tid", "file",
                            "offset", "size", "sha256", "pake", "confirm", "session", "n", "room", "to", "id", "q",
                            "away", "status", "action", "address", "duration", "reason", "password", "features"],
                           rng.randint(0, 6)):
        fields[name] = rng.choice([None, 0, -1, 1, 2**40, "x", "", "💥" * 3, [], {}, True, 1.5, "ab" * 33, "fuzzer",
                                   "general", "#lab", "kick", "ban", ["rooms"], "a b * ( \""])
    fields["type"] = rng.choice(sorted(set(wire.CLIENT_FRAMES) - {"bye"}) + ["nope", 7, None])  # bye just leaves
    return json.dumps(fields).encode()


def test_ten_thousand_random_frames(server, witness):
    """10,000 random frames from a logged-in client get error frames, never an internal error."""
    attacker = RawClient(server.port)
    attacker.login("fuzzer", features=["rooms"])  # every handler, rooms and direct messages included
    rng = random.Random(1234)
    answers = []
    attacker.sock.setblocking(False)
    for i in range(10_000):
        payload = random_frame(rng)
        data = struct.pack(">I", len(payload)) + payload
        while data:
            try:
                sent = attacker.sock.send(data)
                data = data[sent:]
            except BlockingIOError:
                pass
            try:  # keep reading what the server answers
                attacker.buffer += attacker.sock.recv(1 << 20)
            except BlockingIOError:
                pass
    attacker.sock.setblocking(True)
    attacker.send({"type": "ping", "n": "end"})
    answers = attacker.recv_until(lambda f: f.get("type") == "pong" and f.get("n") == "end")
    codes = {f.get("code") for f in answers if f.get("type") == "error"}
    assert "internal-error" not in codes
    assert codes & {"bad-frame", "unknown-type"}
    still_fine(server, witness)


def test_five_hundred_connections_that_never_log_in(server, witness):
    """500 silent connections: those over the per-address cap are refused; chat goes on."""
    socks = []
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        socks.append(s)
    import selectors

    selector = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
    refused, deadline = 0, time.monotonic() + 20
    while refused < 500 - 256 and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if b"server-busy" in data:
                refused += 1
            selector.unregister(key.fileobj)
    selector.close()
    assert refused >= 500 - 256
    still_fine(server, witness)
    for s in socks:
        s.close()


def test_thousand_wrong_passkeys(server, witness):
    """1,000 wrong passkeys: the address is locked out after a few, quickly, and nobody else notices."""
    codes = []
    start = time.monotonic()
    tries = 0
    while tries < 1000:
        attacker = RawClient(server.port)
        for _ in range(5):
            tries += 1
            try:
                attacker.send({"type": "hello", "version": 1, "name": "mallory", "passkey": f"guess{tries}"})
                frame = attacker.recv()
            except (ConnectionError, OSError) as e:
                codes.append(type(e).__name__)
                break
            codes.append(frame.get("code"))
            if frame.get("code") == "too-many-attempts":
                break
        attacker.close()
    assert codes.count("bad-passkey") < 20  # the rest met the lockout
    assert codes.count("too-many-attempts") > 100
    assert time.monotonic() - start < 60
    assert "locked out" in server.wait_for(r"locked out").string
    still_fine(server, witness)


def test_slow_reader_gets_everything_later_and_hurts_nobody(server, witness):
    """One client stops reading while 20 chat at full speed: memory bounded, others prompt, then all delivered once, in order."""

    async def scenario():
        async def connect(name, rcvbuf=None):
            sock = socket.socket()
            if rcvbuf:  # a small window, so the kernel cannot hide the sleeper's backlog
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.connect(("127.0.0.1", server.port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
            payload = wire.encode({"type": "hello", "version": 1, "name": name, "passkey": PASSKEY})
            writer.write(struct.pack(">I", len(payload)) + payload)
            frames = []
            while True:
                (n,) = struct.unpack(">I", await reader.readexactly(4))
                frame = json.loads(await reader.readexactly(n))
                frames.append(frame)
                if frame["type"] == "synced":
                    return reader, writer, frame["last"]

        slow_reader, slow_writer, slow_last = await connect("sleepy", rcvbuf=4096)
        slow_writer.transport.pause_reading()  # the user's laptop froze
        chatters = [await connect(f"chatter{i}") for i in range(20)]
        per_sender = 200
        sent_at = {}
        latencies = []
        done = asyncio.Event()
        expected_total = per_sender * 20
        received = {"n": 0}

        async def listen(reader):  # chatter0 measures delivery latency of everyone's messages
            while received["n"] < expected_total - per_sender:
                (n,) = struct.unpack(">I", await reader.readexactly(4))
                frame = json.loads(await reader.readexactly(n))
                if frame.get("kind") == "message":
                    received["n"] += 1
                    latencies.append(time.monotonic() - sent_at[frame["text"]])
            done.set()

        async def drain(reader):
            try:
                while True:
                    await reader.read(1 << 20)
            except (ConnectionError, asyncio.CancelledError):
                pass

        listener = asyncio.ensure_future(listen(chatters[0][0]))
        drains = [asyncio.ensure_future(drain(r)) for r, _, _ in chatters[1:]]
        peak = rss_kib(server)
        for round_ in range(per_sender):
            for i, (_, writer, _) in enumerate(chatters):
                text = f"m{i}-{round_}-" + "x" * 2000
                sent_at[text] = time.monotonic()
                payload = wire.encode({"type": "say", "text": text})
                writer.write(struct.pack(">I", len(payload)) + payload)
            if round_ % 10 == 0:
                await asyncio.sleep(0)
                peak = max(peak, rss_kib(server))
        await asyncio.wait_for(done.wait(), 60)
        peak = max(peak, rss_kib(server))
        # now the sleepy client wakes up and reads everything
        slow_writer.transport.resume_reading()
        ids = []
        while len([i for i in ids if i[1] == "message"]) < expected_total:
            (n,) = struct.unpack(">I", await asyncio.wait_for(slow_reader.readexactly(4), 30))
            frame = json.loads(await slow_reader.readexactly(n))
            if frame.get("type") == "event":
                ids.append((frame["id"], frame["kind"]))
        for task in drains + [listener]:
            task.cancel()
        for _, writer, _ in chatters:
            writer.close()
        slow_writer.close()
        return peak, latencies, ids, slow_last

    peak, latencies, ids, slow_last = asyncio.run(scenario())
    print(f"peak RSS growth {(peak - witness.base_rss) / 1024:.1f} MiB")
    server.wait_for(r"sleepy is reading slowly; switching to catch-up", start=0)  # the slow path really ran
    assert peak - witness.base_rss < MEMORY_BOUND_KIB
    latencies.sort()
    assert latencies[len(latencies) * 99 // 100] < 2.0  # the others were not held up behind the sleeper
    numbers = [i for i, _ in ids]
    assert numbers == sorted(set(numbers))  # in order, each once
    assert numbers[0] == slow_last + 1 and numbers == list(range(numbers[0], numbers[-1] + 1))  # no gap
    still_fine(server, witness)
