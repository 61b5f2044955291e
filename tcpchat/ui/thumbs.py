"""
Thumbnails of shared images for the desktop client (Pillow), made off the
reactor thread and bounded: only PNG, JPEG, GIF and WebP files up to
``MAX_BYTES``, at most ``MAX_PIXELS`` decoded, at most ``KEPT`` kept.

No toolkit here: :func:`make` returns a small Pillow image; the Tk view turns
it into a ``PhotoImage`` on its own thread.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Optional

#: shared images shown inline (the types Pillow decodes safely; never SVG)
TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: larger files are not fetched just to be shown
MAX_BYTES = 8 * 1024 * 1024
#: a picture that decodes to more pixels than this is not shown (a "decompression bomb" cannot eat memory)
MAX_PIXELS = 40_000_000
#: the longest side of a thumbnail, in pixels
SIZE = 240
#: thumbnails kept in memory (the oldest go first)
KEPT = 64


def wanted(info: Any) -> bool:
    """Is this shared file a picture to show inline?"""
    return (isinstance(info, dict) and info.get("mime") in TYPES and isinstance(info.get("size"), int)
            and 0 < info["size"] <= MAX_BYTES and isinstance(info.get("id"), int))


def available() -> bool:
    try:
        import PIL.Image  # noqa: F401
        import PIL.ImageTk  # noqa: F401
    except ImportError:
        return False
    return True


def make(path: str) -> Any:
    """(In a thread) a thumbnail of the picture at ``path``: a Pillow image, or ValueError if it is not one."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as picture:
            if picture.width * picture.height > MAX_PIXELS:
                raise ValueError("too many pixels")
            picture.draft("RGB", (SIZE * 2, SIZE * 2))  # (JPEG: decode at a fraction of the size)
            small = picture.convert("RGBA") if picture.mode in ("P", "LA", "RGBA") else picture.convert("RGB")
            small.thumbnail((SIZE, SIZE))
            return small
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(str(e)) from None


#: the side of the square profile pictures the clients send, in pixels
AVATAR = 128


def avatar(path: str) -> bytes:
    """(In a thread) a profile picture from the picture at ``path``: its middle square, 128x128, as PNG (or JPEG
    when a PNG would be over the protocol's 64 KiB); ValueError if it is not a picture."""
    import io

    from PIL import Image, ImageOps

    from tcpchat import wire

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as picture:
            if picture.width * picture.height > MAX_PIXELS:
                raise ValueError("too many pixels")
            square = ImageOps.fit(picture.convert("RGB"), (AVATAR, AVATAR))
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{os.path.basename(path)} is not a picture ({e})") from None
    out = io.BytesIO()
    square.save(out, "PNG", optimize=True)
    if out.tell() > wire.MAX_PICTURE_BYTES:
        out = io.BytesIO()
        square.save(out, "JPEG", quality=85)
    return out.getvalue()


class Cache:
    """Thumbnails (whatever the view makes of them) by file id, the most recent ``KEPT``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.images: "OrderedDict[int, Any]" = OrderedDict()

    def path(self, file_id: int) -> str:
        os.makedirs(self.folder, exist_ok=True)
        return os.path.join(self.folder, f"{file_id}.img")

    def get(self, file_id: int) -> Optional[Any]:
        image = self.images.get(file_id)
        if image is not None:
            self.images.move_to_end(file_id)
        return image

    def put(self, file_id: int, image: Any) -> None:
        self.images[file_id] = image
        self.images.move_to_end(file_id)
        while len(self.images) > KEPT:
            self.images.popitem(last=False)
