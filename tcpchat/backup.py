"""
Live backup and restore of a server's data directory (``tcpchat-admin
backup`` / ``restore``).

A backup is a directory: ``tcpchat.sqlite3`` made with SQLite's online
backup API (a consistent snapshot while the server keeps writing: every
event acknowledged before the copy began is in it), the file objects that
snapshot refers to (objects are content-addressed and never change, so
copying them after the snapshot is safe), the keys (passkey, admin passkey,
certificate and its key — keep the certificate and no client warns — and the
download-link key), and ``MANIFEST.json`` with the SHA-256 of every file in
it.  Restore checks all of that, and SQLite's own integrity check, before it
puts anything in place, and refuses while a server runs on the directory.

Blocking file work, run by the command-line tool, never by the server.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
from typing import Any, Dict, Iterator, List

DATABASE = "tcpchat.sqlite3"
#: the keys and settings kept next to the database (those present are backed up)
KEYS = ("passkey", "admin-passkey", "server.pem", "server.key", os.path.join("files", "link-key"))
MANIFEST = "MANIFEST.json"
#: the lock a running server holds on its data directory
LOCK = "lock"
#: pages the online backup copies per step (it lets the server write between steps)
PAGES_PER_STEP = 1024


class BackupError(ValueError):
    """A backup cannot be made or restored: the message says why."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def server_running(data_dir: str) -> bool:
    """Does a server hold this data directory's lock (see :func:`hold`)?"""
    path = os.path.join(data_dir, LOCK)
    if not os.path.exists(path):
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def hold(data_dir: str) -> Any:
    """(The server, at start) lock the data directory for as long as the returned file stays open."""
    f = open(os.path.join(data_dir, LOCK), "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise BackupError(f"another tcpchat server is running on {data_dir}") from None
    return f


def _objects(database: str) -> Iterator[str]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        for (sha256,) in db.execute("SELECT DISTINCT sha256 FROM files"):
            if isinstance(sha256, str) and len(sha256) == 64:
                yield sha256
    finally:
        db.close()


def backup(data_dir: str, out: str) -> List[str]:
    """Copy ``data_dir`` into the new directory ``out``; what was done, in lines."""
    source = os.path.join(data_dir, DATABASE)
    if not os.path.exists(source):
        raise BackupError(f"{data_dir} holds no tcpchat database ({DATABASE})")
    if os.path.exists(out):
        raise BackupError(f"{out} exists: a backup goes into a new directory")
    os.makedirs(out, mode=0o700)
    started = time.time()
    live = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    copy = sqlite3.connect(os.path.join(out, DATABASE))
    try:
        live.backup(copy, pages=PAGES_PER_STEP)  # (a consistent snapshot, however the server writes meanwhile)
        (events,) = copy.execute("SELECT COUNT(*) FROM events").fetchone()
        (last,) = copy.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        (schema,) = copy.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    finally:
        copy.close()
        live.close()
    entries: Dict[str, str] = {DATABASE: _sha256(os.path.join(out, DATABASE))}
    missing = 0
    objects = os.path.join(data_dir, "files", "objects")
    for sha256 in _objects(os.path.join(out, DATABASE)):
        name = os.path.join("files", "objects", sha256[:2], sha256)
        if not os.path.exists(os.path.join(objects, sha256[:2], sha256)):
            missing += 1  # (recorded, but its object is gone: a restore has it missing too)
            continue
        os.makedirs(os.path.join(out, os.path.dirname(name)), exist_ok=True)
        shutil.copyfile(os.path.join(data_dir, name), os.path.join(out, name))
        entries[name] = sha256  # content-addressed: its name is its hash (checked on restore)
    for key in KEYS:
        if os.path.exists(os.path.join(data_dir, key)):
            os.makedirs(os.path.join(out, os.path.dirname(key)), exist_ok=True)
            shutil.copyfile(os.path.join(data_dir, key), os.path.join(out, key))
            os.chmod(os.path.join(out, key), 0o600)
            entries[key] = _sha256(os.path.join(out, key))
    manifest = {"tcpchat_backup": 1, "made": started, "from": data_dir, "schema": int(schema), "events": events,
                "last_event": last, "files": entries}
    with open(os.path.join(out, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    objects_copied = sum(1 for n in entries if n.startswith("files" + os.sep + "objects"))
    lines = [f"Backed up {data_dir} to {out} in {time.time() - started:.1f} s:",
             f"  database: {events} events (up to event {last}), schema {schema}",
             f"  files: {objects_copied} stored files; keys: {', '.join(k for k in KEYS if k in entries) or 'none'}"]
    if missing:
        lines.append(f"  warning: {missing} recorded file(s) had no data in {data_dir} (they were missing already)")
    return lines


def check(backup_dir: str) -> Dict[str, Any]:
    """The manifest of a backup, once every file in it is there with its hash and the database is sound."""
    try:
        with open(os.path.join(backup_dir, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise BackupError(f"{backup_dir} is not a tcpchat backup ({MANIFEST}: {e})") from None
    if manifest.get("tcpchat_backup") != 1 or not isinstance(manifest.get("files"), dict):
        raise BackupError(f"{backup_dir}: {MANIFEST} is not one tcpchat-admin wrote")
    for name, digest in manifest["files"].items():
        path = os.path.join(backup_dir, name)
        if os.path.isabs(name) or ".." in name.split(os.sep) or not os.path.isfile(path):
            raise BackupError(f"{backup_dir}: {name} is missing")
        if _sha256(path) != digest:
            raise BackupError(f"{backup_dir}: {name} is damaged (its SHA-256 is not the one recorded)")
    db = sqlite3.connect(f"file:{os.path.join(backup_dir, DATABASE)}?mode=ro", uri=True)
    try:
        (verdict,) = db.execute("PRAGMA integrity_check").fetchone()
    finally:
        db.close()
    if verdict != "ok":
        raise BackupError(f"{backup_dir}: the database fails SQLite's integrity check: {verdict}")
    return dict(manifest)


def restore(backup_dir: str, data_dir: str, force: bool = False) -> List[str]:
    """Put the checked backup ``backup_dir`` in place as ``data_dir``; what was done, in lines."""
    if server_running(data_dir):
        raise BackupError(f"a tcpchat server is running on {data_dir}: stop it first")
    manifest = check(backup_dir)
    lines = []
    if os.path.exists(os.path.join(data_dir, DATABASE)):
        if not force:
            raise BackupError(f"{data_dir} holds data already; --force moves it aside and restores")
        aside = f"{data_dir.rstrip(os.sep)}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(data_dir, aside)
        lines.append(f"Moved the data that was there to {aside}")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    for name in manifest["files"]:
        target = os.path.join(data_dir, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(backup_dir, name), target + ".restoring")
        os.replace(target + ".restoring", target)
        if name in KEYS:
            os.chmod(target, 0o600)
    for stale in (DATABASE + "-wal", DATABASE + "-shm"):
        if os.path.exists(os.path.join(data_dir, stale)):
            os.remove(os.path.join(data_dir, stale))  # (the restored database is whole by itself)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(manifest["made"]))
    lines.append(f"Restored {manifest['events']} events (up to event {manifest['last_event']}) and "
                 f"{len(manifest['files']) - 1} files and keys from the backup of {when} into {data_dir}; "
                 "start the server as before.")
    return lines
