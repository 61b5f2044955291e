"""
The client core shared by every tcpchat user interface.

:class:`ChatClient` connects (with :class:`ClientService`: capped exponential
backoff with jitter), logs in, keeps the conversation (events by id, so
nothing is shown twice), queues messages written while offline and delivers
them exactly once (each has a client id the server de-duplicates on), and
moves files.  It tells a *listener* (see :class:`IChatListener`) what happens;
it never imports a UI toolkit, and UIs never touch a socket.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import uuid
from typing import Any, Callable, Dict, List, Optional

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionRefusedError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import Interface, implementer

from tcpchat import wire
from tcpchat.framing import FrameReceiver
from tcpchat.wire import ErrorCode

# connection states shown to the user
CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
DISCONNECTED = "disconnected"
FAILED = "failed"

#: Login errors that retrying with the same details cannot fix.
LOGIN_REFUSALS = frozenset(
    {ErrorCode.BAD_PASSKEY, ErrorCode.BAD_NAME, ErrorCode.NAME_TAKEN, ErrorCode.BAD_VERSION, ErrorCode.TOO_MANY_ATTEMPTS,
     ErrorCode.BANNED, ErrorCode.NAME_PROTECTED}
)


class IChatListener(Interface):
    """What a user interface hears from the client core."""

    def stateChanged(state: str, detail: str) -> None:
        """Connection state changed (``connecting``, ``connected``, ``reconnecting``, ``disconnected``, ``failed``)."""

    def welcomed(info: Dict[str, Any]) -> None:
        """Logged in; ``info`` is the server's welcome frame."""

    def eventReceived(event: Dict[str, Any], replay: bool) -> None:
        """A new event of the conversation (never one already reported)."""

    def synced() -> None:
        """History/catch-up is complete; live traffic follows."""

    def messageAcked(cid: str, event: Dict[str, Any]) -> None:
        """A message this user sent is stored (``event`` has its id and time)."""

    def usersChanged(users: List[str]) -> None:
        """Who is online changed."""

    def transferChanged(transfer: "Transfer") -> None:
        """An upload or download progressed, finished or failed."""

    def errorReceived(code: str, message: str) -> None:
        """The server refused something; ``message`` is for people."""

    def historyPage(events: List[Dict[str, Any]], more: bool) -> None:
        """Older events asked for with :meth:`ChatClient.loadOlder`."""

    def roomsChanged(rooms: List[str]) -> None:
        """The rooms this user is in changed (names, the default room first)."""

    def presenceChanged(name: str, away: bool, status: str) -> None:
        """Someone went away, came back or changed their status line."""

    def typingChanged(conv: str, names: List[str]) -> None:
        """Who is typing in conversation ``conv`` now (see :func:`conversation_of`)."""

    def seenChanged(conv: str) -> None:
        """Someone's read marker in ``conv`` moved; ask :meth:`ChatClient.seenBy`."""

    def eventRemoved(event: Dict[str, Any], conv: str) -> None:
        """A message was deleted (by its sender or an operator): take it off the screen."""

    def notice(text: str) -> None:
        """Something to tell the user that is not part of a conversation (operator replies, …)."""


class ChatListener:
    """A listener that ignores everything; subclass what you need."""

    def stateChanged(self, state: str, detail: str) -> None:
        pass

    def welcomed(self, info: Dict[str, Any]) -> None:
        pass

    def eventReceived(self, event: Dict[str, Any], replay: bool) -> None:
        pass

    def synced(self) -> None:
        pass

    def messageAcked(self, cid: str, event: Dict[str, Any]) -> None:
        pass

    def usersChanged(self, users: List[str]) -> None:
        pass

    def transferChanged(self, transfer: "Transfer") -> None:
        pass

    def errorReceived(self, code: str, message: str) -> None:
        pass

    def historyPage(self, events: List[Dict[str, Any]], more: bool) -> None:
        pass

    def roomsChanged(self, rooms: List[str]) -> None:
        pass

    def presenceChanged(self, name: str, away: bool, status: str) -> None:
        pass

    def typingChanged(self, conv: str, names: List[str]) -> None:
        pass

    def seenChanged(self, conv: str) -> None:
        pass

    def eventRemoved(self, event: Dict[str, Any], conv: str) -> None:
        pass

    def notice(self, text: str) -> None:
        pass


#: The conversation everyone is in.
LOBBY = "#" + wire.DEFAULT_ROOM
#: Seconds a typing notice is shown without a new one.
TYPING_SHOWN = 6.0


def conversation_of(event: Dict[str, Any], me: str) -> str:
    """
    The conversation an event (or typing/seen frame) belongs to, as the user
    ``me`` sees it: ``"#room"``, or ``"@name"`` for the direct conversation
    with ``name``.
    """
    to = event.get("to")
    if to is not None:
        sender = event.get("name") or ""
        other = sender if wire.name_key(to) == wire.name_key(me) else to
        return "@" + other
    return "#" + (event.get("room") or wire.DEFAULT_ROOM)


def conv_fields(conv: Optional[str]) -> Dict[str, str]:
    """The frame members naming conversation ``conv`` (``room`` or ``to``)."""
    if not conv:
        return {}
    if conv.startswith("@"):
        return {"to": conv[1:]}
    return {"room": conv.lstrip("#")}


def same_conv(a: str, b: str) -> bool:
    """Conversation names compare like user and room names: case does not matter."""
    return a[:1] == b[:1] and wire.name_key(a[1:]) == wire.name_key(b[1:])


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
        self.state = "preparing"  # preparing, waiting, active, finished, failed, cancelled
        self.error: Optional[str] = None
        self.sha256: Optional[str] = None
        self.file: Optional[Dict[str, Any]] = None  # the server's file object
        self.handle: Any = None
        self.conv: Optional[str] = None  # where an upload is shared (default: the default room)
        self.finished: Deferred = Deferred()

    @property
    def fraction(self) -> float:
        return 1.0 if self.size == 0 else min(1.0, self.done / self.size)

    def __repr__(self) -> str:
        return f"<Transfer {self.direction} {self.name!r} {self.done}/{self.size} {self.state}>"


