"""
The store's social tables: rooms, memberships, known names (with their
password hashes and profiles), read markers, bans and the audit log.  A part
of :class:`tcpchat.store.sqlite.Store` (which provides ``_run`` and ``_db``),
kept apart from the events and files it also holds.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (the connection is in autocommit mode otherwise): all of it or nothing."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")



class SocialTables:
    _run: Callable[..., Deferred]
    _db: Optional[sqlite3.Connection]

    def load_social(self) -> Deferred:
        """Fires with the rooms, memberships, known names, read markers and bans."""
        return self._run(self._do_load_social)

    def save_reads(self, markers: Sequence[Tuple[str, str, str, int]]) -> Deferred:
        """Store read markers ``(conv, name key, name, last id)``."""
        return self._run(self._do_save_reads, list(markers))

    def set_secret(self, nkey: str, name: str, secret: Optional[str]) -> Deferred:
        """Protect a name with a password hash (None: lift the protection)."""
        return self._run(self._do_set_secret, nkey, name, secret)

    def set_profile(self, nkey: str, name: str, bio: Optional[str], picture: Optional[int]) -> Deferred:
        """A name's bio and picture (a file id; None: none)."""
        return self._run(self._do_set_profile, nkey, name, bio, picture)

    def put_ban(self, kind: str, value: str, until: Optional[float], reason: Optional[str], actor: str,
                ts: float) -> Deferred:
        return self._run(self._do_put_ban, (kind, value, until, reason, actor, ts))

    def remove_ban(self, kind: str, value: str) -> Deferred:
        """Fires with True if there was such a ban."""
        return self._run(self._do_remove_ban, kind, value)

    def audit(self, ts: float, actor: str, action: str, detail: Dict[str, Any]) -> Deferred:
        """Record an operator's action."""
        return self._run(self._do_audit, ts, actor, action, json.dumps(detail, ensure_ascii=False))

    def audit_tail(self, count: int) -> Deferred:
        """The last ``count`` audit records, oldest first: ``(id, ts, actor, action, detail JSON)``."""
        return self._run(self._do_audit_tail, count)

    def _do_audit_tail(self, count: int) -> List[Tuple[Any, ...]]:
        assert self._db is not None
        rows = self._db.execute("SELECT id, ts, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?",
                                (count,)).fetchall()
        return list(reversed(rows))

    def _do_load_social(self) -> Dict[str, Any]:
        db = self._db
        assert db is not None
        return {
            "rooms": db.execute("SELECT key, name FROM rooms").fetchall(),
            "members": db.execute("SELECT room, nkey, name FROM members").fetchall(),
            "known": db.execute("SELECT nkey, name FROM known").fetchall(),
            "secrets": db.execute("SELECT nkey, secret FROM known WHERE secret IS NOT NULL").fetchall(),
            "reads": db.execute("SELECT conv, nkey, name, last_id FROM reads").fetchall(),
            "bans": db.execute("SELECT kind, value, until, reason, actor, ts FROM bans").fetchall(),
            "profiles": db.execute(
                "SELECT known.nkey, known.name, known.bio, files.id, files.sha256, files.size, files.mime FROM known "
                "LEFT JOIN files ON files.id = known.picture WHERE known.bio IS NOT NULL OR known.picture IS NOT NULL"
            ).fetchall(),
        }

    def _do_save_reads(self, markers: List[Tuple[str, str, str, int]]) -> None:
        assert self._db is not None
        with transaction(self._db):
            self._db.executemany(
                "INSERT INTO reads VALUES (?, ?, ?, ?) ON CONFLICT (conv, nkey) DO UPDATE SET "
                "name = excluded.name, last_id = CASE WHEN excluded.last_id > reads.last_id THEN excluded.last_id "
                "ELSE reads.last_id END",
                markers,
            )

    def _do_set_secret(self, nkey: str, name: str, secret: Optional[str]) -> None:
        assert self._db is not None
        self._db.execute(
            "INSERT INTO known (nkey, name, secret) VALUES (?, ?, ?) ON CONFLICT (nkey) DO UPDATE SET "
            "secret = excluded.secret",
            (nkey, name, secret),
        )

    def _do_set_profile(self, nkey: str, name: str, bio: Optional[str], picture: Optional[int]) -> None:
        assert self._db is not None
        self._db.execute(
            "INSERT INTO known (nkey, name, bio, picture) VALUES (?, ?, ?, ?) ON CONFLICT (nkey) DO UPDATE SET "
            "bio = excluded.bio, picture = excluded.picture",
            (nkey, name, bio, picture),
        )

    def _do_put_ban(self, row: Tuple[Any, ...]) -> None:
        assert self._db is not None
        self._db.execute("INSERT INTO bans VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, value) DO UPDATE SET "
                         "until = excluded.until, reason = excluded.reason, actor = excluded.actor, ts = excluded.ts",
                         row)

    def _do_remove_ban(self, kind: str, value: str) -> bool:
        assert self._db is not None
        return self._db.execute("DELETE FROM bans WHERE kind = ? AND value = ?", (kind, value)).rowcount > 0

    def _do_audit(self, ts: float, actor: str, action: str, detail: str) -> None:
        assert self._db is not None
        self._db.execute("INSERT INTO audit (ts, actor, action, detail) VALUES (?, ?, ?, ?)", (ts, actor, action, detail))
