"""
The HTTPS fallback transport: the same frames over ordinary requests.

For browsers that cannot open the WebSocket (Safari on iOS refuses ``wss://``
to a self-signed certificate even after the page's warning was accepted; some
proxies strip upgrades).  One *poll session* is one connection to the session
core, like a TCP or WebSocket one: same login, rules, limits and delivery.

Both directions are the TCP byte stream itself (frames with a 4-byte length)
cut into request bodies, and both carry a byte offset, so a request lost on a
bad network is simply sent again and nothing is lost or handled twice:

``POST /poll``
    open a poll session: ``{"sid": SID, "hold": SECONDS}`` (or, refused, the
    ``error`` frame that says why, with HTTP status 503 or 403).
``GET /poll/SID?ack=N``
    what the server sends, from byte ``N`` of the stream (everything before
    it is acknowledged and forgotten).  Held up to ``hold`` seconds while
    there is nothing to send; an empty body then.  ``410``: the session is
    over (everything it sent has been taken).
``POST /poll/SID?at=K``
    what the client sends: frames starting at byte ``K`` of its stream (bytes
    already taken are skipped).  Answered (``204``) once they have been
    handled, which is the client's flow control.
``DELETE /poll/SID``
    close the session, like closing a socket.

See PROTOCOL.rst, "The HTTPS fallback".
"""

from __future__ import annotations

import json
import secrets
import struct
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from tcpchat import wire
from tcpchat.server import login, rules  # noqa: F401  (they register the frame handlers)
from tcpchat.server.session import ILink, Session, Shared, int32_framed
from tcpchat.wire import ErrorCode

#: the fallback's path on the server
PATH = b"poll"
#: bytes of frames one POST may carry (a client sends at most 256 KiB)
MAX_BODY = 1024 * 1024
#: bytes of frames one poll answer carries at most (a longer stream is taken in several polls)
MAX_ANSWER = 1024 * 1024
#: bytes sent but not yet acknowledged before the peer counts as "not reading" (the session's bounds then apply)
HIGH_WATER = 128 * 1024
#: POSTs of one session waiting to be handled at once (one, and one retry of it)
MAX_POSTS = 2


def _answer(request: Any, status: int, frame: Optional[Dict[str, Any]] = None) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Cache-Control", b"no-store")
    if frame is None:
        return b""
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(frame, separators=(",", ":")).encode()


def _finish(request: Any, status: int, body: bytes = b"", frame: Optional[Dict[str, Any]] = None) -> None:
    """Answer a request we held (if its connection is still there)."""
    if getattr(request, "_tcpchat_gone", False) or request.finished:
        return
    data = _answer(request, status, frame)
    if body:
        request.setHeader(b"Content-Type", b"application/octet-stream")
        data = body
    request.write(data)
    request.finish()


def _watch(request: Any) -> None:
    def gone(_: Any) -> None:
        request._tcpchat_gone = True

    request.notifyFinish().addErrback(gone)


def split_frames(data: bytes) -> List[bytes]:
    """The payloads of a run of length-prefixed frames; ValueError if it is not exactly that."""
    payloads = []
    at, end = 0, len(data)
    while at < end:
        if end - at < 4:
            raise ValueError("a frame's length is cut off")
        (length,) = struct.unpack_from(">I", data, at)
        if length > wire.MAX_FRAME:
            raise OverflowError(length)
        if at + 4 + length > end:
            raise ValueError("a frame is cut off")
        payloads.append(data[at + 4:at + 4 + length])
        at += 4 + length
    return payloads


