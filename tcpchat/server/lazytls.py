"""
Connections that cost nothing until the client speaks, and one port for
every kind of client.

An accepted socket first gets a small :class:`Waiting` protocol; only when
the client's first bytes arrive is the real protocol made — by the factory
the owner picks from those bytes:

* :class:`LazyTLSFactory`: the TLS machinery (an OpenSSL connection and its
  buffers, ~45 KiB), on the ClientHello.  (10,000 silent sockets held a
  plain ``TLSMemoryBIOFactory`` server at ~550 MiB.)
* :class:`SniffingFactory` (inside TLS, or on a plaintext port): the chat
  protocol for a tcpchat frame (a 4-byte length, whose first byte is 0 for
  any frame the protocol allows), the web site for an HTTP request
  (``GET``, ``POST``…: the browser client and its WebSocket).

A waiting socket counts toward the connection caps from the moment it is
accepted and is aborted after its owner's timeout.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, List, Optional

from twisted.internet.interfaces import IHandshakeListener, IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

#: bytes a socket may send before its turn to start TLS comes (a ClientHello is well under this)
MAX_EARLY = 16 * 1024
#: the first byte of an HTTP request line (a method's first letter)
HTTP_STARTS = frozenset(b"GHPODCTU")


@implementer(IHandshakeListener)
class Waiting(Protocol):
    """One accepted socket, before and after its first bytes."""

    __slots__ = ("owner", "host", "inner", "timer", "handshaken", "held", "early")
    transport: Any

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.inner: Optional[Protocol] = None
        self.timer: Any = None
        self.host = ""
        self.handshaken = False
        #: this socket counts toward the caps (a slot from ChatFactory.holdSocket)
        self.held = False
        #: first bytes waiting for their turn (LazyTLSFactory paces TLS handshakes), or None
        self.early: Optional[bytes] = None

    def connectionMade(self) -> None:
        chat = self.owner.chat
        self.host = str(getattr(self.transport.getPeer(), "host", ""))
        now = self.owner.refuseAtOnce(self.host)
        if now is not None:  # refused: the chat protocol says why, in the protocol's own words, and closes
            self.inner = now.buildProtocol(self.transport.getPeer())
            self.inner.makeConnection(self.transport)
            return
        if not chat.holdSocket(self.host):
            chat.noteAbort(self, f"refused {self.owner.stage}: over a connection cap")
            self.transport.abortConnection()
            return
        self.held = True
        self.timer = chat.clock.callLater(self.owner.timeout(), self._timedOut)

    def _timedOut(self) -> None:
        self.timer = None
        self.owner.chat.noteAbort(self, f"silent {self.owner.stage}")
        self.transport.abortConnection()

    def _stopTimer(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None

    def release(self) -> None:
        """Give back this socket's slot in the caps (the real protocol counts it from now on, or it is gone)."""
        self._stopTimer()
        if self.held:
            self.held = False
            self.owner.chat.releaseSocket(self.host)

    def dataReceived(self, data: bytes) -> None:
        if self.inner is None:
            if not data:
                return
            if self.early is not None or self.owner.mustWait(self):
                self.early = (self.early or b"") + data
                if len(self.early) > MAX_EARLY:
                    self.transport.abortConnection()
                return
            self.begin(data)
            return
        self.inner.dataReceived(data)

    def begin(self, data: bytes) -> None:
        """Make the real protocol for these first bytes and hand them over."""
        if self.inner is None:
            factory = self.owner.pick(data)
            if self.owner.keepsCount(factory):
                self._stopTimer()  # a web request: it has timeouts of its own, and counts until it ends or upgrades
                self.owner.counting(self)
            else:
                self.release()  # from here on the chat protocol counts (and times) this connection
            self.inner = factory.buildProtocol(self.transport.getPeer())
            self.inner.makeConnection(self.transport)
            if self.handshaken and IHandshakeListener.providedBy(self.inner):
                self.inner.handshakeCompleted()
        assert self.inner is not None
        self.inner.dataReceived(data)

    def turnCame(self) -> None:
        """(LazyTLSFactory) this socket's TLS handshake may start now."""
        data, self.early = self.early, None
        if data and self.transport is not None and self.transport.connected:
            self.begin(data)

    def handshakeCompleted(self) -> None:
        """(Inside TLS) the handshake is over: tell the real protocol, now or once it exists."""
        self.handshaken = True
        if self.inner is not None and IHandshakeListener.providedBy(self.inner):
            self.inner.handshakeCompleted()

    def connectionLost(self, reason: Any = None) -> None:
        self.early = None  # (if it was waiting for its turn, the turn skips it)
        try:
            if self.inner is not None:
                self.inner.connectionLost(reason)
        finally:
            self.owner.forget(self)
            self.release()


