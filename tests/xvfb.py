"""A virtual X display for the GUI tests, started once per test run."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
from typing import Optional

_started: Optional[subprocess.Popen] = None


def ensure_display() -> Optional[str]:
    """Use $DISPLAY if set, else start Xvfb; returns the display or None if there is none."""
    global _started
    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"]
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        return None
    for number in range(90, 110):
        if os.path.exists(f"/tmp/.X11-unix/X{number}") or os.path.exists(f"/tmp/.X{number}-lock"):
            continue
        read, write = os.pipe()
        proc = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp",
                                 "-displayfd", str(write)], pass_fds=(write,),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write)
        # Xvfb writes the display number to -displayfd once it accepts clients
        with os.fdopen(read) as f:
            ready = f.readline().strip()
        if ready:
            _started = proc
            atexit.register(_stop)
            os.environ["DISPLAY"] = f":{ready}"
            return os.environ["DISPLAY"]
        proc.kill()
        proc.wait()
    return None


def _stop() -> None:
    if _started is not None:
        _started.terminate()
        try:
            _started.wait(5)
        except subprocess.TimeoutExpired:
            _started.kill()


def screenshot(path: str, window: Optional[str] = None) -> bool:
    """Save a PNG of the screen (or one window) with ImageMagick's import, if present."""
    tool = shutil.which("import")
    if tool is None:
        return False
    args = [tool, "-window", window or "root", path]
    return subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode == 0


def xdotool(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, timeout=30, stdout=subprocess.DEVNULL)


