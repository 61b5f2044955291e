"""
One connected user, whatever carries their frames.

A :class:`Session` holds what the rules need to know about one connection
(who it is, which conversations it may read, its budgets) and is the only way
the rest of the server acts on it: :class:`ISession` is that contract.  The
transport under it (``protocol.py`` for TCP; a WebSocket one later) provides
an :class:`ILink` and hands it decoded frames; the session never sees bytes
arrive, and nothing above it sees a socket.

Frames go to their handlers through one table (``table.HANDLERS``, filled by
``login.py`` and ``rules.py``) that also says in which state each is allowed.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Sequence, Set

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from tcpchat import wire
from tcpchat.server import social
from tcpchat.server.delivery import Delivery
from tcpchat.server.guard import TokenBucket
from tcpchat.server.login import Login
from tcpchat.server.table import ANY, CHECKING, CLOSED, COSTS, EDITS, HANDLERS, LIVE, LOGGED_IN, NEW, PROFILES, ROOMS
from tcpchat.wire import ErrorCode, ProtocolError

__all__ = ["ANY", "CHECKING", "CLOSED", "COSTS", "HANDLERS", "LIVE", "LOGGED_IN", "NEW", "ROOMS", "ILink",
           "ISession", "Session", "Shared", "int32_framed"]

class ILink(Interface):
    """What a session needs from the transport that carries it."""

    handshaken = Attribute("False while a TLS handshake is still going on")

    def sendPayloads(payloads: Sequence[bytes], shared: Optional["Shared"]) -> None:
        """Queue these frame payloads for the peer, in order (``shared``: the same list, for many sessions)."""

    def loseConnection() -> None:
        """Close once what is queued has been written."""

    def abortConnection() -> None:
        """Drop the connection now."""

    def pauseReading() -> None:
        """Stop handing over frames (and reading from the peer)."""

    def resumeReading() -> None:
        """Hand over frames again, starting with those that arrived meanwhile."""

    def channelBinding() -> bytes:
        """Keying material of the secure channel (RFC 5705 exporter), or b'' without one."""


class ISession(Interface):
    """What the rules, the factory, files and moderation may do to one connected user."""

    name = Attribute("the user's name once logged in, else None")
    nkey = Attribute("the name's key (wire.name_key), once logged in")
    host = Attribute("the peer's address")
    rich = Attribute("True if the client asked for the 'rooms' feature")
    rooms = Attribute("keys of the rooms this user is in")
    operator = Attribute("True once /oper succeeded")

    def sendFrame(frame: Dict[str, Any]) -> None:
        """Encode and send one control frame (counted against the output bounds)."""

    def sendError(code: str, message: Optional[str] = None, **extra: Any) -> None:
        """Send an error frame; a fatal code then closes the session."""

    def deliver(payloads: Sequence[bytes], shared: Optional["Shared"] = None) -> bool:
        """Send frames that many sessions get (events, hints); False if dropped for a slow reader."""

    def holdReading(reason: str) -> None:
        """Stop reading this peer's frames until every reason is released."""

    def releaseReading(reason: str) -> None:
        """Release one reason to hold reading."""

    def close() -> None:
        """Close after what is queued; a peer that does not take it is aborted after a grace time."""

    def abort(why: str) -> None:
        """Drop the connection now."""

    def isOpen() -> bool:
        """False once the connection is gone (asked from the database thread too)."""

    def peerReading() -> bool:
        """False while the peer is not reading what we send (the transport paused us)."""

    def canSee(audience: Any) -> bool:
        """True if this user may read events of that audience (social.audience)."""


class Shared:
    """Frame payloads encoded once for many sessions; each kind of link caches its own framing of them."""

    __slots__ = ("payloads", "size", "cache")

    def __init__(self, payloads: List[bytes]) -> None:
        self.payloads = payloads
        self.size = sum(len(p) + 4 for p in payloads)
        self.cache: Dict[str, Any] = {}


def int32_framed(payload: bytes) -> bytes:
    """A payload with its 4-byte length prefix: the bytes that go on a TCP connection."""
    return struct.pack(">I", len(payload)) + payload


