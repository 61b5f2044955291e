"""
Words both user interfaces show: formatting of events, sizes and times, and
the slash commands.  Pure functions, no toolkit, no I/O.
"""

from __future__ import annotations

import re

import time
from typing import Any, Dict, List, Optional, Tuple

LEAVE_REASONS = {
    "quit": "left",
    "lost": "lost connection",
    "timeout": "timed out",
    "not reading": "was disconnected (not reading)",
    "shutdown": "left (server shutting down)",
    "kicked": "was removed by the operator",
    "banned": "was banned by the operator",
}


def human_size(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def clock(ts: Any, now: Optional[float] = None) -> str:
    """Local time of an event: 'HH:MM', with the date if it is not today."""
    try:
        t = time.localtime(float(ts))
    except (TypeError, ValueError, OverflowError, OSError):
        return "--:--"
    today = time.localtime(now if now is not None else time.time())
    if t[:3] == today[:3]:
        return time.strftime("%H:%M", t)
    return time.strftime("%Y-%m-%d %H:%M", t)


def describe(event: Dict[str, Any], me: Optional[str] = None) -> Tuple[str, str]:
    """
    ``(style, text)`` for an event: style is ``mine``, ``message``, ``system``
    or ``file``; text has no time stamp.
    """
    kind = event.get("kind")
    name = str(event.get("name", "?"))
    if kind == "message":
        style = "mine" if me is not None and name == me else "message"
        to = event.get("to")
        said = str(event.get("text", "")) + (" (edited)" if event.get("edited") else "")
        quoted = reply_line(event)
        said = (quoted + " — " if quoted else "") + said + reactions_line(event, " ")
        if to is not None:
            return style, f"{name} → {to}: {said}"
        return style, f"{name}: {said}"
    if kind == "announce":
        return "system", f"📢 {name}: {event.get('text', '')}"
    if kind == "room-join":
        return "system", f"{name} joined #{event.get('room')}"
    if kind == "room-leave":
        return "system", f"{name} left #{event.get('room')}"
    if kind == "join":
        return "system", f"{name} joined"
    if kind == "leave":
        return "system", f"{name} {LEAVE_REASONS.get(str(event.get('reason')), 'left')}"
    if kind == "file":
        info = event.get("file") or {}
        return "file", f"{name} shared {info.get('name', 'a file')} ({human_size(info.get('size', 0))}) — file #{info.get('id')}"
    return "system", f"({kind} event)"


def reply_line(event: Dict[str, Any]) -> str:
    """'↪ alice: Meeting at 11…' for a reply (what it answers), else ''."""
    reply = event.get("reply")
    if not isinstance(reply, dict):
        return ""
    return f"↪ {reply.get('name', '?')}: {preview(str(reply.get('text', '')))}"


def preview(said: str, width: int = 60) -> str:
    """The start of a message on one line, at most ``width`` characters."""
    said = " ".join(said.split())
    return said if len(said) <= width else said[:width - 1] + "…"


def reactions_line(event: Dict[str, Any], lead: str = "") -> str:
    """'[👍 2 🎉 1]' for a message's reactions, else ''."""
    reactions = event.get("reactions")
    if not isinstance(reactions, dict) or not reactions:
        return ""
    shown = " ".join(f"{emoji} {len(names)}" for emoji, names in reactions.items() if isinstance(names, list))
    return f"{lead}[{shown}]" if shown else ""


def change_line(event: Dict[str, Any], change: Dict[str, Any]) -> str:
    """What to say when a message was edited or got a reaction."""
    quoted = str(event.get("text") or (event.get("file") or {}).get("name", ""))
    quoted = quoted if len(quoted) <= 50 else quoted[:49] + "…"
    who = change.get("name", "?")
    if change.get("kind") == "edit":
        return f"{who} edited their message: {quoted}"
    verb = "reacted" if change.get("on", True) else "took back"
    return f"{who} {verb} {change.get('emoji')} to {event.get('name', '?')}: {quoted}" + reactions_line(event, "  ")


def seen_line(names: List[str], shown: int = 3) -> str:
    """'✓ Seen by alice, bob' — or a count when many have seen it."""
    if not names:
        return ""
    if len(names) <= shown:
        return "✓ Seen by " + ", ".join(names)
    return f"✓ Seen by {len(names)}: " + ", ".join(names[:shown]) + ", …"


def typing_line(names: List[str]) -> str:
    """'bob is typing…', 'bob and eve are typing…', 'several people are typing…'."""
    if not names:
        return ""
    if len(names) == 1:
        return f"{names[0]} is typing…"
    if len(names) == 2:
        return f"{names[0]} and {names[1]} are typing…"
    return "several people are typing…"


def mentions(text: str, name: str) -> bool:
    """True if ``text`` mentions ``@name`` (ignoring case)."""
    return f"@{name}".casefold() in text.casefold()


#: what both clients say when a reconnect is refused because the passkey changed (PROTOCOL.rst documents it)
PASSKEY_CHANGED = "The server's passkey has changed. Type the new one to rejoin; what you wrote meanwhile is kept."


def passkey_changed(client: Any) -> bool:
    """True if ``client`` was logged in before and the server now refuses its passkey."""
    refused = getattr(client, "refused", None)
    return bool(client.everLoggedIn and refused is not None and refused.code == "bad-passkey")


#: a web address in a message (the same rule as the browser client's: trailing punctuation is not part of it)
URL = re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")
