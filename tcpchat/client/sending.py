"""
What this user writes, from the input box to the server's ack: validated,
kept in the outbox (on disk if asked), sent a few at a time in order, sent
again after a pause when the server asks for one, and waited for on leaving.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Dict, Optional, Set

from twisted.internet.defer import Deferred, succeed

from tcpchat import wire
from tcpchat.client.model import conv_fields
from tcpchat.client.outbox import Outbox


class Sender:
    """The sending half of a :class:`~tcpchat.client.core.ChatClient` (it holds the connection)."""

    def __init__(self, client: Any, path: Optional[str] = None) -> None:
        self.client = client
        self.outbox = Outbox(path, _thread_runner(client.reactor) if path else None)
        self._flushers: Set[Callable[[], None]] = set()

    def say(self, text: str, conv: Optional[str] = None, reply: Optional[int] = None) -> str:
        if wire.is_blank(text):
            raise ValueError("Empty messages are not sent.")
        if len(text.encode("utf-8")) > wire.MAX_TEXT_BYTES:
            raise ValueError(f"Messages are limited to {wire.MAX_TEXT_BYTES} bytes.")
        cid = uuid.uuid4().hex
        frame: Dict[str, Any] = {"type": "say", "text": text, "cid": cid, **conv_fields(conv)}
        if reply is not None:
            frame["reply"] = reply  # (answers event ``reply``: the server quotes it)
        self.outbox.add(frame)
        self.pump()
        return cid

    def pump(self) -> None:
        """Put the next waiting messages on the wire (a few at a time: see outbox.WINDOW)."""
        client = self.client
        if client.loggedIn and client.proto is not None:
            for frame in self.outbox.toSend():
                client.proto.sendFrame(frame)

    def flush(self, patience: float = 15.0) -> Deferred:
        """
        Wait for the messages still waiting to be stored.  Fires with how many
        are left: 0 once all are, or as many as remain when none has been
        stored for ``patience`` seconds (5 when not connected).
        """
        if not self.outbox:
            return succeed(0)
        d: Deferred = Deferred()

        def over() -> None:
            self._flushers.discard(progress)
            if not d.called:
                d.callback(len(self.outbox))

        timer = self.client.reactor.callLater(patience if self.client.loggedIn else min(patience, 5.0), over)

        def progress() -> None:
            if not self.outbox:
                if timer.active():
                    timer.cancel()
                over()
            elif timer.active():
                timer.reset(patience)

        self._flushers.add(progress)
        return d

    def rest(self, cid: str, seconds: float = 1.0) -> None:
        """The server could not store ``cid`` now (slow down, busy): send it again after a pause."""
        outbox = self.outbox
        outbox.inFlight.discard(cid)
        outbox.resting.add(cid)

        def rested() -> None:
            outbox.resting.discard(cid)
            self.pump()

        self.client.reactor.callLater(seconds, rested)
        self.pump()

    def changed(self) -> None:
        """A message left the outbox (stored, or refused for good)."""
        for progress in list(self._flushers):
            progress()
        self.pump()

    def ownMessageStored(self, event: Dict[str, Any]) -> bool:
        """An event of ours whose ack a drop ate: take it as the ack."""
        cid = event.get("cid")
        if cid not in self.outbox:
            return False
        del self.outbox[cid]
        self.changed()
        self.client.listener.messageAcked(cid, event)
        return True


def _thread_runner(reactor: Any) -> Any:
    """Run blocking file work in the reactor's thread pool (a fake reactor without one: right here)."""
    from twisted.internet.defer import maybeDeferred
    from twisted.internet.threads import deferToThreadPool

    if hasattr(reactor, "getThreadPool"):
        return lambda f, *a: deferToThreadPool(reactor, reactor.getThreadPool(), f, *a)
    return lambda f, *a: maybeDeferred(f, *a)
