"""
The WebSocket transport: the same frames as TCP, one per WebSocket message.

A control frame is a text message (the JSON payload); a file data frame is a
binary message (the same bytes as on TCP, without the length prefix).  Each
connection is a :class:`~tcpchat.server.session.Session` like a TCP one:
same login, rules, limits and delivery.  The WebSocket lives at ``/ws`` on
the same port (and TLS) as the TCP protocol (see ``lazytls.SniffingFactory``).

Browsers cannot bind the login proof to TLS (no keying-material exporter for
page scripts): the proof's channel binding is empty here; docs/SECURITY.rst
says what that means.
"""

from __future__ import annotations

import struct
from typing import Any, Optional, Sequence

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from tcpchat import wire
from tcpchat.server import login, rules  # noqa: F401  (they register the frame handlers)
from tcpchat.server.session import ILink, Session
from tcpchat.wire import ErrorCode, ProtocolError


@implementer(ILink, IPushProducer)
class ChatWebSocket(WebSocketServerProtocol):
    """One browser (or other WebSocket client) connection.  (``log`` is autobahn's: its level is set in make_site.)"""

    #: the transport, as metrics and tcpchat-admin name it
    kind = "websocket"

    session: Optional[Session] = None
    handshaken = True
    transport: Any
    factory: Any

    @property
    def chat(self) -> Any:
        return self.factory.chat

    def onOpen(self) -> None:
        peer = self.transport.getPeer()
        host = str(getattr(peer, "host", peer))
        port = getattr(peer, "port", None)
        self.session = Session(self.chat, self, host, f"{host}:{port}" if port is not None else host)
        self.factory.upgraded(self.transport)  # the web connection's slot in the caps passes to the session
        self.transport.unregisterProducer()  # (the HTTP channel that upgraded to this WebSocket was one)
        self.transport.registerProducer(self, True)
        self.session.start()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is None:
            return
        if isBinary != (payload[:1] == bytes([wire.DATA_TAG])):
            session.receiveBad(ProtocolError(ErrorCode.BAD_FRAME, "Control frames are text messages; data frames "
                                             "are binary messages."))
            return
        session.receivePayload(payload)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        for name in ("closeHandshakeTimeoutCall", "openHandshakeTimeoutCall"):
            call = getattr(self, name, None)  # the connection is gone: nothing left to time out
            if call is not None and call.active():
                call.cancel()
        if self.session is not None:
            self.session.lost()

    # ------------------------------------------------------------ ILink

    def sendPayloads(self, payloads: Sequence[bytes], shared: Any) -> None:
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        # server-to-client frames are never masked (and compression is off), so the bytes of a batch that many
        # sessions get are framed once and written as they are, like the TCP transport's shared bytes
        if shared is not None and payloads is shared.payloads:
            data = shared.cache.get("ws")
            if data is None:
                data = shared.cache["ws"] = ws_framed(payloads)
        else:
            data = ws_framed(payloads)
        self.transport.write(data)

    def loseConnection(self) -> None:
        self.transport.unregisterProducer()
        self.sendClose(1000)

    def abortConnection(self) -> None:
        self.transport.abortConnection()

    def pauseReading(self) -> None:
        self.transport.pauseProducing()

    def resumeReading(self) -> None:
        self.transport.resumeProducing()

    def channelBinding(self) -> bytes:
        return b""  # page scripts cannot export TLS keying material

    # ------------------------------------------------------------ IPushProducer: is the peer reading?

    def pauseProducing(self) -> None:
        if self.session is not None:
            self.session.delivery.writerPaused()

    def resumeProducing(self) -> None:
        if self.session is not None:
            self.session.delivery.writerResumed()

    def stopProducing(self) -> None:
        pass


_DATA = bytes([wire.DATA_TAG])


def ws_framed(payloads: Sequence[bytes]) -> bytes:
    """Unmasked, unfragmented WebSocket frames (RFC 6455 §5.2): text for control frames, binary for data."""
    out = []
    for payload in payloads:
        first = 0x82 if payload[:1] == _DATA else 0x81
        n = len(payload)
        if n < 126:
            out.append(struct.pack(">BB", first, n))
        elif n < 65536:
            out.append(struct.pack(">BBH", first, 126, n))
        else:
            out.append(struct.pack(">BBQ", first, 127, n))
        out.append(payload)
    return b"".join(out)


class _Timers:
    def __init__(self, clock: Any) -> None:
        self.clock = clock

    def call_later(self, delay: float, func: Any, *args: Any, **kwargs: Any) -> Any:
        return self.clock.callLater(delay, func, *args, **kwargs)


def ws_resource(chat: Any, upgraded: Any = None) -> WebSocketResource:
    """
    The WebSocket's resource (at ``/ws``).  ``upgraded(transport)`` is told
    when a web connection becomes a WebSocket (its session then counts it
    toward the caps).
    """
    import txaio

    txaio.use_twisted()
    txaio.set_global_log_level("warn")  # type: ignore[attr-defined]  # autobahn's per-connection debug lines (every dropped phone) are noise
    factory: Any = WebSocketServerFactory()
    factory.protocol = ChatWebSocket
    factory.chat = chat
    factory.upgraded = upgraded or (lambda transport: None)
    factory.setProtocolOptions(
        maxMessagePayloadSize=wire.MAX_FRAME, maxFramePayloadSize=wire.MAX_FRAME,
        openHandshakeTimeout=chat.limits.login_timeout, closeHandshakeTimeout=chat.limits.close_grace,
        autoFragmentSize=0, perMessageCompressionAccept=lambda offers: None, failByDrop=False,
    )
    # autobahn's timers (handshake timeouts) on the server's own clock, one cancellable call each
    # (txaio's batched timer leaves a pending bucket call behind every cancelled one)
    factory._batched_timer = _Timers(chat.clock)
    return WebSocketResource(factory)
