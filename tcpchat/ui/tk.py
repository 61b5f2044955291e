"""
``tcpchat-client``: the desktop client, a Tk window driven by the Twisted
reactor through ``tksupport``.

This module is the only place Tk and tksupport are used.  It is a view over
:class:`tcpchat.client.core.ChatClient`: it never touches a socket, and the
core never imports Tk.  Nothing here blocks: file hashing runs in a thread
(in the core), file data moves in chunks between Tk updates.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import time
import tkinter as tk
from tkinter import ttk
from typing import Any, Callable, Dict, List, Optional

from tcpchat import link, wire
from tcpchat.client.core import (CONNECTED, DISCONNECTED, FAILED, LOBBY, RECONNECTING, ChatClient, ChatListener, IdentityChanged,
                                 Transfer, conversation_of, same_conv)
from tcpchat.ui import notify, text, tklog, tkmenu, tknav, tkstyle
from tcpchat.ui.tkfiles import Files
from tcpchat.ui.tklog import EventLog
from tcpchat.ui.tkprofile import ProfileCard, ProfileDialog
from tcpchat.ui.commands import Commands

DEFAULT_PORT = wire.DEFAULT_PORT
TITLE = "tcpchat"
SEARCH_HINT = "Search messages…"

#: the palette in use (changed in place when the theme changes; see :mod:`tcpchat.ui.tkstyle`)
COLORS = dict(tkstyle.PALETTES["light"])


def config_path() -> str:
    """Where the last server, port and name are remembered (per user)."""
    try:
        from platformdirs import user_config_dir

        base = user_config_dir("tcpchat")
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        base = os.path.join(os.path.expanduser("~"), ".config", "tcpchat")
    return os.path.join(base, "client.json")


class Settings:
    """The connection form's remembered values (never the passkey)."""

    KEYS = ("host", "port", "name", "theme", "fontSize")

    def __init__(self, path: Optional[str] = None, known_servers: Optional[str] = None) -> None:
        self.path = path or config_path()
        #: where pinned server certificates are kept (None: the client's default)
        self.known_servers = known_servers
        self.values: Dict[str, Any] = {"host": "127.0.0.1", "port": DEFAULT_PORT, "name": ""}
        try:
            with open(self.path, encoding="utf-8") as f:
                stored = json.load(f)
            self.values.update({k: stored[k] for k in self.KEYS if k in stored})
        except (OSError, ValueError, TypeError):
            pass

    def save(self, **values: Any) -> None:
        self.values.update({k: v for k, v in values.items() if k in self.KEYS})
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.values, f)
            os.replace(tmp, self.path)
        except OSError:
            pass  # remembering is a convenience, not a reason to fail


class ConnectScreen(ttk.Frame):
    """Server, port, name and passkey, with a Connect button."""

    def __init__(self, master: Any, settings: Settings, on_connect: Callable[..., None]) -> None:
        super().__init__(master, padding=24, style="Card.TFrame")
        self.on_connect = on_connect
        ttk.Label(self, text="Join a tcpchat server", style="Heading.TLabel").grid(row=0, column=0, columnspan=3, pady=(0, 16), sticky="w")
        self.host = tk.StringVar(value=settings.values["host"])
        self.port = tk.StringVar(value=str(settings.values["port"]))
        self.name = tk.StringVar(value=settings.values["name"])
        self.passkey = tk.StringVar()
        self.password = tk.StringVar()
        self.show = tk.BooleanVar(value=False)
        #: the certificate a join link named for this server (checked on connecting), if any
        self.fingerprint: Optional[str] = None
        self._linked: Optional[tuple] = None
        self.entries: Dict[str, ttk.Entry] = {}
        for row, (label, var, key) in enumerate(
            [("Server address", self.host, "host"), ("Port", self.port, "port"), ("Your name", self.name, "name"),
             ("Passkey", self.passkey, "passkey")],
            start=1,
        ):
            ttk.Label(self, text=label).grid(row=row, column=0, sticky="w", pady=4, padx=(0, 12))
            entry = ttk.Entry(self, textvariable=var, width=28, show="•" if key == "passkey" else "")
            entry.grid(row=row, column=1, sticky="ew", pady=4)
            entry.bind("<Return>", lambda e: self.submit())
            self.entries[key] = entry
        ttk.Label(self, text="or paste a join link", style="Small.TLabel").grid(row=1, column=2, sticky="w", padx=(8, 0))
        ttk.Checkbutton(self, text="Show", variable=self.show, command=self._toggle).grid(row=4, column=2, padx=(8, 0))
        # only for names protected with /register
        ttk.Label(self, text="Name password", style="Info.TLabel").grid(row=5, column=0, sticky="w", pady=4, padx=(0, 12))
        entry = ttk.Entry(self, textvariable=self.password, width=28, show="•")
        entry.grid(row=5, column=1, sticky="ew", pady=4)
        entry.bind("<Return>", lambda e: self.submit())
        self.entries["password"] = entry
        ttk.Label(self, text="optional", style="Small.TLabel").grid(row=5, column=2, sticky="w", padx=(8, 0))
        self.button = ttk.Button(self, text="Connect", command=self.submit, style="Accent.TButton")
        self.button.grid(row=6, column=1, sticky="e", pady=(16, 0))
        self.message = ttk.Label(self, text="", style="Error.TLabel", wraplength=420, justify="left")
        self.message.grid(row=7, column=0, columnspan=3, sticky="w", pady=(12, 0))
        # shown only when the server's certificate changed since the last login
        self.trust = ttk.Button(self, text="The server was reinstalled: trust its new certificate")
        # servers announced on the network (shown once one is heard); a click fills in the address
        self.found: List[Any] = []
        self.foundLabel = ttk.Label(self, text="Servers on this network (click to fill in):", style="Small.TLabel")
        self.foundList = tk.Listbox(self, height=4, relief="flat", activestyle="none", highlightthickness=0,
                                    exportselection=False, selectbackground="#dbe6fb", selectforeground="#1d1f23")
        self.foundList.bind("<<ListboxSelect>>", self._foundPicked)
        self.columnconfigure(1, weight=1)
        # a join link pasted into the address field fills in the form
        self.host.trace_add("write", lambda *_: self._maybeLink())

    def _maybeLink(self) -> None:
        value = self.host.get()
        if link.is_link(value):
            try:
                self.fill(link.parse(value))
            except link.BadLink as e:
                self.error(f"That is not a join link: {e}.")

    def fill(self, joined: link.JoinLink) -> None:
        """Fill the form from a join link; its certificate will be checked on connecting."""
        self.host.set(joined.host)
        self.port.set(str(joined.port))
        if joined.passkey:
            self.passkey.set(joined.passkey)
        self.fingerprint = joined.fingerprint
        self._linked = (joined.host, joined.port)
        if joined.fingerprint:
            self.message.configure(text=f"From a join link: the server must show certificate "
                                   f"{joined.fingerprint[:7 + 23]}…", style="Info.TLabel")
        self.focus()

    def showServers(self, servers: List[Any]) -> None:
        """What LAN discovery heard (a list of :class:`tcpchat.discovery.Server`)."""
        self.found = list(servers)
        self.foundList.delete(0, "end")
        for server in self.found:
            self.foundList.insert("end", f"{server.name} — {server.address()}" + ("" if server.tls else "  (no TLS)"))
        if self.found:
            self.foundLabel.grid(row=9, column=0, columnspan=3, sticky="w", pady=(18, 2))
            self.foundList.grid(row=10, column=0, columnspan=3, sticky="ew")
        else:
            self.foundLabel.grid_forget()
            self.foundList.grid_forget()

    def _foundPicked(self, event: Any = None) -> None:
        picked = self.foundList.curselection()
        if not picked:
            return
        server = self.found[picked[0]]
        # an announcement is not proof: only the address is taken; the passkey and the pin still decide
        self.host.set(server.host)
        self.port.set(str(server.port))
        self.fingerprint = None
        self._linked = None
        self.message.configure(text=f"{server.name} at {server.address()}: type your name and the passkey.",
                               style="Info.TLabel")
        self.focus()

    def linkedFingerprint(self, host: str, port: int) -> Optional[str]:
        """The link's certificate, while the form still points at the linked server."""
        return self.fingerprint if self._linked == (host, port) else None

    def _toggle(self) -> None:
        self.entries["passkey"].configure(show="" if self.show.get() else "•")

    def focus(self) -> None:
        empty = next((k for k in ("name", "passkey") if not self.entries[k].get()), "passkey")
        self.entries[empty].focus_set()

    def submit(self) -> None:
        host, name, passkey = self.host.get().strip(), self.name.get().strip(), self.passkey.get().strip()
        try:
            port = int(self.port.get().strip())
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            self.error("The port must be a number from 1 to 65535.")
            return
        if not host:
            self.error("Enter the server's address (ask whoever started it).")
            return
        try:
            wire.normalize_name(name)
        except wire.ProtocolError as e:
            self.error(e.message)
            return
        if not passkey:
            self.error("Enter the passkey the server printed.")
            return
        self.busy(True)
        self.message.configure(text=f"Connecting to {host}:{port}…", style="Info.TLabel")
        self.on_connect(host, port, name, passkey, self.password.get(), self.linkedFingerprint(host, port))

    def busy(self, busy: bool) -> None:
        self.button.configure(state="disabled" if busy else "normal")

    def error(self, message: str, trust: Optional[Callable[[], None]] = None) -> None:
        self.busy(False)
        self.message.configure(text=message, style="Error.TLabel")
        if trust is None:
            self.trust.grid_forget()
        else:
            self.trust.configure(command=trust)
            self.trust.grid(row=8, column=0, columnspan=3, sticky="w", pady=(8, 0))


