"""
Retention (``--keep-messages DAYS``, ``--keep-files DAYS``; off by default):
a sweep every :data:`INTERVAL` seconds deletes events, and shared files (their
records, then their data once nothing names it), older than that.

It works in batches of :data:`BATCH` rows, one short transaction each on the
store's writer thread, and gives the reactor a turn between batches, so the
group commits that acknowledge messages queue behind one small batch at most.
What remains stays consistent: catch-up by id simply has fewer events (a
client asking for events after a deleted id gets those that are left), the
search index loses the deleted texts in the same transaction, and the
in-memory recent conversation lets them go.  Profile pictures in use are
kept.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import Logger

#: seconds between sweeps
INTERVAL = 600.0
#: seconds after start before the first sweep (a restart's reconnecting clients come first)
FIRST = 60.0
#: rows per transaction
BATCH = 500
DAY = 86400.0


class Retention:
    log = Logger()

    def __init__(self, factory: Any, keep_messages: float = 0.0, keep_files: float = 0.0, batch: int = BATCH) -> None:
        """:param keep_messages: / :param keep_files: days (0: keep everything)."""
        self.factory = factory
        self.keepMessages = keep_messages
        self.keepFiles = keep_files
        self.batch = batch
        self.running = False

    def sweep(self) -> Deferred:
        """One sweep (a sweep already running: nothing); fires with ``(events, files)`` removed."""
        if self.running:
            return Deferred.fromCoroutine(self._nothing())
        self.running = True
        d = Deferred.fromCoroutine(self._sweep())

        def done(result: Any) -> Any:
            self.running = False
            return result

        return d.addBoth(done).addErrback(self._failed)

    async def _nothing(self) -> tuple:
        return (0, 0)

    def _failed(self, failure: Any) -> tuple:
        self.factory.storeTrouble(failure, "Retention sweep failed (it is tried again at the next one)")
        return (0, 0)

    async def _sweep(self) -> tuple:
        factory = self.factory
        clock = factory.clock
        events = files = 0
        if self.keepMessages:
            before = clock.seconds() - self.keepMessages * DAY
            while not factory.stopping:
                ids = await factory.store.expire_events(before, self.batch)
                if ids:
                    _forget(factory.recent, ids)
                    events += len(ids)
                    factory.stats.expired["events"] += len(ids)
                if len(ids) < self.batch:
                    break
                await task.deferLater(clock, 0, lambda: None)  # (a turn for the reactor: acks go first)
        if self.keepFiles and factory.files is not None:
            before = clock.seconds() - self.keepFiles * DAY
            service = factory.files
            while not factory.stopping:
                rows = await factory.store.expire_files(before, self.batch)
                for sha256, size, orphaned in rows:
                    files += 1
                    factory.stats.expired["files"] += 1
                    if orphaned and await service._run(_unlink, service.objectPath(sha256)):
                        service.storedBytes -= size
                if len(rows) < self.batch:
                    break
                await task.deferLater(clock, 0, lambda: None)
        if events or files:
            self.log.info("Retention: removed {events} events and {files} files past their time", events=events,
                          files=files)
        return (events, files)


class RetentionService(service.Service):
    """Sweeps :data:`FIRST` seconds after start, then every :data:`INTERVAL` seconds (``tcpchat-admin expire``:
    now)."""

    def __init__(self, retention: Retention, clock: Any, first: float = FIRST, interval: float = INTERVAL) -> None:
        self.retention = retention
        self.clock = clock
        self.first, self.interval = first, interval
        self.loop = task.LoopingCall(retention.sweep)
        self.loop.clock = clock
        self.call: Any = None

    def startService(self) -> None:
        super().startService()
        self.call = self.clock.callLater(self.first, self.loop.start, self.interval, True)

    def stopService(self) -> Any:
        super().stopService()
        if self.call is not None and self.call.active():
            self.call.cancel()
        if self.loop.running:
            self.loop.stop()
        return None


def _forget(recent: Any, ids: Any) -> None:
    """Deleted events leave the in-memory recent conversation (what a fresh login is shown) too."""
    gone = set(ids)
    kept = [event for event in recent if event["id"] not in gone]
    if len(kept) != len(recent):
        recent.clear()
        recent.extend(kept)


def _unlink(path: str) -> bool:
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    return True
