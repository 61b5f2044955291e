"""
Looks of the desktop client: a light and a dark palette, fonts that zoom.

:func:`apply` (re)styles the ttk theme and every classic Tk widget of a
window (texts, lists, canvases) with one palette, so switching the theme
while the window is open needs nothing else.  The fonts are named Tk fonts:
:func:`zoom` changes their size and every widget using them follows.
"""

from __future__ import annotations

import os
import tkinter as tk
from tkinter import font as tkfont
from tkinter import ttk
from typing import Any, Dict

PALETTES: Dict[str, Dict[str, str]] = {
    "light": {
        "bg": "#f7f7f9", "log": "#ffffff", "field": "#ffffff", "history": "#8a8f98", "mine": "#1f5fbf",
        "message": "#1d1f23", "system": "#a86200", "file": "#0b7a3e", "error": "#c62828", "time": "#9aa0a6",
        "select": "#dbe6fb", "mention": "#fff4c2", "bar": "#e9ebef", "barText": "#444444", "accent": "#2f6fde",
        "accentActive": "#2a62c4", "accentOff": "#9bb6e6", "trough": "#e3e6eb", "border": "#d0d4da",
    },
    "dark": {
        "bg": "#1e2024", "log": "#26282d", "field": "#2d3036", "history": "#8d939c", "mine": "#7fb0ff",
        "message": "#e4e6ea", "system": "#f0b35a", "file": "#5fd38d", "error": "#ff7b72", "time": "#7d838c",
        "select": "#34476b", "mention": "#4a4120", "bar": "#17181b", "barText": "#c9ccd1", "accent": "#3d7ef0",
        "accentActive": "#5a93f5", "accentOff": "#3a4a66", "trough": "#34373d", "border": "#3c3f45",
    },
}
#: font sizes the zoom keys go between
SMALLEST, LARGEST = 8, 28


def system_theme() -> str:
    """``dark`` when the desktop says so (GTK_THEME=…:dark, or a dark colour scheme asked for), else ``light``."""
    wanted = (os.environ.get("GTK_THEME", "") + " " + os.environ.get("TCPCHAT_THEME", "")).lower()
    return "dark" if "dark" in wanted else "light"


def default_size() -> int:
    """The desktop's font size, at least 10 points."""
    return max(10, abs(int(tkfont.nametofont("TkDefaultFont").actual()["size"])))


def fonts(root: tk.Tk, size: int = 0) -> Dict[str, Any]:
    """The client's named fonts, at ``size`` points (0: :func:`default_size`)."""
    family = tkfont.nametofont("TkDefaultFont").actual()["family"]
    size = size or default_size()
    made = {
        "body": tkfont.Font(root, family=family),
        "bold": tkfont.Font(root, family=family, weight="bold"),
        "italic": tkfont.Font(root, family=family, slant="italic"),
        "small": tkfont.Font(root, family=family),
        "heading": tkfont.Font(root, family=family, weight="bold"),
    }
    zoom(made, size)
    return made


def size_of(made: Dict[str, Any]) -> int:
    return int(made["body"].cget("size"))


def zoom(made: Dict[str, Any], size: int) -> int:
    """Set the fonts to ``size`` (kept between :data:`SMALLEST` and :data:`LARGEST`); the size set."""
    size = max(SMALLEST, min(LARGEST, size))
    for name in ("body", "bold", "italic"):
        made[name].configure(size=size)
    made["small"].configure(size=size - 2)
    made["heading"].configure(size=size + 5)
    return size


def apply(root: tk.Tk, made: Dict[str, Any], palette: Dict[str, str]) -> None:
    """Style the ttk theme and every classic widget under ``root`` with ``palette``."""
    p = palette
    style = ttk.Style(root)
    if "clam" in style.theme_names():
        style.theme_use("clam")
    style.configure(".", background=p["bg"], foreground=p["message"], font=made["body"], fieldbackground=p["field"],
                    bordercolor=p["border"], lightcolor=p["bg"], darkcolor=p["bg"], troughcolor=p["trough"],
                    insertcolor=p["message"], selectbackground=p["select"], selectforeground=p["message"])
    style.map(".", background=[("active", p["bar"]), ("disabled", p["bg"])],
              foreground=[("disabled", p["history"])])
    style.configure("TButton", background=p["bar"], foreground=p["message"])
    style.configure("TEntry", fieldbackground=p["field"], foreground=p["message"])
    style.configure("TCheckbutton", background=p["bg"], foreground=p["message"])
    style.configure("Card.TFrame", background=p["bg"])
    style.configure("Heading.TLabel", font=made["heading"])
    style.configure("Error.TLabel", foreground=p["error"])
    style.configure("Info.TLabel", foreground=p["history"])
    style.configure("Small.TLabel", foreground=p["history"], font=made["small"])
    style.configure("Side.TLabel", font=made["bold"])
    style.configure("Header.TLabel", font=made["bold"], foreground=p["message"])
    style.configure("Hint.TLabel", foreground=p["history"], font=made["small"])
    style.configure("Status.TLabel", foreground=p["barText"], padding=(10, 4), background=p["bar"])
    style.configure("Status.TFrame", background=p["bar"])
    style.configure("Accent.TButton", foreground="white", background=p["accent"])
    style.map("Accent.TButton", background=[("active", p["accentActive"]), ("disabled", p["accentOff"])])
    style.configure("Unread.TButton", foreground="white", background=p["accent"])
    style.configure("Horizontal.TProgressbar", background=p["accent"], troughcolor=p["trough"], bordercolor=p["border"],
                    lightcolor=p["accent"], darkcolor=p["accent"])
    _classic(root, p)


def _classic(widget: Any, p: Dict[str, str]) -> None:
    """Classic Tk widgets do not follow ttk styles: colour each one (texts as input fields; see EventLog.colour)."""
    if isinstance(widget, (tk.Tk, tk.Toplevel)):
        widget.configure(background=p["bg"])
    elif isinstance(widget, tk.Listbox):
        widget.configure(background=p["log"], foreground=p["message"], selectbackground=p["select"],
                         selectforeground=p["message"])
    elif isinstance(widget, tk.Text):
        widget.configure(background=p["field"], foreground=p["message"], insertbackground=p["message"],
                         selectbackground=p["select"])
    elif isinstance(widget, tk.Canvas) and not getattr(widget, "keepWhite", False):
        widget.configure(background=p["log"])
    for child in widget.winfo_children():
        _classic(child, p)
