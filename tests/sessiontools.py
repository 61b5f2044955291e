"""The session core with no transport: a link that records what the session sends."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, List, Optional, Sequence

from zope.interface import implementer

from tcpchat import wire
from tcpchat.server import protocol  # noqa: F401  (registers the frame handlers)
from tcpchat.server.session import ILink, Session

from .helpers import make_factory


@implementer(ILink)
class FakeLink:
    """What a transport would do, recorded: frames sent, closed, aborted, reading paused."""

    handshaken = True

    def __init__(self) -> None:
        self.sent: List[bytes] = []
        self.closed = self.aborted = self.paused = False

    def sendPayloads(self, payloads: Sequence[bytes], shared: Any) -> None:
        self.sent.extend(payloads)

    def loseConnection(self) -> None:
        self.closed = True

    def abortConnection(self) -> None:
        self.aborted = True

    def pauseReading(self) -> None:
        self.paused = True

    def resumeReading(self) -> None:
        self.paused = False

    def channelBinding(self) -> bytes:
        return b""

    def frames(self) -> List[Any]:
        out = [wire.decode(p, wire.SERVER_FRAMES) for p in self.sent]
        self.sent.clear()
        return out


def make_session_factory(path: Optional[str] = None) -> Any:
    return make_factory(Path(path or tempfile.mkdtemp(prefix="tcpchat-session-")))


def connect(factory: Any, host: str = "192.0.2.20") -> tuple:
    """A session as a transport would make one, started; (session, link)."""
    link = FakeLink()
    session = Session(factory, link, host, f"{host}:1")
    session.start()
    return session, link