class TransferRow(ttk.Frame):
    """One transfer in the side panel: name, progress bar, state, Cancel."""

    def __init__(self, master: Any, transfer: Transfer, on_cancel: Callable[[Transfer], None]) -> None:
        super().__init__(master, padding=(0, 4))
        arrow = "↑" if transfer.direction == "upload" else "↓"
        shown = transfer.name if len(transfer.name) <= 24 else transfer.name[:23] + "…"
        self.label = ttk.Label(self, text=f"{arrow} {shown}")
        self.label.grid(row=0, column=0, columnspan=2, sticky="w")
        self.bar = ttk.Progressbar(self, maximum=1000, length=150)
        self.bar.grid(row=1, column=0, sticky="ew")
        self.state = ttk.Label(self, text="", style="Small.TLabel")
        self.state.grid(row=2, column=0, sticky="w")
        self.cancel = ttk.Button(self, text="✕", width=2, command=lambda: on_cancel(transfer))
        self.cancel.grid(row=1, column=1, padx=(6, 0))
        self.columnconfigure(0, weight=1)

    def show(self, transfer: Transfer) -> None:
        self.bar.configure(value=int(transfer.fraction * 1000))
        if transfer.state == "preparing":
            status = "checking the file…"
        elif transfer.state == "verifying":
            status = "checking SHA-256…"
        elif transfer.state in ("active", "waiting"):
            status = f"{text.human_size(transfer.done)} of {text.human_size(transfer.size)}"
            if transfer.state == "waiting":
                status += " (waiting for connection)"
        elif transfer.state == "finished":
            status = "done" if transfer.direction == "upload" else "saved"
        elif transfer.state == "failed":
            status = f"failed: {transfer.error}"
        else:
            status = transfer.state
        self.state.configure(text=status)
        if transfer.state in ("finished", "failed", "cancelled"):
            self.cancel.configure(state="disabled")


class InviteDialog(tk.Toplevel):
    """The join link as a QR code and as text, to bring the next person in."""

    MODULE = 5  # pixels per QR module

    def __init__(self, master: Any, client: ChatClient) -> None:
        super().__init__(master, background=COLORS["bg"], padx=18, pady=14)
        self.client = client
        self.title("Invite someone")
        self.transient(master)
        self.resizable(False, False)
        self.withPasskey = tk.BooleanVar(value=True)
        ttk.Label(self, text="Scan or share this link to join", style="Side.TLabel").grid(row=0, column=0, sticky="w")
        self.canvas = tk.Canvas(self, background="white", highlightthickness=0)
        self.canvas.keepWhite = True  # (a QR code reads dark on light, whatever the theme)
        self.canvas.grid(row=1, column=0, pady=(8, 8))
        self.text = tk.StringVar()
        shown = ttk.Entry(self, textvariable=self.text, width=52, state="readonly")
        shown.grid(row=2, column=0, sticky="ew")
        ttk.Checkbutton(self, text="Include the passkey (anyone with the link can join)", variable=self.withPasskey,
                        command=self.draw).grid(row=3, column=0, sticky="w", pady=(6, 0))
        ttk.Label(self, text="Open it with tcpchat-client LINK or tcpchat-cli LINK, or paste it into the form. "
                  "The link also names the server's certificate, so a look-alike server is refused.",
                  style="Small.TLabel", wraplength=380, justify="left").grid(row=4, column=0, sticky="w", pady=(6, 0))
        buttons = ttk.Frame(self)
        buttons.grid(row=5, column=0, sticky="e", pady=(12, 0))
        ttk.Button(buttons, text="Copy link", command=self.copy).grid(row=0, column=0, padx=(0, 8))
        ttk.Button(buttons, text="Close", command=self.destroy, style="Accent.TButton").grid(row=0, column=1)
        self.bind("<Escape>", lambda e: self.destroy())
        self.draw()

    def link(self) -> str:
        return self.client.inviteLink(with_passkey=self.withPasskey.get())

    def draw(self) -> None:
        from tcpchat import qr

        value = self.link()
        self.text.set(value)
        grid = qr.modules(value)
        size = len(grid) * self.MODULE
        self.canvas.delete("all")
        self.canvas.configure(width=size, height=size)
        for y, row in enumerate(grid):
            for x, dark in enumerate(row):
                if dark:
                    x0, y0 = x * self.MODULE, y * self.MODULE
                    self.canvas.create_rectangle(x0, y0, x0 + self.MODULE, y0 + self.MODULE, fill="black", width=0)

    def copy(self) -> None:
        self.clipboard_clear()
        self.clipboard_append(self.link())


