"""
PostgreSQL storage: the same store as :class:`tcpchat.store.sqlite.Store`
(same methods, same meaning), shared by every node of a cluster
(``--database postgresql://…``).

Why psycopg 3 in threads, not an asynchronous driver on the reactor: the
store's SQL is the SQLite store's own (written to mean the same in both), run
through the same runners (one writer thread, one reader thread), so there is
one implementation of the rules in storage, and a slow query never runs on
the reactor thread.  What differs by engine is small and kept here:

* **Event ids in commit order, without gaps.**  A write transaction first
  takes a transaction-scoped advisory lock (:data:`IDS_LOCK`), then picks
  ``MAX(id) + 1``.  The lock is held until COMMIT, so no node can commit id
  N+1 before id N is committed and visible: catch-up by id stays exactly-once
  whichever node a client reconnects to.
* **Telling the other nodes.**  The same transaction runs ``pg_notify`` on
  :data:`CHANNEL` with the last id; PostgreSQL delivers it at COMMIT, to every
  node that LISTENs (:mod:`tcpchat.server.cluster`).
* **Search** uses a ``tsvector`` column with a GIN index (the ``simple``
  configuration: no stemming, like SQLite's ``unicode61``), folding
  diacritics with the ``unaccent`` extension (in Debian's postgresql-contrib)
  when the database has it or lets the store create it; without it "cafe"
  does not find "café".
* **A lost connection** (PostgreSQL restarting, a network cut) fails the
  call with :class:`StoreBusy` (nothing written: the journal refuses the
  batch, clients retry) and the next call reconnects.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from tcpchat.store.errors import StoreBusy, StoreClosed, StoreUnusable
from tcpchat.store.social import transaction
from tcpchat.store.sqlite import (_SEARCHABLE_SQL, _SELECT_E, SCHEMA_DIR, SCHEMA_VERSION, Event, Runner, Store,
                                  _row_to_event, run_now, search_scope)

#: the channel on which a commit announces its last event id
CHANNEL = "tcpchat_events"
#: advisory lock keys (any constant; the same in every node)
IDS_LOCK = 0x7463_0001
INDEX_LOCK = 0x7463_0002
SCHEMA_LOCK = 0x7463_0003
PG_SCHEMA_DIR = os.path.join(SCHEMA_DIR, "postgresql")


def is_postgres(database: Optional[str]) -> bool:
    return bool(database) and str(database).startswith(("postgresql://", "postgres://"))


def ts_query(text: str) -> str:
    """A tsquery for what a person typed: every word (any order); the last may be the start of a word."""
    words = [w for w in text.split() if any(c.isalnum() for c in w)]
    if not words:
        raise ValueError("no words")
    quoted = ["'" + w.replace("\\", "\\\\").replace("'", "''") + "'" for w in words[:16]]
    quoted[-1] += ":*"
    return " & ".join(quoted)


class PgDb:
    """A psycopg connection that takes the SQLite store's SQL (``?`` placeholders, ``BEGIN IMMEDIATE``)."""

    _cache: Dict[str, str] = {}

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    def _sql(cls, sql: str) -> str:
        out = cls._cache.get(sql)
        if out is None:
            out = sql.replace("%", "%%").replace("?", "%s").replace("BEGIN IMMEDIATE", "BEGIN")
            cls._cache[sql] = out
        return out

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(self._sql(sql), params or None, prepare=bool(params) or None)

    def executemany(self, sql: str, rows: Any) -> Any:
        cursor = self.conn.cursor()
        cursor.executemany(self._sql(sql), list(rows))
        return cursor

    def close(self) -> None:
        self.conn.close()


