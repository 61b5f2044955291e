"""Helpers for tests that run clients and servers in the real reactor (trial)."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Dict, List

from twisted.internet import defer, reactor

from tcpchat.auth import PasskeyVerifier
from tcpchat.client.core import ChatClient, ChatListener
from tcpchat.server.chat import ChatFactory, Limits
from tcpchat.server.files import FileService
from tcpchat.store.sqlite import Store

from .helpers import PASSKEY

TIMEOUT = 30.0


class Recorder(ChatListener):
    """Remembers everything a client core reports and lets tests wait for it."""

    def __init__(self) -> None:
        self.states: List[tuple] = []
        self.events: List[Dict[str, Any]] = []
        self.acks: List[Dict[str, Any]] = []
        self.errors: List[tuple] = []
        self.transfers: List[tuple] = []
        self.users: List[str] = []
        self.changes: List[tuple] = []
        self._waiters: List[tuple] = []

    def _poke(self) -> None:
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate():
                self._waiters.remove(waiter)
                d.callback(None)

    def until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> defer.Deferred:
        """Fires as soon as ``predicate()`` holds after some report (or now)."""
        if predicate():
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((predicate, d))
        d.addTimeout(timeout, reactor)
        return d

    def stateChanged(self, state: str, detail: str) -> None:
        self.states.append((state, detail))
        self._poke()

    def eventReceived(self, event: Dict[str, Any], replay: bool) -> None:
        self.events.append(event)
        self._poke()

    def messageAcked(self, cid: str, event: Dict[str, Any]) -> None:
        self.acks.append(event)
        self._poke()

    def usersChanged(self, users: List[str]) -> None:
        self.users = users
        self._poke()

    def errorReceived(self, code: str, message: str) -> None:
        self.errors.append((code, message))
        self._poke()

    def eventChanged(self, event: Dict[str, Any], change: Dict[str, Any], conv: str) -> None:
        self.changes.append((event, change, conv))
        self._poke()

    def transferChanged(self, transfer: Any) -> None:
        self.transfers.append((transfer.tid, transfer.state, transfer.done))
        self._poke()

    def texts(self) -> List[str]:
        return [e.get("text") for e in self.events if e["kind"] == "message"]


def fast_retry(attempt: int) -> float:
    return 0.05


class InProcessServer:
    """A ChatFactory listening on 127.0.0.1 in this reactor, with a synchronous store."""

    #: port -> the server listening there now (so clients keep their pins per server)
    listening: Dict[int, "InProcessServer"] = {}

    def __init__(self, path: str, tls: bool = True, web: bool = False, **limits: Any) -> None:
        self.store = Store(str(path) + "/chat.sqlite3")
        self.tls = tls
        self.web = web
        self.path = str(path)
        limits.setdefault("message_rate", 0)
        self.factory = ChatFactory(self.store, PasskeyVerifier(PASSKEY), reactor, "test server", Limits(**limits))
        self.factory.files = FileService(self.factory, str(path) + "/files")
        self.port: Any = None

    async def start(self, port: int = 0) -> int:
        await self.factory.start()
        listening: Any = self.factory
        if self.web:  # TCP clients and WebSockets on one port, as twistd serves them
            from tcpchat.server.lazytls import SniffingFactory
            from tcpchat.server.site import make_site

            listening = SniffingFactory(self.factory, lambda sniffer: make_site(self.factory, sniffer.upgraded))
        if self.tls:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            from tcpchat import tls

            cert, key = tls.ensure_certificate(self.path, "localhost")
            with open(cert, "rb") as f:
                self.fingerprint = tls.fingerprint_pem(f.read())
            listening = TLSMemoryBIOFactory(tls.server_options(cert, key), False, listening)
        self.port = reactor.listenTCP(port, listening, interface="127.0.0.1")
        InProcessServer.listening[self.port.getHost().port] = self
        return self.port.getHost().port

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        await self.factory.stop()
        await turns(lambda: not self.factory.connections)


async def turns(predicate: Callable[[], bool], limit: int = 2000) -> None:
    """Let the reactor run until ``predicate()`` holds (bounded)."""
    from twisted.internet import task

    for _ in range(limit):
        if predicate():
            return
        await task.deferLater(reactor, 0.005, lambda: None)
    raise AssertionError("condition never held")


KNOWN_DIR = tempfile.mkdtemp(prefix="tcpchat-known-")
#: pins are kept per port *and* server: test servers come and go, and a later one may get an earlier one's port
_known: Dict[tuple, str] = {}


def known_servers_for(port: int, server: Any = None) -> str:
    key = (port, id(server) if server is not None else None)
    if key not in _known:
        _known[key] = os.path.join(KNOWN_DIR, f"known-{port}-{len(_known)}.json")
    return _known[key]


def make_client(port: int, name: str, passkey: str = PASSKEY, **kw: Any) -> tuple:
    recorder = Recorder()
    kw.setdefault("retry", fast_retry)
    kw.setdefault("known_servers", known_servers_for(port, InProcessServer.listening.get(port)))
    client = ChatClient("127.0.0.1", port, name, passkey, recorder, reactor, **kw)
    return client, recorder


class ScriptedBrowser:
    """What a browser's side of the protocol shares, whatever carries it: ``send`` a frame, collect ``frames``."""

    frames: List[Dict[str, Any]]

    def send(self, frame: Dict[str, Any]) -> Any:
        """Send one frame (a transport may return something to await)."""
        raise NotImplementedError

    async def sendAndWait(self, frame: Dict[str, Any]) -> None:
        import inspect

        sent = self.send(frame)
        if inspect.isawaitable(sent):
            await sent

    async def login(self, name: str, passkey: str = PASSKEY, **extra: Any) -> Dict[str, Any]:
        """The proof as a browser does it: SPAKE2 with no channel binding."""
        from tcpchat import pake

        state, message = pake.client_start(passkey)
        await self.sendAndWait({"type": "hello", "version": 1, "name": name, "pake": message.hex(), **extra})
        await turns(lambda: self.frames)
        answer = self.frames.pop(0)
        if answer["type"] != "pake":
            return answer
        try:
            confirm = pake.client_finish(state, bytes.fromhex(answer["msg"]), bytes.fromhex(answer["confirm"]), b"")
        except pake.PakeError:
            return {"type": "error", "code": "bad-passkey"}
        await self.sendAndWait({"type": "pake-confirm", "confirm": confirm.hex()})
        await turns(lambda: any(f["type"] in ("synced", "error") for f in self.frames))
        return next(f for f in self.frames if f["type"] in ("synced", "error"))

    def texts(self) -> List[str]:
        return [f.get("text") for f in self.frames if f["type"] == "event" and f["kind"] == "message"]


class WebServerCase:
    """(A trial TestCase mixin) a server with TCP and web clients on one port (plaintext: the framing is tested)."""

    timeout = 60
    limits: Dict[str, Any] = {}

    async def setUp(self) -> None:
        self.tmp = self.mktemp()  # type: ignore[attr-defined]
        os.makedirs(self.tmp)
        self.server = InProcessServer(self.tmp, tls=False, web=True, **self.limits)
        self.port = await self.server.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.server.stop()))  # type: ignore[attr-defined]
