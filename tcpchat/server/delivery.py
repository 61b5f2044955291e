"""
Delivery of committed events to one session: live, in step with the server,
or catching up.

The factory offers every group commit's events to every session.  A session
that is *live* and in step takes them at once (one write of bytes shared with
everyone else).  One whose peer stopped reading queues them up to
``Limits.sendq`` bytes and then *falls behind*: it stops taking live events
and stops reading the peer's requests; once the peer reads again it replays
what it missed (from memory or storage), in order, exactly once, then goes
live again.  The transport reports the peer's reading through
:meth:`writerPaused` / :meth:`writerResumed` (its producer hooks).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from tcpchat.server import social


class Delivery:
    log = Logger()
    # (one per connection: slots keep an idle client small)
    __slots__ = ("session", "sentUpTo", "freshUpTo", "live", "synced", "_pumping", "writePaused", "pausedSince",
                 "queuedWhilePaused")

    def __init__(self, session: Any) -> None:
        self.session = session
        #: id of the last event this session has been given (or skipped: not for its eyes)
        self.sentUpTo = 0
        #: a login without ``after``: its replay is history, not catch-up, and the edits and reactions committed
        #: before it (up to this id) are already in the messages it shows
        self.freshUpTo = 0
        #: taking live events (in step); False while catching up
        self.live = False
        #: the login replay is over ("synced" was sent)
        self.synced = False
        self._pumping = False
        #: the peer is not reading what we send (the transport paused us)
        self.writePaused = False
        self.pausedSince: Optional[float] = None
        self.queuedWhilePaused = 0

    def queued(self, size: int) -> None:
        """``size`` bytes were queued for the peer outside the session's own accounting (shared frames)."""
        if self.writePaused:
            self.queuedWhilePaused += size

    def slow(self) -> bool:
        """True if more than ``Limits.sendq`` is queued for a peer that is not reading."""
        return self.writePaused and self.queuedWhilePaused > self.session.factory.limits.sendq

    def offer(self, events: List[Dict[str, Any]], shared: Any, senders: set,
              audiences: Optional[List[Any]] = None, quiet: Any = None) -> None:
        """
        The factory offers committed events (ascending ids) with their frame
        payloads (``shared``), and the names of those who sent messages among
        them; ``audiences`` says who may read each, when not everyone may read
        them all; ``quiet`` is the same batch without its joins and leaves, for a
        "roster" client in a crowd (tcpchat.server.roster).  Deliver them in one
        write if live and in step; otherwise catch-up will.
        """
        session = self.session
        if events[0]["id"] != self.sentUpTo + 1 and self.live and session.roster and \
                session.factory.roster.skips(self.sentUpTo):
            self.sentUpTo = events[0]["id"] - 1  # (only joins and leaves were between: it has them as rosters)
        if not self.live or events[0]["id"] != self.sentUpTo + 1:
            self.live = False
            return
        if self.slow():
            self.fallBehind()
            return
        self.sentUpTo = events[-1]["id"]
        if quiet is not None and session.roster:
            events, shared, audiences = quiet
            if not events:
                return
        name = session.name
        payloads: Sequence[bytes] = shared.payloads
        if audiences is not None:
            payloads = [p for e, p, aud in zip(events, payloads, audiences)
                        if session.canSee(aud) and not _own(e, name)]
        elif name not in senders:
            pass  # the shared bytes: nothing of ours to leave out
        else:
            payloads = [p for e, p in zip(events, payloads) if not _own(e, name)]  # the sender has its acks
        if payloads:
            session.factory.stats.deliveries["live"] += len(payloads)
            session.deliver(payloads, shared)

    def fallBehind(self) -> None:
        """Too much is queued for this peer: stop live delivery and reading."""
        if self.live:
            self.log.info("{name} is reading slowly; switching to catch-up", name=self.session.name)
            self.session.factory.stats.slowReaders += 1
        self.live = False
        self.session.holdReading("sendq")

    def pump(self) -> Deferred:
        """
        Send committed events after ``sentUpTo`` until in step with the
        server (then go live) or until the peer stops reading.
        """
        session = self.session

        async def pump() -> None:
            if self._pumping:
                return
            self._pumping = True
            try:
                factory = session.factory
                stats = factory.stats
                if self.sentUpTo < factory.lastId:
                    stats.catchups += 1
                while session.isLive() and not self.writePaused:
                    if self.sentUpTo >= factory.lastId:
                        if not self.synced:
                            self.synced = True
                            session.sendFrame({"type": "synced", "last": self.sentUpTo})
                        self.live = True
                        return
                    events = await factory.eventsAfter(self.sentUpTo, factory.limits.catchup_page)
                    for event in events:
                        if event["id"] <= self.sentUpTo:
                            continue
                        self.sentUpTo = event["id"]
                        if event["kind"] == "deleted" or not session.canSee(social.audience(event)):
                            continue
                        if event["id"] <= self.freshUpTo and event["kind"] in social.EDITS_KINDS:
                            continue
                        frame = {"type": "event", **event}
                        if not self.synced:
                            frame["replay"] = True
                        stats.deliveries["catch-up"] += 1
                        session.sendFrame(frame)
                    if not events:
                        return  # nothing readable yet; a later offer retries
            finally:
                self._pumping = False

        d = Deferred.fromCoroutine(pump())
        d.addErrback(session.internal, "catch-up")
        return d

    # the transport's producer hooks: the peer stopped / started reading
    def writerPaused(self) -> None:
        if not self.writePaused:
            self.writePaused = True
            self.pausedSince = self.session.factory.clock.seconds()
            self.queuedWhilePaused = 0

    def writerResumed(self) -> None:
        session = self.session
        self.writePaused = False
        self.pausedSince = None
        session.releaseReading("sendq")
        if session.isLive() and not self.live:
            self.pump()
        if session.factory.files is not None:
            session.factory.files.resume(session)


def _own(event: Dict[str, Any], name: Optional[str]) -> bool:
    return event["kind"] == "message" and event.get("name") == name
