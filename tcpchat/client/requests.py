"""
Requests that change what others see, as frames: checked here, before they
are sent, so a UI gets a ``ValueError`` it can show instead of a refusal
from the server.  Pure: no I/O.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, Optional

from tcpchat import wire

Frame = Dict[str, Any]


def edit_frame(event_id: int, text: str) -> Frame:
    if wire.is_blank(text):
        raise ValueError("Empty messages are not sent.")
    if len(text.encode("utf-8")) > wire.MAX_TEXT_BYTES:
        raise ValueError(f"Messages are limited to {wire.MAX_TEXT_BYTES} bytes.")
    return {"type": "edit", "id": event_id, "text": text}


def react_frame(event_id: int, emoji: str, on: bool = True) -> Frame:
    if emoji not in wire.REACTIONS:
        raise ValueError("Reactions are " + " ".join(wire.REACTIONS))
    return {"type": "react", "id": event_id, "emoji": emoji, "on": on}


def profile_frame(bio: Optional[str] = None, picture: Optional[bytes] = None) -> Frame:
    """A bio (made one line) and/or a picture (PNG or JPEG bytes; ``b""`` removes it)."""
    frame: Frame = {"type": "profile"}
    if bio is not None:
        frame["bio"] = " ".join(bio.split())
        if len(frame["bio"]) > wire.MAX_BIO_CHARS:
            raise ValueError(f"A bio is one line of at most {wire.MAX_BIO_CHARS} characters.")
    if picture is not None:
        if picture and (len(picture) > wire.MAX_PICTURE_BYTES or wire.picture_type(picture) is None):
            raise ValueError(f"A profile picture is a PNG or JPEG of at most {wire.MAX_PICTURE_BYTES // 1024} KiB.")
        frame["picture"] = base64.b64encode(picture).decode("ascii")
    return frame
