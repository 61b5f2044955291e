"""
The client core shared by every tcpchat user interface.

:class:`ChatClient` is the façade a UI uses.  It connects (with
:class:`ClientService`: capped exponential backoff with jitter), logs in
(checking the server's certificate against a join link or a pin), keeps the
connection alive (pings), queues messages written while offline and delivers
them exactly once (each has a client id the server de-duplicates on), and
matches answers to requests (request ids).  What the conversation holds is
:class:`~tcpchat.client.model.Conversations`; files move through
:class:`~tcpchat.client.transfers.Transfers`.  It tells a *listener* (see
:class:`~tcpchat.client.listener.IChatListener`) what happens; it never
imports a UI toolkit, and UIs never touch a socket.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger

from tcpchat import wire
from tcpchat.client.connection import ClientFactory, ClientProtocol, describe_failure
from tcpchat.client.errors import ConnectFailed, IdentityChanged, LoginRefused, Refused, RequestFailed
from tcpchat.client import login, requests
from tcpchat.client.known import KnownServers
from tcpchat.client.frames import FRAMES
from tcpchat.client.listener import (CONNECTED, CONNECTING, DISCONNECTED, FAILED, RECONNECTING, ChatListener,
                                     IChatListener)
from tcpchat.client.sending import Sender
from tcpchat.client.pending import PendingRequests
from tcpchat.client.model import LOBBY, TYPING_SHOWN, Conversations, conv_fields, conversation_of, same_conv
from tcpchat.client.transfers import Transfer, TransferFailed, Transfers, file_digest

__all__ = [
    "CONNECTING", "CONNECTED", "RECONNECTING", "DISCONNECTED", "FAILED", "LOBBY", "TYPING_SHOWN", "ChatClient",
    "ChatListener", "IChatListener", "ClientProtocol", "ConnectFailed", "IdentityChanged", "KnownServers",
    "LoginRefused", "Refused", "RequestFailed", "Transfer", "TransferFailed", "conv_fields", "conversation_of",
    "describe_failure", "file_digest", "same_conv",
]

class ChatClient:
    """
    A tcpchat user's connection, kept alive across network trouble.

    :param reactor: provides time, TCP and threads (tests pass fakes).
    :param retry: ``attempt -> seconds`` before reconnecting; default backoff
        from 0.5 s doubling to 30 s, with jitter.
    :param fingerprint: the certificate a join link named: any other is refused.
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
        outbox: Optional[str] = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.host = host
        self.port = port
        self.passkey = passkey
        #: the password of a protected name (see :meth:`register`), if any
        self.password = password or None
        self._listener: Any = listener or ChatListener()
        self.pingInterval = ping_interval
        self.pingTimeout = ping_timeout
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
        #: what this user writes, until the server has it (``outbox``: a file to keep it in across restarts)
        self.sender = Sender(self, outbox)
        self.model = Conversations(reactor, self._listener, self.sender.ownMessageStored)
        self.model.name = name
        self.transfers = Transfers(self)
        #: messages not yet acknowledged, in the order written: cid -> say frame (see outbox.default_path)
        self.outbox = self.sender.outbox
        self.operator = False
        self._typingSent: Dict[str, float] = {}
        self.pending = PendingRequests()
        self._service: Optional[ClientService] = None
        self._pingCall: Any = None
        self._lastHeard = 0.0
        self._pingSent: Optional[float] = None
        self._loginWaiter: Deferred = Deferred()
        self.stopped = False

    # ------------------------------------------------------------ what the UIs read (the model's)

    @property
    def listener(self) -> Any:
        return self._listener

    @listener.setter
    def listener(self, listener: Any) -> None:
        self._listener = self.model.listener = listener

    name = property(lambda self: self.model.name, lambda self, v: setattr(self.model, "name", v))
    events = property(lambda self: self.model.events)
    users = property(lambda self: self.model.users)
    rooms = property(lambda self: self.model.rooms)
    presence = property(lambda self: self.model.presence)
    typing = property(lambda self: self.model.typing)
    unread = property(lambda self: self.model.unread)
    dmSeen = property(lambda self: self.model.dmSeen)
    lastEventId = property(lambda self: self.model.lastEventId)
    uploads = property(lambda self: self.transfers.uploads)
    downloads = property(lambda self: self.transfers.downloads)

    def messages(self, conv: Optional[str] = None) -> List[Dict[str, Any]]:
        return self.model.messages(conv)

    def lastOwnMessage(self, conv: str) -> Optional[Dict[str, Any]]:
        return self.model.lastOwnMessage(conv)

    def seenBy(self, conv: str, event: Dict[str, Any]) -> List[str]:
        return self.model.seenBy(conv, event)

    @property
    def rich(self) -> bool:
        """Does the server speak rooms, direct messages, typing and read markers (protocol 1.1)?"""
        return "rooms" in (self.info.get("features") or ())

    # ------------------------------------------------------------ starting and stopping

    def start(self) -> Deferred:
        """
        Connect and log in.  Fires with the welcome frame, or fails with a
        :class:`LoginRefused` or :class:`ConnectFailed` the UI can show.
        After the first success the client reconnects by itself for ever.
        """
        self.stopped = False
        self.refused = None
        self._loginWaiter = Deferred()
        self._service = ClientService(self.endpoint, ClientFactory(self), retryPolicy=self._retryPolicy,
                                      clock=self.reactor)
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

    def stop(self, grace: float = 2.0) -> Deferred:
        """
        Say goodbye and stop reconnecting.  Messages still waiting for their
        acknowledgement get up to ``grace`` seconds to be confirmed first.
        """
        if self.outbox and self.loggedIn and grace > 0 and not self.stopped:
            return self.sender.flush(grace).addCallback(lambda _: self.stop(grace=0))
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

    def inviteLink(self, with_passkey: bool = False) -> str:
        """A join link for someone else (Invite…), with the passkey if asked (see :func:`login.invite_link`)."""
        return login.invite_link(self, with_passkey)

    # ------------------------------------------------------------ messages

    def send(self, text: str, conv: Optional[str] = None, reply: Optional[int] = None) -> str:
        """
        Send a message to conversation ``conv`` (``"#room"`` or ``"@name"``;
        default: the default room), queued while offline.  Returns its client
        id; the listener hears ``messageAcked`` once the server has stored it.
        """
        self._typingSent.pop(conv or LOBBY, None)
        return self.sender.say(text, conv, reply)

    def flush(self, patience: float = 15.0) -> Deferred:
        """Wait for what is still waiting to be stored; fires with how many are left (see Sender.flush)."""
        return self.sender.flush(patience)

    def _send(self, frame: Dict[str, Any]) -> bool:
        if self.loggedIn and self.proto is not None:
            self.proto.sendFrame(frame)
            return True
        return False

    def _request(self, frame: Dict[str, Any], answer: str) -> Deferred:
        """Send a frame whose answer is a frame of type ``answer`` (or an error echoing its request id)."""
        return self.pending.ask(frame, self._send)

    def _answer(self, frame: Dict[str, Any], result: Any = None) -> bool:
        return self.pending.answer(frame, result)

    def who(self) -> None:
        self._send({"type": "who"})

    def loadOlder(self, limit: int = 50, conv: Optional[str] = None) -> None:
        """Ask for events of ``conv`` older than the oldest one held (answer: ``historyPage``)."""
        held = self.messages(conv or LOBBY)
        frame: Dict[str, Any] = {"type": "history", "limit": limit, **conv_fields(conv)}
        if held:
            frame["before"] = held[0]["id"]
        self._send(frame)

    def delete(self, event_id: int) -> None:
        self._send({"type": "delete", "id": event_id})

    @property
    def edits(self) -> bool:
        """Does the server do edits, replies and reactions (protocol 1.4)?"""
        return "edits" in (self.info.get("features") or ())

    def edit(self, event_id: int, text: str) -> Deferred:
        """Change the text of one's own message ``event_id``; fires once stored (or fails: RequestFailed)."""
        return self._request(requests.edit_frame(event_id, text), "done")

    def react(self, event_id: int, emoji: str, on: bool = True) -> Deferred:
        """Add (or take back) a reaction, one of ``wire.REACTIONS``, to a message or a shared file."""
        return self._request(requests.react_frame(event_id, emoji, on), "done")

    @property
    def profiles(self) -> bool:
        """Does the server keep profiles, bios and pictures (protocol 1.5)?"""
        return "profiles" in (self.info.get("features") or ())

    def setProfile(self, bio: Optional[str] = None, picture: Optional[bytes] = None) -> Deferred:
        """Change one's bio and/or picture (PNG or JPEG bytes, at most 64 KiB; ``b""`` removes it)."""
        return self._request(requests.profile_frame(bio, picture), "done")

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
        last = self.model.read(conv)
        if last is not None and self.rich:
            self._send({"type": "read", "id": last, **conv_fields(conv)})

    def setPresence(self, away: Optional[bool] = None, status: Optional[str] = None) -> None:
        frame: Dict[str, Any] = {"type": "presence"}
        if away is not None:
            frame["away"] = away
        if status is not None:
            frame["status"] = status[: wire.MAX_STATUS_CHARS]
        self._send(frame)

    def register(self, password: str) -> Deferred:
        """Protect this user's name with ``password``: later logins with the name need it."""

        def done(frame: Dict[str, Any]) -> Dict[str, Any]:
            self.password = password  # reconnects use it from now on
            return frame

        return self._request({"type": "register", "password": password}, "registered").addCallback(done)

    def oper(self, passkey: str) -> Deferred:
        """Become an operator with the server's admin passkey."""
        return self._request({"type": "oper", "passkey": passkey}, "oper")

    def moderate(self, action: str, **members: Any) -> Deferred:
        """An operator action (see PROTOCOL.rst, ``mod``); fires with the ``mod-done`` frame."""
        frame = {"type": "mod", "action": action, **{k: v for k, v in members.items() if v is not None}}
        return self._request(frame, "mod-done")

    # ------------------------------------------------------------ files

    def share(self, path: str, name: Optional[str] = None, conv: Optional[str] = None) -> Transfer:
        """Upload a file; its size and SHA-256 are computed in a thread; progress comes as ``transferChanged``."""
        return self.transfers.share(path, name, conv)

    def download(self, file: Dict[str, Any], dest: str, quiet: bool = False) -> Transfer:
        """Download a shared file to ``dest`` (via ``dest + '.part'``; an interrupted one resumes)."""
        return self.transfers.download(file, dest, quiet)

    def cancel(self, transfer: Transfer) -> None:
        """Stop an upload or download; a partial download is removed."""
        self.transfers.cancel(transfer)

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
        hello = login.hello(self, proto)
        if hello is not None:
            proto.sendFrame(hello)
            self._schedulePing()

    def _disconnected(self, proto: ClientProtocol, reason: Any) -> None:
        if proto is not self.proto:
            return
        self.proto = None
        self.loggedIn = False
        if self._pingCall is not None and self._pingCall.active():
            self._pingCall.cancel()
        self._pingCall = None
        self.transfers.disconnected()
        self.pending.failAll(RequestFailed("not-connected", "The connection was lost."))
        self.model.clearTyping()
        self.operator = False
        if not self.stopped and self.everLoggedIn:
            self._setState(RECONNECTING, "Connection lost; reconnecting…")

    def _schedulePing(self) -> None:
        self._pingCall = self.reactor.callLater(1.0 if self.pingInterval > 1 else self.pingInterval / 2,
                                                self._checkAlive)

    def _checkAlive(self) -> None:
        proto = self.proto
        if proto is None:
            return
        now = self.reactor.seconds()
        if self._pingSent is not None and now - self._pingSent > self.pingTimeout:
            self.log.info("The server stopped answering; reconnecting")
            proto.transport.abortConnection()
            return
        if self._pingSent is None and now - self._lastHeard > self.pingInterval:
            self._pingSent = now
            proto.sendFrame({"type": "ping"})
        self._schedulePing()

    # ------------------------------------------------------------ frames

    def _frameReceived(self, proto: ClientProtocol, frame: Any) -> None:
        self._lastHeard = self.reactor.seconds()
        self._pingSent = None
        if isinstance(frame, wire.Chunk):
            self.transfers.chunk(frame)
            return
        handler = FRAMES.get(frame["type"])
        if handler is not None:
            try:
                handler(self, proto, frame)
            except Exception:
                # a bug in a listener (the UI) must not break the connection
                self.log.failure("Error handling a {type} frame", type=frame["type"])

    def _setState(self, state: str, detail: str) -> None:
        self.state = state
        self.listener.stateChanged(state, detail)