class ChatScreen(ttk.Frame):
    """Conversations, the one on screen, input, online list, search, transfers and status bar."""

    def __init__(self, master: Any, app: "App") -> None:
        super().__init__(master)
        self.app = app
        self.unread = 0
        self.current = LOBBY
        self.rows: Dict[tuple, TransferRow] = {}
        #: the conversations listed on the left, in order
        self.convs: List[str] = [LOBBY]

        body = ttk.Panedwindow(self, orient="horizontal")
        body.grid(row=0, column=0, sticky="nsew")
        side = ttk.Frame(body, padding=(0, 0, 10, 0), width=190)
        left = ttk.Frame(body)
        right = ttk.Frame(body, padding=(10, 0, 0, 0), width=230)
        body.add(side, weight=0)
        body.add(left, weight=1)
        body.add(right, weight=0)
        self.body, self.side, self.right = body, side, right
        #: which side panels the window has room for (narrow: the people panel goes; narrower: both)
        self.panels = ("side", "right")
        self.bind("<Configure>", self._resized)

        # conversations: rooms, then direct conversations
        ttk.Label(side, text="Conversations", style="Side.TLabel").grid(row=0, column=0, sticky="w")
        self.convList = tk.Listbox(side, height=12, relief="flat", activestyle="none", font=app.fonts["body"],
                                   highlightthickness=0, width=20, exportselection=False,
                                   selectbackground="#dbe6fb", selectforeground="#1d1f23")
        self.convList.grid(row=1, column=0, sticky="nsew", pady=(4, 8))
        self.convList.bind("<<ListboxSelect>>", self._convPicked)
        ttk.Label(side, text="Join or create a room:", style="Small.TLabel").grid(row=2, column=0, sticky="w")
        self.roomEntry = ttk.Entry(side, width=18)
        self.roomEntry.grid(row=3, column=0, sticky="ew", pady=(2, 0))
        self.roomEntry.bind("<Return>", lambda e: self._joinTyped())
        side.rowconfigure(1, weight=1)
        side.columnconfigure(0, weight=1)

        # the conversation on screen
        self.header = ttk.Label(left, text="", style="Header.TLabel", anchor="w")
        self.header.grid(row=0, column=0, columnspan=2, sticky="ew", pady=(0, 6))
        #: in a narrow window the people panel is a toggle (it takes the conversations list's place)
        self.wantPeople = False
        self.peopleButton = ttk.Button(left, text="People", command=self.togglePeople)
        self.width = 0
        self.events = EventLog(left, app, self._scrolled, _open_url)
        self.log = self.events.text
        self.log.bind("<Button-3>", lambda event: tkmenu.message_menu(self, event))
        self.log.bind("<Button-2>", lambda event: tkmenu.message_menu(self, event))
        #: the first id drawn when older events were last asked of the server (asked once each)
        self._askedBefore: Optional[int] = None

        # "new messages" bar, shown when the user has scrolled up
        self.newBar = ttk.Button(left, text="", command=self.scrollToEnd, style="Unread.TButton")

        # who is typing (left) and who has seen my last message (right)
        hints = ttk.Frame(left)
        hints.grid(row=3, column=0, columnspan=2, sticky="ew")
        self.typingLabel = ttk.Label(hints, text="", style="Hint.TLabel")
        self.typingLabel.grid(row=0, column=0, sticky="w")
        self.seenLabel = ttk.Label(hints, text="", style="Hint.TLabel")
        self.seenLabel.grid(row=0, column=1, sticky="e")
        hints.columnconfigure(0, weight=1)

        # input
        entry = ttk.Frame(left, padding=(0, 4, 0, 0))
        entry.grid(row=4, column=0, columnspan=2, sticky="ew")
        #: the message the next one answers (a context menu's Reply), or None
        self.replying: Optional[int] = None
        self.replyLabel = ttk.Label(entry, text="", style="Hint.TLabel")
        self.input = tk.Text(entry, height=2, wrap="word", font=app.fonts["body"], relief="solid", borderwidth=1,
                             undo=True)
        self.input.grid(row=1, column=0, rowspan=2, sticky="nsew")
        self.input.bind("<Return>", self._enter)
        self.input.bind("<KP_Enter>", self._enter)
        self.input.bind("<Shift-Return>", lambda e: None)  # a new line
        self.input.bind("<KeyRelease>", self._typed)
        #: the id of one's own message being edited (Up on an empty input), or None
        self.editing: Optional[int] = None
        _bind_shortcuts(self)
        self.sendButton = ttk.Button(entry, text="Send", command=self.send, style="Accent.TButton")
        self.sendButton.grid(row=1, column=1, padx=(8, 0), sticky="ew")
        self.fileButton = ttk.Button(entry, text="Send File…", command=app.files.pick)
        self.fileButton.grid(row=2, column=1, padx=(8, 0), sticky="ew")
        entry.columnconfigure(0, weight=1)
        left.rowconfigure(1, weight=1)
        left.columnconfigure(0, weight=1)

        # search, online list and transfers
        self.search = ttk.Entry(right, width=22)
        self.search.grid(row=0, column=0, sticky="ew", pady=(0, 10))
        self.search.insert(0, SEARCH_HINT)
        self.search.bind("<FocusIn>", lambda e: self.search.get() == SEARCH_HINT and self.search.delete(0, "end"))
        self.search.bind("<Return>", lambda e: self._search())
        self.onlineLabel = ttk.Label(right, text="Online", style="Side.TLabel")
        self.onlineLabel.grid(row=1, column=0, sticky="w")
        self.online = tk.Listbox(right, height=10, relief="flat", activestyle="none", font=app.fonts["body"],
                                 highlightthickness=0, width=24)
        self.online.grid(row=2, column=0, sticky="nsew", pady=(4, 12))
        self.online.bind("<Double-Button-1>", self._userPicked)
        self.online.bind("<<ListboxSelect>>", self._userSelected)
        self.onlineNames: List[str] = []
        #: the picked person's profile (picture, bio), under the list
        self.card = ProfileCard(right, app)
        self.card.grid(row=3, column=0, sticky="ew")
        self.card.grid_remove()
        ttk.Label(right, text="Transfers", style="Side.TLabel").grid(row=4, column=0, sticky="w")
        self.transfers = ttk.Frame(right)
        self.transfers.grid(row=5, column=0, sticky="new")
        right.rowconfigure(2, weight=1)
        right.columnconfigure(0, weight=1)

        # status bar, with Exit at its end
        bar = ttk.Frame(self, style="Status.TFrame")
        bar.grid(row=1, column=0, sticky="ew", pady=(8, 0))
        self.status = ttk.Label(bar, text="", style="Status.TLabel", anchor="w")
        self.status.grid(row=0, column=0, sticky="ew")
        self.profileButton = ttk.Button(bar, text="Profile…", command=lambda: ProfileDialog(app.root, app))
        self.profileButton.grid(row=0, column=1, padx=4, pady=2)
        self.themeButton = ttk.Button(bar, text="☾ Dark",
                                      command=lambda: app.applyTheme("light" if app.theme == "dark" else "dark"))
        self.themeButton.grid(row=0, column=2, padx=4, pady=2)
        self.inviteButton = ttk.Button(bar, text="Invite…", command=app.invite)
        self.inviteButton.grid(row=0, column=3, padx=4, pady=2)
        self.exitButton = ttk.Button(bar, text="Exit", command=app.close)
        self.exitButton.grid(row=0, column=4, padx=4, pady=2)
        bar.columnconfigure(0, weight=1)
        self.rowconfigure(0, weight=1)
        self.columnconfigure(0, weight=1)
        self.showConversations()

    # ------------------------------------------------------------ conversations list

    def showConversations(self) -> None:
        """Refresh the list on the left: names, unread counts, the one on screen selected."""
        client = self.app.client
        self.convList.delete(0, "end")
        for i, conv in enumerate(self.convs):
            unread = client.model.unreadIn(conv) if client is not None and conv != self.current else 0
            label = ("#  " if conv.startswith("#") else "@  ") + conv[1:]
            if conv.startswith("@") and client is not None and client.model.presenceOf(conv[1:]).get("away"):
                label += "  (away)"
            if unread:
                label += f"   ● {unread}"
            self.convList.insert("end", label)
            if unread:
                self.convList.itemconfigure(i, foreground=COLORS["mine"])
            if conv == self.current:
                self.convList.selection_set(i)

    def addConversation(self, conv: str) -> None:
        if any(same_conv(conv, c) for c in self.convs):
            return
        rooms = [c for c in self.convs if c.startswith("#")]
        people = [c for c in self.convs if c.startswith("@")]
        (rooms if conv.startswith("#") else people).append(conv)
        self.convs = rooms + people
        self.showConversations()

    def removeConversation(self, conv: str) -> None:
        self.convs = [c for c in self.convs if not same_conv(c, conv)]
        if same_conv(conv, self.current):
            self.app.switch(LOBBY)
        self.showConversations()

    def _convPicked(self, event: Any) -> None:
        picked = self.convList.curselection()
        if picked and picked[0] < len(self.convs):
            self.app.switch(self.convs[picked[0]])

    def _userSelected(self, event: Any) -> None:
        picked = self.online.curselection()
        if picked and picked[0] < len(self.onlineNames):
            self.card.show(self.onlineNames[picked[0]])

    def _userPicked(self, event: Any) -> None:
        picked = self.online.curselection()
        if picked and picked[0] < len(self.onlineNames):
            name = self.onlineNames[picked[0]]
            if name != self.app.client.name:
                self.app.switch("@" + name)

    def _joinTyped(self) -> None:
        room = self.roomEntry.get().strip()
        if room:
            self.roomEntry.delete(0, "end")
            self.app.commands.run("/join " + room)

    def _search(self) -> None:
        query = self.search.get().strip()
        if query and query != SEARCH_HINT:
            self.app.commands.run("/search " + query)

    # ------------------------------------------------------------ the conversation on screen

    def _resized(self, event: Any) -> None:
        if event.widget is self:
            self.width = event.width
            self.fitPanels()

    def fitPanels(self) -> None:
        _fit_window(self)

    def themeLabel(self) -> str:
        """The theme button: what it switches to (only its sign in a narrow window)."""
        dark = self.app.theme == "dark"
        if self.width and self.width < WIDE:
            return "☀" if dark else "☾"
        return "☀ Light" if dark else "☾ Dark"

    def togglePeople(self) -> None:
        self.wantPeople = not self.wantPeople
        self.fitPanels()

    urlTags = property(lambda self: self.events.urlTags)

    def atEnd(self) -> bool:
        return self.events.atEnd()

    def _scrolled(self, first: float, last: float) -> None:
        if last >= 0.999 and self.unread:
            self.unread = 0
            self.newBar.grid_forget()
            self.app.markReadSoon()
        if first <= 0.0 and self.events.drawn and self.log.yview() != (0.0, 1.0):
            self.log.after_idle(self.showOlder)  # at the top: the page before

    def showOlder(self) -> int:
        """Draw the page held before the first event drawn (how many), or ask the server for it."""
        first = self.events.firstId
        if first is None or self.log.yview()[0] > 0.0:
            return 0
        held = self.app.client.messages(self.current)
        ids = [e["id"] for e in held]
        at = bisect.bisect_left(ids, first)
        if at > 0:
            return self.events.prepend(held[max(0, at - tklog.PAGE):at])
        if self._askedBefore != first:
            self._askedBefore = first
            self.app.client.loadOlder(limit=tklog.PAGE, conv=self.current)
        return 0

    def olderArrived(self, events: List[Dict[str, Any]]) -> None:
        """A page of older events came from the server (shown if they are of this conversation)."""
        mine = [e for e in events if same_conv(conversation_of(e, self.app.client.name), self.current)]
        if mine:
            self.events.prepend(mine)

    def scrollToEnd(self) -> None:
        self.log.see("end")
        self.unread = 0
        self.newBar.grid_forget()
        self.app.markReadSoon()

    def render(self, conv: str, events: List[Dict[str, Any]]) -> None:
        """Show conversation ``conv`` from scratch (its newest page; older ones on scrolling up)."""
        self.current = conv
        self.unread = 0
        self._askedBefore = None
        self.newBar.grid_forget()
        self.events.show(events)
        self.showHeader()
        self.showConversations()

    def showHeader(self) -> None:
        client, conv = self.app.client, self.current
        if conv.startswith("@"):
            info = client.model.presenceOf(conv[1:])
            here = conv[1:] in client.users
            state = "away" if info.get("away") else ("online" if here else "offline")
            extra = f" — {info['status']}" if info.get("status") else ""
            self.header.configure(text=f"@ {conv[1:]}   ·   direct conversation, {state}{extra}")
        elif same_conv(conv, LOBBY):
            self.header.configure(text=f"# {conv[1:]}   ·   everyone ({len(client.users)} online)")
        else:
            room = client.model.roomOf(conv) or {}
            count = len(room.get("members", []))
            self.header.configure(text=f"# {conv[1:]}   ·   {count} member{'s' if count != 1 else ''}")

    def add(self, event: Dict[str, Any], style: str, replay: bool = False, quiet: bool = False) -> None:
        """Append one event to the conversation on screen."""
        follow = quiet or self.atEnd()
        self.events.add(event, style, replay)
        if follow:
            self.events.trim()
            self.log.see("end")
        elif not replay:
            self.unread += 1
            self.newBar.configure(text=f"↓ {self.unread} new message{'s' if self.unread > 1 else ''}")
            self.newBar.grid(row=2, column=0, columnspan=2, sticky="ew")

    def notice(self, line: str, style: str = "system", actions: Optional[List[Any]] = None) -> None:
        self.events.notice(line, time.strftime("%H:%M"), style, actions)

    def replyTo(self, target: Dict[str, Any]) -> None:
        """The next message sent answers ``target`` (shown above the input until sent or Esc)."""
        self.replying = target["id"]
        self.replyLabel.configure(text=f"↪ Replying to {target.get('name')}: {text.preview(str(target.get('text', '')))}"
                                       "   (Esc: don't)")
        self.replyLabel.grid(row=0, column=0, columnspan=2, sticky="ew")
        self.input.focus_set()

    def startEditing(self, target: Dict[str, Any]) -> None:
        self.editing = target["id"]
        self.input.delete("1.0", "end")
        self.input.insert("1.0", str(target.get("text", "")))
        self.notice("Editing your message: Enter changes it, Esc leaves it as it was.", "system")
        self.input.focus_set()

    def stopReplying(self) -> None:
        self.replying = None
        self.replyLabel.grid_forget()

    def conversation(self) -> str:
        return self.log.get("1.0", "end-1c")

    def showTyping(self, names: List[str]) -> None:
        self.typingLabel.configure(text=text.typing_line(names))

    def showSeen(self) -> None:
        client, conv = self.app.client, self.current
        mine = client.lastOwnMessage(conv)
        self.seenLabel.configure(text=text.seen_line(client.seenBy(conv, mine)) if mine else "")

    # ------------------------------------------------------------ input

    def _enter(self, event: Any) -> str:
        if event.state & 0x0001:  # Shift held: a new line
            return ""
        self.send()
        return "break"

    def _typed(self, event: Any) -> None:
        if event.keysym not in ("Return", "KP_Enter") and self.input.get("1.0", "end-1c").strip():
            self.app.client.typingNow(self.current)

    def send(self) -> None:
        message = self.input.get("1.0", "end-1c").strip("\n")
        if not message.strip():
            return
        if self.editing is not None:  # Up brought one's last message back: Enter changes it
            editing, self.editing = self.editing, None
            self.input.delete("1.0", "end")
            self.app.commands._later(self.app.client.edit(editing, message), lambda _: None)
            return
        if message.startswith("/") and not message.startswith("//"):
            self.input.delete("1.0", "end")
            self.app.commands.run(message)
            return
        if message.startswith("//"):
            message = message[1:]
        try:
            self.app.client.send(message, self.current, reply=self.replying)
            self.stopReplying()
        except ValueError as e:
            self.notice(str(e), "error")
            return
        self.input.delete("1.0", "end")
        if self.app.client.state != CONNECTED:
            self.notice("(queued: it will be sent when the connection is back)")

    def setUsers(self, users: List[str]) -> None:
        """The people list: everyone online, or in a room other than the default one, its members."""
        client = self.app.client
        conv = self.current
        room = None
        if conv.startswith("#") and not same_conv(conv, LOBBY):
            room = client.model.roomOf(conv)
        online = {wire.name_key(u) for u in users}
        names = list(room.get("members", [])) if room is not None else list(users)
        self.online.delete(0, "end")
        self.onlineNames = sorted(names, key=str.casefold)
        for i, name in enumerate(self.onlineNames):
            info = client.model.presenceOf(name)
            here = wire.name_key(name) in online
            mark = "○ " if info.get("away") or not here else "● "
            line = mark + name + (" (you)" if name == client.name else "")
            bio = client.model.profileOf(name).get("bio")
            if info.get("status"):
                line += f" — {info['status']}"
            elif not here:
                line += " — offline"
            elif bio:
                line += f" — {bio}"
            self.online.insert("end", line)
            if info.get("away") or not here:
                self.online.itemconfigure(i, foreground=COLORS["history"])
        if room is not None:
            self.onlineLabel.configure(text=f"In {conv} ({len(names)})")
        else:
            self.onlineLabel.configure(text=f"Online ({len(users)})")
        self.showHeader()

    def showTransfer(self, transfer: Transfer) -> None:
        key = (transfer.direction, transfer.tid)
        row = self.rows.get(key)
        if row is None:
            row = TransferRow(self.transfers, transfer, self.app.files.cancel)
            row.grid(row=len(self.rows), column=0, sticky="ew")
            self.rows[key] = row
        row.show(transfer)


