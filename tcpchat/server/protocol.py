"""
The TCP transport: one connection, length-prefixed frames.

This is only the carrier.  It frames and decodes, reports when the peer
stops or starts reading (it is a streaming producer on its transport), times
out a TLS handshake that never finishes, and hands every frame to its
:class:`~tcpchat.server.session.Session`, which holds the user and applies the
rules.  The session acts back through :class:`~tcpchat.server.session.ILink`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from twisted.internet.interfaces import IHandshakeListener, IPushProducer, ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

from tcpchat import tls, wire
from tcpchat.framing import FrameReceiver
from tcpchat.server import login, rules  # noqa: F401  (they register the frame handlers)
from tcpchat.server.session import ILink, Session, Shared, int32_framed
from tcpchat.wire import ErrorCode


@implementer(IPushProducer, IHandshakeListener, ILink)
class ChatProtocol(FrameReceiver):
    """The server side of one TCP (or TLS) connection."""

    #: the transport, as metrics and tcpchat-admin name it
    kind = "tcp"

    log = Logger()
    MAX_LENGTH = wire.MAX_FRAME

    factory: Any
    session: Session
    transport: Any

    def connectionMade(self) -> None:
        address = self.transport.getPeer()
        host = str(getattr(address, "host", address))
        port = getattr(address, "port", None)
        self.session = Session(self.factory, self, host, f"{host}:{port}" if port is not None else host)
        self.handshaken = not ISSLTransport.providedBy(self.transport)
        self._handshakeTimer: Optional[Any] = None
        if not self.handshaken:
            self._handshakeTimer = self.factory.clock.callLater(self.factory.limits.handshake_timeout,
                                                                self.handshakeTimedOut)
        self.transport.registerProducer(self, True)
        self.session.start()

    def connectionLost(self, reason: Any = None) -> None:
        self._stopHandshakeTimer()
        self.session.lost()

    # ------------------------------------------------------------ receiving

    def stringReceived(self, payload: bytes) -> None:
        self.session.receivePayload(payload)

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.warn("Frame of {length} bytes from {peer} refused", length=length, peer=self.session.peer)
        self.session.sendError(ErrorCode.FRAME_TOO_LARGE)
        self.session.close()
        self._unprocessed = b""

    # ------------------------------------------------------------ TLS

    def handshakeCompleted(self) -> None:
        self.handshaken = True
        self._stopHandshakeTimer()

    def handshakeTimedOut(self) -> None:
        self._handshakeTimer = None
        if not self.handshaken:
            self.session.abort("TLS handshake timeout")

    def _stopHandshakeTimer(self) -> None:
        if self._handshakeTimer is not None and self._handshakeTimer.active():
            self._handshakeTimer.cancel()
        self._handshakeTimer = None

    # ------------------------------------------------------------ ILink: what the session asks of us

    def sendPayloads(self, payloads: Sequence[bytes], shared: Optional[Shared]) -> None:
        if shared is not None and payloads is shared.payloads:
            data = shared.cache.get("int32")
            if data is None:  # framed once, written to every connection that gets the whole batch
                data = shared.cache["int32"] = b"".join(int32_framed(p) for p in payloads)
        elif len(payloads) == 1:
            data = int32_framed(payloads[0])
        else:
            data = b"".join(int32_framed(p) for p in payloads)
        self.transport.write(data)

    def loseConnection(self) -> None:
        # a TLS transport only closes once no producer is registered on it
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        self.transport.abortConnection()

    def pauseReading(self) -> None:
        self.paused = True  # frames already buffered wait too
        self.transport.pauseProducing()

    def resumeReading(self) -> None:
        self.paused = False
        self.transport.resumeProducing()
        self.dataReceived(b"")  # frames that arrived while we were not reading

    def channelBinding(self) -> bytes:
        return tls.channel_binding(self.transport)

    # ------------------------------------------------------------ IPushProducer: is the peer reading?

    def pauseProducing(self) -> None:
        self.session.delivery.writerPaused()

    def resumeProducing(self) -> None:
        self.session.delivery.writerResumed()

    def stopProducing(self) -> None:
        pass

    # what tests and tools look at
    @property
    def live(self) -> bool:
        return self.session.delivery.live

    @property
    def writePaused(self) -> bool:
        return self.session.delivery.writePaused
