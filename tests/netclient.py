"""
A client for the bad-network tests, run inside the client's network namespace (``ip netns exec``): it prints one
JSON object with what it measured.  Plain sockets and tcpchat.wire only.

    python netclient.py upload HOST PORT SIZE
        shares SIZE random bytes; prints the file object.
    python netclient.py listen HOST PORT COUNT
        prints "listening", then the delays of COUNT messages "ping T" (T: when they were written) once a file
        has been shared too.
    python netclient.py download-and-chat HOST PORT FILE_ID COUNT
        "fetcher" downloads file FILE_ID while "talker" says COUNT messages, one every 0.2 s; prints how long each
        took to reach the fetcher (sharing its connection with the file data) and the download's throughput.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import struct
import sys
import time

from tcpchat import wire

PASSKEY = os.environ.get("TCPCHAT_PASSKEY", "")


class Conn:
    def __init__(self, host: str, port: int, name: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self.pending: list = []
        self.send({"type": "hello", "version": 1, "name": name, "passkey": PASSKEY})
        while True:
            frame = self.recv()
            if isinstance(frame, dict) and frame.get("type") in ("synced", "error"):
                assert frame["type"] == "synced", frame
                break
        self.sock.setblocking(False)

    def send(self, frame: dict) -> None:
        payload = wire.encode(frame)
        self.sock.settimeout(30)
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def frames(self):
        """Frames already received (without waiting)."""
        blocking = self.sock.getblocking()
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            data = b""
        finally:
            self.sock.setblocking(blocking)
        self.buf += data
        out = self.pending
        self.pending = []
        while len(self.buf) >= 4:
            (n,) = struct.unpack(">I", self.buf[:4])
            if len(self.buf) < 4 + n:
                break
            out.append(wire.decode(self.buf[4:4 + n], wire.SERVER_FRAMES))
            self.buf = self.buf[4 + n:]
        return out

    def recv(self):
        while True:
            got = self.frames()
            if got:
                self.pending = got[1:]
                return got[0]
            self.sock.settimeout(30)
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed")
            self.buf += data


def download_and_chat(host: str, port: int, file_id: int, count: int) -> dict:
    fetcher = Conn(host, port, "fetcher")
    talker = Conn(host, port, "talker")
    fetcher.send({"type": "download", "tid": 1, "file": file_id})
    fetcher.sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(fetcher.sock, selectors.EVENT_READ)
    sent = {}
    arrived = {}
    received = 0
    started = time.monotonic()
    done_at = None
    next_say = started + 0.5  # (the download is under way first)
    n = 0
    deadline = started + 120
    while time.monotonic() < deadline and (len(arrived) < count or done_at is None):
        now = time.monotonic()
        if n < count and now >= next_say:
            sent[n] = time.monotonic()
            talker.send({"type": "say", "text": f"ping {n}", "cid": f"p{n}"})
            n += 1
            next_say = now + 0.2
        for _ in sel.select(timeout=0.02):
            for frame in fetcher.frames():
                if isinstance(frame, wire.Chunk):
                    received += len(frame.data)
                elif frame.get("type") == "event" and frame.get("kind") == "message" \
                        and str(frame.get("text", "")).startswith("ping "):
                    k = int(frame["text"].split()[1])
                    arrived[k] = time.monotonic() - sent[k]
                elif frame.get("type") == "download-done":
                    done_at = time.monotonic()
        talker.frames()  # (its acks: read so its socket never fills)
    return {"latencies": [arrived[k] for k in sorted(arrived)], "bytes": received,
            "seconds": (done_at or time.monotonic()) - started, "done": done_at is not None}


def upload(host: str, port: int, size: int) -> dict:
    import hashlib

    conn = Conn(host, port, "sharer")
    data = os.urandom(size)
    conn.send({"type": "upload", "tid": 1, "name": "site survey.bin", "size": size,
               "sha256": hashlib.sha256(data).hexdigest()})
    while True:
        frame = conn.recv()
        if isinstance(frame, dict) and frame.get("type") == "upload-ready":
            break
    for at in range(0, size, wire.CHUNK_SIZE):
        payload = wire.encode_chunk(1, data[at:at + wire.CHUNK_SIZE])
        conn.sock.settimeout(30)
        conn.sock.sendall(struct.pack(">I", len(payload)) + payload)
    while True:
        frame = conn.recv()
        if isinstance(frame, dict) and frame.get("type") in ("upload-done", "error"):
            assert frame["type"] == "upload-done", frame
            return {"file": frame["file"]}


def listen(host: str, port: int, count: int) -> dict:
    """Log in as "ear" and wait for ``count`` messages "ping T" (T: the sender's time.monotonic()): their delays."""
    conn = Conn(host, port, "ear")
    print("listening", flush=True)
    delays: list = []
    arrivals: list = []
    files: list = []
    deadline = time.monotonic() + 120
    while (len(delays) < count or not files) and time.monotonic() < deadline:
        frame = conn.recv()
        if isinstance(frame, dict) and frame.get("type") == "event":
            said = str(frame.get("text", ""))
            if frame.get("kind") == "message" and said.startswith("ping "):
                arrivals.append(time.monotonic())
                delays.append(arrivals[-1] - float(said.split()[1]))
            elif frame.get("kind") == "file":
                files.append(time.monotonic())
    return {"latencies": delays, "arrivals": arrivals, "file_at": files[0] if files else None}


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "listen":
        print(json.dumps(listen(rest[0], int(rest[1]), int(rest[2]))))
    elif command == "upload":
        print(json.dumps(upload(rest[0], int(rest[1]), int(rest[2]))))
    elif command == "download-and-chat":
        host, port, file_id, count = rest[0], int(rest[1]), int(rest[2]), int(rest[3])
        print(json.dumps(download_and_chat(host, port, file_id, count)))
    else:
        sys.exit(f"unknown command {command}")