class App(ChatListener):
    """The window: the connection screen, then the chat screen."""

    #: /help in one "command — what" per line (the window's font is not fixed-width)
    fixedWidth = False
    #: the colours in use
    palette = COLORS

    def __init__(self, root: tk.Tk, reactor: Any, settings: Optional[Settings] = None,
                 make_client: Callable[..., ChatClient] = ChatClient,
                 browser: Optional[Callable[..., Any]] = None) -> None:
        """``browser(reactor, changed)``: LAN discovery for the form (e.g. :class:`tcpchat.discovery.Browser`)."""
        self.root = root
        self.reactor = reactor
        self.settings = settings or Settings()
        self.make_client = make_client
        self.client: Optional[ChatClient] = None
        self.closing = False
        self.focused = True
        self.badge = 0
        self.serverName = ""
        self._readCall: Any = None
        self._loadedOlder: set = set()
        self.commands: Optional[Commands] = None
        self.fonts = tkstyle.fonts(root, int(self.settings.values.get("fontSize") or 0))
        #: sharing, downloading, opening files and thumbnails of pictures
        self.files = Files(self)
        self.chat: Optional[ChatScreen] = None
        self.theme = self.settings.values.get("theme") or tkstyle.system_theme()
        root.title(TITLE)
        root.geometry("940x600")
        root.minsize(560, 380)
        root.configure(background=COLORS["bg"])
        root.protocol("WM_DELETE_WINDOW", self.close)
        root.bind("<FocusIn>", self._focusIn)
        root.bind("<FocusOut>", self._focusOut)
        for key, step in (("plus", 1), ("equal", 1), ("KP_Add", 1), ("minus", -1), ("KP_Subtract", -1), ("0", 0)):
            root.bind(f"<Control-{key}>", lambda e, step=step: (self.zoom(step), "break")[1])
        tknav.bind(self)
        root.columnconfigure(0, weight=1)
        root.rowconfigure(0, weight=1)
        self.connect = ConnectScreen(root, self.settings, self.start)
        self.connect.grid(row=0, column=0)
        self.connect.focus()
        self.applyTheme(self.theme, save=False)
        self.inviteDialog: Optional[InviteDialog] = None
        self.browser = browser(reactor, self.connect.showServers) if browser is not None else None
        if self.browser is not None:
            self.browser.start()

    # ------------------------------------------------------------ actions

    def prefill(self, joined: Optional[link.JoinLink] = None, host: Optional[str] = None, port: Optional[int] = None,
                name: Optional[str] = None) -> None:
        """What the command line gave: a join link, then --host/--port/--name over it."""
        form = self.connect
        if joined is not None:
            form.fill(joined)
        if host:
            form.host.set(host)
        if port:
            form.port.set(str(port))
        if name:
            form.name.set(name)
        form.focus()

    def start(self, host: str, port: int, name: str, passkey: str, password: str = "",
              fingerprint: Optional[str] = None) -> None:
        old = self.client
        if old is not None and text.passkey_changed(old) and (old.host, old.port, old.name) == (host, port, name):
            d = old.relogin(passkey)  # same server and name: keep the conversation and what is waiting to go
        else:
            if old is not None and self.chat is not None:
                self.chat.destroy()  # another server or name: a fresh conversation
                self.chat = None
            from tcpchat.client.outbox import default_path

            # what is written and not yet stored is kept next to the remembered form (across restarts)
            folder = os.path.join(os.path.dirname(self.settings.path), "outbox")
            self.client = self.make_client(host, port, name, passkey, self, self.reactor, password=password or None,
                                           fingerprint=fingerprint, outbox=default_path(host, port, name, folder))
            self.client.knownServers.path = self.settings.known_servers or self.client.knownServers.path
            self.commands = Commands(self.client, self)
            d = self.client.start()

        def failed(failure: Any) -> None:
            trust = None
            if failure.check(IdentityChanged):
                def trust() -> None:  # the user checked with whoever runs the server
                    self.client.knownServers.forget(host, port)
                    self.connect.error("")
                    self.connect.submit()
            self.connect.error(str(failure.value), trust)

        d.addCallbacks(lambda info: self.settings.save(host=host, port=port, name=self.client.name), failed)

    def showChat(self) -> None:
        self.connect.grid_forget()
        if self.chat is None:
            self.chat = ChatScreen(self.root, self)
            self.chat.rowconfigure(0, weight=1)
            self.applyTheme(self.theme, save=False)
        self.chat.grid(row=0, column=0, sticky="nsew", padx=10, pady=(10, 0))
        self.chat.input.focus_set()

    def showForm(self, message: str) -> None:
        """Back to the form (server, port and name kept; the chat screen waits behind it)."""
        if self.chat is not None:
            self.chat.grid_forget()
        self.connect.grid(row=0, column=0)
        self.connect.passkey.set("")
        self.connect.error(message)
        self.connect.entries["passkey"].focus_set()

    def invite(self) -> Optional[InviteDialog]:
        if self.client is None or not self.client.everLoggedIn:
            return None
        if self.inviteDialog is not None and self.inviteDialog.winfo_exists():
            self.inviteDialog.lift()
            return self.inviteDialog
        self.inviteDialog = InviteDialog(self.root, self.client)
        return self.inviteDialog

    def applyTheme(self, theme: str, save: bool = True) -> None:
        """Light or dark, now and (``save``) next time."""
        self.theme = theme if theme in tkstyle.PALETTES else "light"
        COLORS.clear()
        COLORS.update(tkstyle.PALETTES[self.theme])
        tkstyle.apply(self.root, self.fonts, COLORS)
        if self.chat is not None:
            self.chat.events.colour(COLORS)
            self.chat.themeButton.configure(text=self.chat.themeLabel())
            self.chat.showConversations()
            if self.client is not None:
                self.chat.setUsers(self.client.users)
        if save:
            self.settings.save(theme=self.theme)

    def zoom(self, step: int) -> None:
        """Ctrl +/− (0: the default size): every font of the window, remembered."""
        size = tkstyle.zoom(self.fonts, tkstyle.size_of(self.fonts) + step if step else tkstyle.default_size())
        if self.chat is not None:
            self.chat.events.indent()
        self.settings.save(fontSize=size)

    # ------------------------------------------------------------ the view slash commands drive

    @property
    def current(self) -> str:
        return self.chat.current if self.chat is not None else LOBBY

    def show(self, line: str, style: str = "system") -> None:
        if self.chat is not None:
            self.chat.notice(line, style)

    def switch(self, conv: str) -> None:
        """Show another conversation (a room or a direct one)."""
        if self.chat is None:
            return
        self.chat.addConversation(conv)
        conv = next(c for c in self.chat.convs if same_conv(c, conv))
        events = self.client.messages(conv)
        self.chat.render(conv, events)
        self.chat.showTyping(self.client.model.typingIn(conv))
        self.chat.showSeen()
        self.chat.setUsers(self.client.users)
        if len(events) < 20 and conv not in self._loadedOlder:
            self._loadedOlder.add(conv)
            self.client.loadOlder(conv=conv)
        self.markReadSoon()
        self.chat.input.focus_set()

    def get(self, rest: str) -> None:
        ident = rest.split()[0] if rest.split() else ""
        files = {e["file"].get("id"): e["file"] for e in self.client.messages() if e.get("kind") == "file"
                 and isinstance(e.get("file"), dict)}
        if ident.isdigit() and int(ident) in files:
            self.files.save(files[int(ident)])
        else:
            self.show("Usage: /get ID (or click a file's name)", "error")

    def quit(self) -> None:
        self.close()

    def markReadSoon(self) -> None:
        """What is on screen, at the bottom, in a focused window, is read (told at most twice a second)."""
        if self._readCall is not None:
            return

        def mark() -> None:
            self._readCall = None
            if self.chat is not None and self.focused and self.chat.atEnd() and not self.closing:
                self.client.markRead(self.chat.current)
                self.chat.showConversations()

        # a Tk timer: it belongs to the window and goes away with it
        self._readCall = self.root.after(500, mark)

    def close(self) -> None:
        """
        Disconnect cleanly, then stop the reactor (which closes the window).
        Messages still waiting are given their chance first (closing again
        leaves at once); any not stored are kept for the next time.
        """
        client = self.client
        if client is not None and client.outbox and not client.loggedIn and not self.closing \
                and not getattr(self, "_asked", False) and self.chat is not None:
            self._asked = True  # not connected: ask (closing again, or "Close anyway", closes)
            count = len(client.outbox)
            self.chat.notice(f"{count} message{'s are' if count > 1 else ' is'} not sent: the server cannot be "
                             "reached. They are kept on this computer and go out the next time you open tcpchat.",
                             "error", actions=[("Close anyway", self.close), ("Stay", lambda: None)])
            self.chat.scrollToEnd()
            return
        if client is not None and client.outbox and client.loggedIn and not self.closing:
            if getattr(self, "_flushing", None) is None:
                self.show(f"Sending {len(client.outbox)} message(s) still waiting before closing… (close again to "
                          "leave now: they are kept for next time)", "system")
                self._flushing: Any = client.flush()
                self._flushing.addCallback(lambda _: self.close()).addErrback(lambda f: None)
                return
            if not self._flushing.called:
                self._flushing.cancel()  # closed again: leave now
        if self.closing:
            return
        self.closing = True
        if client is not None:
            client.outbox.persist()
        waits = [self.client.stop(grace=0)] if self.client is not None else []
        if self.browser is not None:
            waits.append(self.browser.stop())
            self.browser = None
        from twisted.internet.defer import DeferredList

        d = DeferredList(waits) if waits else None

        def done(_: Any = None) -> None:
            if self.reactor.running:
                self.reactor.stop()

        if d is None:
            done()
        else:
            d.addBoth(done)

    def _focusIn(self, event: Any) -> None:
        self.focused = True
        if self.badge:
            self.badge = 0
            self._title()
        if self.chat is not None:
            self.markReadSoon()

    def _focusOut(self, event: Any) -> None:
        if event.widget is self.root:
            self.focused = False

    def _title(self) -> None:
        base = f"{TITLE} — {self.serverName}" if self.serverName else TITLE
        self.root.title(f"({self.badge}) {base}" if self.badge else base)

    # ------------------------------------------------------------ what the core reports

    def stateChanged(self, state: str, detail: str) -> None:
        if self.closing:
            return  # the window is going away
        if self.chat is not None:
            self.chat.status.configure(text=("● " if state == CONNECTED else "○ ") + detail)
            if state in (RECONNECTING, FAILED):
                self.chat.notice(detail, "error" if state == FAILED else "system")
            if state == FAILED and self.client is not None and text.passkey_changed(self.client):
                self.showForm(text.PASSKEY_CHANGED)
            if state == DISCONNECTED and self.client is not None and self.client.stopped:
                _removed(self, detail)  # kicked or banned: not a window that looks connected
        elif state == FAILED:
            self.connect.error(detail)

    def welcomed(self, info: Dict[str, Any]) -> None:
        if self.closing:
            return  # the window is going away
        self.serverName = str(info.get("server", ""))
        self._title()
        self.showChat()
        assert self.chat is not None and self.client is not None
        if self.client.profiles:
            self.chat.profileButton.grid()
        else:
            self.chat.profileButton.grid_remove()  # (an older server)

    def synced(self) -> None:
        if self.closing:
            return  # the window is going away
        if self.chat is not None and not getattr(self, "_historyMarked", False):
            self._historyMarked = True
            self.chat.notice("— end of history —", "history")
            self.chat.scrollToEnd()  # open at the newest message, with nothing counted as unread
            self.root.after_idle(self.chat.scrollToEnd)  # (again once the window has its size)

    def eventReceived(self, event: Dict[str, Any], replay: bool) -> None:
        if self.closing:
            return  # the window is going away
        if self.chat is None:
            return
        style, _ = text.describe(event, self.client.name)
        conv = conversation_of(event, self.client.name)
        if conv.startswith("@"):
            self.chat.addConversation(conv)
        if event.get("kind") in ("room-join", "room-leave") and same_conv(conv, self.chat.current):
            self.chat.setUsers(self.client.users)  # the room's members changed
        if same_conv(conv, self.chat.current):
            self.chat.add(event, style, replay)
            if not replay:
                self.markReadSoon()
        elif not replay:
            self.chat.showConversations()  # its unread count
        if replay or event.get("kind") not in ("message", "file", "announce") or event.get("name") == self.client.name:
            return
        if not self.focused:
            self.badge += 1
            self._title()
        personal = conv.startswith("@") or text.mentions(str(event.get("text", "")), self.client.name)
        if personal and (not self.focused or not same_conv(conv, self.chat.current)):
            # a direct message or a mention while looking elsewhere: ring, and tell the desktop
            self.root.bell()
            if not self.focused:
                where = "direct message" if conv.startswith("@") else conv
                notify.desktop(self.reactor, f"{event.get('name')} ({where})", str(event.get("text", "a file")))

    def messageAcked(self, cid: str, event: Dict[str, Any]) -> None:
        if self.closing:
            return  # the window is going away
        if self.chat is not None and same_conv(conversation_of(event, self.client.name), self.chat.current):
            self.chat.add(event, "mine")
            self.chat.showSeen()

    def historyPage(self, events: List[Dict[str, Any]], more: bool) -> None:
        if self.closing or self.chat is None:
            return  # the window is going away
        self.chat.olderArrived(events)

    def roomsChanged(self, rooms: List[str]) -> None:
        if self.closing or self.chat is None:
            return
        for room in rooms:
            self.chat.addConversation("#" + room)
        for conv in [c for c in self.chat.convs if c.startswith("#")]:
            if not any(same_conv(conv, "#" + r) for r in rooms):
                self.chat.removeConversation(conv)
        self.chat.showHeader()

    def presenceChanged(self, name: str, away: bool, status: str) -> None:
        if self.closing or self.chat is None:
            return
        self.chat.setUsers(self.client.users)
        self.chat.showConversations()

    def typingChanged(self, conv: str, names: List[str]) -> None:
        if self.closing or self.chat is None:
            return
        if same_conv(conv, self.chat.current):
            self.chat.showTyping(names)

    def seenChanged(self, conv: str) -> None:
        if self.closing or self.chat is None:
            return
        if same_conv(conv, self.chat.current):
            self.chat.showSeen()

    def eventRemoved(self, event: Dict[str, Any], conv: str) -> None:
        if self.closing or self.chat is None:
            return
        if same_conv(conv, self.chat.current):
            self.switch(self.chat.current)

    def eventChanged(self, event: Dict[str, Any], change: Dict[str, Any], conv: str) -> None:
        self.eventRemoved(event, conv)  # (drawn again, as it is now)

    def notice(self, line: str) -> None:
        if not self.closing:
            self.show(line)

    def profileChanged(self, name: str, profile: Dict[str, Any]) -> None:
        if self.closing or self.chat is None:
            return
        self.chat.setUsers(self.client.users)
        if self.chat.card.name is not None and wire.name_key(self.chat.card.name) == wire.name_key(name):
            self.chat.card.show(name)

    def usersChanged(self, users: List[str]) -> None:
        if self.closing:
            return  # the window is going away
        if self.chat is not None:
            self.chat.setUsers(users)

    def transferChanged(self, transfer: Transfer) -> None:
        if self.closing or transfer.quiet:
            return  # the window is going away, or it is a thumbnail's picture
        if self.chat is not None:
            self.chat.showTransfer(transfer)
            if transfer.state == "failed":
                self.chat.notice(f"{transfer.name}: {transfer.error}", "error")
            elif transfer.state == "finished" and transfer.direction == "download":
                self.files.saved(transfer)

    def errorReceived(self, code: str, message: str) -> None:
        if self.closing:
            return  # the window is going away
        if self.chat is not None:
            self.chat.notice(message, "error")


