"""The client's side of one TCP (or TLS) connection: framing only; every decision is the ChatClient's."""

from __future__ import annotations

from typing import Any, Dict

from twisted.internet.error import ConnectionRefusedError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Factory
from zope.interface import implementer

from tcpchat import wire
from tcpchat.framing import FrameReceiver


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


@implementer(IPushProducer, IHandshakeListener)
class ClientProtocol(FrameReceiver):
    """One connection to the server."""

    MAX_LENGTH = wire.MAX_FRAME
    client: Any
    transport: Any

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
        self.client.transfers.pump()

    def stopProducing(self) -> None:
        pass


class ClientFactory(Factory):
    noisy = False

    def __init__(self, client: Any) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> ClientProtocol:
        proto = ClientProtocol()
        proto.client = self.client
        proto.factory = self
        return proto
