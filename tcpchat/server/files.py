"""
Shared files on the server: streamed uploads into a content-addressed store,
streamed downloads with resume, both interleaved with chat.

Layout under the files directory::

    tmp/<random>            uploads in progress (removed on any failure, and at start-up)
    objects/<ab>/<sha256>   finished files, one per distinct content

A stored path is derived only from the content's SHA-256, never from the name
a user gave.  An upload is announced (and ``upload-done`` sent) only after the
file is fsynced, renamed into place and recorded in the database.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import quote

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from tcpchat import wire
from tcpchat.pacing import Gate
from tcpchat.server import social
from tcpchat.wire import ErrorCode, ProtocolError

Runner = Callable[..., Deferred]

#: Upload data waiting for the disk beyond which we stop reading from that client
BUFFER_HIGH = 8 * 1024 * 1024
#: ... and below which we read again
BUFFER_LOW = 2 * 1024 * 1024
#: received chunks are written and hashed in groups of about this many bytes
WRITE_GROUP = 1024 * 1024


class Upload:
    def __init__(self, tid: int, frame: Dict[str, Any], fd: int, path: str, now: float) -> None:
        self.tid = tid
        self.name: str = frame["name"]
        self.size: int = frame["size"]
        self.sha256: str = frame["sha256"]
        self.mime: Optional[str] = frame.get("mime")
        self.file = os.fdopen(fd, "wb")
        self.path = path
        self.hasher = hashlib.sha256()
        self.received = 0
        self.lastActivity = now
        self.finishing = False
        #: data received but not yet written and hashed (by a worker thread)
        self.buffer: List[bytes] = []
        self.buffered = 0
        self.writing = False
        self.aborted = False
        #: the conversation it is shared in (its audience) and the event fields naming it
        self.aud: Any = None
        self.where: Dict[str, str] = {}


class Download:
    def __init__(self, tid: int, path: str, offset: int, size: int) -> None:
        self.tid = tid
        self.file = open(path, "rb")
        self.file.seek(offset)
        self.remaining = size - offset


class FileService:
    """
    File sharing rules and disk work for one :class:`ChatFactory`.

    :param runner: runs blocking calls (fsync, rename) off the reactor thread;
        tests may pass a synchronous one.
    """

    log = Logger()

    def __init__(self, factory: Any, root: str, runner: Optional[Runner] = None) -> None:
        self.factory = factory
        self.root = os.path.abspath(root)
        self.tmp = os.path.join(self.root, "tmp")
        self.objects = os.path.join(self.root, "objects")
        self._run: Runner = runner or (lambda f, *a: maybeDeferred(f, *a))
        self.storedBytes = 0
        self.reserved = 0
        #: transfer ids cancelled or failed per connection whose chunks may still arrive
        self._dropped: Dict[Any, set] = {}
        #: session -> the pacing of its file data (tcpchat.pacing)
        self._gates: Dict[Any, Gate] = {}
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp, exist_ok=True)
        os.makedirs(self.objects, exist_ok=True)
        self.linkKey = _link_key(os.path.join(self.root, "link-key"))

    def start(self) -> Deferred:
        d = self.factory.store.stored_bytes()

        def got(total: int) -> None:
            self.storedBytes = total

        return d.addCallback(got)

    def objectPath(self, sha256: str) -> str:
        return os.path.join(self.objects, sha256[:2], sha256)

    # ------------------------------------------------------------ uploads

    def upload(self, session: Any, frame: Dict[str, Any]) -> None:
        tid = frame["tid"]
        limits = self.factory.limits
        try:
            if tid in session.uploads:
                raise ProtocolError(ErrorCode.TRANSFER_IN_USE)
            if len(session.uploads) >= limits.max_uploads:
                raise ProtocolError(ErrorCode.TOO_MANY_UPLOADS)
            if frame["size"] > limits.max_file_size:
                raise ProtocolError(
                    ErrorCode.FILE_TOO_LARGE, f"That file is larger than this server accepts ({limits.max_file_size} bytes)."
                )
            name = frame["name"]
            if not name or wire.safe_file_name(name) != name:
                raise ProtocolError(ErrorCode.BAD_FILE_NAME)
            if self.storedBytes + self.reserved + frame["size"] > limits.max_storage:
                raise ProtocolError(ErrorCode.QUOTA_EXCEEDED)
            # where it is shared: only that room's members (or the two people) may download it
            aud, where = self.factory.directory.resolve(session, frame)
            muted = self.factory.moderation.refusal("mute", session.nkey)
            if muted is not None:
                raise ProtocolError(ErrorCode.MUTED, muted)
        except ProtocolError as e:
            self._dropped.setdefault(session, set()).add(tid)
            session.sendError(e.code, e.message, ref="upload", tid=tid)
            return
        self._dropped.get(session, set()).discard(tid)
        fd, path = tempfile.mkstemp(dir=self.tmp, prefix="up-")
        upload = Upload(tid, frame, fd, path, self.factory.clock.seconds())
        upload.aud, upload.where = aud, where
        session.uploads[tid] = upload
        self.reserved += upload.size
        session.sendFrame({"type": "upload-ready", "tid": tid})
        self.log.info("{name} is uploading {file!r} ({size} bytes)", name=session.name, file=upload.name, size=upload.size)
        if upload.size:
            # reserve the space first, in the worker (where the C library has to
            # emulate fallocate it writes zeros): a full disk fails fast, writes go faster
            upload.writing = True
            d = self._run(_preallocate, upload.file, upload.size)
            d.addCallbacks(self._written, self._writeFailed, callbackArgs=(session, upload), errbackArgs=(session, upload))
        if upload.size == 0:
            self._finish(session, upload)

    def chunk(self, session: Any, chunk: wire.Chunk) -> None:
        upload = session.uploads.get(chunk.tid)
        if upload is None or upload.finishing:
            if chunk.tid in self._dropped.get(session, ()):
                return  # data that was in flight when the upload ended
            raise ProtocolError(ErrorCode.NO_SUCH_TRANSFER)
        if upload.received + len(chunk.data) > upload.size:
            self._abort(session, upload)
            session.sendError(ErrorCode.SIZE_MISMATCH, ref="data", tid=upload.tid)
            return
        upload.buffer.append(chunk.data)
        upload.buffered += len(chunk.data)
        upload.received += len(chunk.data)
        self.factory.stats.uploadBytes += len(chunk.data)
        upload.lastActivity = self.factory.clock.seconds()
        if upload.buffered > BUFFER_HIGH:
            session.holdReading("disk")  # the disk is slower than the network: let TCP push back
        self._drain(session, upload)

    def _drain(self, session: Any, upload: Upload) -> None:
        """Write and hash buffered data in a worker thread, one batch at a time, in order."""
        if upload.writing or upload.aborted:
            return
        if upload.buffer:
            chunks, upload.buffer = upload.buffer, []
            upload.writing = True
            d = self._run(_write_chunks, upload.file, upload.hasher, chunks)
            d.addCallbacks(self._written, self._writeFailed, callbackArgs=(session, upload), errbackArgs=(session, upload))
        elif upload.received == upload.size and not upload.finishing:
            self._finish(session, upload)

    def _written(self, count: int, session: Any, upload: Upload) -> None:
        upload.writing = False
        upload.buffered -= count
        if upload.aborted:
            self._discard(upload)
            return
        if all(u.buffered < BUFFER_LOW for u in session.uploads.values()):
            session.releaseReading("disk")
        self._drain(session, upload)

    def _writeFailed(self, failure: Any, session: Any, upload: Upload) -> None:
        upload.writing = False
        if getattr(failure.value, "errno", None) == errno.ENOSPC:
            self.log.warn("Disk full: the upload {file!r} was refused", file=upload.name)
        else:
            self.log.failure("Could not write the upload {file!r}", failure, file=upload.name)
        if not upload.aborted:
            self._abort(session, upload)
            if getattr(failure.value, "errno", None) == errno.ENOSPC:
                session.sendError(ErrorCode.QUOTA_EXCEEDED, "The server's disk is full.", ref="upload", tid=upload.tid)
            else:
                session.sendError(ErrorCode.INTERNAL, "The server could not write the file.", ref="data", tid=upload.tid)
        else:
            self._discard(upload)

    def cancelUpload(self, session: Any, tid: int) -> None:
        upload = session.uploads.get(tid)
        if upload is None or upload.finishing:
            raise ProtocolError(ErrorCode.NO_SUCH_TRANSFER)
        self.log.info("{name} cancelled the upload of {file!r}", name=session.name, file=upload.name)
        self._abort(session, upload)

    def _abort(self, session: Any, upload: Upload) -> None:
        session.uploads.pop(upload.tid, None)
        self._dropped.setdefault(session, set()).add(upload.tid)
        self.reserved -= upload.size
        upload.aborted = True
        upload.buffer = []
        if all(u.buffered < BUFFER_LOW for u in session.uploads.values()):
            session.releaseReading("disk")
        if not upload.writing:  # else the worker's callback discards it
            self._discard(upload)

    def _discard(self, upload: Upload) -> None:
        upload.file.close()
        _remove(upload.path)

    def _finish(self, session: Any, upload: Upload) -> None:
        upload.finishing = True
        digest = upload.hasher.hexdigest()
        if digest != upload.sha256:
            self.log.warn("Upload of {file!r} by {name} failed its SHA-256 check", file=upload.name, name=session.name)
            self._abort(session, upload)
            session.sendError(ErrorCode.HASH_MISMATCH, ref="data", tid=upload.tid)
            return
        d = Deferred.fromCoroutine(self._store(session, upload))
        d.addErrback(self._storeFailed, session, upload)

    async def _store(self, session: Any, upload: Upload) -> None:
        final = self.objectPath(upload.sha256)
        isNew = await self._run(_commit_file, upload.file, upload.path, final)
        self.reserved -= upload.size
        if isNew:
            self.storedBytes += upload.size
        ts = round(self.factory.clock.seconds(), 3)
        record = {
            "sha256": upload.sha256,
            "size": upload.size,
            "name": upload.name,
            "mime": upload.mime,
            "uploader": session.name,
            "ts": ts,
            "conv": social.conv_of(upload.aud),
        }
        fileId = await self.factory.store.add_file(record)
        info = {k: v for k, v in record.items() if k not in ("uploader", "ts", "conv") and v is not None}
        info["id"] = fileId
        event = {"kind": "file", "name": session.name, "nkey": session.nkey, "file": info, "ts": ts, **upload.where,
                 **social.placement(upload.aud)}
        stored, _ = await self.factory.submit(event)
        session.uploads.pop(upload.tid, None)
        self.log.info("{name} shared {file!r} as file {id}", name=session.name, file=upload.name, id=fileId)
        session.sendFrame({"type": "upload-done", "tid": upload.tid, "id": stored["id"], "file": info})

    async def storeBytes(self, data: bytes, record: Dict[str, Any]) -> int:
        """Keep a small file given whole (a profile picture): written off the reactor, recorded; its file id."""
        if self.storedBytes + self.reserved + len(data) > self.factory.limits.max_storage:
            raise ProtocolError(ErrorCode.QUOTA_EXCEEDED)
        if await self._run(_put_object, self.objectPath(record["sha256"]), self.tmp, data):
            self.storedBytes += len(data)
        return int(await self.factory.store.add_file(record))

    def _storeFailed(self, failure: Any, session: Any, upload: Upload) -> None:
        self.log.failure("Could not store the upload {file!r}", failure, file=upload.name)
        if upload.tid in session.uploads:
            self._abort(session, upload)
        session.sendError(ErrorCode.INTERNAL, "The file could not be stored.", ref="data", tid=upload.tid)

    # ------------------------------------------------------------ downloads

    def download(self, session: Any, frame: Dict[str, Any]) -> None:
        tid = frame["tid"]
        if tid in session.downloads:
            session.sendError(ErrorCode.TRANSFER_IN_USE, ref="download", tid=tid)
            return
        session.downloads[tid] = None  # reserved while we look the file up
        offset = frame.get("offset", 0)
        d = self.factory.store.get_file(frame["file"])

        def found(record: Optional[Dict[str, Any]]) -> None:
            if session.downloads.get(tid, False) is not None:
                return  # cancelled or disconnected meanwhile
            if record is None or not social.may_read(session, record.get("conv")):
                # a file shared where this user cannot read is, for them, no file at all
                del session.downloads[tid]
                session.sendError(ErrorCode.NO_SUCH_FILE, ref="download", tid=tid)
                return
            if offset > record["size"]:
                del session.downloads[tid]
                session.sendError(ErrorCode.BAD_OFFSET, ref="download", tid=tid)
                return
            info = {k: record[k] for k in ("id", "name", "size", "sha256", "mime") if k in record}
            session.downloads[tid] = Download(tid, self.objectPath(record["sha256"]), offset, record["size"])
            session.sendFrame({"type": "download-start", "tid": tid, "file": info, "offset": offset})
            self.resume(session)

        def failed(failure: Any) -> None:
            session.downloads.pop(tid, None)
            self.log.failure("Download of file {id} failed", failure, id=frame["file"])
            session.sendError(ErrorCode.INTERNAL, ref="download", tid=tid)

        d.addCallbacks(found, failed)

    # ------------------------------------------------------------ download links (HTTP, for browsers)

    def link(self, session: Any, frame: Dict[str, Any]) -> None:
        """
        Answer a ``file-link`` request: an HTTPS address of the file, for LINK_LIFETIME
        seconds, given only to someone who may read it (the same check as a download).
        """
        fid = frame["file"]

        def found(record: Optional[Dict[str, Any]]) -> None:
            if not session.isOpen():
                return
            if record is None or not social.may_read(session, record.get("conv")):
                session.refuse(frame, ErrorCode.NO_SUCH_FILE)
                return
            expires = int(self.factory.clock.seconds()) + LINK_LIFETIME
            url = f"/file/{self.linkToken(fid, expires)}/{quote(record['name'], safe='')}"
            session.answer(frame, {"type": "file-link", "file": fid, "url": url, "expires": expires})

        def failed(failure: Any) -> None:
            session.internal(failure, frame)

        self.factory.store.get_file(fid).addCallbacks(found, failed)

    def linkToken(self, fid: int, expires: int) -> str:
        body = f"{fid}.{expires}"
        return body + "." + hmac.new(self.linkKey, body.encode(), "sha256").hexdigest()[:32]

    def linkedFile(self, token: str) -> Optional[int]:
        """The file a download link's token names, if it is ours and still valid."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or len(token) > 80:
            return None
        fid, expires = int(parts[0]), int(parts[1])
        if not hmac.compare_digest(self.linkToken(fid, expires), token) or expires < self.factory.clock.seconds():
            return None
        return fid

    def cancelDownload(self, session: Any, tid: int) -> None:
        if tid not in session.downloads:
            raise ProtocolError(ErrorCode.NO_SUCH_TRANSFER)
        download = session.downloads.pop(tid)
        if download is not None:
            download.file.close()

    def resume(self, session: Any) -> None:
        """
        Send file data to ``session`` until its transport asks us to pause, and (paced: see tcpchat.pacing) only
        while what is queued for the peer is under ~100 ms of its link, so chat never waits long behind it.
        """
        gate = self._gates.get(session)
        if gate is None:
            gate = self._gates[session] = Gate(self.factory.clock, getattr(session.link, "transport", None))
        while session.downloads and session.peerReading() and session.isOpen():
            room = gate.room()
            if room is not None and room <= 0:
                gate.later(self.resume, session)  # (the link is full: look again shortly)
                return
            size = wire.CHUNK_SIZE if room is None else gate.chunk(wire.CHUNK_SIZE)
            for tid, download in list(session.downloads.items()):
                if download is None:
                    continue
                data = download.file.read(min(size, download.remaining))
                if data:
                    download.remaining -= len(data)
                    session.sendPayload(wire.encode_chunk(tid, data))
                    self.factory.stats.downloadBytes += len(data)
                if not data or download.remaining <= 0:
                    download.file.close()
                    del session.downloads[tid]
                    session.sendFrame({"type": "download-done", "tid": tid})
                if not session.peerReading():
                    return
                if room is not None:
                    room -= len(data)
                    if room <= 0:
                        break  # (ask the kernel again before the next frame)
            if all(d is None for d in session.downloads.values()):
                return

    # ------------------------------------------------------------ lifecycle

    def connectionClosed(self, session: Any) -> None:
        gate = self._gates.pop(session, None)
        if gate is not None:
            gate.cancel()
        for upload in list(session.uploads.values()):
            if not upload.finishing:
                self._abort(session, upload)
        for download in session.downloads.values():
            if download is not None:
                download.file.close()
        session.downloads.clear()
        self._dropped.pop(session, None)

    def sweep(self, now: float) -> None:
        """Abandon uploads that have stalled."""
        timeout = self.factory.limits.upload_timeout
        for session in list(self.factory.connections):
            for upload in list(session.uploads.values()):
                if not upload.finishing and now - upload.lastActivity > timeout:
                    self._abort(session, upload)
                    session.sendError(ErrorCode.UPLOAD_TIMEOUT, ref="upload", tid=upload.tid)


