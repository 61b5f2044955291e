"""
Moving between conversations in the desktop client from the keyboard:
Ctrl+K (a box that narrows the list to what is typed) and Alt+Up/Down (the
one above or below).
"""

from __future__ import annotations

import tkinter as tk
from tkinter import ttk
from typing import Any, Callable, List, Optional

from tcpchat.client.model import same_conv


def bind(app: Any) -> None:
    def keys(do: Callable[[], Any]) -> Callable[[Any], str]:
        def pressed(event: Any) -> str:
            do()
            return "break"

        return pressed

    app.root.bind("<Control-k>", keys(lambda: quick_switch(app)))
    app.root.bind("<Alt-Up>", keys(lambda: step(app, -1)))
    app.root.bind("<Alt-Down>", keys(lambda: step(app, 1)))


def step(app: Any, by: int) -> None:
    """Alt+Up/Down: the conversation above or below in the list."""
    if app.chat is None or app.client is None:
        return
    convs = app.chat.convs
    at = next((i for i, c in enumerate(convs) if same_conv(c, app.current)), 0)
    app.switch(convs[(at + by) % len(convs)])


def quick_switch(app: Any) -> Optional["QuickSwitch"]:
    """Ctrl+K: type part of a conversation's name, Enter goes there."""
    if app.chat is None or app.client is None:
        return None
    return QuickSwitch(app.root, app.chat.convs, app.switch, app.palette)


class QuickSwitch(tk.Toplevel):
    """Ctrl+K: a box that narrows the conversations to what is typed; Enter (or a click) switches."""

    def __init__(self, master: Any, convs: List[str], go: Callable[[str], None], palette: Any) -> None:
        super().__init__(master, background=palette["bg"], padx=10, pady=10)
        self.title("Go to a conversation")
        self.transient(master)
        self.convs, self.go = list(convs), go
        self.typed = tk.StringVar()
        entry = ttk.Entry(self, textvariable=self.typed, width=32)
        entry.grid(row=0, column=0, sticky="ew")
        self.list = tk.Listbox(self, height=8, activestyle="none", exportselection=False, relief="flat",
                               background=palette["log"], foreground=palette["message"],
                               selectbackground=palette["select"], selectforeground=palette["message"])
        self.list.grid(row=1, column=0, sticky="nsew", pady=(6, 0))
        self.typed.trace_add("write", lambda *a: self.narrow())
        entry.bind("<Return>", lambda e: self.pick())
        entry.bind("<Down>", lambda e: self.move(1))
        entry.bind("<Up>", lambda e: self.move(-1))
        self.bind("<Escape>", lambda e: self.destroy())
        self.list.bind("<ButtonRelease-1>", lambda e: self.pick())
        self.narrow()
        entry.focus_set()

    def narrow(self) -> None:
        wanted = self.typed.get().strip().lstrip("#@").casefold()
        self.shown = [c for c in self.convs if wanted in c[1:].casefold()]
        self.list.delete(0, "end")
        for conv in self.shown:
            self.list.insert("end", conv)
        if self.shown:
            self.list.selection_set(0)

    def move(self, by: int) -> str:
        picked = self.list.curselection()
        at = max(0, min(len(self.shown) - 1, (picked[0] if picked else 0) + by))
        self.list.selection_clear(0, "end")
        self.list.selection_set(at)
        return "break"

    def pick(self) -> None:
        picked = self.list.curselection()
        if self.shown:
            conv = self.shown[picked[0] if picked else 0]
            self.destroy()
            self.go(conv)
