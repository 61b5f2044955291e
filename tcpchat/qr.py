"""
QR codes of join links, for the start-up banner and the clients' Invite…
(pure: no I/O).  ``segno`` makes the code; this draws it.

The terminal drawing uses only the Unicode block characters ``█ ▀ ▄`` and
spaces, two modules to a character cell, so it survives log files, the
journal and copy-and-paste, where colour escapes do not.  A block is a
*light* module (as ``qrencode -t UTF8`` draws it): on the usual light text on
a dark background the code reads dark-on-light, with its quiet zone; phone
cameras also read it inverted, on a light background.
"""

from __future__ import annotations

from typing import List

#: modules of light margin around the code (the standard asks for 4)
QUIET_ZONE = 4

_CELLS = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}


def modules(text: str, border: int = QUIET_ZONE) -> List[List[bool]]:
    """The code of ``text`` as rows of modules, True = dark, with ``border`` light modules around it."""
    import segno

    code = segno.make(text, error="m", micro=False)
    rows = [[bool(v) for v in row] for row in code.matrix]
    width = len(rows[0]) + 2 * border
    blank = [False] * width
    return [list(blank) for _ in range(border)] + [[False] * border + r + [False] * border for r in rows] + \
        [list(blank) for _ in range(border)]


def terminal(text: str, border: int = QUIET_ZONE) -> str:
    """The code as lines of block characters (light modules drawn), two rows of modules per line."""
    grid = modules(text, border)
    if len(grid) % 2:
        grid.append([False] * len(grid[0]))
    lines = []
    for top, bottom in zip(grid[0::2], grid[1::2]):
        lines.append("".join(_CELLS[(not a, not b)] for a, b in zip(top, bottom)))
    return "\n".join(lines)