def _bind_shortcuts(chat: Any) -> None:
    """The message box's keys: Up (when empty) edits one's last message here, Esc clears, Ctrl+A selects all,
    Ctrl+V of copied files shares them."""
    box = chat.input

    def up(event: Any) -> Optional[str]:
        client = chat.app.client
        if box.get("1.0", "end-1c").strip() or client is None or not client.edits:
            return None  # (the cursor moves up, as in any text)
        mine = client.lastOwnMessage(chat.current)
        if mine is None:
            return None
        chat.startEditing(mine)
        return "break"

    def escape(event: Any) -> str:
        chat.editing = None
        chat.stopReplying()
        box.delete("1.0", "end")
        return "break"

    def select_all(event: Any) -> str:
        box.tag_add("sel", "1.0", "end-1c")
        return "break"

    box.bind("<Up>", up)
    box.bind("<Escape>", escape)
    def paste(event: Any) -> Optional[str]:
        try:
            pasted = box.clipboard_get()
        except tk.TclError:
            return None  # (nothing to paste as text)
        if chat.app.files.paste(pasted):
            chat.notice("Sharing what you pasted…")
            return "break"
        return None  # text: pasted as usual

    box.bind("<Control-a>", select_all)
    box.bind("<<Paste>>", paste)


def _removed(app: Any, detail: str) -> None:
    """The operator removed this user: say why, empty the online list, stop the input, offer the way back."""
    chat = app.chat
    chat.notice(detail, "error")
    chat.online.delete(0, "end")
    for widget in (chat.input, chat.sendButton, chat.fileButton, chat.inviteButton):
        widget.configure(state="disabled")
    chat.backButton = ttk.Button(chat.status.master, text="Back to login",
                                 command=lambda: app.showForm(detail), style="Accent.TButton")
    chat.backButton.grid(row=0, column=3, padx=4, pady=2)