class LazyTLSFactory(Factory):
    """
    Wraps ``wrapped`` (by default ``chat``, the ChatFactory) in TLS made on the
    first byte of each connection.  The handshakes are paced: at most
    ``perTurn`` start in one turn of the reactor, the rest wait for the next
    turns, so that a crowd of connections arriving at once (a reconnect storm,
    or an attack) costs everyone else a few milliseconds, not the time of all
    their handshakes in a row.
    """

    noisy = False
    stage = "before TLS"
    perTurn = 4

    def __init__(self, contextFactory: Any, chat: Any, wrapped: Any = None) -> None:
        self.chat = chat
        self.tls = TLSMemoryBIOFactory(contextFactory, False, wrapped if wrapped is not None else chat)
        self.tls.noisy = False
        self.turns: Deque[Waiting] = deque()
        self._turn: Any = None
        self._started = 0

    def mustWait(self, waiting: Waiting) -> bool:
        """Count a handshake starting now; True if it must wait for a later turn (it is queued)."""
        if self._turn is None:
            self._started = 0
            self._turn = self.chat.clock.callLater(0, self._nextTurn)
        if self._started < self.perTurn and not self.turns:
            self._started += 1
            return False
        self.turns.append(waiting)
        return True

    def _nextTurn(self) -> None:
        self._turn = None
        self._started = 0
        turns = self.turns
        while turns and self._started < self.perTurn:
            waiting = turns.popleft()
            if waiting.early is not None:
                self._started += 1
                waiting.turnCame()
        if turns or self._started:
            self._turn = self.chat.clock.callLater(0, self._nextTurn)

    def timeout(self) -> float:
        return float(self.chat.limits.handshake_timeout)

    def refuseAtOnce(self, host: str) -> Any:
        return None  # before TLS there is no way to say why: over a cap, the socket is just closed

    def keepsCount(self, factory: Any) -> bool:
        return False

    def counting(self, waiting: Waiting) -> None:
        pass

    def forget(self, waiting: Waiting) -> None:
        pass

    def pick(self, data: bytes) -> Any:
        return self.tls

    def doStart(self) -> None:
        self.tls.doStart()

    def doStop(self) -> None:
        self.tls.doStop()

    def buildProtocol(self, addr: Any) -> Waiting:
        return Waiting(self)


@implementer(IProtocolNegotiationFactory)
class SniffingFactory(Factory):
    """
    The chat protocol or the web site, chosen by a connection's first byte.
    ``site``: the site, or a callable making it on the first web request (its
    libraries then load only when a browser comes).
    """

    noisy = False
    stage = "before its first byte"

    def __init__(self, chat: Any, site: Any = None) -> None:
        self.chat = chat
        self.site = site
        self._started = False
        #: web connections still counting toward the caps, by transport (until they end or become WebSockets)
        self.web: Dict[Any, Waiting] = {}

    def timeout(self) -> float:
        return float(self.chat.limits.login_timeout)

    def acceptableProtocols(self) -> List[bytes]:
        """
        ALPN: browsers (and curl) offer it; HTTP/1.1 is what the site speaks.  (Twisted answers an ALPN
        offer it has no protocol for with a TLS alert, so without this no browser could connect.)
        """
        return [b"http/1.1"]

    def mustWait(self, waiting: Waiting) -> bool:
        return False  # (choosing a protocol costs nothing)

    def refuseAtOnce(self, host: str) -> Any:
        """A banned address or one over a cap is answered at once (by the chat protocol), not after its first byte."""
        return self.chat if self.chat.refusal(host) is not None else None

    def keepsCount(self, factory: Any) -> bool:
        return factory is not self.chat

    def counting(self, waiting: Waiting) -> None:
        self.web[waiting.transport] = waiting

    def forget(self, waiting: Waiting) -> None:
        if self.web.get(waiting.transport) is waiting:
            del self.web[waiting.transport]

    def upgraded(self, transport: Any) -> None:
        """A web connection became a WebSocket: its session counts it now (ChatFactory.admit)."""
        waiting = self.web.pop(transport, None)
        if waiting is not None:
            waiting.release()

    def pick(self, data: bytes) -> Any:
        if self.site is not None and data[0] in HTTP_STARTS:
            if not isinstance(self.site, Factory):
                self.site = self.site(self)
                if self._started:
                    self.site.doStart()
            return self.site
        return self.chat

    def doStart(self) -> None:
        self._started = True
        self.chat.doStart()
        if isinstance(self.site, Factory):
            self.site.doStart()

    def doStop(self) -> None:
        self._started = False
        self.chat.doStop()
        if isinstance(self.site, Factory):
            self.site.doStop()

    def buildProtocol(self, addr: Any) -> Waiting:
        return Waiting(self)
