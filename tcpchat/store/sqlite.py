"""
SQLite storage for the conversation (events) and the file index.

All SQL runs through a *runner*: a callable ``runner(f, *args)`` that returns a
Deferred firing with ``f(*args)``.  In the server it is a single dedicated
thread (:class:`ThreadRunner`), so the reactor never waits on the disk and the
one connection is only ever used from one thread.  Tests may pass
:func:`run_now`, which runs the same code synchronously.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

Event = Dict[str, Any]
Runner = Callable[..., Deferred]

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id    INTEGER PRIMARY KEY,
    ts    REAL NOT NULL,
    kind  TEXT NOT NULL,
    name  TEXT,
    nkey  TEXT,
    text  TEXT,
    cid   TEXT,
    extra TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_cid ON events (nkey, cid) WHERE cid IS NOT NULL;
CREATE TABLE IF NOT EXISTS files (
    id       INTEGER PRIMARY KEY,
    sha256   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    name     TEXT NOT NULL,
    mime     TEXT,
    uploader TEXT NOT NULL,
    ts       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_sha ON files (sha256);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
SCHEMA_VERSION = "1"

#: Event fields kept in the ``extra`` JSON column.
_EXTRA_FIELDS = ("file", "reason")


def run_now(f: Callable[..., Any], *args: Any) -> Deferred:
    """
    A runner that runs ``f`` at once on the calling thread (for tests).
    """
    return maybeDeferred(f, *args)


class ThreadRunner:
    """
    Runs every call on one dedicated thread, in submission order.
    """

    def __init__(self, reactor: Any, name: str = "tcpchat-db") -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred:
        if not self._pool.started:
            self._pool.start()  # lazily: never before twistd has daemonised
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def stop(self) -> None:
        self._pool.stop()


def _row_to_event(row: Sequence[Any]) -> Event:
    event: Event = {"id": row[0], "ts": row[1], "kind": row[2]}
    if row[3] is not None:
        event["name"] = row[3]
    if row[4] is not None:
        event["text"] = row[4]
    if row[5] is not None:
        event["cid"] = row[5]
    if row[6]:
        event.update(json.loads(row[6]))
    return event


_SELECT = "SELECT id, ts, kind, name, text, cid, extra FROM events"


class Store:
    """
    The conversation and file index in one SQLite database (WAL mode).

    Only the blocking ``_do_*`` methods touch the database; the public methods
    hand them to the runner and return Deferreds.
    """

    def __init__(self, path: str, runner: Runner = run_now, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._run = runner
        self._synchronous = synchronous
        self._db: Optional[sqlite3.Connection] = None

    # ------------------------------------------------------------ public API

    def open(self) -> Deferred:
        """Open (creating if needed) the database; fires with the last event id."""
        return self._run(self._do_open)

    def close(self) -> Deferred:
        return self._run(self._do_close)

    def append(self, events: Sequence[Event]) -> Deferred:
        """
        Store ``events`` in one transaction (a group commit).

        Fires with a list of ``(event, duplicate)`` in the same order, where
        ``event`` has its ``id`` and ``duplicate`` is true when a message with
        the same sender and ``cid`` was already stored (the stored one is
        returned and nothing new is written).
        """
        return self._run(self._do_append, list(events))

    def events_after(self, after: int, limit: int) -> Deferred:
        """Fires with up to ``limit`` events with ids above ``after``, oldest first."""
        return self._run(self._do_after, after, limit)

    def events_before(self, before: Optional[int], limit: int) -> Deferred:
        """Fires with the ``limit`` latest events below ``before``, oldest first."""
        return self._run(self._do_before, before, limit)

    def add_file(self, record: Dict[str, Any]) -> Deferred:
        """Record a stored file; fires with its id."""
        return self._run(self._do_add_file, record)

    def get_file(self, file_id: int) -> Deferred:
        """Fires with the file's record, or None."""
        return self._run(self._do_get_file, file_id)

    def stored_bytes(self) -> Deferred:
        """Fires with the total size of distinct stored file contents."""
        return self._run(self._do_stored_bytes)

    # ------------------------------------------------------- blocking parts

    def _do_open(self) -> int:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.executescript(SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        self._db = db
        (last,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        return int(last)

    def _do_close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _do_append(self, events: List[Event]) -> List[Tuple[Event, bool]]:
        db = self._db
        assert db is not None
        out: List[Tuple[Event, bool]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                extra = {k: event[k] for k in _EXTRA_FIELDS if k in event}
                cursor = db.execute(
                    "INSERT INTO events (ts, kind, name, nkey, text, cid, extra) VALUES (?,?,?,?,?,?,?) "
                    "ON CONFLICT DO NOTHING",
                    (
                        event["ts"],
                        event["kind"],
                        event.get("name"),
                        event.get("nkey"),
                        event.get("text"),
                        event.get("cid"),
                        json.dumps(extra, ensure_ascii=False) if extra else None,
                    ),
                )
                if cursor.rowcount == 1:
                    stored = {k: v for k, v in event.items() if k != "nkey"}
                    stored["id"] = cursor.lastrowid
                    out.append((stored, False))
                else:
                    row = db.execute(
                        _SELECT + " WHERE nkey = ? AND cid = ?", (event.get("nkey"), event.get("cid"))
                    ).fetchone()
                    out.append((_row_to_event(row), True))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return out

    def _do_after(self, after: int, limit: int) -> List[Event]:
        assert self._db is not None
        rows = self._db.execute(_SELECT + " WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        return [_row_to_event(r) for r in rows]

    def _do_before(self, before: Optional[int], limit: int) -> List[Event]:
        assert self._db is not None
        if before is None:
            rows = self._db.execute(_SELECT + " ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._db.execute(_SELECT + " WHERE id < ? ORDER BY id DESC LIMIT ?", (before, limit))
        return [_row_to_event(r) for r in reversed(list(rows))]

    def _do_add_file(self, record: Dict[str, Any]) -> int:
        assert self._db is not None
        cursor = self._db.execute(
            "INSERT INTO files (sha256, size, name, mime, uploader, ts) VALUES (?,?,?,?,?,?)",
            (record["sha256"], record["size"], record["name"], record.get("mime"), record["uploader"], record["ts"]),
        )
        return int(cursor.lastrowid)

    def _do_get_file(self, file_id: int) -> Optional[Dict[str, Any]]:
        assert self._db is not None
        row = self._db.execute(
            "SELECT id, sha256, size, name, mime, uploader, ts FROM files WHERE id = ?", (file_id,)
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "sha256", "size", "name", "mime", "uploader", "ts")
        return {k: v for k, v in zip(keys, row) if v is not None}

    def _do_stored_bytes(self) -> int:
        assert self._db is not None
        (total,) = self._db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM (SELECT DISTINCT sha256, size FROM files)"
        ).fetchone()
        return int(total)
