-- tcpchat schema version 3 in PostgreSQL (tcpchat 0.3): the same tables, columns and meaning as
-- SQLite's v1.sql + v1-to-v2.sql + v2-to-v3.sql (a PostgreSQL database starts at version 3; later
-- migrations come in both dialects, vN-to-vM.sql here and in the directory above).
CREATE TABLE events (
    id    BIGINT PRIMARY KEY,  -- chosen by the store under a transaction-scoped lock: commit order, no gaps
    ts    DOUBLE PRECISION NOT NULL,
    kind  TEXT NOT NULL,
    name  TEXT,
    nkey  TEXT,
    text  TEXT,
    cid   TEXT,
    extra TEXT,
    conv  TEXT,
    tkey  TEXT,
    tsv   TSVECTOR  -- the search index (SQLite: the events_fts table); NULL until indexed
);
CREATE UNIQUE INDEX events_cid ON events (nkey, cid) WHERE cid IS NOT NULL;
CREATE INDEX events_conv ON events (conv, id);
CREATE INDEX events_dm ON events (tkey, id) WHERE tkey IS NOT NULL;
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_search ON events USING GIN (tsv);
CREATE TABLE files (
    id       BIGSERIAL PRIMARY KEY,
    sha256   TEXT NOT NULL,
    size     BIGINT NOT NULL,
    name     TEXT NOT NULL,
    mime     TEXT,
    uploader TEXT NOT NULL,
    ts       DOUBLE PRECISION NOT NULL,
    conv     TEXT
);
CREATE INDEX files_sha ON files (sha256);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE rooms (key TEXT PRIMARY KEY, name TEXT NOT NULL, creator TEXT, ts DOUBLE PRECISION);
INSERT INTO rooms VALUES ('general', 'general', NULL, NULL);
CREATE TABLE members (room TEXT NOT NULL, nkey TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (room, nkey));
CREATE TABLE known (
    nkey TEXT PRIMARY KEY, name TEXT NOT NULL, last_seen DOUBLE PRECISION, secret TEXT, bio TEXT,
    picture BIGINT REFERENCES files (id)
);
CREATE TABLE reads (
    conv TEXT NOT NULL, nkey TEXT NOT NULL, name TEXT NOT NULL, last_id BIGINT NOT NULL, PRIMARY KEY (conv, nkey)
);
CREATE TABLE bans (
    kind TEXT NOT NULL, value TEXT NOT NULL, until DOUBLE PRECISION, reason TEXT, actor TEXT, ts DOUBLE PRECISION,
    PRIMARY KEY (kind, value)
);
CREATE TABLE audit (id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, actor TEXT, action TEXT, detail TEXT);
-- the cluster (several nodes on one database): who is online on which node, and which nodes are alive
CREATE TABLE nodes (node TEXT PRIMARY KEY, address TEXT, seen DOUBLE PRECISION NOT NULL);
CREATE TABLE online (
    nkey TEXT PRIMARY KEY, name TEXT NOT NULL, node TEXT NOT NULL, token TEXT, since DOUBLE PRECISION NOT NULL
);
CREATE INDEX online_node ON online (node);
INSERT INTO meta VALUES ('fts_upto', '0');
