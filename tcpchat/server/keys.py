"""Secret files in the data directory (the passkey, the admin key): written atomically, readable by this account only."""

from __future__ import annotations

import os
from typing import Optional

from tcpchat import auth


def read_private(path: str) -> Optional[str]:
    """The first line of a secret file we wrote, or None if there is none (or it is empty)."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return line if auth.canonical_passkey(line) else None


def write_private(path: str, text: str) -> None:
    """Write a secret file only this account can read."""
    temporary = path + ".new"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)  # all or nothing: a crash never leaves half a passkey
    except OSError:
        pass  # the banner shows it anyway
