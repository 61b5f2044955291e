"""
Messages written and not yet stored by the server: kept in order, sent a few
at a time, and (if given a file) kept on disk across restarts of the client.

The server de-duplicates by client id (``cid``), so a message sent twice —
once before a drop ate its ack, once after — is stored once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Dict, Iterator, List, Optional, Set

#: messages sent and not yet acknowledged at once (the rest wait their turn: the server's rate limit then
#: paces them by its acks, instead of refusing a pile of them every second)
WINDOW = 16


def default_path(host: str, port: int, name: str, folder: Optional[str] = None) -> str:
    """Where a user's unsent messages to one server are kept (``folder``, or the platform's data folder's)."""
    if folder is None:
        try:
            from platformdirs import user_data_dir

            folder = os.path.join(user_data_dir("tcpchat"), "outbox")
        except ImportError:  # pragma: no cover
            folder = os.path.join(os.path.expanduser("~"), ".tcpchat", "outbox")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{host}_{port}_{name.casefold()}")
    return os.path.join(folder, safe[:200] + ".json")


class Outbox(Mapping):
    """Ordered ``cid -> say frame``; which of them are on the wire now; saved to ``path`` (if any) off the reactor."""

    def __init__(self, path: Optional[str] = None, runner: Any = None) -> None:
        self.path = path
        self._run = runner
        self.frames: Dict[str, Dict[str, Any]] = {}
        #: sent on this connection, no answer yet
        self.inFlight: Set[str] = set()
        #: cids refused with slow-down: not sent again before their pause is over
        self.resting: Set[str] = set()
        self._dirty = False
        self._saving = False
        if path is not None:
            self.frames = {f["cid"]: f for f in _load(path)}

    # a mapping's face, for the code that only reads it (and compares it with a dict)
    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[str]:
        return iter(self.frames)

    def __getitem__(self, cid: str) -> Dict[str, Any]:
        return self.frames[cid]

    # changes

    def add(self, frame: Dict[str, Any]) -> None:
        self.frames[frame["cid"]] = frame
        self.save()

    def pop(self, cid: Any, default: Any = None) -> Any:
        self.inFlight.discard(cid)
        self.resting.discard(cid)
        frame = self.frames.pop(cid, default)
        if frame is not default:
            self.save()
        return frame

    def __delitem__(self, cid: Any) -> None:
        self.pop(cid)

    def toSend(self) -> List[Dict[str, Any]]:
        """The next frames to put on the wire (oldest first), keeping at most WINDOW in flight; marks them sent."""
        out = []
        for cid, frame in self.frames.items():
            if len(self.inFlight) >= WINDOW or cid in self.resting:
                break  # (nothing overtakes a message waiting to be sent again: they are stored in the order written)
            if cid not in self.inFlight:
                self.inFlight.add(cid)
                out.append(frame)
        return out

    def connectionLost(self) -> None:
        """Nothing is in flight any more: after the next login everything goes again (the server de-duplicates)."""
        self.inFlight.clear()
        self.resting.clear()

    # the file

    def persist(self) -> None:
        """Write the outbox now, here (when the client exits, after the reactor and its threads have stopped)."""
        if self.path is not None:
            _store(self.path, list(self.frames.values()))

    def save(self) -> None:
        if self.path is None:
            return
        self._dirty = True
        if not self._saving:
            self._saving = True
            self._saveNow()

    def _saveNow(self) -> None:
        self._dirty = False
        frames = list(self.frames.values())
        assert self.path is not None
        if self._run is None:
            _store(self.path, frames)
            self._saving = False
            return

        def done(_: Any) -> None:
            self._saving = False
            if self._dirty:  # changed while we wrote: write the newest once more
                self._saving = True
                self._saveNow()

        self._run(_store, self.path, frames).addBoth(done)


def _load(path: str) -> List[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [f for f in data if isinstance(f, dict) and f.get("type") == "say" and isinstance(f.get("cid"), str)
            and isinstance(f.get("text"), str)]


def _store(path: str, frames: List[Dict[str, Any]]) -> None:
    """Write the outbox (readable by this account only), or remove the file when it is empty."""
    try:
        if not frames:
            if os.path.exists(path):
                os.remove(path)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(frames, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        pass  # (a full disk: they are still in memory, and shown as pending)