class PgStore(Store):
    """The conversation, file index and social tables in a PostgreSQL database."""

    parse_query = staticmethod(ts_query)
    engine = "postgresql"

    def __init__(self, dsn: str, runner: Runner = run_now, reader: Optional[Runner] = None, node: str = "solo",
                 connect_timeout: float = 5.0) -> None:
        super().__init__(_safe(dsn), runner, reader=reader)
        self.dsn = dsn
        #: this process's name in the cluster tables (``online.node``)
        self.node = node
        self._connect_timeout = connect_timeout
        self._broken = False
        self._closed = False
        #: how a text is folded before indexing and searching (unaccent, when the database has it)
        self._fold = "?"
        run, read = self._run, self._read
        self._run = lambda f, *args: run(self._guarded, f, *args)
        self._read = lambda f, *args: read(self._guarded, f, *args)

    # every message is indexed as soon as it is, edits and deletes keep the index right at once
    @property
    def _indexed(self) -> int:
        return 2**62

    @_indexed.setter
    def _indexed(self, value: int) -> None:
        pass

    # ---------------------------------------------------------- connections

    def _connect(self) -> PgDb:
        import psycopg

        return PgDb(psycopg.connect(self.dsn, autocommit=True, connect_timeout=int(self._connect_timeout),
                                    application_name=f"tcpchat {self.node}"))

    def _guarded(self, f: Callable[..., Any], *args: Any) -> Any:
        """Run ``f``; a lost connection fails it with StoreBusy (retry) and is made again next time."""
        import psycopg

        if self._closed:
            raise StoreClosed()
        if self._broken:
            try:
                self._reconnect()
            except psycopg.OperationalError as e:
                raise StoreBusy(f"the database is unreachable: {e}") from None
        try:
            return f(*args)
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            if isinstance(e, psycopg.errors.LockNotAvailable):
                raise StoreBusy(str(e)) from None
            self._broken = True
            raise StoreBusy(f"the database connection was lost: {e}") from None

    def _reconnect(self) -> None:
        for db in (self._db, self._rdb):
            if db is not None:
                try:
                    db.close()
                except Exception:
                    pass
        self._db = self._connect()  # type: ignore[assignment]
        self._rdb = self._connect() if self._read is not self._run else None  # type: ignore[assignment]
        self._broken = False

    # ---------------------------------------------------------- open, schema

    def _do_open(self) -> int:
        import psycopg

        try:
            db = self._connect()
        except psycopg.Error as e:
            raise StoreUnusable(_safe(self.dsn), e) from None
        try:
            self._migrate_pg(db)
            (last,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        except (psycopg.Error, ValueError) as e:
            db.close()
            raise StoreUnusable(_safe(self.dsn), e) from None
        (unaccent,) = db.execute("SELECT to_regprocedure('public.unaccent(text)') IS NOT NULL").fetchone()
        self._fold = "public.unaccent(?)" if unaccent else "?"
        self._db = db  # type: ignore[assignment]
        self._rdb = self._connect() if self._read is not self._run else None  # type: ignore[assignment]
        return int(last)

    @staticmethod
    def _migrate_pg(db: PgDb) -> None:
        import psycopg

        """Make the tables (version 3) in an empty database, under a lock so two nodes starting at once agree."""
        with transaction(db):  # type: ignore[arg-type]
            db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            (exists,) = db.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
            version = 0
            if exists:
                row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise ValueError(f"it was written by a newer tcpchat (schema {version}; this one knows "
                                 f"{SCHEMA_VERSION})")
            if version == 0:
                with open(os.path.join(PG_SCHEMA_DIR, "v3.sql"), encoding="utf-8") as f:
                    db.conn.execute(f.read())
                version = 3
                try:  # diacritics folded in search, where the database allows it (a trusted extension)
                    with db.conn.transaction():
                        db.execute("CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public")
                except psycopg.Error:
                    pass
            for later in range(version + 1, SCHEMA_VERSION + 1):  # (none yet: 0.3 is the first)
                with open(os.path.join(PG_SCHEMA_DIR, f"v{later - 1}-to-v{later}.sql"), encoding="utf-8") as f:
                    db.conn.execute(f.read())
            db.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                       (str(SCHEMA_VERSION),))

    def _do_close(self) -> None:
        super()._do_close()
        self._closed = True

    # ---------------------------------------------------------- what differs

    def _do_append(self, events: List[Event]) -> List[Tuple[Event, bool]]:
        db = self._db
        if db is None:
            raise StoreClosed()
        return self._append_in(db, events)

    def _lock_ids(self, db: Any) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (IDS_LOCK,))

    def _appended(self, db: Any, last_id: int) -> None:
        db.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"{last_id} {self.node}"))

    def _stale(self, db: Any, event: Event) -> bool:
        """A ``leave`` from a node that no longer holds the user (it logged in again on another node, which
        wrote it off there) is not stored: it would tell everyone that someone who is here has gone."""
        if event["kind"] != "leave":
            return False
        from tcpchat import wire

        row = db.execute("SELECT node FROM online WHERE nkey = ?", (wire.name_key(event["name"]),)).fetchone()
        return row is None or row[0] != event.get("node", self.node)

    def _applied(self, db: Any, stored: Event, event: Event) -> None:
        """Who is online where (the cluster's presence): a join puts its user on this node, a leave takes it off."""
        kind = stored["kind"]
        if kind == "join":
            db.execute("INSERT INTO online VALUES (?, ?, ?, ?, ?) ON CONFLICT (nkey) DO UPDATE SET name = excluded.name, "
                       "node = excluded.node, token = excluded.token, since = excluded.since",
                       (event["nkey"], stored["name"], event.get("node", self.node), event.get("token"), stored["ts"]))
        elif kind == "leave":
            from tcpchat import wire

            db.execute("DELETE FROM online WHERE nkey = ? AND node = ?",
                       (wire.name_key(stored["name"]), event.get("node", self.node)))

    def _fts_put(self, db: Any, ident: int, text: str) -> None:  # type: ignore[override]
        db.execute(f"UPDATE events SET tsv = to_tsvector('simple', {self._fold}) WHERE id = ?", (text, ident))

    @staticmethod
    def _fts_forget(db: Any, ident: int, text: str) -> None:
        db.execute("UPDATE events SET tsv = NULL WHERE id = ?", (ident,))

    def _do_index(self) -> int:
        db = self._db
        if db is None:
            return 0
        with transaction(db):
            db.execute("SELECT pg_advisory_xact_lock(?)", (INDEX_LOCK,))
            row = db.execute("SELECT value FROM meta WHERE key = 'fts_upto'").fetchone()
            upto = int(row[0]) if row else 0
            (last,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
            if last <= upto:
                return 0
            cursor = db.execute(
                f"UPDATE events SET tsv = to_tsvector('simple', {self._fold.replace('?', 'text')}) WHERE id > ? AND id <= ? AND "
                + _SEARCHABLE_SQL + " AND text IS NOT NULL", (upto, last))
            self._meta_put(db, "fts_upto", str(last))
        return int(cursor.rowcount)

    def _do_search(self, query: str, rooms: List[str], me: str, conv: Optional[str], before: Optional[int],
                   limit: int) -> List[Event]:
        scope, args = search_scope(rooms, me, conv)
        sql = (_SELECT_E + f" WHERE e.tsv @@ to_tsquery('simple', {self._fold}) AND e.id < ? AND e." + _SEARCHABLE_SQL
               + " AND " + scope + " ORDER BY e.id DESC LIMIT ?")
        rows = self._reader_db.execute(sql, (query, before if before is not None else 2**62, *args, limit))
        return [_row_to_event(r) for r in rows]

    # ---------------------------------------------------------- the cluster

    def heartbeat(self, address: str, now: float) -> Any:
        """Say this node is alive (and where clients reach it)."""
        return self._run(self._do_heartbeat, address, now)

    def _do_heartbeat(self, address: str, now: float) -> None:
        assert self._db is not None
        self._db.execute("INSERT INTO nodes VALUES (?, ?, ?) ON CONFLICT (node) DO UPDATE SET address = "
                         "excluded.address, seen = excluded.seen", (self.node, address, now))

    def cluster(self, alive_after: float) -> Any:
        """Fires with ``{"alive": [(node, address)], "dead": {node: [(nkey, name)]}}``: nodes seen since
        ``alive_after``, and the users still marked online on nodes not seen since then."""
        return self._read(self._do_cluster, alive_after)

    def _do_cluster(self, alive_after: float) -> Dict[str, Any]:
        db = self._reader_db
        alive = db.execute("SELECT node, address FROM nodes WHERE seen >= ? ORDER BY node", (alive_after,)).fetchall()
        living = {node for node, _ in alive} | {self.node}
        dead: Dict[str, List[Tuple[str, str]]] = {}
        for nkey, name, node in db.execute("SELECT nkey, name, node FROM online ORDER BY nkey").fetchall():
            if node not in living:
                dead.setdefault(node, []).append((nkey, name))
        return {"alive": [tuple(r) for r in alive], "dead": dead}

    def forget_node(self, node: str) -> Any:
        return self._run(self._do_forget_node, node)

    def _do_forget_node(self, node: str) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM nodes WHERE node = ?", (node,))

    def online_holder(self, nkey: str) -> Any:
        """Fires with ``(node, token hash)`` of whoever holds the name ``nkey`` in the cluster, or None."""
        return self._read(self._do_online_holder, nkey)

    def _do_online_holder(self, nkey: str) -> Optional[Tuple[str, Optional[str]]]:
        row = self._reader_db.execute("SELECT node, token FROM online WHERE nkey = ?", (nkey,)).fetchone()
        return None if row is None else (row[0], row[1])

    def shared_passkey(self, candidate: str) -> Any:
        """Fires with the cluster's passkey: the one kept in the database, or ``candidate`` if none was yet."""
        return self._run(self._do_shared_passkey, candidate)

    def _do_shared_passkey(self, candidate: str) -> str:
        assert self._db is not None
        self._db.execute("INSERT INTO meta VALUES ('passkey', ?) ON CONFLICT (key) DO NOTHING", (candidate,))
        (value,) = self._db.execute("SELECT value FROM meta WHERE key = 'passkey'").fetchone()
        return str(value)

    def set_meta(self, key: str, value: str) -> Any:
        return self._run(lambda: self._meta_put(self._db, key, value))

    def notify(self, channel: str, payload: str) -> Any:
        """Send a notification to every node listening on ``channel`` (a hint: nothing stored)."""
        return self._run(self._do_notify, channel, payload)

    def _do_notify(self, channel: str, payload: str) -> None:
        assert self._db is not None
        self._db.execute("SELECT pg_notify(?, ?)", (channel, payload))

    def online_users(self) -> Any:
        """Fires with ``[(nkey, name, node)]`` of everyone online in the cluster."""
        return self._read(lambda: [tuple(r) for r in self._reader_db.execute(
            "SELECT nkey, name, node FROM online ORDER BY nkey").fetchall()])


def _safe(dsn: str) -> str:
    """A DSN fit for a log line: without its password."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)