@implementer(ISession)
class Session:
    """One connection's user, from its first byte to its last."""

    log = Logger()
    # (one per connection: slots keep an idle client small)
    __slots__ = ("factory", "link", "host", "peer", "state", "connectedAt", "lastHeard", "lastActive", "pingSentAt",
                 "leaveReason", "holds", "uploads", "downloads", "sentBeforeLogin", "budget", "actions", "bucket",
                 "readsInFlight", "autoAway", "typingSent", "delivery", "login", "_timers", "name", "nkey", "rich",
                 "edits", "profiles", "roster", "sayRefusedUntil", "rooms", "operator", "away", "status", "session", "strikes",
                 "strikesSince", "closing")

    name: Optional[str]
    nkey: Optional[str]
    rich: bool
    #: asked for the "edits" feature (edits, replies, reactions: revision 1.4)
    edits: bool
    #: asked for the "profiles" feature (bios and pictures: revision 1.5)
    profiles: bool
    #: until when this user's messages are refused after a slow-down (see rules.say)
    sayRefusedUntil: float
    rooms: Set[str]
    operator: bool
    away: bool
    status: str
    session: str

    def __init__(self, factory: Any, link: Any, host: str, peer: str) -> None:
        self.name = self.nkey = None
        self.rich = self.edits = self.profiles = self.roster = self.operator = self.away = self.closing = False
        self.sayRefusedUntil = self.strikesSince = 0.0
        self.rooms = frozenset()  # type: ignore[assignment]
        self.status = self.session = ""
        self.strikes = 0
        self.factory = factory
        self.link = link
        self.host = host
        self.peer = peer
        self.state = NEW
        now = factory.clock.seconds()
        self.connectedAt = self.lastHeard = self.lastActive = now
        self.pingSentAt: Optional[float] = None
        self.leaveReason = "lost"
        #: why we are not reading from the peer ("sendq": it is not reading us; "disk": uploads wait for the disk)
        self.holds: Set[str] = set()
        self.uploads: Dict[int, Any] = {}
        self.downloads: Dict[int, Any] = {}
        #: bytes sent before login: bounded, whether or not the peer reads (or finished its TLS handshake)
        self.sentBeforeLogin = 0
        limits = factory.limits
        self.budget = TokenBucket(factory.clock, limits.prelogin_rate, limits.prelogin_burst)
        self.actions = self.budget
        self.bucket: Any = None
        self.readsInFlight = 0
        self.autoAway = False
        self.typingSent: Dict[str, float] = {}
        self.delivery = Delivery(self)
        self.login = Login(self)
        self._timers = [factory.clock.callLater(limits.login_timeout, self.loginTimedOut)]

    def start(self) -> None:
        """The connection is up: count it, and refuse it at once if the server is full."""
        self.factory.connections.add(self)
        refusal = self.factory.admit(self)
        if refusal is not None:
            self.factory.noteAbort(self, "refused: " + refusal[1])
            self.sendError(*refusal)

    def lost(self) -> None:
        """The connection is gone (closed, aborted or dropped)."""
        if self.state == CLOSED:
            return
        wasLive = self.state == LIVE
        self.state = CLOSED
        self.cancelTimers()
        self.login.abandon()
        factory = self.factory
        factory.connections.discard(self)
        factory.release(self)
        if factory.files is not None:
            factory.files.connectionClosed(self)
        if wasLive:
            self.log.info("{name} left ({reason}) from {peer}", name=self.name, reason=self.leaveReason, peer=self.peer)
            factory.logout(self, self.leaveReason)

    # ------------------------------------------------------------ receiving

    def receive(self, frame: wire.Frame) -> None:
        """Handle one decoded frame; a ProtocolError becomes an error frame (with the frame's ref, cid and req)."""
        if self.state == CLOSED:
            return
        self.lastHeard = self.factory.clock.seconds()
        self.pingSentAt = None
        try:
            if isinstance(frame, wire.Chunk):
                self._require(LOGGED_IN)
                self.files().chunk(self, frame)
                return
            kind = frame["type"]
            if self.factory.stopping and kind not in ("bye", "pong"):
                self.refuse(frame, ErrorCode.SERVER_BUSY, "The server is shutting down; try again in a moment.")
                return
            cost = COSTS[kind]
            if cost and not (self.actions if self.state == LIVE else self.budget).take(cost):
                self.refuse(frame, ErrorCode.SLOW_DOWN)
                self.struck()
                return
            needs, handler = HANDLERS[kind]
            self._require(needs)
            handler(self, frame)
        except ProtocolError as e:
            self.refuse(frame, e.code, e.message)
        except Exception:
            self.log.failure("Internal error handling a frame from {peer}", peer=self.peer)
            self.refuse(frame, ErrorCode.INTERNAL)

    def receivePayload(self, payload: bytes) -> None:
        """One frame's bytes as its transport received them: decoded (validated) once, then handled."""
        try:
            frame = wire.decode(payload)
        except ProtocolError as e:
            self.lastHeard = self.factory.clock.seconds()
            self.receiveBad(e)
            return
        self.receive(frame)

    def receiveBad(self, error: ProtocolError) -> None:
        """A frame the codec refused: answer with its code (and what could be read of it)."""
        if self.state != CLOSED:
            self.factory.stats.refusals[error.code] += 1
            self.sendError(error.code, error.message, ref=error.ref, req=error.req)
            self.struck()

    strikes: int
    strikesSince: float

    def struck(self) -> None:
        """
        A frame was refused (invalid, or over the budget).  Answering costs the
        server as much as a good frame, so a peer that keeps sending such frames
        (more than ``Limits.max_refused`` in a second) is not read for a second:
        what it sends waits in its socket, and no one else waits for it.
        """
        limits = self.factory.limits
        if not limits.max_refused or (self.state == LIVE and not limits.message_rate):
            return  # (no per-user rate limits at all: --message-rate 0)
        now = self.factory.clock.seconds()
        if now - self.strikesSince >= 1.0:
            self.strikesSince, self.strikes = now, 0
        self.strikes += 1
        if self.strikes > limits.max_refused and "refused" not in self.holds and self.state != CLOSED:
            self.holdReading("refused")
            self._timers = [t for t in self._timers if t.active()]
            self._timers.append(self.factory.clock.callLater(1.0, self.releaseReading, "refused"))

    def _require(self, needs: str) -> None:
        if needs != ANY and self.state != LIVE:
            raise ProtocolError(ErrorCode.NOT_LOGGED_IN)
        if needs == ROOMS and not self.rich:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "This needs the 'rooms' feature (hello.features).")
        if needs == EDITS and not self.edits:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "This needs the 'edits' feature (hello.features).")
        if needs == PROFILES and not self.profiles:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "This needs the 'profiles' feature (hello.features).")

    def refuse(self, frame: Any, code: str, message: Optional[str] = None) -> None:
        """Answer ``frame`` with an error: ``ref`` names its type; its ``cid`` and ``req`` are echoed."""
        self.factory.stats.refusals[code] += 1
        if isinstance(frame, wire.Chunk):
            self.sendError(code, message, ref="data", tid=frame.tid)
        else:
            self.sendError(code, message, ref=frame["type"], cid=frame.get("cid"), req=frame.get("req"))

    def answer(self, request: Dict[str, Any], reply: Dict[str, Any]) -> None:
        """Send the answer to ``request`` (echoing its request id)."""
        if request.get("req") is not None:
            reply["req"] = request["req"]
        self.sendFrame(reply)

    def run(self, request: Dict[str, Any], coroutine: Any) -> Deferred:
        """Run a handler coroutine; its ProtocolError (or a failure) becomes an error answering ``request``."""

        def failed(failure: Any) -> None:
            if failure.check(ProtocolError):
                self.refuse(request, failure.value.code, failure.value.message)
            else:
                self.internal(failure, request)

        return Deferred.fromCoroutine(coroutine).addErrback(failed)

    def internal(self, failure: Any, request: Any) -> None:
        ref = request if isinstance(request, str) else None
        self.log.failure("Internal error answering {ref} for {peer}", failure,
                         ref=ref or (request.get("type") if isinstance(request, dict) else "data"), peer=self.peer)
        if ref is not None:
            self.sendError(ErrorCode.INTERNAL, ref=ref)
        else:
            self.refuse(request, ErrorCode.INTERNAL)

    def files(self) -> Any:
        if self.factory.files is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "This server does not share files.")
        return self.factory.files

    def isOpen(self) -> bool:
        return self.state != CLOSED

    def isLive(self) -> bool:
        return self.state == LIVE

    def peerReading(self) -> bool:
        return not self.delivery.writePaused

    def canSee(self, audience: Any) -> bool:
        return social.can_see(self, audience)

    # ------------------------------------------------------------ sending

    def sendFrame(self, frame: Dict[str, Any]) -> None:
        self.sendPayload(wire.encode(frame))

    def sendPayload(self, payload: bytes) -> None:
        if self.state == CLOSED:
            return
        self.account(len(payload) + 4)
        self.link.sendPayloads((payload,), None)

    def deliver(self, payloads: Sequence[bytes], shared: Optional[Shared] = None) -> bool:
        """Frames many sessions get: sent live, counted while the peer is not reading."""
        if self.state == CLOSED:
            return False
        size = shared.size if shared is not None and payloads is shared.payloads else sum(len(p) + 4 for p in payloads)
        self.delivery.queued(size)
        self.link.sendPayloads(payloads, shared)
        return True

    def account(self, size: int) -> None:
        """
        Count ``size`` bytes about to be queued for the peer.  The queue is
        bounded in every state: before login in all, afterwards while the
        peer is not reading (then we stop reading its requests too, and past
        the hard bound the connection is aborted).
        """
        limits = self.factory.limits
        if self.state != LIVE:
            self.sentBeforeLogin += size
            if self.sentBeforeLogin > limits.prelogin_output:
                self.abort("sent too much before logging in")
        delivery = self.delivery
        if delivery.writePaused:
            delivery.queuedWhilePaused += size
            if delivery.queuedWhilePaused > limits.sendq:
                self.holdReading("sendq")
            if delivery.queuedWhilePaused > limits.sendq_hard:
                self.abort("not reading")

    def sendError(self, code: str, message: Optional[str] = None, **extra: Any) -> None:
        self.sendFrame(wire.error(code, message, **extra))
        if code in wire.FATAL_CODES:
            self.close()

    # ------------------------------------------------------------ closing

    def kick(self, reason: str, message: str) -> None:
        """The operator removes this user: say why, then close."""
        self.leaveReason = reason
        self.sendFrame({"type": "bye", "reason": reason, "message": message})
        self.close()

    closing: bool

    def close(self) -> None:
        self.closing = True
        self.link.pauseReading()  # ignore further input
        if self.state == CLOSED:
            return
        self.link.loseConnection()
        self.cancelTimers()
        self._timers = [self.factory.clock.callLater(self.factory.limits.close_grace, self.abort, "did not close")]

    def abort(self, why: str) -> None:
        if self.state == CLOSED:
            return
        if self.state == LIVE and self.leaveReason == "lost":
            self.leaveReason = why
        self.closing = True
        self.link.pauseReading()
        self.factory.noteAbort(self, why)
        self.link.abortConnection()

    def cancelTimers(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []

    def loginTimedOut(self) -> None:
        if self.state in (NEW, CHECKING):
            self.log.debug("Connection from {peer} did not log in in time", peer=self.peer)
            self.sendError(ErrorCode.LOGIN_TIMEOUT)

    # ------------------------------------------------------------ reading

    def holdReading(self, reason: str) -> None:
        if not self.holds and self.state != CLOSED:
            self.link.pauseReading()
        self.holds.add(reason)

    def releaseReading(self, reason: str) -> None:
        if reason not in self.holds:
            return
        self.holds.discard(reason)
        if not self.holds and self.state != CLOSED and not self.closing:
            self.link.resumeReading()

    # ------------------------------------------------------------ presence and time limits

    def active(self) -> None:
        """The user did something: note it, and bring them back if they were away by themselves."""
        self.lastActive = self.factory.clock.seconds()
        if self.autoAway:
            self.autoAway = False
            self.setPresence(False, self.status)

    def setPresence(self, away: bool, status: str) -> None:
        if away == self.away and status == self.status:
            return
        self.away, self.status = away, status
        factory = self.factory
        (factory.marked.add if away or status else factory.marked.discard)(self)
        factory.tellEveryone({"type": "presence", "name": self.name, "away": away, "status": status}, "rich")

    def checkTimeouts(self, now: float) -> None:
        limits = self.factory.limits
        delivery = self.delivery
        if delivery.writePaused and delivery.pausedSince is not None and now - delivery.pausedSince > limits.send_timeout:
            self.leaveReason = "not reading"
            self.sendFrame({"type": "bye", "reason": "not-reading", "message": "You stopped reading; disconnected."})
            self.abort("not reading")
        elif self.state == LIVE and self.pingSentAt is not None and now - self.pingSentAt > limits.ping_timeout:
            self.leaveReason = "timeout"
            self.abort("timeout")
        elif self.state == LIVE and self.pingSentAt is None and now - self.lastHeard > limits.ping_interval:
            self.pingSentAt = now
            self.sendFrame({"type": "ping"})
        if self.state == LIVE and not self.away and now - self.lastActive > limits.away_after:
            self.autoAway = True
            self.setPresence(True, self.status)