@implementer(ILink)
class PollLink:
    """One poll session: the session core's link, fed by requests instead of a socket."""

    #: the transport, as metrics and tcpchat-admin name it
    kind = "poll"

    handshaken = True

    def __init__(self, hub: "PollHub", sid: str, host: str) -> None:
        self.hub = hub
        self.sid = sid
        self.clock = hub.chat.clock
        #: what the server sent and the client has not acknowledged: chunks of the byte stream
        self.out: Deque[bytes] = deque()
        self.outStart = 0  #: stream offset of out[0]
        self.outEnd = 0  #: stream offset after the last byte sent
        self.acked = 0  #: the client has everything before this offset
        self.poll: Optional[Any] = None  #: the poll being held
        self.pollTimer: Any = None
        self.flushCall: Any = None
        self.writerPaused = False
        #: what the client sent: frames taken and not yet handled, and the POSTs waiting for them
        self.inAt = 0
        self.inbox: Deque[bytes] = deque()
        self.posts: List[Any] = []
        self.paused = False
        self.feeding = False
        self.closing = False
        self.gone = False
        self.idleTimer: Any = None
        self.session = Session(hub.chat, self, host, f"{host} (poll {sid[:6]})")

    # ------------------------------------------------------------ requests

    def touch(self) -> None:
        """A request came: the client is there.  With no poll held, it has ``idle`` seconds to send the next."""
        if self.idleTimer is not None and self.idleTimer.active():
            self.idleTimer.cancel()
        self.idleTimer = self.clock.callLater(self.hub.idle, self.abandoned)

    def abandoned(self) -> None:
        self.idleTimer = None
        if self.poll is None:
            self.session.abort("no poll")
        else:
            self.touch()

    def handlePoll(self, request: Any, ack: int) -> Any:
        self.touch()
        if not self.acked <= ack <= self.outEnd:
            return _answer(request, 409, wire.error(ErrorCode.BAD_FRAME, "ack: not an offset of this stream"))
        self._acknowledge(ack)
        if self.poll is not None:  # a client polls again only when it gave the last one up
            old, self.poll = self.poll, None
            self._stopPollTimer()
            _finish(old, 200)
        if self.acked < self.outEnd:
            return self._take(request)
        if self.closing or self.gone:
            self._end()
            return _answer(request, 410)
        _watch(request)
        self.poll = request
        self.pollTimer = self.clock.callLater(self.hub.hold, self._holdOver)
        return NOT_DONE_YET

    def _take(self, request: Any) -> bytes:
        """The stream from the acknowledged offset, up to MAX_ANSWER bytes (whole chunks, at least one)."""
        skip = self.acked - self.outStart
        parts: List[bytes] = []
        size = 0
        for chunk in self.out:
            piece = chunk[skip:] if skip else chunk
            skip = 0
            if parts and size + len(piece) > MAX_ANSWER:
                break
            parts.append(piece)
            size += len(piece)
        request.setResponseCode(200)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Type", b"application/octet-stream")
        return b"".join(parts)

    def _holdOver(self) -> None:
        self.pollTimer = None
        poll, self.poll = self.poll, None
        if poll is not None:
            _finish(poll, 200)

    def _stopPollTimer(self) -> None:
        if self.pollTimer is not None and self.pollTimer.active():
            self.pollTimer.cancel()
        self.pollTimer = None

    def _acknowledge(self, ack: int) -> None:
        self.acked = ack
        out = self.out
        while out and self.outStart + len(out[0]) <= ack:
            self.outStart += len(out.popleft())
        if self.writerPaused and self.outEnd - self.acked <= HIGH_WATER // 2:
            self.writerPaused = False
            self.session.delivery.writerResumed()

    def _flush(self) -> None:
        """Frames were queued: the held poll takes them."""
        self.flushCall = None
        poll, self.poll = self.poll, None
        if poll is None:
            return
        self._stopPollTimer()
        if getattr(poll, "_tcpchat_gone", False):
            return
        body = self._take(poll)
        poll.write(body)
        poll.finish()

    def handlePost(self, request: Any, at: int, body: bytes) -> Any:
        self.touch()
        if self.closing or self.gone:
            return _answer(request, 410)
        if at > self.inAt:
            return _answer(request, 409, wire.error(ErrorCode.BAD_FRAME, "at: bytes before it never arrived"))
        if len(self.posts) >= MAX_POSTS:
            return _answer(request, 429, wire.error(ErrorCode.SLOW_DOWN, "Wait for your last POST to be answered."))
        fresh = body[self.inAt - at:]
        try:
            payloads = split_frames(fresh)
        except OverflowError:
            self.session.sendError(ErrorCode.FRAME_TOO_LARGE)
            self.session.close()
            return _answer(request, 413, wire.error(ErrorCode.FRAME_TOO_LARGE))
        except ValueError as e:
            return _answer(request, 400, wire.error(ErrorCode.BAD_FRAME, f"The body is not whole frames: {e}."))
        self.inAt += len(fresh)
        self.inbox.extend(payloads)
        _watch(request)
        self.posts.append(request)
        self._feed()
        return NOT_DONE_YET

    def _feed(self) -> None:
        if self.feeding:
            return
        self.feeding = True
        try:
            while self.inbox and not self.paused and not self.gone:
                self.session.receivePayload(self.inbox.popleft())
        finally:
            self.feeding = False
        if not self.inbox or self.gone:
            self.inbox.clear()
            posts, self.posts = self.posts, []
            for post in posts:
                _finish(post, 410 if self.gone else 204)

    # ------------------------------------------------------------ ILink

    def sendPayloads(self, payloads: Sequence[bytes], shared: Optional[Shared]) -> None:
        if self.gone or self.closing:
            return
        if shared is not None and payloads is shared.payloads:
            data = shared.cache.get("int32")  # the very bytes the TCP connections get
            if data is None:
                data = shared.cache["int32"] = b"".join(int32_framed(p) for p in payloads)
        else:
            data = b"".join(int32_framed(p) for p in payloads)
        self.out.append(data)
        self.outEnd += len(data)
        if not self.writerPaused and self.outEnd - self.acked > HIGH_WATER:
            self.writerPaused = True
            self.session.delivery.writerPaused()
        if self.poll is not None and self.flushCall is None:
            self.flushCall = self.clock.callLater(0, self._flush)  # one answer for what this turn queues

    def loseConnection(self) -> None:
        """Close once the client has taken what is queued (its next poll then gets 410)."""
        self.closing = True
        self.paused = True
        if self.acked == self.outEnd:
            self._end()

    def abortConnection(self) -> None:
        self._end()

    def pauseReading(self) -> None:
        self.paused = True

    def resumeReading(self) -> None:
        if self.paused and not self.closing:
            self.paused = False
            self.clock.callLater(0, self._feed)

    def channelBinding(self) -> bytes:
        return b""  # page scripts cannot export TLS keying material

    # ------------------------------------------------------------ the end

    def _end(self) -> None:
        if self.gone:
            return
        self.gone = True
        self.paused = True
        for call in (self.idleTimer, self.flushCall):
            if call is not None and call.active():
                call.cancel()
        self.idleTimer = self.flushCall = None
        self._stopPollTimer()
        poll, self.poll = self.poll, None
        if poll is not None:
            _finish(poll, 410)
        self.out.clear()
        self._feed()  # answers the waiting POSTs
        self.hub.forget(self)
        self.session.lost()


