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
    {ErrorCode.BAD_PASSKEY, ErrorCode.BAD_NAME, ErrorCode.NAME_TAKEN, ErrorCode.BAD_VERSION, ErrorCode.TOO_MANY_ATTEMPTS}
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
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.host = host
        self.port = port
        self.name = name
        self.passkey = passkey
        self.listener = listener or ChatListener()
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._retry = retry or backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0)
        self.tls = tls
        self.knownServers = KnownServers(known_servers)
        self.trustNewCertificate = trust_new_certificate
        self.fingerprint: Optional[str] = None
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
        #: messages not yet acknowledged, in the order written: cid -> text
        self.outbox: Dict[str, str] = {}
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
        self._loginWaiter: Deferred = Deferred()
        self._service = ClientService(self.endpoint, _ClientFactory(self), retryPolicy=self._retryPolicy, clock=self.reactor)
        self._setState(CONNECTING, f"Connecting to {self.host}:{self.port}…")
        self._service.startService()
        first = self._service.whenConnected(failAfterFailures=1)
        first.addErrback(self._firstAttemptFailed)
        return self._loginWaiter

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

    def send(self, text: str) -> str:
        """
        Send a message (queued while offline).  Returns its client id; the
        listener hears ``messageAcked`` once the server has stored it.
        """
        if wire.is_blank(text):
            raise ValueError("Empty messages are not sent.")
        if len(text.encode("utf-8")) > wire.MAX_TEXT_BYTES:
            raise ValueError(f"Messages are limited to {wire.MAX_TEXT_BYTES} bytes.")
        cid = uuid.uuid4().hex
        self.outbox[cid] = text
        if self.loggedIn and self.proto is not None:
            self.proto.sendFrame({"type": "say", "text": text, "cid": cid})
        return cid

    def who(self) -> None:
        if self.loggedIn and self.proto is not None:
            self.proto.sendFrame({"type": "who"})

    def loadOlder(self, limit: int = 50) -> None:
        """Ask for events older than the oldest one held (answer: ``historyPage``)."""
        if self.loggedIn and self.proto is not None:
            before = min(self.events) if self.events else None
            frame: Dict[str, Any] = {"type": "history", "limit": limit}
            if before is not None:
                frame["before"] = before
            self.proto.sendFrame(frame)

    def messages(self) -> List[Dict[str, Any]]:
        """The conversation held so far, in order."""
        return [self.events[i] for i in sorted(self.events)]

    def share(self, path: str, name: Optional[str] = None) -> Transfer:
        """
        Upload a file.  Its size and SHA-256 are computed in a thread, so the
        UI stays responsive; progress arrives through ``transferChanged``.
        """
        name = wire.safe_file_name(name or os.path.basename(path))
        transfer = Transfer("upload", self._tid(), name, path)
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
        }
        pinned = None
        if self.tls:
            from tcpchat import tls as _tls

            self.fingerprint = _tls.peer_fingerprint(proto.transport)
            pinned = self.knownServers.get(self.host, self.port)
            if pinned is not None and pinned != self.fingerprint and not self.trustNewCertificate:
                message = (
                    f"WARNING: the server at {self.host}:{self.port} shows a different certificate than before "
                    f"({self.fingerprint}; it was {pinned}). Someone may be intercepting the connection. If the "
                    "server was reinstalled, ask its operator, then forget the old certificate and connect again."
                )
                proto.transport.abortConnection()
                self._giveUp(IdentityChanged(message), message)
                return
        if pinned is not None and pinned == self.fingerprint:
            hello["passkey"] = self.passkey  # a pinned, already-proved server: the cheap way
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
        proto.sendFrame({"type": "pake-confirm", "confirm": reply.hex()})

    def _on_welcome(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        if self.tls and self.fingerprint and self.knownServers.get(self.host, self.port) != self.fingerprint:
            self.knownServers.pin(self.host, self.port, self.fingerprint)  # proved by the login: trust it from now on
        self.loggedIn = True
        self.everLoggedIn = True
        self.info = frame
        self.name = frame["name"]
        self.users = list(frame["users"])
        self.listener.welcomed(frame)
        self.listener.usersChanged(self.users)

    def _on_synced(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        self._setState(CONNECTED, f"Connected to {self.info.get('server', self.host)} as {self.name}.")
        self.listener.synced()
        for cid, text in list(self.outbox.items()):  # written offline, or not acknowledged before a drop
            proto.sendFrame({"type": "say", "text": text, "cid": cid})
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
        self._record(event, bool(frame.get("replay")))
        kind, who = event["kind"], event.get("name")
        if kind == "join" and who and who not in self.users:
            self.users.append(who)
            self.listener.usersChanged(list(self.users))
        elif kind == "leave" and who in self.users:
            self.users.remove(who)
            self.listener.usersChanged(list(self.users))

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
        text = self.outbox.pop(cid, None) if cid else None
        self._outboxChanged()
        if frame["id"] in self.events:
            return
        event = {"id": frame["id"], "ts": frame["ts"], "kind": "message", "name": self.name}
        if text is not None:
            event["text"] = text
            event["cid"] = cid
            self.events[frame["id"]] = event
            self.listener.messageAcked(cid, event)

    def _on_users(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        self.users = list(frame["users"])
        self.listener.usersChanged(list(self.users))

    def _on_history_page(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        events = [e for e in frame["events"] if isinstance(e, dict) and e.get("id") not in self.events]
        for event in events:
            self.events[event["id"]] = event
        self.listener.historyPage(events, bool(frame["more"]))

    def _on_ping(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        reply: Dict[str, Any] = {"type": "pong"}
        if "n" in frame:
            reply["n"] = frame["n"]
        proto.sendFrame(reply)

    def _on_bye(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        message = frame.get("message") or "The server closed the connection."
        self.listener.errorReceived("bye", str(message))

    def _on_error(self, proto: ClientProtocol, frame: Dict[str, Any]) -> None:
        code = frame["code"]
        message = frame.get("message") or code
        if frame.get("ref") == "hello" or code in LOGIN_REFUSALS:
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
            if code in (ErrorCode.SLOW_DOWN, ErrorCode.INTERNAL):
                # not stored: try again in a moment (the server de-duplicates by cid)
                self.reactor.callLater(1.0, self._resend, cid)
                if code == ErrorCode.SLOW_DOWN:
                    return  # nothing for the user to do
            else:
                del self.outbox[cid]  # refused for good; retrying cannot help
                self._outboxChanged()
        self.listener.errorReceived(code, message)

    def _resend(self, cid: str) -> None:
        if cid in self.outbox and self.loggedIn and self.proto is not None:
            self.proto.sendFrame({"type": "say", "text": self.outbox[cid], "cid": cid})

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
                 "sha256": transfer.sha256}
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


class LoginRefused(Exception):
    """The server refused the login (wrong passkey, name taken, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TransferFailed(Exception):
    """An upload or download did not complete."""


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
