"""
Logging in: ``hello`` (with the passkey, or a SPAKE2 proof finished by
``pake-confirm``), a protected name's password, lockouts, then the welcome.

One :class:`Login` per session holds the login in progress.  Nothing here
knows the transport: the proof's channel binding comes from the session's
link.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, Dict, Optional

from twisted.logger import Logger

from tcpchat import auth, pake, wire
from tcpchat.server import profiles, social
from tcpchat.server.guard import TokenBucket
from tcpchat.server.table import ANY, CHECKING, CLOSED, LIVE, LOGGED_IN, NEW, handles
from tcpchat.wire import ErrorCode, ProtocolError


class Login:
    log = Logger()
    __slots__ = ("session", "pending", "attempts", "proofOpen", "_cancelWait", "req")  # (one per connection)

    def __init__(self, session: Any) -> None:
        self.session = session
        #: (hello, name, expected confirmation) while a SPAKE2 proof waits for its pake-confirm
        self.pending: Optional[tuple] = None
        self.attempts = 0
        #: a proof was started and not yet judged (it counts as a guess in flight for the address)
        self.proofOpen = False
        self._cancelWait: Optional[Any] = None
        #: the request id of the login frame being answered (echoed by its errors)
        self.req: Optional[str] = None

    def abandon(self) -> None:
        """The connection is gone: a proof left unconfirmed was a guess; a waiting hello waits no more."""
        self.judgeProof(False)
        if self._cancelWait is not None:
            self._cancelWait()
            self._cancelWait = None

    def _idle(self) -> None:
        state = self.session.state
        if state == LIVE:
            raise ProtocolError(ErrorCode.ALREADY_LOGGED_IN)
        if state == CHECKING:
            raise ProtocolError(ErrorCode.BAD_FRAME, "A login is being checked; wait for its answer.")

    def hello(self, frame: Dict[str, Any]) -> None:
        self._idle()
        self.req = frame.get("req")
        session = self.session
        factory = session.factory
        locked = factory.guard.locked(session.host)
        if locked is not None:
            self.log.info("Login from locked-out address {peer} refused", peer=session.peer)
            session.sendError(ErrorCode.TOO_MANY_ATTEMPTS,
                              f"Too many failed logins from your address; try again in {int(locked) + 1} s.")
            return
        self.pending = None
        self.judgeProof(False)  # a second hello abandons the first proof
        try:
            if frame["version"] != wire.PROTOCOL_VERSION:
                raise ProtocolError(ErrorCode.BAD_VERSION)
            name = wire.normalize_name(frame["name"])
            if "pake" in frame:
                self._startProof(frame, name)
                return
            if "passkey" not in frame:
                raise ProtocolError(ErrorCode.BAD_FRAME, "hello needs a passkey or a pake message.")
            if not factory.verifier.verify(frame["passkey"]):
                raise ProtocolError(ErrorCode.BAD_PASSKEY)
            self.checkName(frame, name, frame.get("password"))
        except ProtocolError as e:
            self.failed(e)

    def _startProof(self, frame: Dict[str, Any], name: str) -> None:
        session = self.session
        factory = session.factory
        # a client that learns from our answer that its guess was wrong just goes
        # away without confirming: a proof is a guess until it is confirmed, and an
        # address has only so many guesses in flight plus failed (the rest wait)
        if not factory.guard.begin(session.host):
            if factory.guard.waiters(session.host) >= factory.limits.max_login_waiters:
                raise ProtocolError(ErrorCode.SERVER_BUSY, "Too many logins from your address at once.")
            self._cancelWait = factory.guard.wait(session.host, lambda: self._resume(frame))
            session.holdReading("login")
            return
        self.proofOpen = True
        if not factory.pakeBudget.take():
            self.judgeProof(False)
            session.sendError(ErrorCode.SERVER_BUSY, "The server is busy with logins; try again shortly.")
            return
        binding = session.link.channelBinding()
        try:
            reply, serverConfirm, expected = factory.verifier.pakeRespond(bytes.fromhex(frame["pake"]), binding)
        except pake.PakeError:
            self.judgeProof(False)
            raise ProtocolError(ErrorCode.BAD_FRAME, "hello.pake is not a valid SPAKE2 message.") from None
        self.pending = (frame, name, expected)
        session.answer(frame, {"type": "pake", "msg": reply.hex(), "confirm": serverConfirm.hex()})

    def _resume(self, frame: Dict[str, Any]) -> None:
        """A login slot may be free for our address: try the waiting hello again."""
        self._cancelWait = None
        session = self.session
        if session.state == CLOSED:
            return
        session.receive(frame)
        session.releaseReading("login")

    def confirm(self, frame: Dict[str, Any]) -> None:
        self._idle()
        if self.pending is None:
            raise ProtocolError(ErrorCode.BAD_FRAME, "No login is in progress; send hello first.")
        self.req = frame.get("req")
        hello, name, expected = self.pending
        self.pending = None
        try:
            ok = hmac.compare_digest(expected, bytes.fromhex(frame["confirm"]))
            if self.judgeProof(ok):
                self.log.warn("Address {host} locked out after repeated failed logins", host=self.session.host)
                self.session.sendError(ErrorCode.TOO_MANY_ATTEMPTS)
                return
            if not ok:
                raise ProtocolError(ErrorCode.BAD_PASSKEY)
            # a name password comes only now, once the client has checked the server's proof
            self.checkName(hello, name, frame.get("password"), viaPake=True)
        except ProtocolError as e:
            self.failed(e, viaPake=True)

    def judgeProof(self, ok: bool) -> bool:
        """The open login proof succeeded or failed (or was abandoned); True if the address is now locked out."""
        if not self.proofOpen:
            return False
        self.proofOpen = False
        return bool(self.session.factory.guard.end(self.session.host, ok))

    def checkName(self, hello: Dict[str, Any], name: str, password: Optional[str], viaPake: bool = False) -> None:
        """The passkey is proved; a protected name also needs its password (checked in a worker thread)."""
        session = self.session
        secret = session.factory.directory.secrets.get(wire.name_key(name))
        if secret is None:
            self.complete(hello, name)
            return
        if not password:
            raise ProtocolError(ErrorCode.NAME_PROTECTED)
        session.state = CHECKING

        def checked(ok: bool) -> None:
            if session.state != CHECKING:
                return  # gone meanwhile
            session.state = NEW
            try:
                if not ok:
                    session.factory.guard.failed(session.host)  # guessing name passwords is guessing too
                    raise ProtocolError(ErrorCode.NAME_PROTECTED, "Wrong password for that name.")
                self.complete(hello, name)
            except ProtocolError as e:
                self.failed(e, viaPake=viaPake)

        d = session.factory.worker(auth.check_password, secret, password)
        d.addCallback(checked)
        d.addErrback(session.internal, "hello")

    def failed(self, e: ProtocolError, viaPake: bool = False) -> None:
        session = self.session
        self.attempts += 1
        session.factory.stats.loginFailures[e.code] += 1
        self.log.info("Failed login from {peer}: {code} (attempt {attempt})", peer=session.peer, code=e.code,
                      attempt=self.attempts)
        # a failed PAKE proof was already counted when it started
        lockedOut = e.code == ErrorCode.BAD_PASSKEY and not viaPake and session.factory.guard.failed(session.host)
        if lockedOut:
            session.factory.stats.lockouts += 1
            self.log.warn("Address {host} locked out after repeated wrong passkeys", host=session.host)
            session.sendError(ErrorCode.TOO_MANY_ATTEMPTS)
        elif e.code != ErrorCode.BAD_VERSION and self.attempts >= session.factory.limits.login_attempts:
            session.sendError(ErrorCode.TOO_MANY_ATTEMPTS)
        else:
            session.sendError(e.code, e.message, ref="hello", req=self.req)

    def complete(self, frame: Dict[str, Any], name: str) -> None:
        """The passkey is proved: take the name (or refuse it) and start the session."""
        session = self.session
        factory = session.factory
        banned = factory.moderation.refusal("name", wire.name_key(name))
        if banned is not None:
            self.log.info("Banned name {name} refused from {peer}", name=name, peer=session.peer)
            session.sendError(ErrorCode.BANNED, banned)
            return
        if factory.cluster is not None and frame.get("session") and factory.cluster.elsewhere(wire.name_key(name)):
            factory.cluster.claim(self, frame, name)  # held on another node: maybe by this client's old connection
            return
        name = factory.register(session, name, frame.get("session"))
        factory.guard.succeeded(session.host)
        session.name = name
        session.nkey = key = wire.name_key(name)
        session.session = secrets.token_hex(16)
        session.state = LIVE
        session.cancelTimers()
        limits = factory.limits
        session.bucket = TokenBucket(factory.clock, limits.message_rate, limits.message_burst)
        # "--message-rate 0" turns per-user limits off altogether (benchmarks, trusted networks)
        session.actions = TokenBucket(factory.clock, limits.action_rate if limits.message_rate else 0,
                                      limits.action_burst)
        session.lastActive = factory.clock.seconds()
        session.rich = "rooms" in frame.get("features", ())
        session.edits = "edits" in frame.get("features", ())
        session.profiles = "profiles" in frame.get("features", ())
        session.roster = "roster" in frame.get("features", ())
        if not session.roster:
            factory.roster.plain.add(session)
        directory = factory.directory
        session.rooms = directory.rooms_of(key) if session.rich else {social.DEFAULT_KEY}
        directory.known[key] = name
        self.log.info("{name} logged in from {peer}", name=name, peer=session.peer)
        factory.stats.logins += 1
        online = factory.onlineCount()
        names = factory.userNames(limit=limits.welcome_users)  # (not a copy of everyone's: a crowd's logins)
        welcome = {
            "type": "welcome",
            "version": wire.PROTOCOL_VERSION,
            "name": name,
            "server": factory.serverName,
            "users": names,
            "session": session.session,
            "limits": limits.advertised(),
        }
        if online > limits.welcome_users:
            # a crowd: a login costs the same however many are online (the list would be O(N) per login)
            welcome.update(users=names if name in names else names + [name], online=online, more=True)
        if factory.joinLink:
            welcome["link"] = factory.joinLink  # for a client's Invite… (never carries the passkey)
        if session.rich:
            welcome["features"] = list(wire.FEATURES)
            welcome["presence"] = factory.presence()
        if session.profiles:
            welcome["profiles"] = factory.profiles.online(factory)
        if frame.get("req") is not None:
            welcome["req"] = frame["req"]
        session.sendFrame(wire.fit(welcome, "users"))
        if session.rich:
            # the default room first, then the others by name (PROTOCOL.rst, "welcome")
            for room in sorted(session.rooms, key=lambda k: (k != social.DEFAULT_KEY, k)):
                send_room(session, room)
            for conv, reader, last, other in directory.dm_markers(key):
                session.sendFrame({"type": "seen", "name": reader, "id": last,
                                   "to": name if wire.name_key(reader) != key else directory.known.get(other, other)})
        session.delivery.sentUpTo = factory.replayStart(session, frame.get("after"))
        # a fresh login's history shows messages as they are now: the edits and reactions that made them so are
        # left out of it (a client catching up, with "after", gets them: it holds the messages as they were)
        session.delivery.freshUpTo = factory.lastId if frame.get("after") is None else 0
        session.delivery.pump()
        factory.submit(factory.joinEvent(session)).addErrback(lambda f: None)
        known = factory.profiles.get(key)
        if known:  # (those online learn who has come, with their picture)
            profiles.announce(factory, name, known, exclude=session)


def send_room(session: Any, room_key: str, request: Optional[Dict[str, Any]] = None) -> None:
    """Tell a user about a room it is in: its members and read markers."""
    directory = session.factory.directory
    reply = wire.fit({"type": "room", "room": directory.rooms[room_key], "members": directory.member_names(room_key),
                      "seen": directory.seen(social.room_conv(room_key))}, "members")
    session.answer(request or {}, reply)


@handles("hello", ANY)
def hello(session: Any, frame: Dict[str, Any]) -> None:
    session.login.hello(frame)


@handles("pake-confirm", ANY)
def pake_confirm(session: Any, frame: Dict[str, Any]) -> None:
    session.login.confirm(frame)


@handles("register", LOGGED_IN)
def register(session: Any, frame: Dict[str, Any]) -> None:
    """Protect this user's name with a password (or change it): later logins with the name need it."""
    password = frame["password"]
    if len(password) < auth.MIN_PASSWORD:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"Use a password of at least {auth.MIN_PASSWORD} characters.")
    name, key, factory = session.name, session.nkey, session.factory

    async def protect() -> None:
        secret = await factory.worker(auth.hash_password, password)
        await factory.store.set_secret(key, name, secret)
        factory.directory.secrets[key] = secret
        Login.log.info("{name} protected their name with a password", name=name)
        session.answer(frame, {"type": "registered", "name": name})

    session.run(frame, protect())