class _Session(Resource):
    isLeaf = True

    def __init__(self, link: PollLink) -> None:
        super().__init__()
        self.link = link

    def render_GET(self, request: Any) -> Any:
        try:
            ack = int(request.args.get(b"ack", [b"0"])[0])
        except ValueError:
            return _answer(request, 400, wire.error(ErrorCode.BAD_FRAME, "ack: not a number"))
        return self.link.handlePoll(request, ack)

    def render_POST(self, request: Any) -> Any:
        try:
            at = int(request.args.get(b"at", [b"0"])[0])
        except ValueError:
            return _answer(request, 400, wire.error(ErrorCode.BAD_FRAME, "at: not a number"))
        if at < 0:
            return _answer(request, 400, wire.error(ErrorCode.BAD_FRAME, "at: not an offset"))
        return self.link.handlePost(request, at, request.content.read(MAX_BODY + 1))

    def render_DELETE(self, request: Any) -> Any:
        self.link.abortConnection()  # as a socket the client closed: what was still queued is not wanted
        return _answer(request, 204)


class _Gone(Resource):
    isLeaf = True

    def render(self, request: Any) -> Any:
        return _answer(request, 404, wire.error(ErrorCode.NOT_LOGGED_IN, "No such poll session (it ended): open a "
                                                "new one."))


class PollHub(Resource):
    """``/poll``: opens poll sessions and routes requests to them by their id (a secret, like a socket)."""

    def __init__(self, chat: Any) -> None:
        super().__init__()
        self.chat = chat
        self.hold = chat.limits.poll_hold
        #: seconds a session may go without any request before it counts as dropped
        self.idle = self.hold + chat.limits.login_timeout
        self.links: Dict[str, PollLink] = {}

    def getChild(self, path: bytes, request: Any) -> Resource:
        if not path:
            return self
        link = self.links.get(path.decode("ascii", "replace"))
        return _Session(link) if link is not None else _Gone()

    def render_POST(self, request: Any) -> Any:
        host = str(getattr(request.getClientAddress(), "host", ""))
        refusal = self.chat.refusal(host)
        if refusal is not None:
            code, message = refusal
            return _answer(request, 403 if code == ErrorCode.BANNED else 503, wire.error(code, message))
        sid = secrets.token_urlsafe(18)
        link = PollLink(self, sid, host)
        self.links[sid] = link
        link.touch()
        link.session.start()
        return _answer(request, 200, {"sid": sid, "hold": self.hold})

    def forget(self, link: PollLink) -> None:
        if self.links.get(link.sid) is link:
            del self.links[link.sid]
