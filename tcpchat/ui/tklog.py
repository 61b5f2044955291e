"""
The conversation on screen in the desktop client: one ``tk.Text`` that draws
events, bounded.

A switch draws only the newest :data:`PAGE` events of a conversation, so it
costs the same with 200 events held or 20,000; scrolling to the top draws the
next page of what is held, then asks the server for older ones
(``on_top``).  While the view follows the newest message, at most
:data:`KEEP` events stay drawn (the oldest are let go; they come back on
scrolling up).  Every piece of an event carries the tag ``e<ID>``, so a
click finds its event (:meth:`EventLog.eventAt`).
"""

from __future__ import annotations

import collections
import functools
import tkinter as tk
from tkinter import ttk
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from tcpchat.ui import text, thumbs

#: events drawn on a switch, and per page scrolled up
PAGE = 150
#: events drawn at most while following the newest one
KEEP = 600
#: events that change others and are not drawn themselves
CHANGES = ("edit", "react", "delete")
#: the styles of the tags of events (their colours come from the theme)
STYLES = ("history", "mine", "message", "system", "file", "error", "time")


class EventLog:
    """
    :param master: the frame it goes in (it takes rows 1, columns 0-1 of its grid).
    :param app: the window (``client``, ``fonts``, ``files``).
    :param on_scrolled: ``(first, last)`` as the scroll bar gets them.
    :param open_url: opens a web address.
    """

    def __init__(self, master: Any, app: Any, on_scrolled: Callable[[float, float], None],
                 open_url: Callable[[str], None]) -> None:
        self.app = app
        self.openUrl = open_url
        self.onScrolled = on_scrolled
        #: the ids of the events drawn, in order
        self.drawn: Deque[int] = collections.deque()
        self.fileTags: Dict[str, Dict[str, Any]] = {}
        #: link tags drawn -> their web address
        self.urlTags: Dict[str, str] = {}
        self.urls = 0
        #: thumbnail slots already holding their picture
        self.placed: set = set()
        fonts = app.fonts
        # (a small requested size: the grid gives it all the room there is, and the input below always stays)
        self.text = log = tk.Text(master, wrap="word", state="disabled", relief="flat", padx=10, pady=8,
                                  font=fonts["body"], cursor="arrow", height=4, width=30)
        self.scroll = ttk.Scrollbar(master, command=log.yview)
        log.configure(yscrollcommand=self._scrolled)
        log.grid(row=1, column=0, sticky="nsew")
        self.scroll.grid(row=1, column=1, sticky="ns")
        log.tag_configure("system", font=fonts["italic"])
        log.tag_configure("name", font=fonts["bold"])
        log.tag_configure("link", underline=True)
        log.tag_configure("time", font=fonts["small"])
        log.tag_configure("quote", font=fonts["small"], lmargin1=40, lmargin2=40)
        log.tag_configure("reactions", font=fonts["small"])
        log.tag_bind("link", "<Enter>", lambda e: log.configure(cursor="hand2"))
        log.tag_bind("link", "<Leave>", lambda e: log.configure(cursor="arrow"))
        self.indent()

    def indent(self) -> None:
        """The lines of a long or multi-line message go on under its text, not under the time stamp."""
        indent = self.app.fonts["small"].measure("00:00  ") + 10
        for tag in STYLES + ("mention",):
            self.text.tag_configure(tag, lmargin2=indent)

    def colour(self, palette: Dict[str, str]) -> None:
        self.text.configure(background=palette["log"], foreground=palette["message"],
                            insertbackground=palette["message"], selectbackground=palette["select"])
        for tag in STYLES:
            self.text.tag_configure(tag, foreground=palette[tag])
        self.text.tag_configure("mention", background=palette["mention"])
        self.text.tag_configure("quote", foreground=palette["history"])

    def _scrolled(self, first: Any, last: Any) -> None:
        self.scroll.set(first, last)
        self.onScrolled(float(first), float(last))

    # ------------------------------------------------------------ what is drawn

    def atEnd(self) -> bool:
        return self.text.yview()[1] >= 0.999

    @property
    def firstId(self) -> Optional[int]:
        return self.drawn[0] if self.drawn else None

    def clear(self) -> None:
        self.text.configure(state="normal")
        self.text.delete("1.0", "end")
        self.text.configure(state="disabled")
        for tag in list(self.urlTags) + list(self.fileTags) + [f"e{i}" for i in self.drawn]:
            self.text.tag_delete(tag)
        self.urlTags.clear()
        self.fileTags.clear()
        self.placed.clear()
        self.drawn.clear()

    def show(self, events: List[Dict[str, Any]]) -> None:
        """Draw a conversation from scratch: its newest :data:`PAGE` events."""
        self.clear()
        shown = [e for e in events if e.get("kind") not in CHANGES][-PAGE:]
        for event in shown:
            self.add(event, self.styleOf(event))
        self.text.see("end")

    def styleOf(self, event: Dict[str, Any]) -> str:
        return text.describe(event, self.app.client.name)[0]

    def prepend(self, events: List[Dict[str, Any]]) -> int:
        """Draw ``events`` (older than any drawn) above the others, the view staying where it is; how many."""
        first = self.firstId
        older = sorted((e for e in events if e.get("kind") not in CHANGES and isinstance(e.get("id"), int)
                        and (first is None or e["id"] < first)), key=lambda e: e["id"])
        if not older:
            return 0
        above = int(self.text.index("@0,0").split(".")[0])
        lines = int(self.text.index("end-1c").split(".")[0])
        self.text.mark_set("older", "1.0")
        self.text.mark_gravity("older", "right")  # (each piece goes after the one before)
        for event in older:
            self.add(event, self.styleOf(event), where="older")
        self.drawn.extendleft(reversed([e["id"] for e in older if isinstance(e.get("id"), int)]))
        added = int(self.text.index("end-1c").split(".")[0]) - lines
        self.text.yview(f"{above + added}.0")
        return len(older)

    def add(self, event: Dict[str, Any], style: str, replay: bool = False, where: str = "end") -> None:
        """Draw one event at ``where`` (its end, or the mark ``older``)."""
        kind = event.get("kind")
        if kind in CHANGES:
            return
        app, log = self.app, self.text
        mark = f"e{event['id']}" if isinstance(event.get("id"), int) else "e?"
        log.configure(state="normal")

        def put(piece: str, *tags: str) -> None:
            log.insert(where, piece, tags + (mark,))

        put(text.clock(event.get("ts")) + "  ", "time")
        tags: Tuple[str, ...] = ("history",) if replay else (style,)
        if kind == "message":
            said = str(event.get("text", ""))
            if not replay and style == "message" and text.mentions(said, app.client.name):
                tags = tags + ("mention",)
            quoted = text.reply_line(event)
            if quoted:
                put(quoted + "\n", "quote")
                put("       ", "time")
            put(f"{event.get('name')}: ", *tags, "name")
            self._linked(said, tags, put)
            if event.get("edited"):
                put(" (edited)", "time")
            shown = text.reactions_line(event, "   ")
            if shown:
                put(shown, "reactions")
            put("\n", *tags)
        elif kind == "file":
            info = event.get("file") or {}
            tag = f"file{info.get('id')}-{event.get('id')}"
            self.fileTags[tag] = info
            put(f"{event.get('name')} shared ", *tags)
            put(f"📎 {info.get('name')}", *tags, "file", "link", tag)
            put(f"  ({text.human_size(info.get('size', 0))}) — click to download\n", *tags)
            self._click(tag, functools.partial(app.files.save, info))
            if thumbs.wanted(info) and app.files.thumbs is not None:
                slot = f"thumb{event.get('id')}"
                put(" ", *tags, slot)  # where the picture goes once it is here
                put("\n", *tags)
                app.files.thumbnail(info, lambda photo, slot=slot: self._placeThumbnail(slot, photo))
        else:
            _, line = text.describe(event, app.client.name if app.client else None)
            put(line + "\n", *(tags if replay else ("system",)))
        log.configure(state="disabled")
        if mark != "e?" and where == "end":
            self.drawn.append(event["id"])

    def trim(self) -> None:
        """Following the newest message: let the oldest drawn go, past :data:`KEEP`."""
        if len(self.drawn) <= KEEP:
            return
        keep = self.drawn[len(self.drawn) - KEEP]
        ranges = self.text.tag_ranges(f"e{keep}")
        if not ranges:
            return
        self.text.configure(state="normal")
        self.text.delete("1.0", ranges[0])
        self.text.configure(state="disabled")
        while self.drawn and self.drawn[0] != keep:
            self.text.tag_delete(f"e{self.drawn.popleft()}")

    def _placeThumbnail(self, slot: str, photo: Any) -> None:
        ranges = self.text.tag_ranges(slot)
        if not ranges or slot in self.placed:
            return  # (that conversation is no longer on screen, or it is already there)
        self.placed.add(slot)
        follow = self.atEnd()
        self.text.configure(state="normal")
        self.text.image_create(ranges[0], image=photo, padx=6, pady=4)
        self.text.configure(state="disabled")
        if follow:
            self.text.see("end")

    def _linked(self, said: str, tags: tuple, put: Callable[..., None]) -> None:
        """A message's text, its web addresses as links that open in the system's browser."""
        at = 0
        for match in text.URL.finditer(said):
            if match.start() > at:
                put(said[at:match.start()], *tags)
            url = match.group(0)
            self.urls += 1
            tag = f"url{self.urls}"
            self.urlTags[tag] = url
            put(url, *tags, "link", tag)
            self._click(tag, functools.partial(self.openUrl, url))
            at = match.end()
        if at < len(said):
            put(said[at:], *tags)

    def notice(self, line: str, clock: str, style: str = "system",
               actions: Optional[List[Tuple[str, Callable[[], None]]]] = None) -> None:
        """A line that is not an event; ``actions``: ``(label, do)`` drawn after it as links."""
        follow = self.atEnd()
        self.text.configure(state="normal")
        self.text.insert("end", clock + "  ", ("time",))
        self.text.insert("end", line, (style,))
        for label, do in actions or ():
            self.urls += 1
            tag = f"url{self.urls}"
            self.urlTags[tag] = label
            self.text.insert("end", "   ", (style,))
            self.text.insert("end", label, (style, "link", tag))
            self._click(tag, do)
        self.text.insert("end", "\n", (style,))
        self.text.configure(state="disabled")
        if follow:
            self.text.see("end")

    def _click(self, tag: str, do: Callable[[], Any]) -> None:
        self.text.tag_bind(tag, "<Button-1>", lambda event: do())

    def eventAt(self, x: int, y: int) -> Optional[int]:
        """The id of the event drawn at window position ``(x, y)``, if any."""
        for tag in self.text.tag_names(f"@{x},{y}"):
            if tag.startswith("e") and tag[1:].isdigit():
                return int(tag[1:])
        return None
