"""
The journal: events go to storage in group commits.

Events submitted while a commit is in flight are written together in the
next one, so the disk is synced once per batch, however many people write.
A batch is bounded in events and bytes (it is broadcast with one write per
connection).  A batch that fails is written again one event per commit, so
only a bad event fails; a locked database (:class:`StoreBusy`) or a closed
store (:class:`StoreClosed`) fails what was submitted, nothing is half-done.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from tcpchat.store.errors import StoreBusy, StoreClosed

Event = Dict[str, Any]


class Journal:
    log = Logger()

    def __init__(self, store: Any, clock: Any, limits: Any, committed: Callable[[List[Event]], None]) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        #: called with each batch's new (not duplicate) events, once committed, before their submitters hear
        self.committed = committed
        #: counted into, when set (tcpchat.server.metrics.Stats)
        self.stats: Any = None
        self._began = 0.0
        #: the store is closed: nothing more can be written
        self.closed = False
        self._pending: List[Tuple[Dict[str, Any], Deferred]] = []
        self._flushing = False
        self._drained: List[Deferred] = []
        #: events of a failed batch, written one per commit so only a bad one fails
        self._solo = 0

    def submit(self, event: Dict[str, Any]) -> Deferred:
        """
        Queue ``event`` for storage.  Fires with ``(stored_event, duplicate)``
        once it is committed and (unless a duplicate) broadcast; fails with
        :class:`StoreBusy` (retry) or :class:`StoreClosed` (stopped) when
        nothing was written.

        Events submitted while a commit is in flight are written together in
        the next one (group commit), so the disk is touched once per batch.
        """
        event.setdefault("ts", round(self.clock.seconds(), 3))
        if self.closed:
            return fail(StoreClosed())
        d: Deferred = Deferred()
        self._pending.append((event, d))
        if not self._flushing:
            self._flush()
        return d

    def drained(self) -> Deferred:
        """Fires when nothing is waiting to be written."""
        if not self._flushing and not self._pending:
            return succeed(None)
        d: Deferred = Deferred()
        self._drained.append(d)
        return d

    def _flush(self) -> None:
        # a batch is written with one commit and broadcast with one write per
        # connection, so it is bounded in bytes too: that write is buffered once
        # per connection until the socket takes it
        count, size = 0, 0
        if self._solo:
            self._solo -= 1
        for event, _ in self._pending[: 1 if self._solo else self.limits.batch_max]:
            count += 1
            size += len(event.get("text") or "") + 100
            if size >= self.limits.batch_bytes:
                break
        batch = self._pending[:count]
        del self._pending[:count]
        self._flushing = True
        self._began = self.clock.seconds()
        d = self.store.append([event for event, _ in batch])
        d.addCallbacks(self._committed, self._commitFailed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _committed(self, results: List[Tuple[Event, bool]], batch: List[Tuple[Dict[str, Any], Deferred]]) -> None:
        fresh = [stored for stored, duplicate in results if not duplicate]
        if self.stats is not None:
            self.stats.commitBatch.observe(len(batch))
            self.stats.commitSeconds.observe(self.clock.seconds() - self._began)
        if fresh:
            self.committed(fresh)
        for (_, d), result in zip(batch, results):
            d.callback(result)
        self._afterFlush()

    def _commitFailed(self, failure: Any, batch: List[Tuple[Dict[str, Any], Deferred]]) -> None:
        if failure.check(StoreBusy):
            self.log.warn("The database is busy or unreachable ({why}); {count} events were refused (retryable)",
                          why=failure.getErrorMessage(), count=len(batch))
        elif failure.check(StoreClosed):
            pass  # stopping: the submitters are told
        elif len(batch) > 1:
            # one bad event must not fail the others: write them again, one per commit
            self.log.warn("A batch of {count} events failed ({why}); writing them one by one",
                          count=len(batch), why=failure.getErrorMessage())
            self._pending[:0] = batch
            self._solo = len(batch) + 1
            self._afterFlush()
            return
        else:
            self.log.failure("Could not store an event", failure)
        for _, d in batch:
            d.errback(failure)
        self._afterFlush()

    def _afterFlush(self) -> None:
        self._flushing = False
        if self._pending:
            self._flush()
        elif self._drained:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)
