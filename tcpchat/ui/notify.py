"""
Desktop notifications with no cloud: the freedesktop ``notify-send`` command
when it is installed (Linux desktops), nothing otherwise.  The Tk client also
rings the bell and counts unread messages in its title.
"""

from __future__ import annotations

import shutil
from typing import Any

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
