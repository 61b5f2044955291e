"""
The "under attack" cell of the benchmark: one legitimate user sends a message
every 100 ms to a tcpchat server on its defaults (TLS, default limits) and
times each ack, first with no attack, then while each attack of the hardening
issue runs; the server's RSS is sampled meanwhile.  Blocking sockets and
threads, all on 127.0.0.0/8, every loop bounded in time.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List

PASSKEY = "bench-attack"


def _tls(sock: socket.socket) -> ssl.SSLSocket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(sock)


def _frame(obj: Dict[str, Any]) -> bytes:
    payload = json.dumps(obj).encode()
    return struct.pack(">I", len(payload)) + payload


class Client:
    def __init__(self, port: int, name: str, source: str = "127.0.0.1") -> None:
        self.sock = _tls(socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)))
        self.buf = b""
        self.sock.sendall(_frame({"type": "hello", "version": 1, "name": name, "passkey": PASSKEY}))
        while self.recv()["type"] != "synced":
            pass

    def recv(self) -> Dict[str, Any]:
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    frame, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                    return json.loads(frame)
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("closed")
            self.buf += data


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _percentile(values: List[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


# ---------------------------------------------------------------- attacks (each returns a cleanup callable)

def ping_flood(port: int, stop: threading.Event, n: int = 20) -> None:
    """Sockets that flood pings before login and never read."""
    def one(i: int) -> None:
        try:
            sock = _tls(socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(f"127.0.2.{i + 1}", 0)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            data = _frame({"type": "ping", "n": "x" * 64}) * 500
            while not stop.is_set():
                sock.sendall(data)
        except (OSError, ssl.SSLError):
            pass
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()


def idle_sockets(port: int, stop: threading.Event, n: int = 10000) -> List[socket.socket]:
    """Plain TCP sockets that never start the TLS handshake, spread over 40 addresses (under the per-address cap)."""
    socks = []
    for i in range(n):
        if stop.is_set():
            break
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5,
                                                  source_address=(f"127.0.3.{i % 40 + 1}", 0)))
        except OSError:
            continue
    return socks


def history_flood(port: int, stop: threading.Event) -> None:
    """A logged-in user pipelining history requests and never reading the answers."""
    def run() -> None:
        try:
            c = Client(port, "hoarder", source="127.0.4.1")
            c.sock.settimeout(1)
            burst = _frame({"type": "history", "limit": 500}) * 1000
            while not stop.is_set():
                c.sock.sendall(burst)
        except (OSError, ssl.SSLError, ConnectionError):
            pass
    threading.Thread(target=run, daemon=True).start()


def wrong_passkeys(port: int, stop: threading.Event) -> None:
    """Connections guessing passkeys as fast as they can."""
    def run() -> None:
        i = 0
        while not stop.is_set() and i < 100000:
            i += 1
            try:
                sock = _tls(socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.5.1", 0)))
                sock.sendall(_frame({"type": "hello", "version": 1, "name": "mallory", "passkey": f"guess{i}"}))
                sock.recv(4096)
                sock.close()
            except (OSError, ssl.SSLError):
                time.sleep(0.01)
    threading.Thread(target=run, daemon=True).start()


def garbage(port: int, stop: threading.Event) -> None:
    """A logged-in user sending invalid frames (bad Unicode, non-finite numbers, unknown kinds) and reading."""
    def run() -> None:
        try:
            c = Client(port, "fuzzer", source="127.0.6.1")
            c.sock.settimeout(0.01)
            bad = [b'{"type":"presence","status":"\\ud800"}', b'{"type":"ping","n":1e400}', b'{"type":"nope"}',
                   b'\xff\xfe', b'{"type":"search","q":"\\u0000"}']
            data = b"".join(struct.pack(">I", len(p)) + p for p in bad) * 200
            while not stop.is_set():
                c.sock.sendall(data)
                try:
                    while c.sock.recv(1 << 16):
                        pass
                except (socket.timeout, ssl.SSLWantReadError):
                    pass
        except (OSError, ssl.SSLError, ConnectionError):
            pass
    threading.Thread(target=run, daemon=True).start()


def slow_headers(port: int, stop: threading.Event, n: int = 200) -> None:
    """HTTPS requests whose headers trickle in (slowloris): a header line per second, from 20 addresses."""
    def one(i: int) -> None:
        for _ in range(1000):  # bounded: reconnect after each cut-off
            if stop.is_set():
                return
            try:
                sock = _tls(socket.create_connection(("127.0.0.1", port), timeout=5,
                                                     source_address=(f"127.0.7.{i % 20 + 1}", 0)))
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                while not stop.is_set():
                    sock.sendall(b"X-Slow: y\r\n")
                    stop.wait(1.0)
            except (OSError, ssl.SSLError):
                stop.wait(0.2)
    for i in range(n):
        threading.Thread(target=one, args=(i,), daemon=True).start()


def poll_sessions(port: int, stop: threading.Event) -> None:
    """HTTPS fallback sessions opened as fast as possible and never polled (each holds a connection slot)."""
    def run() -> None:
        for i in range(100000):
            if stop.is_set():
                return
            try:
                sock = _tls(socket.create_connection(("127.0.0.1", port), timeout=5,
                                                     source_address=("127.0.8.1", 0)))
                sock.sendall(b"POST /poll HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                while sock.recv(4096):
                    pass
                sock.close()
            except (OSError, ssl.SSLError):
                stop.wait(0.01)
    threading.Thread(target=run, daemon=True).start()


def websocket_oversize(port: int, stop: threading.Event) -> None:
    """WebSockets sending a message in 64 KiB fragments without end (each is cut off at MAX_FRAME, then again)."""
    import base64

    piece = b"x" * 65536

    def fragment(opcode: int) -> bytes:
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(piece[:64])) * 1024  # (the key repeats every 4 bytes)
        return bytes([opcode, 0x80 | 127]) + struct.pack(">Q", len(piece)) + key + masked

    first, more = fragment(0x1), fragment(0x0)

    def run() -> None:
        for _ in range(10000):
            if stop.is_set():
                return
            try:
                sock = _tls(socket.create_connection(("127.0.0.1", port), timeout=5,
                                                     source_address=("127.0.9.1", 0)))
                sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) +
                             b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
                sock.recv(4096)
                sock.sendall(first)
                while not stop.is_set():
                    sock.sendall(more)
            except (OSError, ssl.SSLError):
                stop.wait(0.01)
    threading.Thread(target=run, daemon=True).start()


ATTACKS: Dict[str, Callable[..., Any]] = {
    "none (quiet)": lambda port, stop: None,
    "pings before login, never read (20 sockets)": ping_flood,
    "sockets that never start TLS": idle_sockets,
    "history flood, never read": history_flood,
    "wrong passkeys as fast as possible": wrong_passkeys,
    "invalid frames (bad Unicode, 1e400, unknown)": garbage,
    "slow HTTP headers (200 sockets)": slow_headers,
    "fallback sessions opened, never polled": poll_sessions,
    "WebSocket message fragmented without end": websocket_oversize,
}


def run(workdir: str, seconds: float = 8.0, sockets: int = 10000) -> List[Dict[str, Any]]:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    rows = []
    for name, attack in ATTACKS.items():
        data = tempfile.mkdtemp(dir=workdir, prefix="attack-")
        proc = subprocess.Popen([twistd, "-n", "--pidfile=", "tcpchat", "--listen", "tcp:0:interface=127.0.0.1:backlog=4096",
                                 "--data-dir", data, "--passkey", PASSKEY], cwd=data, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        out = b""
        while b"Join at:" not in out:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("tcpchat did not start:\n" + out.decode(errors="replace"))
            out += line
        port = int(out.split(b"127.0.0.1:")[-1].split()[0].rstrip(b","))
        threading.Thread(target=lambda: [None for _ in iter(lambda: proc.stdout.read(65536), b"")], daemon=True).start()
        user = Client(port, "teacher")
        stop = threading.Event()
        held: Any = None
        base = _rss_kib(proc.pid)
        peak = base
        if attack is idle_sockets:
            result: Dict[str, Any] = {}
            t = threading.Thread(target=lambda: result.setdefault("socks", idle_sockets(port, stop, sockets)), daemon=True)
            t.start()
        else:
            attack(port, stop)
        latencies: List[float] = []
        lost = 0
        began = time.monotonic()
        i = 0
        while time.monotonic() - began < seconds:
            cid = f"t{i}"
            sent = time.monotonic()
            user.sock.sendall(_frame({"type": "say", "text": f"lesson {i}", "cid": cid}))
            while True:
                frame = user.recv()
                if frame.get("cid") == cid:
                    break
            if frame["type"] == "ack":
                latencies.append(time.monotonic() - sent)
            else:
                lost += 1
            peak = max(peak, _rss_kib(proc.pid))
            i += 1
            time.sleep(max(0.0, 0.1 - (time.monotonic() - sent)))
        stop.set()
        if attack is idle_sockets:
            t.join(30)
            held = result.get("socks", [])
            peak = max(peak, _rss_kib(proc.pid))
        rows.append({"attack": name, "acks": len(latencies), "refused": lost,
                     "p50_ms": _percentile(latencies, 0.5) * 1000, "p99_ms": _percentile(latencies, 0.99) * 1000,
                     "max_ms": max(latencies) * 1000 if latencies else float("nan"),
                     "base_mib": base / 1024, "peak_mib": peak / 1024,
                     "sockets": len(held) if held is not None else None})
        for s in held or []:
            s.close()
        proc.terminate()
        proc.wait(20)
    quiet = rows[0]["p99_ms"]
    for row in rows:
        row["target_ms"] = 2 * quiet + 50
        row["met"] = "yes" if row["p99_ms"] <= 2 * quiet + 50 and row["peak_mib"] < 300 else "NO"
    return rows


def sync_cost(workdir: str, commits: int = 2000) -> List[Dict[str, Any]]:
    """
    What fsync-before-ack costs: the same group commits (1 and 50 messages each)
    written by the server's store with ``synchronous=FULL`` (the default: the WAL
    is synced at every commit) and ``NORMAL`` (0.2's setting: synced only at
    checkpoints), in-process on this machine's disk.
    """
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tcpchat.store.sqlite import Store

    rows = []
    for batch in (1, 50):
        for mode in ("NORMAL", "FULL"):
            path = os.path.join(tempfile.mkdtemp(dir=workdir), "sync.sqlite3")
            store = Store(path, synchronous=mode)
            store._do_open()
            times = []
            for i in range(commits // batch):
                events = [{"kind": "message", "ts": 0.0, "name": "a", "nkey": "a", "text": "x" * 80, "cid": f"{i}-{j}",
                           "conv": "#general"} for j in range(batch)]
                began = time.perf_counter()
                store._do_append(events)
                times.append(time.perf_counter() - began)
            store._do_close()
            rows.append({"mode": mode, "batch": batch, "commits": len(times),
                         "p50_ms": _percentile(times, 0.5) * 1000, "p99_ms": _percentile(times, 0.99) * 1000,
                         "msgs_per_s": batch * len(times) / sum(times)})
    return rows