#: seconds a download link (``file-link``) stays valid: a browser's download manager may resume it meanwhile
LINK_LIFETIME = 24 * 3600


def _link_key(path: str) -> bytes:
    """The key that signs download links: kept in the data directory, so links outlive a restart."""
    try:
        with open(path, "rb") as f:
            key = f.read(64)
        if len(key) == 32:
            return key
    except OSError:
        pass
    key = os.urandom(32)
    try:
        fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".new", path)
    except OSError:
        pass  # links then last as long as this process
    return key


def _preallocate(f: Any, size: int) -> int:
    """Reserve ``size`` bytes for an upload (blocking); filesystems without support are fine."""
    try:
        os.posix_fallocate(f.fileno(), 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
    return 0


def _write_chunks(f: Any, hasher: Any, chunks: List[bytes]) -> int:
    """
    Append and hash received data (blocking; both release the GIL).

    The chunks are joined first, so the batch costs one write and one hash
    call: each call gives the GIL back and must win it again from the reactor
    thread, and per 64 KiB chunk those hand-overs were most of the cost.
    Groups of about ``WRITE_GROUP`` bytes bound the extra copy.
    """
    total = 0
    group: List[bytes] = []
    size = 0
    for i, chunk in enumerate(chunks):
        group.append(chunk)
        size += len(chunk)
        if size >= WRITE_GROUP or i == len(chunks) - 1:
            data = group[0] if len(group) == 1 else b"".join(group)
            f.write(data)
            hasher.update(data)
            total += size
            group, size = [], 0
    return total


def _commit_file(f: Any, temp: str, final: str) -> bool:
    """Make a finished upload durable and move it into place (blocking)."""
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.exists(final):
        _remove(temp)
        return False
    os.replace(temp, final)
    dirfd = os.open(os.path.dirname(final), os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return True


def _put_object(final: str, tmp: str, data: bytes) -> bool:
    """Write ``data`` as the object ``final``, durably; False if it was there already (blocking)."""
    if os.path.exists(final):
        return False
    fd, temp = tempfile.mkstemp(dir=tmp, prefix="obj-")
    f = os.fdopen(fd, "wb")
    f.write(data)
    return _commit_file(f, temp, final)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
