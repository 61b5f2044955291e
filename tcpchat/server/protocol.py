"""
One client connection on the server.

Every frame is decoded and validated by :mod:`tcpchat.wire` before anything
else looks at it; what fails validation is answered with an ``error`` frame.
The connection registers itself as a streaming producer on its transport, so
it learns when the peer stops reading: live events then queue up to
``Limits.sendq`` bytes, after which the connection falls back to *catch-up*
(it stops taking live events, stops reading from the peer, and later replays
what it missed from memory or storage, in order, exactly once).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, Dict, List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IPushProducer, ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

from tcpchat import auth, pake, tls, wire
from tcpchat.framing import FrameReceiver
from tcpchat.server import moderation, social
from tcpchat.server.guard import TokenBucket
from tcpchat.store.sqlite import StoreBusy, StoreClosed, fts_query
from tcpchat.wire import ErrorCode, ProtocolError

# connection states
NEW, CHECKING, LIVE, CLOSED = "new", "checking", "live", "closed"


#: What each kind of request costs from the sender's request budget (PROTOCOL.rst,
#: "Request budget").  ``say`` has a budget of its own; data frames are paced by TCP.
COSTS: Dict[str, float] = {
    "hello": 1, "pake-confirm": 0, "register": 5, "say": 0, "history": 2, "who": 2, "join": 1, "leave": 1,
    "rooms": 2, "typing": 0.25, "read": 0.25, "presence": 1, "search": 3, "delete": 1, "oper": 1, "mod": 1,
    "ping": 0.5, "pong": 0, "bye": 0, "upload": 1, "upload-cancel": 0.25, "download": 1, "download-cancel": 0.25,
}


@implementer(IPushProducer, IHandshakeListener)
class ChatProtocol(FrameReceiver):
    """
    The server side of one connection.
    """

    log = Logger()
    MAX_LENGTH = wire.MAX_FRAME

    factory: Any
    name: Optional[str] = None
    nkey: Optional[str] = None
    #: asked for the "rooms" feature: sees rooms and direct messages
    rich = False
    #: keys of the rooms this user is in (a client without the feature: the default room only)
    rooms: frozenset = frozenset()
    operator = False
    away = False
    status = ""

    def connectionMade(self) -> None:
        self.state = NEW
        address = self.transport.getPeer()
        self.peer = _describe(address)
        self.host = str(getattr(address, "host", address))
        self.pending: Optional[tuple] = None
        self.attempts = 0
        now = self.factory.clock.seconds()
        self.connectedAt = now
        self.lastHeard = now
        self.pingSentAt: Optional[float] = None
        self.leaveReason = "lost"
        # delivery
        self.sentUpTo = 0
        self.live = False
        self.synced = False
        self._pumping = False
        self.writePaused = False
        self.pausedSince: Optional[float] = None
        self.queuedWhilePaused = 0
        #: why we are not reading from the peer ("sendq": it is not reading us; "disk": uploads wait for the disk)
        self.holds: set = set()
        self.uploads: Dict[int, Any] = {}
        self.downloads: Dict[int, Any] = {}
        #: bytes sent before login: bounded, whether or not the peer reads (or finished its TLS handshake)
        self.sentBeforeLogin = 0
        limits = self.factory.limits
        self.budget = TokenBucket(self.factory.clock, limits.prelogin_rate, limits.prelogin_burst)
        self.readsInFlight = 0
        self.proofOpen = False
        self._cancelWait: Optional[Any] = None
        self.handshaken = not ISSLTransport.providedBy(self.transport)
        clock = self.factory.clock
        self._timers = [clock.callLater(limits.login_timeout, self.loginTimedOut)]
        if not self.handshaken:
            self._timers.append(clock.callLater(limits.handshake_timeout, self.handshakeTimedOut))
        self.factory.connections.add(self)
        self.transport.registerProducer(self, True)
        refusal = self.factory.admit(self)
        if refusal is not None:
            self.factory.note_abort(self, "refused: " + refusal[1])
            self.sendError(*refusal)

    def connectionLost(self, reason: Any = None) -> None:
        if self.state == CLOSED:
            return
        wasLive = self.state == LIVE
        self.state = CLOSED
        self.cancelTimers()
        self.judgeProof(False)  # a proof left unconfirmed was a guess
        if self._cancelWait is not None:
            self._cancelWait()
        self.factory.connections.discard(self)
        self.factory.release(self)
        if self.factory.files is not None:
            self.factory.files.connectionClosed(self)
        if wasLive:
            self.log.info("{name} left ({reason}) from {peer}", name=self.name, reason=self.leaveReason, peer=self.peer)
            self.factory.logout(self, self.leaveReason)

    # ------------------------------------------------------------ sending

    def sendFrame(self, frame: Dict[str, Any]) -> None:
        """Encode and send one control frame."""
        self.sendPayload(wire.encode(frame))

    def sendPayload(self, payload: bytes) -> None:
        if self.state == CLOSED:
            return
        self.account(len(payload) + 4)
        self.sendString(payload)

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
        if self.writePaused:
            self.queuedWhilePaused += size
            if self.queuedWhilePaused > limits.sendq:
                self.holdReading("sendq")
            if self.queuedWhilePaused > limits.sendq_hard:
                self.abort("not reading")

    def sendError(self, code: str, message: Optional[str] = None, **extra: Any) -> None:
        self.sendFrame(wire.error(code, message, **extra))
        if code in wire.FATAL_CODES:
            self.close()

    def kick(self, reason: str, message: str) -> None:
        """The operator removes this user: say why, then close."""
        self.leaveReason = reason
        self.sendFrame({"type": "bye", "reason": reason, "message": message})
        self.close()

    def close(self) -> None:
        """
        Close after what is queued has been written; ignore further input.  A
        peer that does not take what is queued within ``Limits.close_grace``
        (or never finished its TLS handshake) is aborted then.
        """
        self.paused = True  # stop dataReceived from handing over more frames
        if self.state == CLOSED:
            return
        # a TLS transport only closes once no producer is registered on it
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        self.cancelTimers()
        self._timers = [self.factory.clock.callLater(self.factory.limits.close_grace, self.abort, "did not close")]

    def abort(self, why: str) -> None:
        """Drop the connection now, whatever is queued (the peer cannot or will not read it)."""
        if self.state == CLOSED:
            return
        if self.state == LIVE and self.leaveReason == "lost":
            self.leaveReason = why
        self.paused = True
        self.factory.note_abort(self, why)
        self.transport.abortConnection()

    def cancelTimers(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []

    def loginTimedOut(self) -> None:
        if self.state in (NEW, CHECKING):
            self.log.debug("Connection from {peer} did not log in in time", peer=self.peer)
            self.sendError(ErrorCode.LOGIN_TIMEOUT)

    def handshakeTimedOut(self) -> None:
        if not self.handshaken:
            self.abort("TLS handshake timeout")

    def handshakeCompleted(self) -> None:
        self.handshaken = True

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.warn("Frame of {length} bytes from {peer} refused", length=length, peer=self.peer)
        self.sendFrame(wire.error(ErrorCode.FRAME_TOO_LARGE))
        self.close()
        self._unprocessed = b""

    # ------------------------------------------------------------ receiving

    def stringReceived(self, payload: bytes) -> None:
        if self.state == CLOSED:
            return
        self.lastHeard = self.factory.clock.seconds()
        self.pingSentAt = None
        try:
            frame = wire.decode(payload)
        except ProtocolError as e:
            self.sendError(e.code, e.message)
            return
        self.dispatch(frame)

    def dispatch(self, frame: wire.Frame) -> None:
        """Hand one decoded frame to its handler; a ProtocolError becomes an error frame."""
        try:
            if isinstance(frame, wire.Chunk):
                self.chunkReceived(frame)
            else:
                kind = frame["type"]
                if self.factory.stopping and kind not in ("bye", "pong"):
                    self.sendError(ErrorCode.SERVER_BUSY, "The server is shutting down; try again in a moment.",
                                   ref=kind, cid=frame.get("cid"))
                    return
                cost = COSTS[kind]
                if cost and not (self.actions if self.state == LIVE else self.budget).take(cost):
                    self.sendError(ErrorCode.SLOW_DOWN, ref=kind, cid=frame.get("cid"))
                    return
                handler = getattr(self, "frame_" + kind.replace("-", "_"))
                handler(frame)
        except ProtocolError as e:
            self.sendError(e.code, e.message, ref=_ref(frame))
        except Exception:
            self.log.failure("Internal error handling a frame from {peer}", peer=self.peer)
            self.sendError(ErrorCode.INTERNAL, ref=_ref(frame))

    def isOpen(self) -> bool:
        """False once the connection is gone (asked from the database thread too)."""
        return self.state != CLOSED

    def requireLogin(self) -> None:
        if self.state != LIVE:
            raise ProtocolError(ErrorCode.NOT_LOGGED_IN)

    def frame_register(self, frame: Dict[str, Any]) -> None:
        """Protect this user's name with a password (or change it): later logins with the name need it."""
        self.requireLogin()
        password = frame["password"]
        if len(password) < auth.MIN_PASSWORD:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"Use a password of at least {auth.MIN_PASSWORD} characters.")
        name, key = self.name, self.nkey

        async def register() -> None:
            secret = await self.factory.worker(auth.hash_password, password)
            await self.factory.store.set_secret(key, name, secret)
            self.factory.directory.secrets[key] = secret
            self.log.info("{name} protected their name with a password", name=name)
            self.sendFrame({"type": "registered", "name": name})

        self._run(register(), "register")

    def frame_hello(self, frame: Dict[str, Any]) -> None:
        if self.state == LIVE:
            raise ProtocolError(ErrorCode.ALREADY_LOGGED_IN)
        if self.state == CHECKING:
            raise ProtocolError(ErrorCode.BAD_FRAME, "A login is being checked; wait for its answer.")
        factory = self.factory
        if factory.stopping:
            self.sendError(ErrorCode.SERVER_BUSY, "The server is shutting down.")
            return
        locked = factory.guard.locked(self.host)
        if locked is not None:
            self.log.info("Login from locked-out address {peer} refused", peer=self.peer)
            self.sendError(ErrorCode.TOO_MANY_ATTEMPTS,
                           f"Too many failed logins from your address; try again in {int(locked) + 1} s.")
            return
        self.pending = None
        self.judgeProof(False)  # a second hello abandons the first proof
        try:
            if frame["version"] != wire.PROTOCOL_VERSION:
                raise ProtocolError(ErrorCode.BAD_VERSION)
            name = wire.normalize_name(frame["name"])
            if "pake" in frame:
                # a client that learns from our answer that its guess was wrong just goes
                # away without confirming: a proof is a guess until it is confirmed, and an
                # address has only so many guesses in flight plus failed (the rest wait)
                if not factory.guard.begin(self.host):
                    if factory.guard.waiters(self.host) >= factory.limits.max_login_waiters:
                        raise ProtocolError(ErrorCode.SERVER_BUSY, "Too many logins from your address at once.")
                    self._cancelWait = factory.guard.wait(self.host, lambda: self._resumeHello(frame))
                    self.holdReading("login")
                    return
                self.proofOpen = True
                if not factory.pakeBudget.take():
                    self.judgeProof(False)
                    self.sendError(ErrorCode.SERVER_BUSY, "The server is busy with logins; try again shortly.")
                    return
                binding = tls.channel_binding(self.transport)
                try:
                    reply, serverConfirm, expected = factory.verifier.pakeRespond(bytes.fromhex(frame["pake"]), binding)
                except pake.PakeError:
                    self.judgeProof(False)
                    raise ProtocolError(ErrorCode.BAD_FRAME, "hello.pake is not a valid SPAKE2 message.") from None
                self.pending = (frame, name, expected)
                self.sendFrame({"type": "pake", "msg": reply.hex(), "confirm": serverConfirm.hex()})
                return
            if "passkey" not in frame:
                raise ProtocolError(ErrorCode.BAD_FRAME, "hello needs a passkey or a pake message.")
            if not factory.verifier.verify(frame["passkey"]):
                raise ProtocolError(ErrorCode.BAD_PASSKEY)
            self.checkName(frame, name, frame.get("password"))
        except ProtocolError as e:
            self.loginFailed(e)

    def frame_pake_confirm(self, frame: Dict[str, Any]) -> None:
        if self.state == LIVE:
            raise ProtocolError(ErrorCode.ALREADY_LOGGED_IN)
        if self.state == CHECKING:
            raise ProtocolError(ErrorCode.BAD_FRAME, "A login is being checked; wait for its answer.")
        if self.pending is None:
            raise ProtocolError(ErrorCode.BAD_FRAME, "No login is in progress; send hello first.")
        hello, name, expected = self.pending
        self.pending = None
        try:
            ok = hmac.compare_digest(expected, bytes.fromhex(frame["confirm"]))
            if self.judgeProof(ok):
                self.log.warn("Address {host} locked out after repeated failed logins", host=self.host)
                self.sendError(ErrorCode.TOO_MANY_ATTEMPTS)
                return
            if not ok:
                raise ProtocolError(ErrorCode.BAD_PASSKEY)
            # a name password comes only now, once the client has checked the server's proof
            self.checkName(hello, name, frame.get("password"), viaPake=True)
        except ProtocolError as e:
            self.loginFailed(e, viaPake=True)

    def judgeProof(self, ok: bool) -> bool:
        """The open login proof succeeded or failed (or was abandoned); True if the address is now locked out."""
        if not self.proofOpen:
            return False
        self.proofOpen = False
        return self.factory.guard.end(self.host, ok)

    def _resumeHello(self, frame: Dict[str, Any]) -> None:
        """A login slot may be free for our address: try the waiting hello again."""
        self._cancelWait = None
        if self.state == CLOSED:
            return
        self.dispatch(frame)
        self.releaseReading("login")

    def checkName(self, hello: Dict[str, Any], name: str, password: Optional[str], viaPake: bool = False) -> None:
        """The passkey is proved; a protected name also needs its password (checked in a worker thread)."""
        secret = self.factory.directory.secrets.get(wire.name_key(name))
        if secret is None:
            self.completeLogin(hello, name)
            return
        if not password:
            raise ProtocolError(ErrorCode.NAME_PROTECTED)
        self.state = CHECKING

        def checked(ok: bool) -> None:
            if self.state != CHECKING:
                return  # gone meanwhile
            self.state = NEW
            try:
                if not ok:
                    self.factory.guard.failed(self.host)  # guessing name passwords is guessing too
                    raise ProtocolError(ErrorCode.NAME_PROTECTED, "Wrong password for that name.")
                self.completeLogin(hello, name)
            except ProtocolError as e:
                self.loginFailed(e, viaPake=viaPake)

        d = self.factory.worker(auth.check_password, secret, password)
        d.addCallback(checked)
        d.addErrback(self._internal, "hello")

    def loginFailed(self, e: ProtocolError, viaPake: bool = False) -> None:
        self.attempts += 1
        self.log.info("Failed login from {peer}: {code} (attempt {attempt})", peer=self.peer, code=e.code,
                      attempt=self.attempts)
        # a failed PAKE proof was already counted when it started
        lockedOut = e.code == ErrorCode.BAD_PASSKEY and not viaPake and self.factory.guard.failed(self.host)
        if lockedOut:
            self.log.warn("Address {host} locked out after repeated wrong passkeys", host=self.host)
            self.sendError(ErrorCode.TOO_MANY_ATTEMPTS)
        elif e.code != ErrorCode.BAD_VERSION and self.attempts >= self.factory.limits.login_attempts:
            self.sendError(ErrorCode.TOO_MANY_ATTEMPTS)
        else:
            self.sendError(e.code, e.message, ref="hello")

    def completeLogin(self, frame: Dict[str, Any], name: str) -> None:
        """The passkey is proved: take the name (or refuse it) and start the session."""
        factory = self.factory
        banned = factory.moderation.refusal("name", wire.name_key(name))
        if banned is not None:
            self.log.info("Banned name {name} refused from {peer}", name=name, peer=self.peer)
            self.sendError(ErrorCode.BANNED, banned)
            return
        name = factory.register(self, name, frame.get("session"))
        factory.guard.succeeded(self.host)
        self.name = name
        self.nkey = key = wire.name_key(name)
        self.session = secrets.token_hex(16)
        self.state = LIVE
        self.cancelTimers()
        limits = factory.limits
        self.bucket = TokenBucket(factory.clock, limits.message_rate, limits.message_burst)
        # "--message-rate 0" turns per-user limits off altogether (benchmarks, trusted networks)
        self.actions = TokenBucket(factory.clock, limits.action_rate if limits.message_rate else 0, limits.action_burst)
        self.lastActive = factory.clock.seconds()
        self.autoAway = False
        self.typingSent: Dict[str, float] = {}
        self.rich = "rooms" in frame.get("features", ())
        directory = factory.directory
        self.rooms = directory.rooms_of(key) if self.rich else {social.DEFAULT_KEY}
        directory.known[key] = name
        self.log.info("{name} logged in from {peer}", name=name, peer=self.peer)
        welcome = {
            "type": "welcome",
            "version": wire.PROTOCOL_VERSION,
            "name": name,
            "server": factory.server_name,
            "users": factory.user_names(),
            "session": self.session,
            "limits": limits.advertised(),
        }
        if factory.join_link:
            welcome["link"] = factory.join_link  # for a client's Invite… (never carries the passkey)
        if self.rich:
            welcome["features"] = list(wire.FEATURES)
            welcome["presence"] = factory.presence()
        self.sendFrame(wire.fit(welcome, "users"))
        if self.rich:
            for room in sorted(self.rooms):
                self.sendRoom(room)
            for conv, reader, last, other in directory.dm_markers(key):
                self.sendFrame({"type": "seen", "name": reader, "id": last,
                                "to": name if wire.name_key(reader) != key else directory.known.get(other, other)})
        self.sentUpTo = factory.replay_start(self, frame.get("after"))
        self.pump()
        factory.submit(factory.join_event(self)).addErrback(lambda f: None)

    def sendRoom(self, room_key: str) -> None:
        """Tell this user about a room it is in: its members and read markers."""
        directory = self.factory.directory
        self.sendFrame(wire.fit({"type": "room", "room": directory.rooms[room_key],
                                 "members": directory.member_names(room_key),
                                 "seen": directory.seen(social.room_conv(room_key))}, "members"))

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
        factory.tell({"type": "presence", "name": self.name, "away": away, "status": status},
                     [p for p in factory.users.values() if p.rich])

    def frame_say(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        cid = frame.get("cid")
        if wire.is_blank(frame["text"]):
            raise ProtocolError(ErrorCode.EMPTY_MESSAGE)
        aud, where = self.factory.directory.resolve(self, frame)
        muted = self.factory.moderation.refusal("mute", self.nkey)
        if muted is not None:
            self.sendError(ErrorCode.MUTED, muted, ref="say", cid=cid)
            return
        if not self.bucket.take():
            self.sendError(ErrorCode.SLOW_DOWN, ref="say", cid=cid)
            return
        self.active()
        event = {"kind": "message", "name": self.name, "nkey": self.nkey, "text": frame["text"], **where,
                 **social.placement(aud)}
        if cid is not None:
            event["cid"] = cid
        d = self.factory.submit(event)

        def stored(result: Any) -> None:
            stored, _ = result
            frame = {"type": "ack", "id": stored["id"], "ts": stored["ts"]}
            if cid is not None:
                frame["cid"] = cid
            self.sendFrame(frame)

        def failed(failure: Any) -> None:
            if failure.check(StoreBusy):
                self.sendError(ErrorCode.STORE_BUSY, ref="say", cid=cid)
            elif failure.check(StoreClosed):
                self.sendError(ErrorCode.SERVER_BUSY, "The server is shutting down; try again in a moment.",
                               ref="say", cid=cid)
            else:
                self.sendError(ErrorCode.INTERNAL, "The message could not be stored; it was not sent.", ref="say",
                               cid=cid)

        d.addCallbacks(stored, failed)

    def frame_history(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        aud, where = self.factory.directory.resolve(self, frame)
        limit = frame.get("limit", self.factory.limits.history or 50)
        d = self.factory.read(self, self.factory.store.events_before, frame.get("before"), limit + 1,
                              social.conv_of(aud))

        def send(events: Any) -> None:
            if events is None:
                return  # gone meanwhile
            more = len(events) > limit
            events = [e for e in events[-limit:] if e["kind"] != "delete"]
            reply = {"type": "history-page", "events": events, "more": more}
            if self.rich:
                reply.update(where)
            # a page holds what fits in one frame: the newest events, the rest is "more"
            self.sendFrame(wire.fit(reply, "events", keep="last"))

        d.addCallback(send)
        d.addErrback(self._internal, "history")

    # ------------------------------------------------------------ rooms and direct messages

    def frame_join(self, frame: Dict[str, Any]) -> None:
        self.requireRich()
        directory, limits = self.factory.directory, self.factory.limits
        key = wire.name_key(frame["room"])
        if key not in self.rooms:
            if len(self.rooms) > limits.max_joined:  # (the default room does not count)
                raise ProtocolError(ErrorCode.TOO_MANY_ROOMS, f"You are in {limits.max_joined} rooms; leave one first.")
            if key not in directory.rooms and len(directory.rooms) > limits.max_rooms:
                raise ProtocolError(ErrorCode.TOO_MANY_ROOMS, "This server has as many rooms as it allows.")
        room, fresh = directory.join(frame["room"], self.nkey, self.name)
        self.rooms.add(key)
        if fresh:
            self.log.info("{name} joined room {room}", name=self.name, room=room)
            event = {"kind": "room-join", "name": self.name, "nkey": self.nkey, "room": room,
                     **social.placement(("room", key))}
            self.factory.submit(event).addErrback(lambda f: None)
        self.sendRoom(key)

    def frame_leave(self, frame: Dict[str, Any]) -> None:
        self.requireRich()
        room = self.factory.directory.leave(frame["room"], self.nkey)
        key = wire.name_key(room)
        self.log.info("{name} left room {room}", name=self.name, room=room)
        event = {"kind": "room-leave", "name": self.name, "nkey": self.nkey, "room": room,
                 **social.placement(("room", key))}
        # the leaver sees its own leaving, then nothing more of the room
        d = self.factory.submit(event)
        d.addBoth(lambda _: self.rooms.discard(key))

    def frame_rooms(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        self.sendFrame(wire.fit({"type": "room-list", "rooms": self.factory.directory.listing(self)}, "rooms"))

    def frame_typing(self, frame: Dict[str, Any]) -> None:
        self.requireRich()
        aud, where = self.factory.directory.resolve(self, frame)
        conv = social.conv_of(aud)
        now = self.factory.clock.seconds()
        if now - self.typingSent.get(conv, -1e9) < self.factory.limits.typing_interval:
            return  # relayed recently: typing notices are hints, extra ones are dropped
        if self.factory.moderation.active("mute", self.nkey) is not None:
            return
        self.typingSent[conv] = now
        self.active()
        self.factory.tellConversation(aud, {"type": "typing", "name": self.name, **where}, exclude=self)

    def frame_read(self, frame: Dict[str, Any]) -> None:
        self.requireRich()
        aud, where = self.factory.directory.resolve(self, frame)
        last = min(frame["id"], self.factory.last_id)
        conv = social.conv_of(aud)
        if self.factory.directory.mark_read(conv, self.nkey, self.name, last):
            self.factory.tellConversation(aud, {"type": "seen", "name": self.name, "id": last, **where}, exclude=self)

    def frame_presence(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        away = frame.get("away", self.away)
        self.autoAway = False
        if not away:
            self.lastActive = self.factory.clock.seconds()
        status = frame.get("status", self.status).strip()
        self.setPresence(away, status)

    def frame_search(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        try:
            query = fts_query(frame["q"])
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_QUERY) from None
        conv = None
        if "room" in frame or "to" in frame:
            aud, _ = self.factory.directory.resolve(self, frame)
            conv = social.conv_of(aud)
        limit = frame.get("limit", 20)
        rooms = [social.room_conv(k) for k in self.rooms]
        me = self.nkey if self.rich else "\n"  # a key no one has: no direct messages
        d = self.factory.read(self, self.factory.store.search, query, rooms, me, conv, frame.get("before"), limit + 1)

        def send(events: Any) -> None:
            if events is None:
                return  # gone meanwhile
            reply = {"type": "search-results", "q": frame["q"], "events": events[:limit], "more": len(events) > limit}
            self.sendFrame(wire.fit(reply, "events", keep="first"))

        d.addCallbacks(send, self._internal, errbackArgs=("search",))

    def frame_delete(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()

        async def delete() -> None:
            event = await self.factory.find_event(frame["id"])
            aud = social.audience(event) if event is not None else None
            if event is None or event["kind"] not in ("message", "file") or not social.can_see(self, aud):
                raise ProtocolError(ErrorCode.NO_SUCH_MESSAGE)
            if not self.operator and wire.name_key(event.get("name", "")) != self.nkey:
                raise ProtocolError(ErrorCode.NOT_ALLOWED)
            tomb = {"kind": "delete", "name": event.get("name"), "target": event["id"], "by": self.name,
                    **social.placement(aud)}
            tomb.update({k: event[k] for k in ("room", "to") if k in event})
            await self.factory.submit(tomb)
            self.log.info("{actor} deleted message {id} by {name}", actor=self.name, id=event["id"], name=event.get("name"))
            if self.operator:
                await self.factory.store.audit(self.factory.clock.seconds(), self.name, "delete",
                                               {"id": event["id"], "name": event.get("name")})

        self._run(delete(), "delete")

    # ------------------------------------------------------------ moderation

    def frame_oper(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        guard = self.factory.operGuard  # its own lockout: a mistyped admin key must not lock anyone out of logging in
        locked = guard.locked(self.host)
        if locked is not None:
            raise ProtocolError(ErrorCode.BAD_PASSKEY,
                                f"Too many wrong admin passkeys from your address; try again in {int(locked) + 1} s.")
        if not self.factory.moderation.check_oper(frame["passkey"]):
            guard.failed(self.host)
            self.log.warn("{name} from {peer} gave a wrong admin passkey", name=self.name, peer=self.peer)
            raise ProtocolError(ErrorCode.BAD_PASSKEY, "Wrong admin passkey.")
        self.operator = True
        self.log.info("{name} from {peer} is now an operator", name=self.name, peer=self.peer)
        self.sendFrame({"type": "oper", "actions": ["delete", *moderation.ACTIONS]})

    def frame_mod(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        if not self.operator:
            raise ProtocolError(ErrorCode.NOT_OPERATOR)

        async def act() -> None:
            self.sendFrame(await self.factory.moderation.act(self, frame))

        self._run(act(), "mod")

    def _run(self, coroutine: Any, ref: str) -> None:
        """Run a handler coroutine; its ProtocolError becomes an error frame."""

        def failed(failure: Any) -> None:
            if failure.check(ProtocolError):
                self.sendError(failure.value.code, failure.value.message, ref=ref)
            else:
                self._internal(failure, ref)

        Deferred.fromCoroutine(coroutine).addErrback(failed)

    def requireRich(self) -> None:
        self.requireLogin()
        if not self.rich:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "This needs the 'rooms' feature (hello.features).")

    def frame_who(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        reply = {"type": "users", "users": self.factory.user_names()}
        if self.rich:
            reply["presence"] = self.factory.presence()
        self.sendFrame(wire.fit(reply, "users"))

    def frame_ping(self, frame: Dict[str, Any]) -> None:
        reply: Dict[str, Any] = {"type": "pong"}
        if "n" in frame:
            reply["n"] = frame["n"]
        self.sendFrame(reply)

    def frame_pong(self, frame: Dict[str, Any]) -> None:
        pass  # lastHeard was updated on receipt

    def frame_bye(self, frame: Dict[str, Any]) -> None:
        self.leaveReason = "quit"
        self.close()

    # file frames are handled by the file service, when there is one
    def frame_upload(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        self._files().upload(self, frame)

    def frame_upload_cancel(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        self._files().cancelUpload(self, frame["tid"])

    def frame_download(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        self._files().download(self, frame)

    def frame_download_cancel(self, frame: Dict[str, Any]) -> None:
        self.requireLogin()
        self._files().cancelDownload(self, frame["tid"])

    def chunkReceived(self, chunk: wire.Chunk) -> None:
        self.requireLogin()
        self._files().chunk(self, chunk)

    def _files(self) -> Any:
        if self.factory.files is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "This server does not share files.")
        return self.factory.files

    def _internal(self, failure: Any, ref: str) -> None:
        self.log.failure("Internal error answering {ref} for {peer}", failure, ref=ref, peer=self.peer)
        self.sendError(ErrorCode.INTERNAL, ref=ref)

    # ------------------------------------------------------------ delivery

    def offer(self, events: List[Dict[str, Any]], framed: List[bytes], together: Optional[bytes], senders: set,
              audiences: Optional[List[Any]] = None) -> None:
        """
        The factory offers committed events (ascending ids) with their framed
        bytes, all of them joined (``together``, when everyone may read them
        all; else ``audiences`` says who may read each), and the names of those
        who sent messages among them.  Deliver them in one write if this
        connection is live and in step; otherwise catch-up will.
        """
        if not self.live or events[0]["id"] != self.sentUpTo + 1:
            self.live = False
            return
        if self.writePaused and self.queuedWhilePaused > self.factory.limits.sendq:
            self.fallBehind()
            return
        self.sentUpTo = events[-1]["id"]
        name = self.name
        if audiences is not None:
            data = b"".join(
                f for e, f, aud in zip(events, framed, audiences)
                if social.can_see(self, aud) and not (e["kind"] == "message" and e.get("name") == name)
            )
            if not data:
                return
        elif name not in senders:
            data = together  # the shared bytes: nothing of ours to leave out
        elif len(events) == 1:
            event = events[0]
            if event["kind"] == "message" and event.get("name") == name:
                return  # the sender has its ack
            data = framed[0]
        else:
            data = b"".join(
                f for e, f in zip(events, framed) if not (e["kind"] == "message" and e.get("name") == name)
            )
            if not data:
                return
        if self.writePaused:
            self.queuedWhilePaused += len(data)
        self.transport.write(data)

    def fallBehind(self) -> None:
        """Too much is queued for this peer: stop live delivery and reading."""
        if self.live:
            self.log.info("{name} is reading slowly; switching to catch-up", name=self.name)
        self.live = False
        self.holdReading("sendq")

    def holdReading(self, reason: str) -> None:
        """Stop reading from the peer until every reason is released."""
        if not self.holds and self.state != CLOSED:
            self.paused = True  # frames already buffered wait too
            self.transport.pauseProducing()
        self.holds.add(reason)

    def releaseReading(self, reason: str) -> None:
        if reason not in self.holds:
            return
        self.holds.discard(reason)
        if not self.holds and self.state != CLOSED:
            self.paused = False
            self.transport.resumeProducing()
            self.dataReceived(b"")  # frames that arrived before we stopped reading

    def pump(self) -> Deferred:
        """
        Send committed events after ``sentUpTo`` until in step with the
        server (then go live) or until the transport asks us to pause.
        """

        async def pump() -> None:
            if self._pumping:
                return
            self._pumping = True
            try:
                factory = self.factory
                while self.state == LIVE and not self.writePaused:
                    if self.sentUpTo >= factory.last_id:
                        if not self.synced:
                            self.synced = True
                            self.sendFrame({"type": "synced", "last": self.sentUpTo})
                        self.live = True
                        return
                    events = await factory.events_after(self.sentUpTo, factory.limits.catchup_page)
                    for event in events:
                        if event["id"] <= self.sentUpTo:
                            continue
                        self.sentUpTo = event["id"]
                        if event["kind"] == "deleted" or not social.can_see(self, social.audience(event)):
                            continue
                        frame = {"type": "event", **event}
                        if not self.synced:
                            frame["replay"] = True
                        self.sendFrame(frame)
                    if not events:
                        return  # nothing readable yet; a later offer retries
            finally:
                self._pumping = False

        d = Deferred.fromCoroutine(pump())
        d.addErrback(self._internal, "catch-up")
        return d

    # IPushProducer: the transport tells us when the peer stops/starts reading
    def pauseProducing(self) -> None:
        if not self.writePaused:
            self.writePaused = True
            self.pausedSince = self.factory.clock.seconds()
            self.queuedWhilePaused = 0

    def resumeProducing(self) -> None:
        self.writePaused = False
        self.pausedSince = None
        self.releaseReading("sendq")
        if self.state == LIVE and not self.live:
            self.pump()
        if self.factory.files is not None:
            self.factory.files.resume(self)

    def stopProducing(self) -> None:
        pass

    # ------------------------------------------------------------ time limits

    def checkTimeouts(self, now: float) -> None:
        limits = self.factory.limits
        if self.writePaused and self.pausedSince is not None and now - self.pausedSince > limits.send_timeout:
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


def _describe(address: Any) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


def _ref(frame: Any) -> Optional[str]:
    return frame.get("type") if isinstance(frame, dict) else "data"
