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
    from tcpchat.store.sqlite import SCHEMA_VERSION

    version = factory.store._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
    assert version == str(SCHEMA_VERSION)
    record = factory.store._do_get_file(1)
    assert record["conv"] == "#general"


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


def shape(path):
    """What a schema is, whatever its SQL text: every table's columns and every index's columns."""
    db = sqlite3.connect(path)
    try:
        out = {}
        for kind, name, table in db.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE type IN "
                                            "('table', 'index') AND name NOT LIKE 'sqlite_%' ORDER BY name"):
            if kind == "table":
                out[name] = [tuple(r[1:4]) + (r[5],) for r in db.execute(f"PRAGMA table_info('{name}')")]
            else:
                out[name] = (table, [r[2] for r in db.execute(f"PRAGMA index_info('{name}')")])
        return out
    finally:
        db.close()


def test_every_released_schema_becomes_the_one_a_new_database_has(tmp_path):
    """0.1's and 0.2's databases, upgraded by the schema files, have exactly the shape of a new one."""
    import shutil

    from tcpchat.store.sqlite import SCHEMA_VERSION, Store

    fresh = tmp_path / "fresh.sqlite3"
    Store(str(fresh)).open()
    old = tmp_path / "v1.sqlite3"
    db = sqlite3.connect(old)
    db.executescript(V1_SCHEMA)
    db.close()
    Store(str(old)).open()
    v2 = tmp_path / "v2.sqlite3"
    shutil.copy(FIXTURES / "tcpchat-0.2.sqlite3", v2)  # written by tcpchat 0.2's own store
    Store(str(v2)).open()
    assert shape(old) == shape(fresh) == shape(v2)
    for path in (fresh, old, v2):
        db = sqlite3.connect(path)
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == str(SCHEMA_VERSION)
        db.close()


def test_a_0_2_database_is_served_as_it_was(tmp_path):
    """Rooms, direct messages and search of a database 0.2 wrote: replayed to the right people, still found."""
    import shutil

    shutil.copy(FIXTURES / "tcpchat-0.2.sqlite3", tmp_path / "chat.sqlite3")
    factory = make_factory(tmp_path)
    bob = Peer(factory)
    frames = bob.login("bob", after=0, **RICH)
    texts = [f.get("text") for f in frames if f.get("type") == "event" and f["kind"] == "message"]
    assert texts == ["minutes of the 0.2 days", "a word for bob alone"]
    carol = Peer(factory)
    texts = [f.get("text") for f in carol.login("carol", after=0, **RICH) if f.get("type") == "event"]
    assert "a word for bob alone" not in texts and "minutes of the 0.2 days" in texts
    bob.frames()
    bob.send({"type": "search", "q": "0.2 days"})
    (found,) = [f for f in bob.frames() if f["type"] == "search-results"]
    assert [e["text"] for e in found["events"]] == ["minutes of the 0.2 days"]


def test_a_database_from_a_newer_tcpchat_is_refused_not_damaged(tmp_path):
    from tcpchat.store.sqlite import Store, StoreUnusable

    path = tmp_path / "new.sqlite3"
    Store(str(path)).open()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '9' WHERE key = 'schema'")
    db.commit()
    db.close()
    failures = []
    Store(str(path)).open().addErrback(failures.append)
    assert failures and failures[0].check(StoreUnusable) and "newer tcpchat" in str(failures[0].value)
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "9"
    db.close()