def _fit_window(chat: Any) -> None:
    """Panels and status-bar buttons for the window's width."""
    chat.panels = _fit_panels(chat.body, (("side", chat.side), ("right", chat.right)), chat.panels, chat.width,
                              chat.wantPeople)
    wide = chat.width >= WIDE
    for button, label in ((chat.themeButton, chat.themeLabel()), (chat.profileButton, "Profile…" if wide else "Profile"),
                          (chat.inviteButton, "Invite…" if wide else "Invite"), (chat.exitButton, "Exit")):
        button.configure(text=label, width="" if wide else len(label) + 1)  # (narrow: no room to spare)
    if chat.width >= WIDE:
        chat.peopleButton.grid_remove()
    else:
        label = "Hide people" if chat.wantPeople else "People"
        chat.peopleButton.configure(text=label, width=len(label) + 1)
        chat.peopleButton.grid(row=0, column=0, columnspan=2, sticky="e", pady=(0, 6))


#: from this window width both side panels are shown
WIDE = 760


def _fit_panels(body: Any, panes: Any, shown: tuple, width: int, people: bool = False) -> tuple:
    """Side panels only where there is room: the conversation and its input come first (returns those shown);
    ``people``: in a narrow window, the people panel instead of the conversations list."""
    wanted = ("side", "right") if width >= WIDE else ("side",) if width >= 520 else ()
    if people and "right" not in wanted:
        wanted = ("right",)
    if wanted == shown:
        return shown
    for name, pane in panes:
        present = str(pane) in body.panes()
        if name in wanted and not present:
            if name == "side" and body.panes():
                body.insert(0, pane, weight=0)
            else:
                body.add(pane, weight=0)
        elif name not in wanted and present:
            body.forget(pane)
    return wanted


