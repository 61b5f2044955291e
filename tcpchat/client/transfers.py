"""
Uploads and downloads of one client, with every file operation off the
reactor thread.

Each transfer has its own serial queue of file operations (open, read,
write, close) run in the reactor's thread pool one after another, so its
bytes stay in order while the reactor (and the UI) never waits for a disk.
An upload reads its next chunk only once the previous one was handed to the
connection, and only while the connection takes more (backpressure); a
download stops reading from the server while more than
:data:`MAX_PENDING_WRITES` bytes wait for the disk.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from typing import Any, Callable, Dict, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

from tcpchat import wire
from tcpchat.client.model import conv_fields
from tcpchat.pacing import Gate

#: bytes of received file data allowed to wait for the disk before the client stops reading
MAX_PENDING_WRITES = 8 * 1024 * 1024


class Transfer:
    """One upload or download, as a UI shows it."""

    def __init__(self, direction: str, tid: int, name: str, path: str, size: int = 0) -> None:
        self.direction = direction  # "upload" or "download"
        self.tid = tid
        self.name = name
        self.path = path
        self.size = size
        self.done = 0
        self.reported = 0
        self.state = "preparing"  # preparing, waiting, active, verifying, finished, failed, cancelled
        #: not something the user asked for (a thumbnail's picture): UIs need not list it
        self.quiet = False
        self.error: Optional[str] = None
        self.sha256: Optional[str] = None
        self.file: Optional[Dict[str, Any]] = None  # the server's file object
        #: the open file: touched only by this transfer's file operations (in threads, one at a time)
        self.handle: Any = None
        #: True while this transfer's data flows (an upload reading, a download receiving)
        self.flowing = False
        #: counts closes: a file operation's answer for an earlier generation is stale
        self.generation = 0
        self.reading = False
        self.pendingWrites = 0
        self.conv: Optional[str] = None  # where an upload is shared (default: the default room)
        self.finished: Deferred = Deferred()
        self.io: Deferred = succeed(None)

    @property
    def fraction(self) -> float:
        return 1.0 if self.size == 0 else min(1.0, self.done / self.size)

    def __repr__(self) -> str:
        return f"<Transfer {self.direction} {self.name!r} {self.done}/{self.size} {self.state}>"


class TransferFailed(Exception):
    """An upload or download did not complete."""


def file_digest(path: str) -> tuple:
    """(size, sha256 hex) of a file, reading it in blocks (blocking: run it in a thread)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            size += len(block)
            digest.update(block)
    return size, digest.hexdigest()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class Transfers:
    """
    :param client: the façade (``proto``, ``loggedIn``, ``reactor``, ``listener``).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.uploads: Dict[int, Transfer] = {}
        self.downloads: Dict[int, Transfer] = {}
        self._nextTid = 1
        self._readingPaused = False

    # ------------------------------------------------------------ helpers

    def _connection(self) -> Any:
        client = self.client
        return client.proto if client.proto is not None and client.loggedIn else None

    def _io(self, transfer: Transfer, f: Callable[..., Any], *args: Any) -> Deferred:
        """Run ``f(*args)`` in a thread after this transfer's earlier file operations; fires with its result."""
        reactor = self.client.reactor
        result: Deferred = Deferred()

        def run(_: Any) -> Deferred:
            d = deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
            d.chainDeferred(result)
            return d.addErrback(lambda failure: None)

        transfer.io.addCallback(run)
        return result

    def _close(self, transfer: Transfer) -> Deferred:
        """Stop the data flow now; the file is closed after the operations already queued."""
        transfer.flowing = False
        transfer.generation += 1
        return self._io(transfer, _close_file, transfer)

    def _tid(self) -> int:
        tid = self._nextTid
        self._nextTid = tid + 1 if tid < wire.MAX_TRANSFER_ID else 1
        return tid

    def changed(self, transfer: Transfer) -> None:
        self.client.listener.transferChanged(transfer)

    def progress(self, transfer: Transfer) -> None:
        step = max(transfer.size // 200, wire.CHUNK_SIZE)  # about 200 updates per transfer at most
        if transfer.done - transfer.reported >= step or transfer.done >= transfer.size:
            transfer.reported = transfer.done
            self.changed(transfer)

    def fail(self, transfer: Transfer, message: str) -> None:
        if transfer.state in ("finished", "failed", "cancelled"):
            return
        transfer.state = "failed"
        transfer.error = message
        self._close(transfer)
        (self.uploads if transfer.direction == "upload" else self.downloads).pop(transfer.tid, None)
        self.changed(transfer)
        transfer.finished.errback(TransferFailed(message))
        transfer.finished.addErrback(lambda f: None)

    def byTid(self, tid: int, upload: Optional[bool]) -> Optional[Transfer]:
        if upload is None:
            return self.uploads.get(tid) or self.downloads.get(tid)
        return (self.uploads if upload else self.downloads).get(tid)

    # ------------------------------------------------------------ what the user asks

    def share(self, path: str, name: Optional[str] = None, conv: Optional[str] = None) -> Transfer:
        name = wire.safe_file_name(name or os.path.basename(path))
        transfer = Transfer("upload", self._tid(), name, path)
        transfer.conv = conv
        self.uploads[transfer.tid] = transfer
        self.changed(transfer)

        def measured(result: tuple) -> None:
            transfer.size, transfer.sha256 = result
            if transfer.state == "cancelled":
                return
            transfer.state = "waiting"
            self.changed(transfer)
            self.offer(transfer)

        def failed(failure: Any) -> None:
            self.fail(transfer, f"Cannot read {path}: {getattr(failure.value, 'strerror', failure.value)}")

        self._io(transfer, file_digest, path).addCallbacks(measured, failed)
        return transfer

    def download(self, file: Dict[str, Any], dest: str, quiet: bool = False) -> Transfer:
        transfer = Transfer("download", self._tid(), file.get("name", "file"), dest, file.get("size", 0))
        transfer.quiet = quiet  # (a thumbnail's picture: the UI need not list it)
        transfer.file = file
        transfer.sha256 = file.get("sha256")
        self.downloads[transfer.tid] = transfer
        transfer.state = "waiting"
        self.changed(transfer)
        self.request(transfer)
        return transfer

    def cancel(self, transfer: Transfer) -> None:
        if transfer.state in ("finished", "failed", "cancelled"):
            return
        active = transfer.state == "active"
        transfer.state = "cancelled"
        self._close(transfer)
        proto = self._connection()
        if active and proto is not None:
            kind = "upload-cancel" if transfer.direction == "upload" else "download-cancel"
            proto.sendFrame({"type": kind, "tid": transfer.tid})
        if transfer.direction == "download":
            self._io(transfer, _remove, transfer.path + ".part")
            self._pendingChanged(transfer, -transfer.pendingWrites)
        (self.uploads if transfer.direction == "upload" else self.downloads).pop(transfer.tid, None)
        self.changed(transfer)
        transfer.finished.errback(TransferFailed("cancelled"))
        transfer.finished.addErrback(lambda f: None)

    # ------------------------------------------------------------ the connection comes and goes

    def disconnected(self) -> None:
        """The connection dropped: an active upload restarts, an active download resumes, once we are back."""
        self._readingPaused = False
        for transfer in list(self.uploads.values()) + list(self.downloads.values()):
            self._close(transfer)
            if transfer.state == "active":
                transfer.state = "waiting"
                self.changed(transfer)

    def reconnected(self) -> None:
        for transfer in list(self.uploads.values()):
            if transfer.state == "waiting":
                self.offer(transfer)
        for transfer in list(self.downloads.values()):
            if transfer.state == "waiting":
                self.request(transfer)

    # ------------------------------------------------------------ uploads

    def offer(self, transfer: Transfer) -> None:
        proto = self._connection()
        if proto is None:
            return  # offered when we are back

        def opened(_: Any) -> None:
            if transfer.state != "waiting" or self._connection() is not proto:
                self._io(transfer, _close_file, transfer)
                return
            transfer.done = 0
            transfer.state = "active"
            transfer.flowing = True
            frame = {"type": "upload", "tid": transfer.tid, "name": transfer.name, "size": transfer.size,
                     "sha256": transfer.sha256, **conv_fields(transfer.conv)}
            mime = mimetypes.guess_type(transfer.name)[0]
            if mime:
                frame["mime"] = mime
            proto.sendFrame(frame)
            self.changed(transfer)
            self.pump()

        def failed(failure: Any) -> None:
            self.fail(transfer, f"Cannot read {transfer.path}: {getattr(failure.value, 'strerror', failure.value)}")

        self._io(transfer, _open_file, transfer, transfer.path, "rb", 0).addCallbacks(opened, failed)

    def pump(self) -> None:
        """Read the next chunk of every flowing upload, while the connection takes more (backpressure)."""
        proto = self._connection()
        if proto is None or proto.writePaused:
            return
        gate = getattr(proto, "gate", None)
        if gate is None:
            gate = proto.gate = Gate(self.client.reactor, proto.transport)
        room = gate.room()  # paced behind chat, as the server paces downloads (tcpchat.pacing)
        if room is not None and room <= 0:
            gate.later(self.pump)
            return
        size = wire.CHUNK_SIZE if room is None else gate.chunk(wire.CHUNK_SIZE)
        for transfer in list(self.uploads.values()):
            if transfer.flowing and not transfer.reading:
                transfer.reading = True
                want = min(size, transfer.size - transfer.done)
                self._io(transfer, _read_file, transfer, want).addCallbacks(
                    self._read, self._readFailed, callbackArgs=(transfer, transfer.generation, proto),
                    errbackArgs=(transfer, transfer.generation))

    def _read(self, data: bytes, transfer: Transfer, generation: int, proto: Any) -> None:
        transfer.reading = False
        if transfer.generation != generation or self._connection() is not proto:
            return  # cancelled, failed or disconnected meanwhile
        if data:
            proto.sendString(wire.encode_chunk(transfer.tid, data))
            transfer.done += len(data)
            self.progress(transfer)
        if not data or transfer.done >= transfer.size:
            self._close(transfer)  # now waiting for upload-done
        self.pump()

    def _readFailed(self, failure: Any, transfer: Transfer, generation: int) -> None:
        transfer.reading = False
        if transfer.generation == generation:
            self.fail(transfer, f"Cannot read {transfer.path}: {getattr(failure.value, 'strerror', failure.value)}")

    def uploadDone(self, frame: Dict[str, Any]) -> None:
        transfer = self.uploads.pop(frame["tid"], None)
        if transfer is None:
            return
        transfer.state = "finished"
        transfer.file = frame["file"]
        transfer.done = transfer.size
        self.changed(transfer)
        transfer.finished.callback(transfer)

    # ------------------------------------------------------------ downloads

    def request(self, transfer: Transfer) -> None:
        proto = self._connection()
        if proto is None:
            return
        part = transfer.path + ".part"

        def measured(offset: int) -> None:
            if transfer.state != "waiting" or self._connection() is not proto:
                return
            if transfer.size and offset > transfer.size:
                self._io(transfer, _remove, part)
                offset = 0
            transfer.done = offset
            transfer.state = "active"
            assert transfer.file is not None
            proto.sendFrame({"type": "download", "tid": transfer.tid, "file": transfer.file["id"], "offset": offset})
            self.changed(transfer)

        self._io(transfer, _size_of, part).addCallback(measured)

    def started(self, frame: Dict[str, Any]) -> None:
        transfer = self.downloads.get(frame["tid"])
        if transfer is None or transfer.state != "active":
            return
        info = frame["file"] if isinstance(frame["file"], dict) else {}
        transfer.size = info.get("size", transfer.size)
        transfer.sha256 = info.get("sha256", transfer.sha256)
        transfer.done = frame["offset"]
        transfer.flowing = True

        def failed(failure: Any) -> None:
            self.fail(transfer, f"Cannot write {transfer.path}: {getattr(failure.value, 'strerror', failure.value)}")

        part = transfer.path + ".part"
        mode = "r+b" if frame["offset"] else "wb"
        self._io(transfer, _open_file, transfer, part, mode, frame["offset"]).addErrback(failed)

    def chunk(self, chunk: wire.Chunk) -> None:
        transfer = self.downloads.get(chunk.tid)
        if transfer is None or not transfer.flowing:
            return  # cancelled: data still in flight
        data = bytes(chunk.data)
        transfer.done += len(data)
        self._pendingChanged(transfer, len(data))
        self._io(transfer, _write_file, transfer, data).addCallbacks(
            lambda _: self._pendingChanged(transfer, -len(data)),
            lambda f: self.fail(transfer, f"Cannot write {transfer.path}: {getattr(f.value, 'strerror', f.value)}"))
        self.progress(transfer)

    def _pendingChanged(self, transfer: Transfer, delta: int) -> None:
        """Count bytes waiting for the disk: stop reading from the server past the bound, go on below a quarter."""
        transfer.pendingWrites += delta
        pending = sum(t.pendingWrites for t in self.downloads.values())
        proto = self.client.proto
        if proto is None:
            return
        if not self._readingPaused and pending > MAX_PENDING_WRITES:
            self._readingPaused = True
            proto.transport.pauseProducing()
        elif self._readingPaused and pending <= MAX_PENDING_WRITES // 4:
            self._readingPaused = False
            proto.transport.resumeProducing()

    def finishedDownload(self, frame: Dict[str, Any]) -> None:
        transfer = self.downloads.get(frame["tid"])
        if transfer is None or not transfer.flowing:
            return
        self._close(transfer)
        transfer.state = "verifying"
        self.changed(transfer)
        part = transfer.path + ".part"

        def verified(result: tuple) -> Deferred:
            size, sha = result
            self.downloads.pop(transfer.tid, None)
            if sha != transfer.sha256:
                self._io(transfer, _remove, part)
                self.fail(transfer, "The download arrived damaged (SHA-256 mismatch) and was deleted.")
                return succeed(None)
            return self._io(transfer, os.replace, part, transfer.path).addCallback(lambda _: done(size))

        def done(size: int) -> None:
            transfer.state = "finished"
            transfer.done = size
            self.changed(transfer)
            transfer.finished.callback(transfer)

        self._io(transfer, file_digest, part).addCallbacks(
            verified, lambda f: self.fail(transfer, f"Could not check the download: {f.value}"))


def _size_of(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---------------------------------------------------------------- file operations (run in threads)

def _open_file(transfer: Transfer, path: str, mode: str, offset: int) -> None:
    if mode == "r+b" and not os.path.exists(path):
        mode = "wb"
    handle = open(path, mode)
    if mode != "rb":
        handle.seek(offset)
        handle.truncate()
    transfer.handle = handle


def _read_file(transfer: Transfer, size: int) -> bytes:
    if transfer.handle is None:
        return b""
    return bytes(transfer.handle.read(size))


def _write_file(transfer: Transfer, data: bytes) -> None:
    if transfer.handle is None:
        raise OSError("the file is closed")
    transfer.handle.write(data)


def _close_file(transfer: Transfer) -> None:
    handle, transfer.handle = transfer.handle, None
    if handle is not None:
        handle.close()
