-- Version 1 -> 2 (tcpchat 0.2): conversations (rooms, direct messages), search, moderation, name passwords.
-- Version 1 had one conversation: it becomes the default room, "general".
ALTER TABLE events ADD COLUMN conv TEXT;
ALTER TABLE events ADD COLUMN tkey TEXT;
ALTER TABLE files ADD COLUMN conv TEXT;
UPDATE events SET conv = '#general', extra = json_set(COALESCE(extra, '{}'), '$.room', 'general');
UPDATE files SET conv = '#general';
CREATE INDEX events_conv ON events (conv, id);
CREATE INDEX events_dm ON events (tkey, id) WHERE tkey IS NOT NULL;
CREATE TABLE rooms (key TEXT PRIMARY KEY, name TEXT NOT NULL, creator TEXT, ts REAL);
INSERT INTO rooms VALUES ('general', 'general', NULL, NULL);
CREATE TABLE members (
    room TEXT NOT NULL, nkey TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (room, nkey)
) WITHOUT ROWID;
CREATE TABLE known (nkey TEXT PRIMARY KEY, name TEXT NOT NULL, last_seen REAL, secret TEXT) WITHOUT ROWID;
CREATE TABLE reads (
    conv TEXT NOT NULL, nkey TEXT NOT NULL, name TEXT NOT NULL, last_id INTEGER NOT NULL, PRIMARY KEY (conv, nkey)
) WITHOUT ROWID;
CREATE TABLE bans (
    kind TEXT NOT NULL, value TEXT NOT NULL, until REAL, reason TEXT, actor TEXT, ts REAL, PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE audit (id INTEGER PRIMARY KEY, ts REAL NOT NULL, actor TEXT, action TEXT, detail TEXT);
-- message and file texts of every conversation, for search (kept up to date by the store, in batches)
CREATE VIRTUAL TABLE events_fts USING fts5(text, content='events', content_rowid='id',
                                           tokenize='unicode61 remove_diacritics 2');
INSERT INTO events_fts (rowid, text) SELECT id, text FROM events
    WHERE kind IN ('message', 'announce') AND text IS NOT NULL;
INSERT OR REPLACE INTO meta VALUES ('fts_upto', (SELECT COALESCE(MAX(id), 0) FROM events));