def _open_url(url: str) -> None:
    """Open a web address from a message in the system's browser (only http and https: never a file or a script)."""
    import webbrowser

    if url.lower().startswith(("http://", "https://")):
        webbrowser.open(url, new=2)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcpchat-client", description="The tcpchat desktop client. What is given here "
                                     "fills in the connection form.")
    parser.add_argument("link", nargs="?", help="a join link, tcpchat://HOST:PORT/?fp=… (printed by the server, or by "
                        "Invite… in another client): fills in the address and checks the server's certificate")
    parser.add_argument("--host", "-H", help="server address")
    parser.add_argument("--port", "-p", type=int, help=f"server port (default {DEFAULT_PORT})")
    parser.add_argument("--name", "-n", help="your user name")
    parser.add_argument("--cli", action="store_true", help="use the terminal client instead (same as tcpchat-cli; "
                        "the other options are then tcpchat-cli's)")
    args = parser.parse_args(argv)
    args.joined = None
    if args.link is not None:
        try:
            args.joined = link.parse(args.link)
        except link.BadLink as e:
            parser.error(f"{args.link!r} is not a join link: {e}")
    if args.port is not None and not 0 < args.port < 65536:
        parser.error("the port must be a number from 1 to 65535")
    return args


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--cli" in argv:
        from tcpchat.ui import cli

        cli.main([a for a in argv if a != "--cli"])
        return
    args = parse_args(argv)
    from twisted.internet import reactor, tksupport

    try:
        root = tk.Tk()
    except tk.TclError as e:
        raise SystemExit(f"tcpchat-client needs a display ({e}); try tcpchat-cli in a terminal.") from None
    from tcpchat import discovery

    app = App(root, reactor, browser=discovery.Browser)
    app.prefill(args.joined, host=args.host, port=args.port, name=args.name)
    tksupport.install(root)
    reactor.run()
    tksupport.uninstall()
    root.destroy()


if __name__ == "__main__":
    main()
