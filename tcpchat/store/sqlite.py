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
import os
import re
import sqlite3
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tcpchat import wire
from tcpchat.store.errors import StoreBusy, StoreClosed, StoreUnusable
from tcpchat.store.retention import SEARCHABLE, RetentionTables  # (SEARCHABLE: the kinds search indexes)
from tcpchat.store.social import SocialTables, transaction

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

Event = Dict[str, Any]
#: Fields the server passes to storage that are not part of the event on the wire.
_PRIVATE = frozenset({"nkey", "conv", "tkey", "node", "token"})
Runner = Callable[..., Deferred]

#: the schema, as files: ``v1.sql`` makes a version 1 database, each ``vN-to-vM.sql`` moves one on
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema")
#: Version 2 (0.2) added conversations (rooms, direct messages), search, moderation.
SCHEMA_VERSION = 3


def schema_steps() -> List[Tuple[int, str]]:
    """``(version reached, path)`` of every schema file, in order: ``v1.sql``, then the migrations."""
    steps = []
    for name in os.listdir(SCHEMA_DIR):
        match = re.fullmatch(r"v(\d+)\.sql|v(\d+)-to-v(\d+)\.sql", name)
        if match:
            start, to = (0, match.group(1)) if match.group(1) else (match.group(2), match.group(3))
            if int(to) != int(start) + 1:
                raise ValueError(f"{name}: a migration moves one version on")
            steps.append((int(to), os.path.join(SCHEMA_DIR, name)))
    steps.sort()
    if [v for v, _ in steps] != list(range(1, SCHEMA_VERSION + 1)):
        raise ValueError(f"schema files for versions 1..{SCHEMA_VERSION} are missing or doubled: {steps}")
    return steps


#: Event fields kept in the ``extra`` JSON column.
_EXTRA_FIELDS = ("file", "reason", "room", "to", "target", "by", "reply", "emoji", "on", "edited", "reactions")
#: The conversation of files whose announcement was deleted: nobody's.
DELETED_CONV = "!deleted"
_SEARCHABLE_SQL = "kind IN (" + ", ".join(f"'{kind}'" for kind in SEARCHABLE) + ")"


