"""
Retention in the store: deleting old events and old shared files in small
transactions (``--keep-messages``, ``--keep-files``).  A part of
:class:`tcpchat.store.sqlite.Store` (which provides ``_run``, ``_db`` and
``_indexed``).  Each call removes at most ``limit`` rows in one short
transaction on the writer thread, so the group commits that acknowledge
messages wait for one small batch at most, never for a whole sweep.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, List, Optional, Tuple

from twisted.internet.defer import Deferred

from tcpchat.store.social import transaction

#: the event kinds whose text is in the search index
SEARCHABLE = ("message", "announce")
#: a stored file that is a profile picture (kept while a profile names it)
PROFILE_CONV = "profile"


class RetentionTables:
    _run: Callable[..., Deferred]
    _db: Optional[sqlite3.Connection]
    _indexed: int
    _fts_forget: Callable[[Any, int, str], None]

    def expire_events(self, before: float, limit: int) -> Deferred:
        """Delete up to ``limit`` of the oldest events stored before ``before``; fires with their ids."""
        return self._run(self._do_expire_events, before, limit)

    def expire_files(self, before: float, limit: int) -> Deferred:
        """
        Forget up to ``limit`` files shared before ``before`` (not profile pictures in use); fires with
        ``[(sha256, size, orphaned)]``: ``orphaned`` when no file record names that content any more.
        """
        return self._run(self._do_expire_files, before, limit)

    def _do_expire_events(self, before: float, limit: int) -> List[int]:
        db = self._db
        if db is None:
            return []
        with transaction(db):
            rows = db.execute("SELECT id, kind, text FROM events WHERE ts < ? ORDER BY id LIMIT ?",
                              (before, limit)).fetchall()
            for ident, kind, text in rows:
                if kind in SEARCHABLE and text and ident <= self._indexed:
                    self._fts_forget(db, ident, text)
            db.executemany("DELETE FROM events WHERE id = ?", [(r[0],) for r in rows])
        return [r[0] for r in rows]

    def _do_expire_files(self, before: float, limit: int) -> List[Tuple[str, int, bool]]:
        db = self._db
        if db is None:
            return []
        out: List[Tuple[str, int, bool]] = []
        with transaction(db):
            rows = db.execute(
                "SELECT id, sha256, size FROM files WHERE ts < ? AND (conv IS NULL OR conv != ?) "
                "AND id NOT IN (SELECT picture FROM known WHERE picture IS NOT NULL) ORDER BY id LIMIT ?",
                (before, PROFILE_CONV, limit)).fetchall()
            db.executemany("DELETE FROM files WHERE id = ?", [(r[0],) for r in rows])
            for _, sha256, size in rows:
                left: Any = db.execute("SELECT 1 FROM files WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
                out.append((sha256, size, left is None))
        return out
