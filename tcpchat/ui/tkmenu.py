"""
The context menu of a message or shared file in the desktop client: reply,
edit (one's own), react, copy; download, open, show in folder.
"""

from __future__ import annotations

import functools
import tkinter as tk
from typing import Any, Optional

from tcpchat import wire


def message_menu(chat: Any, event: Any) -> Optional[str]:
    """A message's (or shared file's) context menu: reply, edit, react, copy; open a downloaded file."""
    ident = chat.events.eventAt(event.x, event.y)
    client = chat.app.client
    picked = client.events.get(ident) if ident is not None and client is not None else None
    if picked is None or picked.get("kind") not in ("message", "file"):
        return None
    menu = chat.contextMenu = tk.Menu(chat, tearoff=False)
    if picked["kind"] == "message":
        if client.edits:
            menu.add_command(label="Reply", command=lambda: chat.replyTo(picked))
            if picked.get("name") == client.name:
                menu.add_command(label="Edit", command=lambda: chat.startEditing(picked))
        menu.add_command(label="Copy text", command=lambda: copy(chat, str(picked.get("text", ""))))
    else:
        info = picked.get("file") or {}
        files = chat.app.files
        menu.add_command(label="Download…", command=lambda: files.save(info))
        path = files.downloaded.get(info.get("id"))
        if path:
            menu.add_command(label="Open", command=lambda: files.open(path))
            menu.add_command(label="Show in folder", command=lambda: files.open(path, folder=True))
    if client.edits:
        react = tk.Menu(menu, tearoff=False)
        mine = {e for e, who in (picked.get("reactions") or {}).items() if client.name in who}
        for emoji in wire.REACTIONS:
            react.add_command(label=("✓ " if emoji in mine else "   ") + emoji,
                              command=functools.partial(_react, chat, picked["id"], emoji, emoji not in mine))
        menu.add_cascade(label="React", menu=react)
    menu.tk_popup(event.x_root, event.y_root)
    return "break"


def _react(chat: Any, ident: int, emoji: str, on: bool) -> None:
    chat.app.commands._later(chat.app.client.react(ident, emoji, on=on), lambda _: None)


def copy(chat: Any, said: str) -> None:
    chat.clipboard_clear()
    chat.clipboard_append(said)
