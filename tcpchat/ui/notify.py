"""
Desktop notifications with no cloud: the freedesktop ``notify-send`` command
when it is installed (Linux desktops), nothing otherwise.  The Tk client also
rings the bell and counts unread messages in its title.  Opening a
downloaded file (or the folder holding it) uses the desktop's opener
(``xdg-open``), also without waiting for it.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Optional

from twisted.internet.protocol import ProcessProtocol


class _Quiet(ProcessProtocol):
    """Ignores what the notifier prints and how it ends."""


def desktop(reactor: Any, title: str, body: str) -> bool:
    """Show a desktop notification; False if this desktop has no notifier."""
    command = shutil.which("notify-send")
    if command is None:
        return False
    try:
        reactor.spawnProcess(_Quiet(), command, [command, "--app-name=tcpchat", title, body[:300]], env=None)
    except OSError:
        return False
    return True


def download_folder() -> str:
    """Where downloads go by default: the desktop's download folder (XDG user dirs), ``~/Downloads``, or home."""
    home = os.path.expanduser("~")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    try:
        with open(os.path.join(config, "user-dirs.dirs"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("XDG_DOWNLOAD_DIR="):
                    path = os.path.expandvars(line.split("=", 1)[1].strip().strip('"'))
                    if os.path.isdir(path):
                        return path
    except OSError:
        pass
    downloads = os.path.join(home, "Downloads")
    return downloads if os.path.isdir(downloads) else home


def opener() -> Optional[str]:
    """The command that opens a file with the desktop's viewer for it, if there is one."""
    for name in ("xdg-open", "open"):
        found = shutil.which(name)
        if found:
            return found
    return None


def open_path(reactor: Any, path: str, folder: bool = False) -> bool:
    """Open ``path`` with the system's viewer (``folder``: the folder holding it); False if this desktop cannot."""
    target = os.path.dirname(os.path.abspath(path)) if folder else path
    if sys.platform == "win32":  # pragma: no cover - not tested here
        os.startfile(target)  # type: ignore[attr-defined]
        return True
    command = opener()
    if command is None or not os.path.exists(target):
        return False
    try:
        reactor.spawnProcess(_Quiet(), command, [command, target], env=None)
    except OSError:
        return False
    return True
