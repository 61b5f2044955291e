"""
TLS that costs nothing until the client speaks.

An accepted socket first gets a small :class:`Waiting` protocol; only when
the client's first bytes (its TLS ClientHello) arrive is the TLS machinery
(an OpenSSL connection and its buffers, ~45 KiB) and the chat protocol
made.  A socket that never says anything costs a few hundred bytes, counts
toward the connection caps from the moment it is accepted, and is aborted
after ``Limits.handshake_timeout``.  (10,000 such sockets held a plain
``TLSMemoryBIOFactory`` server at ~550 MiB.)
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory


class Waiting(Protocol):
    """One accepted socket, before and after its first bytes."""

    __slots__ = ("owner", "host", "tls", "timer")
    transport: Any

    def __init__(self, owner: "LazyTLSFactory") -> None:
        self.owner = owner
        self.tls: Optional[Protocol] = None
        self.timer: Any = None
        self.host = ""

    def connectionMade(self) -> None:
        chat = self.owner.chat
        self.host = str(getattr(self.transport.getPeer(), "host", ""))
        if not chat.holdSocket(self.host):
            chat.noteAbort(self, "refused before TLS: over a connection cap")
            self.transport.abortConnection()
            return
        self.timer = chat.clock.callLater(chat.limits.handshake_timeout, self._timedOut)

    def _timedOut(self) -> None:
        self.timer = None
        self.owner.chat.noteAbort(self, "TLS handshake timeout")
        self.transport.abortConnection()

    def _release(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None
            self.owner.chat.releaseSocket(self.host)

    def dataReceived(self, data: bytes) -> None:
        if self.tls is None:
            self._release()  # from here on the chat protocol counts (and times) this connection
            self.tls = self.owner.tls.buildProtocol(self.transport.getPeer())
            self.tls.makeConnection(self.transport)
        self.tls.dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.tls is None:
            self._release()
        else:
            self.tls.connectionLost(reason)


class LazyTLSFactory(Factory):
    """Wraps ``chat`` (a ChatFactory) in TLS made on the first byte of each connection."""

    noisy = False

    def __init__(self, contextFactory: Any, chat: Any) -> None:
        self.chat = chat
        self.tls = TLSMemoryBIOFactory(contextFactory, False, chat)
        self.tls.noisy = False

    def doStart(self) -> None:
        self.tls.doStart()

    def doStop(self) -> None:
        self.tls.doStop()

    def buildProtocol(self, addr: Any) -> Waiting:
        return Waiting(self)
