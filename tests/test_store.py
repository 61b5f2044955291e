"""Storage details a user would notice: upgrading a 0.1 database in place."""

import sqlite3

from tests.helpers import Peer, make_factory
from tests.test_conversations import RICH

V1_SCHEMA = """
CREATE TABLE events (id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, name TEXT, nkey TEXT,
                     text TEXT, cid TEXT, extra TEXT);
CREATE UNIQUE INDEX events_cid ON events (nkey, cid) WHERE cid IS NOT NULL;
CREATE TABLE files (id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, name TEXT NOT NULL,
                    mime TEXT, uploader TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX files_sha ON files (sha256);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO meta VALUES ('schema', '1');
INSERT INTO events (ts, kind, name, nkey, text, cid) VALUES (1.0, 'join', 'alice', NULL, NULL, NULL);
INSERT INTO events (ts, kind, name, nkey, text, cid) VALUES (2.0, 'message', 'alice', 'alice', 'minutes of the old days', 'c1');
INSERT INTO events (ts, kind, name, nkey, text, cid, extra)
    VALUES (3.0, 'file', 'alice', NULL, NULL, NULL, '{"file": {"id": 1, "name": "old.txt", "size": 3}}');
INSERT INTO files (sha256, size, name, mime, uploader, ts) VALUES ('ab', 3, 'old.txt', NULL, 'alice', 3.0);
"""


def test_a_0_1_database_is_upgraded_in_place(tmp_path):
    """History written by 0.1 becomes the default room's: replayed, searchable, its files still downloadable."""
    db = sqlite3.connect(tmp_path / "chat.sqlite3")
    db.executescript(V1_SCHEMA)
    db.close()
    factory = make_factory(tmp_path)
    bob = Peer(factory)
    frames = bob.login("bob", after=0, **RICH)
    old = [f for f in frames if f.get("type") == "event" and f["id"] <= 3]
    assert [(e["kind"], e["room"]) for e in old] == [("join", "general"), ("message", "general"), ("file", "general")]
    bob.send({"type": "search", "q": "old days"})
    assert [e["text"] for e in bob.frames()[0]["events"]] == ["minutes of the old days"]
    legacy = Peer(factory)
    assert "minutes of the old days" in str(legacy.login("carol", after=0))
    version = factory.store._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
    assert version == "2"
    record = factory.store._do_get_file(1)
    assert record["conv"] == "#general"
