-- tcpchat schema version 1 (tcpchat 0.1): one conversation, files.
-- A new database is made with this file and then every migration after it, in order.
CREATE TABLE events (
    id    INTEGER PRIMARY KEY,
    ts    REAL NOT NULL,
    kind  TEXT NOT NULL,
    name  TEXT,
    nkey  TEXT,
    text  TEXT,
    cid   TEXT,
    extra TEXT
);
CREATE UNIQUE INDEX events_cid ON events (nkey, cid) WHERE cid IS NOT NULL;
CREATE TABLE files (
    id       INTEGER PRIMARY KEY,
    sha256   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    name     TEXT NOT NULL,
    mime     TEXT,
    uploader TEXT NOT NULL,
    ts       REAL NOT NULL
);
CREATE INDEX files_sha ON files (sha256);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
