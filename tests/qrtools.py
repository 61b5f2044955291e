"""Reading QR codes back, as a phone would: drawings -> pixels -> zxing-cpp's decoder."""

from typing import List, Optional

BLOCKS = "█▀▄ "


def from_terminal(drawing: str) -> List[List[bool]]:
    """A block-character drawing (a block = a light module) -> rows of modules, True = dark."""
    lines = [line for line in drawing.split("\n") if line and set(line) <= set(BLOCKS)]
    width = max(len(line) for line in lines)
    grid: List[List[bool]] = []
    for line in lines:
        line = line.ljust(width)
        grid.append([c not in "█▀" for c in line])
        grid.append([c not in "█▄" for c in line])
    return grid


def decode(grid: List[List[bool]], scale: int = 4) -> Optional[str]:
    """Decode rows of modules (True = dark) with a real QR decoder; None if it finds no code."""
    import zxingcpp

    height, width = len(grid) * scale, len(grid[0]) * scale
    pixels = bytearray(b"\xff" * (width * height))
    for y, row in enumerate(grid):
        for x, dark in enumerate(row):
            if dark:
                for dy in range(scale):
                    at = (y * scale + dy) * width + x * scale
                    pixels[at : at + scale] = b"\x00" * scale
    found = zxingcpp.read_barcodes(memoryview(bytes(pixels)).cast("B", (height, width)))
    return found[0].text if found else None
