"""Real processes and plain sockets, for the end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from tcpchat import wire

from .helpers import PASSKEY

BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
STARTUP_TIMEOUT = 30.0
#: the output of every server started by the current test (checked for tracebacks by conftest)
STARTED: List[Callable[[], str]] = []


class ServerProcess:
    """The installed ``twistd -n tcpchat``, run as a subprocess on 127.0.0.1."""

    def __init__(self, data_dir: str, port: int = 0, passkey: str = PASSKEY, extra: Optional[List[str]] = None,
                 tls: bool = False, limits: bool = False, prefix: Optional[List[str]] = None):
        """``limits``: keep the per-user rate limits (plaintext servers here turn them off by default);
        ``prefix``: a command to run twistd under (e.g. strace)."""
        self.tls = tls
        self.limits = limits
        self.prefix = prefix or []
        self.data_dir = str(data_dir)
        self.port = port
        self.passkey = passkey
        #: None: the server uses (and prints) the passkey kept in its data directory
        self.given_passkey = passkey
        self.extra = extra or []
        #: a --listen endpoint instead of 127.0.0.1 on ``port``
        self.listen: Optional[str] = None
        #: the whole command line instead of the one made here (e.g. a service unit's ExecStart)
        self.argv: Optional[List[str]] = None
        self.output: List[str] = []
        self._partial = b""
        self._searched = 0
        self._eof = False
        self._cond = threading.Condition()
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "ServerProcess":
        listen = self.listen or f"tcp:{self.port}:interface=127.0.0.1:backlog=1024"
        args = [TWISTD, "-n", "--pidfile=", "tcpchat", "--listen", listen,
                "--data-dir", self.data_dir, *self.extra]
        if self.given_passkey is not None:
            args += ["--passkey", self.given_passkey]
        if not self.tls:  # these tests speak the protocol with plain sockets
            args += ["--insecure-plaintext"] + ([] if self.limits else ["--message-rate", "0"])
        args = self.prefix + (self.argv or args)
        # run from the data directory, so only the *installed* plugin can be found
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self._cond:  # (again, after stop() or kill(): a new process, a new output stream)
            self._eof = False
            self._partial = b""
            self._searched = len(self.output)
            self._searched_from = self._searched
        # (a process group of its own: kill() and close() take the server down with whatever runs it, e.g. strace,
        # which would otherwise detach and leave the server running)
        self.proc = subprocess.Popen(args, cwd=self.data_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if self.log not in STARTED:
            STARTED.append(self.log)
        threading.Thread(target=self._reader, daemon=True).start()
        match = self.wait_for(r"Join at:.*?\b127\.0\.0\.1:(\d+)")
        self.port = int(match.group(1))
        if self.given_passkey is None:
            self.passkey = self.wait_for(r"Passkey:\s+(\S+)", start=self._searched_from).group(1)
        return self

    def _reader(self) -> None:
        """Read the server's output all the time, so its logging never blocks on a full pipe."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._partial += data
                *lines, self._partial = self._partial.split(b"\n")
                self.output.extend(raw.decode("utf-8", "replace") + "\n" for raw in lines)
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = STARTUP_TIMEOUT, start: Optional[int] = None) -> "re.Match":
        """Wait until a log line (from line ``start`` on, default: lines not yet searched) matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            index = self._searched if start is None else start
            while True:
                while index < len(self.output):
                    m = regex.search(self.output[index])
                    index += 1
                    if m:
                        self._searched = max(self._searched, index)
                        return m
                self._searched = max(self._searched, index)
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(left)
        raise AssertionError(f"server never logged {pattern!r}; output:\n" + "".join(self.output))

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        assert self.proc is not None
        self._kill_group()
        self.proc.wait(10)

    def _kill_group(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.proc.kill()

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        with self._cond:
            self._cond.wait_for(lambda: self._eof, timeout=10)
            if self._partial:
                self.output.append(self._partial.decode("utf-8", "replace"))
                self._partial = b""
        return self.proc.returncode

    def log(self) -> str:
        with self._cond:
            return "".join(self.output)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._kill_group()
            self.proc.wait(10)
        elif self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # (a traced server whose tracer is gone)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc is not None and self.proc.stdout:
            with self._cond:
                self._cond.wait_for(lambda: self._eof, timeout=10)


class RawClient:
    """A blocking client that speaks PROTOCOL.rst with nothing but the socket module."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, source: Optional[str] = None,
                 tls: bool = False):
        """``source``: another loopback address to connect from (e.g. 127.0.0.2), to look like another machine;
        ``tls``: speak TLS (without checking the certificate: these tests are about what comes after)."""
        sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)
        if tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        self.sock = sock
        self.buffer = b""

    def send(self, frame: Dict[str, Any]) -> None:
        self.send_payload(wire.encode(frame))

    def send_payload(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv(self) -> Any:
        (n,) = struct.unpack(">I", self._read_exact(4))
        return wire.decode(self._read_exact(n), wire.SERVER_FRAMES)

    def recv_until(self, predicate: Callable[[Any], bool]) -> List[Any]:
        """Frames up to and including the first that satisfies ``predicate``."""
        out = []
        while True:
            frame = self.recv()
            out.append(frame)
            if predicate(frame):
                return out

    def upload(self, name: str, data: bytes, tid: int = 1) -> Dict[str, Any]:
        """Share ``data`` as file ``name``; the ``upload-done`` frame (or the error)."""
        import hashlib

        self.send({"type": "upload", "tid": tid, "name": name, "size": len(data),
                   "sha256": hashlib.sha256(data).hexdigest()})
        self.recv_until(lambda f: isinstance(f, dict) and f.get("type") == "upload-ready")
        for at in range(0, len(data), wire.CHUNK_SIZE):
            self.send_payload(wire.encode_chunk(tid, data[at:at + wire.CHUNK_SIZE]))
        return self.recv_until(lambda f: isinstance(f, dict) and f.get("type") in ("upload-done", "error"))[-1]

    def download(self, file_id: int, tid: int = 1) -> bytes:
        """The bytes of stored file ``file_id`` (AssertionError if the server refuses)."""
        self.send({"type": "download", "tid": tid, "file": file_id})
        got = b""
        for frame in self.recv_until(lambda f: isinstance(f, dict) and f.get("type") in ("download-done", "error")):
            if isinstance(frame, wire.Chunk):
                got += bytes(frame.data)
            elif frame.get("type") == "error":
                raise AssertionError(frame)
        return got

    def login(self, name: str, passkey: str = PASSKEY, **extra: Any) -> List[Any]:
        """Log in; returns frames through ``synced`` (or the error)."""
        self.send({"type": "hello", "version": wire.PROTOCOL_VERSION, "name": name, "passkey": passkey, **extra})
        return self.recv_until(lambda f: f["type"] in ("synced", "error"))

    def closed_by_server(self) -> bool:
        try:
            while True:
                self.recv()
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------- inside the reactor (trial tests)

from twisted.internet import defer, protocol  # noqa: E402


class TwistdProtocol(protocol.ProcessProtocol):
    """``twistd -n tcpchat`` run by the reactor; ``ready`` fires with the port."""

    def __init__(self) -> None:
        self.output = b""
        self.ready: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called:
            m = re.search(rb"Join at:\s+127\.0\.0\.1:(\d+)", self.output)
            if m:
                self.ready.callback(int(m.group(1)))

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.ready.called:
            self.ready.errback(AssertionError("twistd exited early:\n" + self.output.decode("utf-8", "replace")))
        self.ended.callback(reason.value.exitCode)


async def spawn_twistd(reactor, data_dir: str, port: int = 0, passkey: str = PASSKEY,
                       extra=("--insecure-plaintext", "--message-rate", "0")):
    """Start the installed twistd; returns (process protocol, port)."""
    proto = TwistdProtocol()
    STARTED.append(lambda: proto.output.decode("utf-8", "replace"))
    data_dir = os.path.abspath(data_dir)
    args = [TWISTD, "-n", "--pidfile=", "tcpchat", "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--data-dir", str(data_dir), "--passkey", passkey, *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    transport = reactor.spawnProcess(proto, TWISTD, args, env=env, path=str(data_dir))
    proto.transport = transport
    bound = await defer.Deferred.fromCoroutine(_with_timeout(reactor, proto.ready, STARTUP_TIMEOUT))
    return proto, bound


async def _with_timeout(reactor, d: defer.Deferred, seconds: float):
    d.addTimeout(seconds, reactor)
    return await d


def kill_twistd(proto: TwistdProtocol) -> defer.Deferred:
    """kill -9 it (if still running); fires once it has exited."""
    if proto.transport.pid is not None:
        proto.transport.signalProcess("KILL")
    return proto.ended
