"""
Files in the desktop client: sharing (a dialog, a pasted path), saving to
the desktop's download folder, opening what was downloaded with the
system's viewer, and thumbnails of shared pictures (fetched quietly, made
in a thread with Pillow).  A helper of :class:`tcpchat.ui.tk.App`; it
touches no socket (the client core moves the bytes).
"""

from __future__ import annotations

import os
from tkinter import filedialog
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import unquote, urlsplit

from tcpchat import wire
from tcpchat.client.transfers import Transfer
from tcpchat.ui import notify, thumbs


def pasted_paths(pasted: str) -> List[str]:
    """The files a paste names (file managers copy ``file://`` addresses or paths, one per line), if all exist."""
    paths = []
    for line in pasted.strip().splitlines():
        line = line.strip()
        if line.startswith("file://"):
            line = unquote(urlsplit(line).path)
        if not line or not os.path.isabs(line) or not os.path.isfile(line):
            return []
        paths.append(line)
    return paths[:20]


class Files:
    def __init__(self, app: Any) -> None:
        self.app = app
        #: thumbnails of shared pictures (Pillow), kept next to the remembered form; None without Pillow
        self.thumbs = thumbs.Cache(os.path.join(os.path.dirname(app.settings.path), "thumbnails")) \
            if thumbs.available() else None
        self._waiting: Dict[int, List[Callable[[Any], None]]] = {}
        #: file id -> where it was downloaded (this session)
        self.downloaded: Dict[int, str] = {}

    def pick(self) -> None:
        path = filedialog.askopenfilename(parent=self.app.root, title="Share a file")
        if path:
            self.share(path)

    def share(self, path: str) -> Transfer:
        app = self.app
        return app.client.share(path, conv=app.current if app.chat is not None else None)

    def paste(self, pasted: str) -> bool:
        """Ctrl+V of copied files shares them (True); anything else is pasted as text."""
        paths = pasted_paths(pasted)
        for path in paths:
            self.share(path)
        return bool(paths)

    def save(self, info: Dict[str, Any]) -> None:
        name = wire.safe_file_name(info.get("name", "file"))
        dest = filedialog.asksaveasfilename(parent=self.app.root, title="Save file as", initialfile=name,
                                            initialdir=notify.download_folder())
        if dest:
            self.download(info, dest)

    def download(self, info: Dict[str, Any], dest: str) -> Transfer:
        return self.app.client.download(info, dest)

    def cancel(self, transfer: Transfer) -> None:
        self.app.client.cancel(transfer)

    def saved(self, transfer: Transfer) -> None:
        """A download finished: say where, with Open and Show in folder."""
        path = transfer.path
        if transfer.file is not None and isinstance(transfer.file.get("id"), int):
            self.downloaded[transfer.file["id"]] = path
        self.app.chat.notice(f"Saved {transfer.name} to {path}", actions=[
            ("Open", lambda: self.open(path)), ("Show in folder", lambda: self.open(path, folder=True))])

    def open(self, path: str, folder: bool = False) -> None:
        """A downloaded file with the system's viewer (or the folder holding it)."""
        if not notify.open_path(self.app.reactor, path, folder):
            self.app.show(f"This desktop has no program to open {path} with.", "error")

    def thumbnail(self, info: Dict[str, Any], place: Callable[[Any], None]) -> None:
        """Call ``place(photo)`` with a thumbnail of this shared picture: fetched (quietly), made in a thread."""
        app = self.app
        assert self.thumbs is not None and app.client is not None
        fid = info["id"]
        ready = self.thumbs.get(fid)
        if ready is not None:
            place(ready)
            return
        waiting = self._waiting.setdefault(fid, [])
        waiting.append(place)
        if len(waiting) > 1:
            return  # already on its way
        from PIL import ImageTk
        from twisted.internet.threads import deferToThread

        path = self.thumbs.path(fid)
        transfer = app.client.download(info, path, quiet=True)

        def made(small: Any) -> None:
            if app.closing or self.thumbs is None:
                return
            photo = ImageTk.PhotoImage(small, master=app.root)
            self.thumbs.put(fid, photo)
            for callback in self._waiting.pop(fid, []):
                callback(photo)

        def failed(failure: Any) -> Optional[Any]:
            self._waiting.pop(fid, None)  # (not a picture after all, or gone: the link stays)
            return None

        transfer.finished.addCallback(lambda _: deferToThread(thumbs.make, path)).addCallbacks(made, failed)
