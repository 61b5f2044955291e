"""
Profiles in the desktop client (feature ``profiles``): a card under the
people list showing the picked person's picture, bio and status, and the
"Profile…" dialog that sets one's own.  The picture is fetched like a shared
picture's thumbnail (:class:`tcpchat.ui.tkfiles.Files`); one's own is made
128×128 from any picture in a thread (:func:`tcpchat.ui.thumbs.avatar`).
"""

from __future__ import annotations

import tkinter as tk
from tkinter import filedialog, ttk
from typing import Any, Optional

from twisted.internet.threads import deferToThread

from tcpchat import wire
from tcpchat.ui import thumbs


class ProfileCard(ttk.Frame):
    """Who is picked in the people list: picture, name, status, bio."""

    def __init__(self, master: Any, app: Any) -> None:
        super().__init__(master, padding=(0, 4, 0, 10))
        self.app = app
        self.name: Optional[str] = None
        self.photo: Any = None
        self.picture = ttk.Label(self)
        self.picture.grid(row=0, column=0, sticky="w")
        self.title = ttk.Label(self, text="", style="Side.TLabel")
        self.title.grid(row=1, column=0, sticky="w", pady=(4, 0))
        self.bio = ttk.Label(self, text="", style="Small.TLabel", wraplength=210, justify="left")
        self.bio.grid(row=2, column=0, sticky="nw")
        self.columnconfigure(0, weight=1)

    def show(self, name: Optional[str]) -> None:
        """Show ``name``'s profile (None: nobody; the card goes)."""
        self.name = name
        client = self.app.client
        if name is None or client is None or not client.profiles:
            self.grid_remove()
            return
        profile = client.model.profileOf(name)
        info = client.model.presenceOf(name)
        here = any(wire.name_key(u) == wire.name_key(name) for u in client.users)
        state = "away" if info.get("away") else "online" if here else "not online"
        self.title.configure(text=f"{name}  ·  {state}")
        lines = [info["status"]] if info.get("status") else []
        lines.append(profile.get("bio") or "(no bio)")
        self.bio.configure(text="\n".join(lines))
        self.photo = None
        self.picture.configure(image="", text="")
        picture = profile.get("picture")
        if isinstance(picture, dict) and thumbs.wanted(picture) and self.app.files.thumbs is not None:
            self.app.files.thumbnail(picture, lambda photo, name=name: self._placed(name, photo))
        self.grid()

    def _placed(self, name: str, photo: Any) -> None:
        if name != self.name:
            return  # someone else is picked by now
        self.photo = photo  # (Tk shows an image only while Python holds it)
        self.picture.configure(image=photo)


class ProfileDialog(tk.Toplevel):
    """Set one's bio and picture."""

    def __init__(self, master: Any, app: Any) -> None:
        super().__init__(master, padx=16, pady=12)
        self.app = app
        self.title("Your profile")
        self.transient(master)
        self.resizable(False, False)
        self.configure(background=app.palette["bg"])
        client = app.client
        mine = client.model.profileOf(client.name)
        ttk.Label(self, text=f"Bio (one line, up to {wire.MAX_BIO_CHARS} characters):").grid(
            row=0, column=0, columnspan=3, sticky="w")
        self.bio = tk.StringVar(value=mine.get("bio", ""))
        entry = ttk.Entry(self, textvariable=self.bio, width=48)
        entry.grid(row=1, column=0, columnspan=3, sticky="ew", pady=(2, 10))
        self.path: Optional[str] = None
        self.removePicture = tk.BooleanVar(value=False)
        self.pictureLabel = ttk.Label(self, text="Picture: " + ("yes" if mine.get("picture") else "none"),
                                      style="Small.TLabel")
        self.pictureLabel.grid(row=2, column=0, sticky="w")
        ttk.Button(self, text="Choose picture…", command=self.choose).grid(row=2, column=1, padx=4)
        ttk.Checkbutton(self, text="Remove it", variable=self.removePicture).grid(row=2, column=2)
        self.message = ttk.Label(self, text="", style="Error.TLabel", wraplength=380)
        self.message.grid(row=3, column=0, columnspan=3, sticky="w", pady=(8, 0))
        buttons = ttk.Frame(self)
        buttons.grid(row=4, column=0, columnspan=3, sticky="e", pady=(10, 0))
        self.saveButton = ttk.Button(buttons, text="Save", style="Accent.TButton", command=self.save)
        self.saveButton.grid(row=0, column=0, padx=4)
        ttk.Button(buttons, text="Cancel", command=self.destroy).grid(row=0, column=1)
        entry.bind("<Return>", lambda e: self.save())
        self.bind("<Escape>", lambda e: self.destroy())
        entry.focus_set()

    def choose(self) -> None:
        path = filedialog.askopenfilename(parent=self, title="A picture of you", filetypes=[
            ("Pictures", "*.png *.jpg *.jpeg *.gif *.webp *.bmp"), ("All files", "*")])
        if path:
            self.pick(path)

    def pick(self, path: str) -> None:
        self.path = path
        self.removePicture.set(False)
        self.pictureLabel.configure(text="Picture: " + path.rsplit("/", 1)[-1])

    def save(self) -> Any:
        """Send what changed; the dialog closes once the server has stored it (or says why not)."""
        client = self.app.client
        self.saveButton.configure(state="disabled")
        self.message.configure(text="")
        if self.removePicture.get():
            made: Any = deferToThread(lambda: b"")
        elif self.path is not None:
            made = deferToThread(thumbs.avatar, self.path)
        else:
            made = deferToThread(lambda: None)
        d = made.addCallback(lambda picture: client.setProfile(bio=self.bio.get(), picture=picture))

        def failed(failure: Any) -> None:
            if self.winfo_exists():
                self.message.configure(text=getattr(failure.value, "message", None) or str(failure.value))
                self.saveButton.configure(state="normal")

        d.addCallbacks(lambda _: self.destroy(), failed)
        return d