def schema_version(db: sqlite3.Connection) -> int:
    """The schema version of a database: 0 when empty, 1 for 0.1's (which may not say)."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "events" not in tables:
        return 0
    if "meta" not in tables:
        return 1
    row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    return int(row[0]) if row and str(row[0]).isdigit() else 1


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
        self._stopped = False

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred:
        if self._stopped:
            return fail(StoreClosed("the store is closed"))  # (a late call must not start a thread again)
        if not self._pool.started:
            self._pool.start()  # lazily: never before twistd has daemonised
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def stop(self) -> None:
        self._stopped = True
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
_SELECT_E = "SELECT e.id, e.ts, e.kind, e.name, e.text, e.cid, e.extra FROM events e"


def search_scope(rooms: List[str], me: str, conv: Optional[str]) -> Tuple[str, List[Any]]:
    """The SQL condition (on events ``e``) and arguments for what a search may find: ``conv`` only, or the
    room conversations ``rooms`` and the direct conversations of the user whose name key is ``me``."""
    if conv is not None:
        return "e.conv = ?", [conv]
    marks = ",".join("?" * len(rooms)) or "NULL"
    return f"(e.conv IN ({marks}) OR (e.tkey IS NOT NULL AND (e.tkey = ? OR e.nkey = ?)))", [*rooms, me, me]


def fts_query(text: str) -> str:
    """
    An FTS5 query for what a person typed: every word must appear (in any
    order); the last word may be the start of a word.  Raises ValueError
    when there is no word to look for.
    """
    words = [w for w in text.split() if any(c.isalnum() for c in w)]
    if not words:
        raise ValueError("no words")
    quoted = ['"' + w.replace('"', '""') + '"' for w in words[:16]]
    quoted[-1] += "*"
    return " ".join(quoted)


class Store(SocialTables, RetentionTables):
    """
    The conversation and file index in one SQLite database (WAL mode).

    Only the blocking ``_do_*`` methods touch the database; the public methods
    hand them to the runner and return Deferreds.
    """

    #: how a search's words become a query (raises ValueError when there is no word)
    parse_query = staticmethod(fts_query)

    def __init__(self, path: str, runner: Runner = run_now, synchronous: str = "FULL",
                 reader: Optional[Runner] = None, busy_timeout: float = 2.0) -> None:
        """
        :param runner: runs every write (and the schema work) in order, on one thread.
        :param reader: runs reads (history, catch-up, search, lookups) on a second
            connection, so a flood of reads never delays a group commit (WAL lets
            readers and the writer work at once).  Defaults to ``runner``.
        :param synchronous: SQLite's ``synchronous`` setting: ``FULL`` syncs the WAL at
            every commit, so an acknowledged message survives a power cut.
        :param busy_timeout: seconds a write waits for a lock another process holds
            before it fails with :class:`StoreBusy`.
        """
        self.path = path
        self._run = runner
        self._read = reader or runner
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._db: Optional[sqlite3.Connection] = None
        self._rdb: Optional[sqlite3.Connection] = None
        #: events up to this id are in the search index
        self._indexed = 0

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

    def _reading(self, wanted: Optional[Callable[[], bool]], f: Callable[..., Any], *args: Any) -> Deferred:
        """
        Run a read on the read connection.  ``wanted`` is asked on the
        database thread just before it runs: a read whose requester has gone
        meanwhile is skipped (fires with None).
        """
        if wanted is None:
            return self._read(f, *args)
        return self._read(lambda: f(*args) if wanted() else None)

    def events_after(self, after: int, limit: int, wanted: Optional[Callable[[], bool]] = None) -> Deferred:
        """Fires with up to ``limit`` events with ids above ``after``, oldest first."""
        return self._reading(wanted, self._do_after, after, limit)

    def events_before(self, before: Optional[int], limit: int, conv: Optional[str] = None,
                      wanted: Optional[Callable[[], bool]] = None) -> Deferred:
        """
        Fires with the ``limit`` latest events below ``before``, oldest first:
        of one conversation (``conv``) without deleted messages, or of all.
        """
        return self._reading(wanted, self._do_before, before, limit, conv)

    def get_event(self, event_id: int) -> Deferred:
        """Fires with ``(event, conv, sender key)`` or None."""
        return self._reading(None, self._do_get_event, event_id)

    def search(self, query: str, rooms: Sequence[str], me: str, conv: Optional[str], before: Optional[int],
               limit: int, wanted: Optional[Callable[[], bool]] = None) -> Deferred:
        """
        Fires with up to ``limit`` messages matching ``query`` (an FTS5
        query, see :func:`fts_query`), newest first, below ``before``: only in
        the room conversations ``rooms`` and the direct conversations of the
        user whose name key is ``me``, or only in ``conv`` (which the caller
        has checked ``me`` may read).  Everything stored before the call is
        indexed first (on the writer), then searched (on the read connection).
        """
        d = self._run(self._do_index)
        d.addCallback(lambda _: self._reading(wanted, self._do_search, query, list(rooms), me, conv, before, limit))
        return d

    def index_pending(self) -> Deferred:
        """Add stored messages not yet in the search index (the server calls this every few seconds)."""
        return self._run(self._do_index)

    def check_writable(self) -> Deferred:
        """Fires once a small write commits (health checks); fails as a write to this store would."""
        return self._run(self._do_check_writable)

    def _do_check_writable(self) -> None:
        if self._db is None:
            raise StoreClosed("the store is closed")
        with transaction(self._db):
            self._meta_put(self._db, "health", str(int(time.time())))

    # ---------------------------------------------- what differs by engine
    # (the SQL elsewhere is written to mean the same in SQLite and PostgreSQL:
    # tcpchat.store.postgres overrides these)

    def _stale(self, db: Any, event: Event) -> bool:
        """Is ``event`` no longer true, so not to be stored (reported as a duplicate)? Never, in SQLite."""
        return False

    def _applied(self, db: Any, stored: Event, event: Event) -> None:
        """Engine-specific side effects of an event (same transaction): none in SQLite."""

    @staticmethod
    def _meta_put(db: Any, key: str, value: str) -> None:
        db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   (key, value))

    def _lock_ids(self, db: Any) -> None:
        """Inside a write transaction, before ids are chosen: nobody else may add events until it commits
        (SQLite: BEGIN IMMEDIATE already holds the one write lock)."""

    @staticmethod
    def _fts_put(db: Any, ident: int, text: str) -> None:
        """Put one message's ``text`` into the search index."""
        db.execute("INSERT INTO events_fts (rowid, text) VALUES (?, ?)", (ident, text))

    @staticmethod
    def _fts_forget(db: Any, ident: int, text: str) -> None:
        """Take one message's indexed ``text`` out of the index."""
        db.execute("INSERT INTO events_fts (events_fts, rowid, text) VALUES ('delete', ?, ?)", (ident, text))

    def add_file(self, record: Dict[str, Any]) -> Deferred:
        """Record a stored file; fires with its id."""
        return self._run(self._do_add_file, record)

    def get_file(self, file_id: int) -> Deferred:
        """Fires with the file's record, or None."""
        return self._reading(None, self._do_get_file, file_id)

    def stored_bytes(self) -> Deferred:
        """Fires with the total size of distinct stored file contents."""
        return self._run(self._do_stored_bytes)

    # ------------------------------------------------------- blocking parts

    def _do_open(self) -> int:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=self._busy_timeout)
        try:
            return self._open_with(db)
        except sqlite3.DatabaseError as e:
            db.close()
            raise StoreUnusable(self.path, e) from None

    def _open_with(self, db: sqlite3.Connection) -> int:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        (check,) = db.execute("PRAGMA quick_check(1)").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"the database is damaged ({check})")
        self._migrate(db)
        row = db.execute("SELECT value FROM meta WHERE key = 'fts_upto'").fetchone()
        self._indexed = int(row[0]) if row else 0
        self._db = db
        if self.path != ":memory:" and self._read is not self._run:
            # a second connection for reads (WAL: they never wait for the writer, nor it for them)
            self._rdb = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                        timeout=self._busy_timeout)
            self._rdb.execute("PRAGMA query_only=1")
        (last,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        return int(last)

    @property
    def _reader_db(self) -> sqlite3.Connection:
        db = self._rdb or self._db
        assert db is not None
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """
        Make a new database, or bring one of an older version up to this one:
        each step (a schema file) in one transaction with its version number,
        so a step is either done or not started.
        """
        version = schema_version(db)
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"it was written by a newer tcpchat (schema {version}; this one knows "
                                        f"{SCHEMA_VERSION})")
        for reached, path in schema_steps():
            if reached <= version:
                continue
            with open(path, encoding="utf-8") as f:
                script = f.read()
            try:
                db.executescript(f"BEGIN IMMEDIATE;\n{script}\n"
                                 f"INSERT OR REPLACE INTO meta VALUES ('schema', '{reached}');\nCOMMIT;")
            except sqlite3.Error:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _do_close(self) -> None:
        for db in (self._rdb, self._db):
            if db is not None:
                db.close()
        self._db = self._rdb = None

    def _do_append(self, events: List[Event]) -> List[Tuple[Event, bool]]:
        db = self._db
        if db is None:
            raise StoreClosed()
        try:
            return self._append_in(db, events)
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise StoreBusy(str(e)) from None
            raise

    def _append_in(self, db: sqlite3.Connection, events: List[Event]) -> List[Tuple[Event, bool]]:
        out: List[Tuple[Event, bool]] = []
        with transaction(db):
            # ids are chosen here, under the write lock, so they grow in commit order without gaps
            self._lock_ids(db)
            (next_id,) = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM events").fetchone()
            for event in events:
                if self._stale(db, event):
                    out.append(({**{k: v for k, v in event.items() if k not in _PRIVATE}, "id": 0}, True))
                    continue
                extra = {k: event[k] for k in _EXTRA_FIELDS if k in event}
                kind = event["kind"]
                cursor = db.execute(
                    "INSERT INTO events (id, ts, kind, name, nkey, text, cid, extra, conv, tkey) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                    (
                        next_id,
                        event["ts"],
                        kind,
                        event.get("name"),
                        event.get("nkey"),
                        event.get("text"),
                        event.get("cid"),
                        json.dumps(extra, ensure_ascii=False) if extra else None,
                        event.get("conv"),
                        event.get("tkey"),
                    ),
                )
                if cursor.rowcount == 1:
                    stored = {k: v for k, v in event.items() if k not in _PRIVATE}
                    stored["id"] = next_id
                    next_id += 1
                    out.append((stored, False))
                    self._apply(db, stored, event)
                else:
                    row = db.execute(
                        _SELECT + " WHERE nkey = ? AND cid = ?", (event.get("nkey"), event.get("cid"))
                    ).fetchone()
                    out.append((_row_to_event(row), True))
            if out and any(not duplicate for _, duplicate in out):
                self._appended(db, next_id - 1)
        return out

    def _appended(self, db: Any, last_id: int) -> None:
        """Inside the transaction that stored events up to ``last_id`` (PostgreSQL tells the other nodes)."""

    def _apply(self, db: sqlite3.Connection, stored: Event, event: Event) -> None:
        """What an event changes besides the log (same transaction)."""
        kind = stored["kind"]
        self._applied(db, stored, event)
        # (search indexing is not done here: see _do_index, which keeps it off the acknowledgement path)
        if kind == "join":
            db.execute(
                "INSERT INTO known (nkey, name, last_seen) VALUES (?, ?, ?) ON CONFLICT (nkey) DO UPDATE SET "
                "name = excluded.name, last_seen = excluded.last_seen",
                (event["nkey"], stored["name"], stored["ts"]),
            )
        elif kind == "room-join":
            key = event["conv"][1:]
            db.execute("INSERT INTO rooms VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (key, stored["room"], stored["name"], stored["ts"]))
            db.execute("INSERT INTO members VALUES (?, ?, ?) ON CONFLICT (room, nkey) DO UPDATE SET name = excluded.name",
                       (key, event["nkey"], stored["name"]))
        elif kind == "room-leave":
            db.execute("DELETE FROM members WHERE room = ? AND nkey = ?", (event["conv"][1:], event["nkey"]))
        elif kind == "edit":
            row = db.execute("SELECT kind, text, extra FROM events WHERE id = ?", (stored["target"],)).fetchone()
            if row is not None and row[0] == "message":
                if row[1] and stored["target"] <= self._indexed:  # the index follows the new text
                    self._fts_forget(db, stored["target"], row[1])
                    self._fts_put(db, stored["target"], stored["text"])
                extra = json.loads(row[2]) if row[2] else {}
                extra["edited"] = stored["ts"]
                db.execute("UPDATE events SET text = ?, extra = ? WHERE id = ?",
                           (stored["text"], json.dumps(extra, ensure_ascii=False), stored["target"]))
        elif kind == "react":
            row = db.execute("SELECT kind, extra FROM events WHERE id = ?", (stored["target"],)).fetchone()
            if row is not None and row[0] in ("message", "file"):
                extra = json.loads(row[1]) if row[1] else {}
                extra = wire.apply_reaction(extra, stored)
                db.execute("UPDATE events SET extra = ? WHERE id = ?",
                           (json.dumps(extra, ensure_ascii=False) if extra else None, stored["target"]))
        elif kind == "delete":
            row = db.execute("SELECT kind, text, extra FROM events WHERE id = ?", (stored["target"],)).fetchone()
            if row is not None and row[0] != "deleted":
                if row[0] in SEARCHABLE and row[1] and stored["target"] <= self._indexed:
                    self._fts_forget(db, stored["target"], row[1])
                old = json.loads(row[2]) if row[2] else {}
                keep = {k: old[k] for k in ("room", "to") if k in old}
                if row[0] == "file" and isinstance(old.get("file"), dict):
                    # a deleted file announcement: nobody may download the file through it any more
                    db.execute("UPDATE files SET conv = ? WHERE id = ?", (DELETED_CONV, old["file"].get("id")))
                db.execute("UPDATE events SET kind = 'deleted', text = NULL, extra = ? WHERE id = ?",
                           (json.dumps(keep, ensure_ascii=False), stored["target"]))

    def _do_after(self, after: int, limit: int) -> List[Event]:
        rows = self._reader_db.execute(_SELECT + " WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        return [_row_to_event(r) for r in rows]

    def _do_before(self, before: Optional[int], limit: int, conv: Optional[str] = None) -> List[Event]:
        where: List[str] = ["id < ?"]
        args: List[Any] = [before if before is not None else 2**62]
        if conv is not None:
            where += ["conv = ?", "kind != 'deleted'"]
            args.append(conv)
        rows = self._reader_db.execute(_SELECT + " WHERE " + " AND ".join(where) + " ORDER BY id DESC LIMIT ?",
                                (*args, limit))
        return [_row_to_event(r) for r in reversed(list(rows))]

    def _do_get_event(self, event_id: int) -> Optional[Tuple[Event, str, str]]:
        row = self._reader_db.execute(
            "SELECT id, ts, kind, name, text, cid, extra, conv, nkey FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        return None if row is None else (_row_to_event(row[:7]), row[7], row[8])

    def _do_index(self) -> int:
        """
        Index messages stored since the last call, in one transaction.

        Indexing is kept out of the group commit that acknowledges messages:
        an FTS5 insert per small commit (each creating and merging index
        segments) roughly doubled message latency under load (see
        docs/PERFORMANCE.rst). It runs on the same database thread, so a
        search that first calls it sees every message stored before it.
        """
        db = self._db
        if db is None:
            return 0  # closed (a server stopped twice)
        (last,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        if last <= self._indexed:
            return 0
        with transaction(db):
            cursor = db.execute(
                "INSERT INTO events_fts (rowid, text) SELECT id, text FROM events WHERE id > ? AND id <= ? "
                "AND " + _SEARCHABLE_SQL + " AND text IS NOT NULL",
                (self._indexed, last),
            )
            self._meta_put(db, "fts_upto", str(last))
        self._indexed = last
        return cursor.rowcount

    def _do_search(self, query: str, rooms: List[str], me: str, conv: Optional[str], before: Optional[int],
                   limit: int) -> List[Event]:
        scope, args = search_scope(rooms, me, conv)
        # the FTS index drives the loop and yields matches newest first (CROSS JOIN keeps
        # SQLite from reordering); each match is then checked against what the user may read
        sql = (
            _SELECT_E.replace("FROM events e", "FROM events_fts f CROSS JOIN events e ON e.id = f.rowid")
            + " WHERE events_fts MATCH ? AND f.rowid < ? AND e." + _SEARCHABLE_SQL + " AND " + scope
            + " ORDER BY f.rowid DESC LIMIT ?"
        )
        rows = self._reader_db.execute(sql, (query, before if before is not None else 2**62, *args, limit))
        return [_row_to_event(r) for r in rows]

    def _do_add_file(self, record: Dict[str, Any]) -> int:
        assert self._db is not None
        (ident,) = self._db.execute(
            "INSERT INTO files (sha256, size, name, mime, uploader, ts, conv) VALUES (?,?,?,?,?,?,?) RETURNING id",
            (record["sha256"], record["size"], record["name"], record.get("mime"), record["uploader"], record["ts"],
             record.get("conv")),
        ).fetchone()
        return int(ident)

    def _do_get_file(self, file_id: int) -> Optional[Dict[str, Any]]:
        row = self._reader_db.execute(
            "SELECT id, sha256, size, name, mime, uploader, ts, conv FROM files WHERE id = ?", (file_id,)
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "sha256", "size", "name", "mime", "uploader", "ts", "conv")
        return {k: v for k, v in zip(keys, row) if v is not None}

    def _do_stored_bytes(self) -> int:
        assert self._db is not None
        (total,) = self._db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM (SELECT DISTINCT sha256, size FROM files) AS contents"
        ).fetchone()
        return int(total)