def describe_failure(host: str, port: int, reason: Any) -> str:
    """A sentence a user can act on for a failed connection attempt."""
    error = getattr(reason, "value", reason)
    if isinstance(error, ConnectionRefusedError):
        why = "connection refused (is the server running, and is the port right?)"
    elif isinstance(error, DNSLookupError):
        why = "no such host"
    elif isinstance(error, TimeoutError):
        why = "no answer (check the address and the network)"
    else:
        why = getattr(error, "strerror", None) or str(error) or error.__class__.__name__
    return f"Unable to connect to {host}:{port}: {why}"


def file_digest(path: str) -> tuple:
    """(size, sha256 hex) of a file, reading it in blocks (blocking)."""
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


@implementer(IPushProducer, IHandshakeListener)
class ClientProtocol(FrameReceiver):
    """One connection to the server; all decisions are the ChatClient's."""

    MAX_LENGTH = wire.MAX_FRAME
    client: "ChatClient"

    def connectionMade(self) -> None:
        self.writePaused = False
        self.transport.registerProducer(self, True)
        if not self.client.tls:
            self.client._connected(self)

    def handshakeCompleted(self) -> None:
        """TLS is up (IHandshakeListener): now we can see the server's certificate."""
        self.client._connected(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.client._disconnected(self, reason)

    def stringReceived(self, payload: bytes) -> None:
        try:
            frame = wire.decode(payload, wire.SERVER_FRAMES)
        except wire.ProtocolError as e:
            self.client.log.warn("Bad frame from the server: {error}", error=e)
            return
        self.client._frameReceived(self, frame)

    def sendFrame(self, frame: Dict[str, Any]) -> None:
        self.sendString(wire.encode(frame))

    def lengthLimitExceeded(self, length: int) -> None:
        self.client.log.warn("The server sent a frame of {length} bytes; disconnecting", length=length)
        self.transport.abortConnection()

    def pauseProducing(self) -> None:
        self.writePaused = True

    def resumeProducing(self) -> None:
        self.writePaused = False
        self.client._pumpUploads(self)

    def stopProducing(self) -> None:
        pass


class ChatClient:
    """
    A tcpchat user's connection, kept alive across network trouble.

    :param reactor: provides time, TCP and threads (tests pass fakes).
    :param retry: ``attempt -> seconds`` before reconnecting; default backoff
        from 0.5 s doubling to 30 s, with jitter.
    """

    log = Logger()

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        passkey: str,
        listener: Any = None,
        reactor: Any = None,
        retry: Optional[Callable[[int], float]] = None,
        ping_interval: float = 15.0,
        ping_timeout: float = 15.0,
        endpoint: Any = None,
        tls: bool = True,
        known_servers: Optional[str] = None,
        trust_new_certificate: bool = False,
        password: Optional[str] = None,
        fingerprint: Optional[str] = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.host = host
        self.port = port
        self.name = name
        self.passkey = passkey
        #: the password of a protected name (see :meth:`register`), if any
        self.password = password or None
        self.listener = listener or ChatListener()
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._retry = retry or backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0)
        self.tls = tls
        self.knownServers = KnownServers(known_servers)
        self.trustNewCertificate = trust_new_certificate
        #: the certificate a join link named (``SHA256:…``): any other is refused, whatever is pinned
        self.expectedFingerprint = fingerprint
        self.fingerprint: Optional[str] = None
        #: why the server last refused the login (a :class:`LoginRefused`), until the next one succeeds
        self.refused: Optional[LoginRefused] = None
        self._pake: Any = None
        self.endpoint = endpoint or HostnameEndpoint(reactor, host, port, timeout=10)
        if tls:
            from twisted.internet.endpoints import wrapClientTLS

            from tcpchat import tls as _tls

            self.endpoint = wrapClientTLS(_tls.client_options(), self.endpoint)
        self.state = DISCONNECTED
        self.proto: Optional[ClientProtocol] = None
        self.loggedIn = False
        self.everLoggedIn = False
        self.info: Dict[str, Any] = {}
        #: the conversation: event id -> event
        self.events: Dict[int, Dict[str, Any]] = {}
        self.lastEventId = 0
        self.users: List[str] = []
        #: messages not yet acknowledged, in the order written: cid -> say frame
        self.outbox: Dict[str, Dict[str, Any]] = {}
        #: rooms this user is in: name -> {"members": [...], "seen": {name: id}}
        self.rooms: Dict[str, Dict[str, Any]] = {}
        #: read markers of direct conversations: "@name" -> {reader: id}
        self.dmSeen: Dict[str, Dict[str, int]] = {}
        #: who is away or has a status: name -> {"away", "status"}
        self.presence: Dict[str, Dict[str, Any]] = {}
        #: conv -> {name: delayed call hiding their typing notice}
        self.typing: Dict[str, Dict[str, Any]] = {}
        #: unread messages per conversation (live ones, not from this user)
        self.unread: Dict[str, int] = {}
        self.operator = False
        self._typingSent: Dict[str, float] = {}
        self._waiting: Dict[str, List[Deferred]] = {}
        self.uploads: Dict[int, Transfer] = {}
        self.downloads: Dict[int, Transfer] = {}
        self._nextTid = 1
        self._service: Optional[ClientService] = None
        self._pingCall: Any = None
        self._lastHeard = 0.0
        self._pingSent: Optional[float] = None
        self._outboxWaiters: List[Deferred] = []
        self.stopped = False

    # ------------------------------------------------------------ commands

    def start(self) -> Deferred:
        """
        Connect and log in.  Fires with the welcome frame, or fails with a
        :class:`LoginRefused` or :class:`ConnectFailed` the UI can show.
        After the first success the client reconnects by itself for ever.
        """
        self.stopped = False
        self.refused = None
        self._loginWaiter: Deferred = Deferred()
        self._service = ClientService(self.endpoint, _ClientFactory(self), retryPolicy=self._retryPolicy, clock=self.reactor)
        self._setState(CONNECTING, f"Connecting to {self.host}:{self.port}…")
        self._service.startService()
        first = self._service.whenConnected(failAfterFailures=1)
        first.addErrback(self._firstAttemptFailed)
        return self._loginWaiter

    def relogin(self, passkey: str) -> Deferred:
        """
        Log in again with another passkey, after the server refused this one
        (it was rotated, or the server restarted with a new one).  What was
        shown, the outbox and waiting transfers are kept: the messages
        written meanwhile are sent once logged in.
        """
        self.passkey = passkey
        return self.start()

    def inviteLink(self, with_passkey: bool = False) -> str:
        """
        A join link for someone else (Invite…): the address the server gave
        for its network (else the one we used), its certificate and, if asked,
        the passkey.
        """
        from tcpchat import link

        try:
            joined = link.parse(str(self.info.get("link") or ""))
        except link.BadLink:
            joined = link.JoinLink(self.host, self.port)
        fingerprint = self.fingerprint if self.tls else None  # the one this login proved, not the server's word
        return link.JoinLink(joined.host, joined.port, fingerprint, self.passkey if with_passkey else None,
                             joined.name).format()

    def stop(self, grace: float = 2.0) -> Deferred:
        """
        Say goodbye and stop reconnecting.  Messages still waiting for their
        acknowledgement get up to ``grace`` seconds to be confirmed first.
        """
        if self.outbox and self.loggedIn and grace > 0 and not self.stopped:
            d: Deferred = Deferred()
            self._outboxWaiters.append(d)
            timer = self.reactor.callLater(grace, lambda: d.called or d.callback(None))
            d.addBoth(lambda _: timer.active() and timer.cancel())
            return d.addCallback(lambda _: self.stop(grace=0))
        self.stopped = True
        if self.proto is not None and self.loggedIn:
            self.proto.sendFrame({"type": "bye"})
        self._setState(DISCONNECTED, "Disconnected.")
        return self._stopService()

    def _stopService(self) -> Deferred:
        """
        Stop reconnecting, on a later turn of the reactor: we may be inside
        one of ClientService's own callbacks, and it is not reentrant.
        """
        if self.proto is not None:
            # a TLS transport only closes once no producer is registered on it
            self.proto.transport.unregisterProducer()
        service = self._service
        if service is None or not service.running:
            return succeed(None)
        d: Deferred = Deferred()
        self.reactor.callLater(0, lambda: service.stopService().chainDeferred(d))
        return d

    def send(self, text: str, conv: Optional[str] = None) -> str:
        """
        Send a message to conversation ``conv`` (``"#room"`` or ``"@name"``;
        default: the default room), queued while offline.  Returns its client
        id; the listener hears ``messageAcked`` once the server has stored it.
        """
        if wire.is_blank(text):
            raise ValueError("Empty messages are not sent.")
        if len(text.encode("utf-8")) > wire.MAX_TEXT_BYTES:
            raise ValueError(f"Messages are limited to {wire.MAX_TEXT_BYTES} bytes.")
        cid = uuid.uuid4().hex
        frame = {"type": "say", "text": text, "cid": cid, **conv_fields(conv)}
        self.outbox[cid] = frame
        self._typingSent.pop(conv or LOBBY, None)
        self._send(frame)
        return cid

    def _send(self, frame: Dict[str, Any]) -> bool:
        if self.loggedIn and self.proto is not None:
            self.proto.sendFrame(frame)
            return True
        return False

    def _request(self, frame: Dict[str, Any], answer: str) -> Deferred:
        """Send a frame whose answer is a frame of type ``answer`` (or an error about it)."""
        d: Deferred = Deferred()
        if not self._send(frame):
            d.errback(RequestFailed("not-connected", "Not connected."))
            return d
        self._waiting.setdefault(frame["type"], []).append(d)
        return d

    def _answer(self, ref: str, result: Any) -> bool:
        waiting = self._waiting.get(ref)
        if not waiting:
            return False
        d = waiting.pop(0)
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)
        return True

    def who(self) -> None:
        self._send({"type": "who"})

    def loadOlder(self, limit: int = 50, conv: Optional[str] = None) -> None:
        """Ask for events of ``conv`` older than the oldest one held (answer: ``historyPage``)."""
        held = self.messages(conv or LOBBY)
        frame: Dict[str, Any] = {"type": "history", "limit": limit, **conv_fields(conv)}
        if held:
            frame["before"] = held[0]["id"]
        self._send(frame)

    def messages(self, conv: Optional[str] = None) -> List[Dict[str, Any]]:
        """The conversation held so far (one of them, or all), in order."""
        events = [self.events[i] for i in sorted(self.events)]
        if conv is None:
            return events
        return [e for e in events if same_conv(conversation_of(e, self.name), conv)]

    def lastOwnMessage(self, conv: str) -> Optional[Dict[str, Any]]:
        """This user's latest message in ``conv`` held so far, if any."""
        for event in reversed(self.messages(conv)):
            if event["kind"] == "message" and event.get("name") == self.name:
                return event
        return None

    # ------------------------------------------------------------ rooms, presence, search

    def join(self, room: str) -> Deferred:
        """Join (or create) a room; fires with its name once joined."""
        return self._request({"type": "join", "room": wire.normalize_room(room)}, "room").addCallback(
            lambda frame: frame["room"])

    def leave(self, room: str) -> None:
        self._send({"type": "leave", "room": wire.normalize_room(room)})

    def listRooms(self) -> Deferred:
        """Fires with ``[{"room", "members", "joined"}]``."""
        return self._request({"type": "rooms"}, "room-list").addCallback(lambda frame: frame["rooms"])

    def search(self, query: str, conv: Optional[str] = None, limit: int = 20) -> Deferred:
        """Fires with the matching messages the user may read, newest first."""
        frame = {"type": "search", "q": query[: wire.MAX_QUERY_CHARS], "limit": limit, **conv_fields(conv)}
        return self._request(frame, "search-results").addCallback(lambda frame: frame["events"])

    @property
    def rich(self) -> bool:
        """Does the server speak rooms, direct messages, typing and read markers (protocol 1.1)?"""
        return "rooms" in (self.info.get("features") or ())

    def typingNow(self, conv: Optional[str] = None) -> None:
        """The user is typing in ``conv``: tell the others (at most every 2 s)."""
        if not self.rich:
            return  # an older server would answer "unknown-type"
        conv = conv or LOBBY
        now = self.reactor.seconds()
        if now - self._typingSent.get(conv, -1e9) < float(self.info.get("limits", {}).get("typing_interval", 2.0)):
            return
        if self._send({"type": "typing", **conv_fields(conv)}):
            self._typingSent[conv] = now

    def markRead(self, conv: Optional[str] = None) -> None:
        """The user has seen everything held in ``conv``."""
        conv = conv or LOBBY
        self.unread.pop(conv, None)
        held = self.messages(conv)
        if not held or not self.rich:
            return
        last = held[-1]["id"]
        markers = self._markers(conv)
        if markers is not None and markers.get(self.name, 0) >= last:
            return
        if markers is not None:
            markers[self.name] = last
        self._send({"type": "read", "id": last, **conv_fields(conv)})

    def seenBy(self, conv: str, event: Dict[str, Any]) -> List[str]:
        """Who else (not its sender, not this user) has seen ``event``."""
        markers = self._markers(conv) or {}
        skip = {wire.name_key(self.name), wire.name_key(event.get("name") or "")}
        return sorted((n for n, last in markers.items() if last >= event["id"] and wire.name_key(n) not in skip),
                      key=wire.name_key)

    def _markers(self, conv: str) -> Optional[Dict[str, int]]:
        if conv.startswith("@"):
            return self.dmSeen.setdefault(wire.name_key(conv[1:]), {})
        for name, room in self.rooms.items():
            if wire.name_key(name) == wire.name_key(conv[1:]):
                return room.setdefault("seen", {})
        return None

    def setPresence(self, away: Optional[bool] = None, status: Optional[str] = None) -> None:
        frame: Dict[str, Any] = {"type": "presence"}
        if away is not None:
            frame["away"] = away
        if status is not None:
            frame["status"] = status[: wire.MAX_STATUS_CHARS]
        self._send(frame)

    def delete(self, event_id: int) -> None:
        self._send({"type": "delete", "id": event_id})

    def register(self, password: str) -> Deferred:
        """Protect this user's name with ``password``: later logins with the name need it."""
        d = self._request({"type": "register", "password": password}, "registered")

        def done(frame: Dict[str, Any]) -> Dict[str, Any]:
            self.password = password  # reconnects use it from now on
            return frame

        return d.addCallback(done)

    def oper(self, passkey: str) -> Deferred:
        """Become an operator with the server's admin passkey."""
        return self._request({"type": "oper", "passkey": passkey}, "oper")

    def moderate(self, action: str, **members: Any) -> Deferred:
        """An operator action (see PROTOCOL.rst, ``mod``); fires with the ``mod-done`` frame."""
        frame = {"type": "mod", "action": action, **{k: v for k, v in members.items() if v is not None}}
        return self._request(frame, "mod")

    def share(self, path: str, name: Optional[str] = None, conv: Optional[str] = None) -> Transfer:
        """
        Upload a file.  Its size and SHA-256 are computed in a thread, so the
        UI stays responsive; progress arrives through ``transferChanged``.
        """
        name = wire.safe_file_name(name or os.path.basename(path))
        transfer = Transfer("upload", self._tid(), name, path)
        transfer.conv = conv
        self.uploads[transfer.tid] = transfer
        self._changed(transfer)
        d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), file_digest, path)

        def measured(result: tuple) -> None:
            transfer.size, transfer.sha256 = result
            if transfer.state == "cancelled":
                return
            transfer.state = "waiting"
            self._changed(transfer)
            self._offer(transfer)

        def failed(failure: Any) -> None:
            self._fail(transfer, f"Cannot read {path}: {getattr(failure.value, 'strerror', failure.value)}")

        d.addCallbacks(measured, failed)
        return transfer

    def download(self, file: Dict[str, Any], dest: str) -> Transfer:
        """
        Download a shared file to ``dest`` (written as ``dest + '.part'``
        first; an interrupted download resumes from what it has).
        """
        transfer = Transfer("download", self._tid(), file.get("name", "file"), dest, file.get("size", 0))
        transfer.file = file
        transfer.sha256 = file.get("sha256")
        self.downloads[transfer.tid] = transfer
        transfer.state = "waiting"
        self._changed(transfer)
        self._requestDownload(transfer)
        return transfer

    def cancel(self, transfer: Transfer) -> None:
        """Stop an upload or download; a partial download is removed."""
        if transfer.state in ("finished", "failed", "cancelled"):
            return
        active = transfer.state == "active"
        transfer.state = "cancelled"
        if transfer.handle is not None:
            transfer.handle.close()
            transfer.handle = None
        kind = "upload-cancel" if transfer.direction == "upload" else "download-cancel"
        if active and self.proto is not None and self.loggedIn:
            self.proto.sendFrame({"type": kind, "tid": transfer.tid})
        if transfer.direction == "download":
            _remove(transfer.path + ".part")
        (self.uploads if transfer.direction == "upload" else self.downloads).pop(transfer.tid, None)
        self._changed(transfer)
        transfer.finished.errback(TransferFailed("cancelled"))
        transfer.finished.addErrback(lambda f: None)

    # ------------------------------------------------------------ connection

    def _retryPolicy(self, attempt: int) -> float:
        delay = float(self._retry(attempt))
        if self.everLoggedIn and not self.stopped:
            self._setState(RECONNECTING, f"Connection lost; reconnecting in {delay:.0f} s…")
        return delay

    def _firstAttemptFailed(self, failure: Any) -> None:
        if failure.check(CancelledError) or self.everLoggedIn:
            return
        message = describe_failure(self.host, self.port, failure)
        self._giveUp(ConnectFailed(message), message)

    def _giveUp(self, error: Exception, message: str) -> None:
        self.stopped = True
        if isinstance(error, LoginRefused):
            self.refused = error
        self._stopService().addErrback(lambda f: None)
        self._setState(FAILED, message)
        if not self._loginWaiter.called:
            waiter = self._loginWaiter
            self.reactor.callLater(0, waiter.errback, error)  # let ClientService finish its turn first

    def _connected(self, proto: ClientProtocol) -> None:
        self.proto = proto
        self._lastHeard = self.reactor.seconds()
        self._pingSent = None
        hello: Dict[str, Any] = {
            "type": "hello",
            "version": wire.PROTOCOL_VERSION,
            "name": self.name,
            "client": "tcpchat-python",
            "features": list(wire.FEATURES),
        }
        pinned = None
        if self.tls:
            from tcpchat import tls as _tls

            self.fingerprint = _tls.peer_fingerprint(proto.transport)
            pinned = self.knownServers.get(self.host, self.port)
            complaint = self._identityComplaint(pinned)
            if complaint is not None:
                proto.transport.abortConnection()
                self._giveUp(IdentityChanged(complaint), complaint)
                return
            if self.expectedFingerprint is not None and pinned != self.fingerprint:
                pinned = None  # the link vouches for it (newer word than a pin); the login proves it, then it is pinned
        if pinned is not None and pinned == self.fingerprint:
            hello["passkey"] = self.passkey  # a pinned, already-proved server: the cheap way
            if self.password:
                hello["password"] = self.password
        else:
            # first contact (or no TLS): prove the passkey without sending it
            from tcpchat import pake

            self._pake, message = pake.client_start(self.passkey)
            hello["pake"] = message.hex()
        if self.everLoggedIn:
            hello["after"] = self.lastEventId
            hello["session"] = self.info.get("session")
        proto.sendFrame(hello)
        self._schedulePing()

    def _identityComplaint(self, pinned: Optional[str]) -> Optional[str]:
        """Why the certificate just shown is not to be trusted (None: it is): the join link's, else the pin, decides."""
        where = f"the server at {self.host}:{self.port}"
        if self.expectedFingerprint is not None:
            if self.fingerprint == self.expectedFingerprint:
                return None
            return (f"WARNING: {where} is not the one in the join link: it shows certificate {self.fingerprint}, the "
                    f"link names {self.expectedFingerprint}. Someone may be intercepting the connection; ask whoever "
                    "runs the server for a new link.")
        if pinned is None or pinned == self.fingerprint or self.trustNewCertificate:
            return None
        return (f"WARNING: {where} shows a different certificate than before ({self.fingerprint}; it was {pinned}). "
                "Someone may be intercepting the connection. If the server was reinstalled, ask its operator, then "
                "forget the old certificate and connect again.")

    def _disconnected(self, proto: ClientProtocol, reason: Any) -> None:
        if proto is not self.proto:
            return
        self.proto = None
        self.loggedIn = False
        if self._pingCall is not None and self._pingCall.active():
            self._pingCall.cancel()
        self._pingCall = None
        for transfer in list(self.uploads.values()) + list(self.downloads.values()):
            if transfer.handle is not None:
                transfer.handle.close()
                transfer.handle = None
            if transfer.state == "active":
                transfer.state = "waiting"  # an upload restarts, a download resumes, once we are back
                self._changed(transfer)
        waiting, self._waiting = self._waiting, {}
        for ds in waiting.values():
            for d in ds:
                d.errback(RequestFailed("not-connected", "The connection was lost."))
        for conv in list(self.typing):
            self._clearTyping(conv)
        self.operator = False
        if not self.stopped and self.everLoggedIn:
            self._setState(RECONNECTING, "Connection lost; reconnecting…")

    def _schedulePing(self) -> None:
        self._pingCall = self.reactor.callLater(1.0 if self.ping_interval > 1 else self.ping_interval / 2, self._checkAlive)

    def _checkAlive(self) -> None:
        proto = self.proto
        if proto is None:
            return
        now = self.reactor.seconds()
        if self._pingSent is not None and now - self._pingSent > self.ping_timeout:
            self.log.info("The server stopped answering; reconnecting")
            proto.transport.abortConnection()
            return
        if self._pingSent is None and now - self._lastHeard > self.ping_interval:
            self._pingSent = now
            proto.sendFrame({"type": "ping"})
        self._schedulePing()

    # ------------------------------------------------------------ frames

    def _frameReceived(self, proto: ClientProtocol, frame: Any) -> None:
        self._lastHeard = self.reactor.seconds()
        self._pingSent = None
        if isinstance(frame, wire.Chunk):
            self._chunk(frame)
            return
        handler = getattr(self, "_on_" + frame["type"].replace("-", "_"), None)
        if handler is not None:
            try:
                handler(proto, frame)
            except Exception:
                # a bug in a listener (the UI) must not break the connection
                self.log.failure("Error handling a {type} frame", type=frame["type"])

    def _on_pake(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        from tcpchat import pake
        from tcpchat import tls as _tls

        state, self._pake = self._pake, None
        if state is None:
            return
        try:
            reply = pake.client_finish(state, bytes.fromhex(frame["msg"]), bytes.fromhex(frame["confirm"]),
                                       _tls.channel_binding(proto.transport))
        except pake.PakeError:
            proto.transport.abortConnection()
            # the server could not prove it knows the passkey: almost always a typo; on a first
            # contact it could also be an impostor, and the two cannot be told apart (by design)
            message = "Wrong passkey."
            self._giveUp(LoginRefused(ErrorCode.BAD_PASSKEY, message), message)
            return
        confirm: Dict[str, Any] = {"type": "pake-confirm", "confirm": reply.hex()}
        if self.password:
            confirm["password"] = self.password  # only now: the server has proved it knows the passkey
        proto.sendFrame(confirm)

    def _on_welcome(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        if self.tls and self.fingerprint and self.knownServers.get(self.host, self.port) != self.fingerprint:
            self.knownServers.pin(self.host, self.port, self.fingerprint)  # proved by the login: trust it from now on
        self.loggedIn = True
        self.everLoggedIn = True
        self.info = frame
        self.name = frame["name"]
        self.users = list(frame["users"])
        self.presence = dict(frame.get("presence") or {})
        self.rooms = {}
        self.listener.welcomed(frame)
        self.listener.usersChanged(self.users)

    def _on_room(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        self.rooms[frame["room"]] = {"members": list(frame["members"]), "seen": dict(frame.get("seen") or {})}
        self._roomsChanged()
        self.listener.seenChanged("#" + frame["room"])
        self._answer("join", frame)

    def _roomsChanged(self) -> None:
        names = sorted(self.rooms, key=lambda r: (wire.name_key(r) != wire.DEFAULT_ROOM, wire.name_key(r)))
        self.listener.roomsChanged(names)

    def _on_room_list(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        self._answer("rooms", frame)

    def _on_search_results(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        self._answer("search", frame)

    def _on_registered(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        self._answer("register", frame)

    def _on_oper(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        self.operator = True
        self._answer("oper", frame)

    def _on_mod_done(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        if isinstance(frame.get("passkey"), str) and frame["passkey"]:
            self.passkey = frame["passkey"]  # we rotated it: our next login needs the new one
        if not self._answer("mod", frame) and frame.get("message"):
            self.listener.notice(str(frame["message"]))

    def _on_presence(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        name, away, status = frame["name"], bool(frame["away"]), str(frame.get("status") or "")
        if away or status:
            self.presence[name] = {"away": away, "status": status}
        else:
            self.presence.pop(name, None)
        self.listener.presenceChanged(name, away, status)

    def _on_typing(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        conv = conversation_of(frame, self.name)
        who = frame["name"]
        shown = self.typing.setdefault(conv, {})
        old = shown.pop(who, None)
        if old is not None and old.active():
            old.cancel()
        shown[who] = self.reactor.callLater(TYPING_SHOWN, self._stoppedTyping, conv, who)
        self.listener.typingChanged(conv, sorted(shown))

    def _stoppedTyping(self, conv: str, who: str) -> None:
        shown = self.typing.get(conv, {})
        call = shown.pop(who, None)
        if call is not None and call.active():
            call.cancel()
        self.listener.typingChanged(conv, sorted(shown))

    def _clearTyping(self, conv: str) -> None:
        for who in list(self.typing.get(conv, {})):
            self._stoppedTyping(conv, who)
        self.typing.pop(conv, None)

    def _on_seen(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        conv = conversation_of(frame, self.name)
        markers = self._markers(conv)
        if markers is None:
            return
        if frame["id"] > markers.get(frame["name"], 0):
            markers[frame["name"]] = frame["id"]
        self.listener.seenChanged(conv)

    def _on_synced(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        self._setState(CONNECTED, f"Connected to {self.info.get('server', self.host)} as {self.name}.")
        self.listener.synced()
        for frame in list(self.outbox.values()):  # written offline, or not acknowledged before a drop
            proto.sendFrame(frame)
        for transfer in list(self.uploads.values()):
            if transfer.state == "waiting":
                self._offer(transfer)
        for transfer in list(self.downloads.values()):
            if transfer.state == "waiting":
                self._requestDownload(transfer)
        if not self._loginWaiter.called:
            self._loginWaiter.callback(self.info)

    def _on_event(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        event = {k: v for k, v in frame.items() if k not in ("type", "replay")}
        self.lastEventId = max(self.lastEventId, event["id"])
        if event["id"] in self.events:
            return
        replay = bool(frame.get("replay"))
        kind, who = event["kind"], event.get("name")
        conv = conversation_of(event, self.name)
        if kind == "delete":
            target = self.events.pop(event.get("target"), None)
            if target is not None:
                self.listener.eventRemoved(target, conv)
            self.events[event["id"]] = event
            return
        if kind in ("message", "file", "announce") and who:
            if conv in self.typing and who in self.typing[conv]:
                self._stoppedTyping(conv, who)
            if not replay and who != self.name:
                self.unread[conv] = self.unread.get(conv, 0) + 1
        if kind in ("room-join", "room-leave"):
            self._membership(event)
        self._record(event, replay)
        if kind == "join" and who and who not in self.users:
            self.users.append(who)
            self.listener.usersChanged(list(self.users))
        elif kind == "leave" and who in self.users:
            self.users.remove(who)
            self.listener.usersChanged(list(self.users))

    def _membership(self, event: Dict[str, Any]) -> None:
        room = self.rooms.get(event.get("room") or "")
        who = event.get("name")
        if event["kind"] == "room-leave" and who == self.name:
            self.rooms.pop(event.get("room") or "", None)
            self._roomsChanged()
        elif room is not None and who:
            members = room.setdefault("members", [])
            if event["kind"] == "room-join" and who not in members:
                members.append(who)
            elif event["kind"] == "room-leave" and who in members:
                members.remove(who)

    def _record(self, event: Dict[str, Any], replay: bool) -> None:
        self.events[event["id"]] = event
        cid = event.get("cid")
        if event["kind"] == "message" and cid in self.outbox and event.get("name") == self.name:
            del self.outbox[cid]  # stored before a drop ate our ack
            self._outboxChanged()
            self.listener.messageAcked(cid, event)
            return
        self.listener.eventReceived(event, replay)

    def _on_ack(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        cid = frame.get("cid")
        said = self.outbox.pop(cid, None) if cid else None
        self._outboxChanged()
        if frame["id"] in self.events:
            return
        event = {"id": frame["id"], "ts": frame["ts"], "kind": "message", "name": self.name}
        if said is not None:
            event["text"] = said["text"]
            event["cid"] = cid
            event.update({k: said[k] for k in ("room", "to") if k in said})
            if "room" not in event and "to" not in event:
                event["room"] = wire.DEFAULT_ROOM
            self.events[frame["id"]] = event
            self.listener.messageAcked(cid, event)

    def _on_users(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        self.users = list(frame["users"])
        self.listener.usersChanged(list(self.users))

    def _on_history_page(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        events = [e for e in frame["events"] if isinstance(e, dict) and isinstance(e.get("id"), int)
                  and e.get("id") not in self.events]
        for event in events:
            self.events[event["id"]] = event
        self.listener.historyPage(events, bool(frame["more"]))

    def _on_ping(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        reply: Dict[str, Any] = {"type": "pong"}
        if "n" in frame:
            reply["n"] = frame["n"]
        proto.sendFrame(reply)

    def _on_bye(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        message = str(frame.get("message") or "The server closed the connection.")
        if frame.get("reason") in ("kicked", "banned"):
            # the operator removed us: coming straight back would be rude (and refused)
            self.stopped = True
            self._stopService().addErrback(lambda f: None)
            self._setState(DISCONNECTED, message)
        self.listener.errorReceived("bye", message)

    def _on_error(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        code = frame["code"]
        message = frame.get("message") or code
        ref = frame.get("ref")
        if isinstance(ref, str) and self._waiting.get(ref):
            self._answer(ref, RequestFailed(code, message))  # e.g. a wrong admin passkey: only that request failed
            return
        if ref == "hello" or code in LOGIN_REFUSALS:
            if code in LOGIN_REFUSALS or not self.everLoggedIn:
                self._giveUp(LoginRefused(code, message), message)
            else:
                self.listener.errorReceived(code, message)  # e.g. busy: the server closes and we retry
            return
        tid = frame.get("tid")
        if isinstance(tid, int):
            transfer = (self.uploads if frame.get("ref") in ("upload", "data") else self.downloads).get(tid)
            if transfer is None:
                transfer = self.uploads.get(tid) or self.downloads.get(tid)
            if transfer is not None:
                self._fail(transfer, message)
                return
        cid = frame.get("cid")
        if cid in self.outbox:
            if code in (ErrorCode.SLOW_DOWN, ErrorCode.INTERNAL, ErrorCode.STORE_BUSY):
                # not stored: try again in a moment (the server de-duplicates by cid)
                self.reactor.callLater(1.0, self._resend, cid)
                if code in (ErrorCode.SLOW_DOWN, ErrorCode.STORE_BUSY):
                    return  # nothing for the user to do
            elif code == ErrorCode.SERVER_BUSY:
                return  # the server is going down: it stays in the outbox and is sent after reconnecting
            else:
                del self.outbox[cid]  # refused for good; retrying cannot help
                self._outboxChanged()
        self.listener.errorReceived(code, message)

    def _resend(self, cid: str) -> None:
        if cid in self.outbox:
            self._send(self.outbox[cid])

    def _outboxChanged(self) -> None:
        if not self.outbox and self._outboxWaiters:
            waiting, self._outboxWaiters = self._outboxWaiters, []
            for d in waiting:
                if not d.called:
                    d.callback(None)

    # ------------------------------------------------------------ uploads

    def _tid(self) -> int:
        tid = self._nextTid
        self._nextTid = tid + 1 if tid < wire.MAX_TRANSFER_ID else 1
        return tid

    def _offer(self, transfer: Transfer) -> None:
        if self.proto is None or not self.loggedIn:
            return  # offered when we are back
        try:
            transfer.handle = open(transfer.path, "rb")
        except OSError as e:
            self._fail(transfer, f"Cannot read {transfer.path}: {e.strerror}")
            return
        transfer.done = 0
        transfer.state = "active"
        frame = {"type": "upload", "tid": transfer.tid, "name": transfer.name, "size": transfer.size,
                 "sha256": transfer.sha256, **conv_fields(transfer.conv)}
        mime = mimetypes.guess_type(transfer.name)[0]
        if mime:
            frame["mime"] = mime
        self.proto.sendFrame(frame)
        self._changed(transfer)
        self._pumpUploads(self.proto)

    def _pumpUploads(self, proto: ClientProtocol) -> None:
        """Send file data until the transport asks us to pause (backpressure)."""
        while not proto.writePaused and proto is self.proto:
            active = [t for t in self.uploads.values() if t.state == "active" and t.handle is not None]
            if not active:
                return
            for transfer in active:
                data = transfer.handle.read(min(wire.CHUNK_SIZE, transfer.size - transfer.done))
                if data:
                    proto.sendString(wire.encode_chunk(transfer.tid, data))
                    transfer.done += len(data)
                    self._progress(transfer)
                if not data or transfer.done >= transfer.size:
                    transfer.handle.close()
                    transfer.handle = None  # now waiting for upload-done
                if proto.writePaused:
                    return

    def _on_upload_ready(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        pass  # data is already flowing

    def _on_upload_done(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        transfer = self.uploads.pop(frame["tid"], None)
        if transfer is None:
            return
        transfer.state = "finished"
        transfer.file = frame["file"]
        transfer.done = transfer.size
        self._changed(transfer)
        transfer.finished.callback(transfer)

    # ------------------------------------------------------------ downloads

    def _requestDownload(self, transfer: Transfer) -> None:
        if self.proto is None or not self.loggedIn:
            return
        part = transfer.path + ".part"
        try:
            offset = os.path.getsize(part)
        except OSError:
            offset = 0
        if transfer.size and offset > transfer.size:
            _remove(part)
            offset = 0
        transfer.done = offset
        transfer.state = "active"
        self.proto.sendFrame({"type": "download", "tid": transfer.tid, "file": transfer.file["id"], "offset": offset})
        self._changed(transfer)

    def _on_download_start(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        transfer = self.downloads.get(frame["tid"])
        if transfer is None or transfer.state != "active":
            return
        info = frame["file"] if isinstance(frame["file"], dict) else {}
        transfer.size = info.get("size", transfer.size)
        transfer.sha256 = info.get("sha256", transfer.sha256)
        part = transfer.path + ".part"
        transfer.handle = open(part, "r+b" if frame["offset"] and os.path.exists(part) else "wb")
        transfer.handle.seek(frame["offset"])
        transfer.handle.truncate()
        transfer.done = frame["offset"]

    def _chunk(self, chunk: wire.Chunk) -> None:
        transfer = self.downloads.get(chunk.tid)
        if transfer is None or transfer.handle is None:
            return  # cancelled: data still in flight
        transfer.handle.write(chunk.data)
        transfer.done += len(chunk.data)
        self._progress(transfer)

    def _on_download_done(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        transfer = self.downloads.get(frame["tid"])
        if transfer is None or transfer.handle is None:
            return
        transfer.handle.close()
        transfer.handle = None
        transfer.state = "verifying"
        self._changed(transfer)
        part = transfer.path + ".part"
        d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), file_digest, part)

        def verified(result: tuple) -> None:
            size, sha = result
            self.downloads.pop(transfer.tid, None)
            if sha != transfer.sha256:
                _remove(part)
                self._fail(transfer, "The download arrived damaged (SHA-256 mismatch) and was deleted.")
                return
            os.replace(part, transfer.path)
            transfer.state = "finished"
            transfer.done = size
            self._changed(transfer)
            transfer.finished.callback(transfer)

        d.addCallbacks(verified, lambda f: self._fail(transfer, f"Could not check the download: {f.value}"))

    # ------------------------------------------------------------ helpers

    def _fail(self, transfer: Transfer, message: str) -> None:
        if transfer.state in ("finished", "failed", "cancelled"):
            return
        transfer.state = "failed"
        transfer.error = message
        if transfer.handle is not None:
            transfer.handle.close()
            transfer.handle = None
        (self.uploads if transfer.direction == "upload" else self.downloads).pop(transfer.tid, None)
        self._changed(transfer)
        transfer.finished.errback(TransferFailed(message))
        transfer.finished.addErrback(lambda f: None)

    def _progress(self, transfer: Transfer) -> None:
        step = max(transfer.size // 200, wire.CHUNK_SIZE)  # about 200 updates per transfer at most
        if transfer.done - transfer.reported >= step or transfer.done >= transfer.size:
            transfer.reported = transfer.done
            self._changed(transfer)

    def _changed(self, transfer: Transfer) -> None:
        self.listener.transferChanged(transfer)

    def _setState(self, state: str, detail: str) -> None:
        self.state = state
        self.listener.stateChanged(state, detail)


class _ClientFactory(Factory):
    noisy = False

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> ClientProtocol:
        proto = ClientProtocol()
        proto.client = self.client
        proto.factory = self
        return proto


class KnownServers:
    """
    Certificate fingerprints of servers this user has logged in to (trust on
    first use, like SSH's known_hosts), in a small JSON file.
    """

    def __init__(self, path: Optional[str] = None) -> None:
        if path is None:
            try:
                from platformdirs import user_data_dir

                path = os.path.join(user_data_dir("tcpchat"), "known_servers.json")
            except ImportError:  # pragma: no cover
                path = os.path.join(os.path.expanduser("~"), ".tcpchat_known_servers.json")
        self.path = path

    def _load(self) -> Dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, host: str, port: int) -> Optional[str]:
        return self._load().get(f"{host}:{port}")

    def pin(self, host: str, port: int, fingerprint: str) -> None:
        data = self._load()
        data[f"{host}:{port}"] = fingerprint
        self._save(data)

    def forget(self, host: str, port: int) -> bool:
        data = self._load()
        found = data.pop(f"{host}:{port}", None) is not None
        self._save(data)
        return found

    def _save(self, data: Dict[str, str]) -> None:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            pass


class IdentityChanged(Exception):
    """The server's certificate is not the one pinned for it."""


class ConnectFailed(Exception):
    """The server could not be reached; the message says why in plain words."""


class Refused(Exception):
    """The server said no, with an error ``code``; ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LoginRefused(Refused):
    """The server refused the login (wrong passkey, name taken, …)."""


class TransferFailed(Exception):
    """An upload or download did not complete."""


class RequestFailed(Refused):
    """The server refused a request (join, search, oper, an operator action, …)."""


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
