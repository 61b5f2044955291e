#!/usr/bin/env python3
"""
The desktop client over a long day: how long switching conversations takes
with many events held, drawn the way the client draws them now (its newest
page, older ones on scrolling up) and the way it did before 0.3 (everything
held, from scratch).

A real Tk window (on $DISPLAY, or an Xvfb this starts); the events are put
into the client's model directly, no server.  Each switch is timed until Tk
has done its layout (``update_idletasks``) and then until the window is drawn
(``update``).

    .venv/bin/python benchmarks/tkbench.py                 # 20,000 events, 30 switches
    .venv/bin/python benchmarks/tkbench.py --events 1000,20000 --repeat 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def display() -> None:
    if os.environ.get("DISPLAY"):
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        sys.exit("tkbench: no $DISPLAY and no Xvfb (apt install xvfb)")
    read, write = os.pipe()
    subprocess.Popen([xvfb, "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-displayfd", str(write)],
                     pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        os.environ["DISPLAY"] = ":" + f.readline().strip()


def fill(app: Any, count: int) -> List[str]:
    """``count`` events held, half in #general and half in #lab (messages, with some joins and files)."""
    from tcpchat.client.core import ChatListener

    model = app.client.model
    model.name = "me"
    model.rooms["lab"] = {"members": ["me", "ann", "bob"], "seen": {}}
    real, model.listener = model.listener, ChatListener()
    now = time.time() - count
    for i in range(1, count + 1):
        room = "general" if i % 2 else "lab"
        event: Dict[str, Any] = {"id": i, "ts": now + i, "kind": "message", "room": room,
                                 "name": ("ann", "bob", "me")[i % 3],
                                 "text": f"message {i}: a line of an ordinary length, with a link https://example.org/{i}"}
        if i % 97 == 0:
            event = {"id": i, "ts": now + i, "kind": "room-join", "room": room, "name": "cat"}
        model.event(event, replay=True)
    model.listener = real
    return ["#general", "#lab"]


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(count: int, repeat: int, whole: bool) -> Dict[str, float]:
    import tkinter as tk

    from twisted.internet import reactor

    from tcpchat.client.core import ChatClient
    from tcpchat.ui import tklog
    from tcpchat.ui.tk import App, Settings

    tmp = tempfile.mkdtemp(prefix="tkbench-")
    root = tk.Tk()
    settings = Settings(os.path.join(tmp, "client.json"), os.path.join(tmp, "known.json"))
    app = App(root, reactor, settings)
    app.client = ChatClient("127.0.0.1", 9, "me", "x", listener=app, reactor=reactor,
                            outbox=os.path.join(tmp, "outbox.json"))
    convs = fill(app, count)
    app.showChat()
    root.update()
    page = tklog.PAGE
    if whole:
        tklog.PAGE = 10 ** 9  # as before: every event held, drawn from scratch
    layout: List[float] = []
    drawn: List[float] = []
    try:
        for i in range(repeat):
            start = time.perf_counter()
            app.switch(convs[i % 2])
            root.update_idletasks()
            layout.append((time.perf_counter() - start) * 1000)
            root.update()
            drawn.append((time.perf_counter() - start) * 1000)
        shown = app.chat.log.get("1.0", "end")
        newest = [e for e in app.client.messages(convs[(repeat - 1) % 2]) if e["kind"] == "message"][-1]
        assert newest["text"] in shown, "the newest message is not on screen"
        older: List[float] = []
        if not whole:
            for _ in range(min(repeat, 10)):  # scrolling to the top draws the page before
                app.chat.log.yview_moveto(0.0)
                start = time.perf_counter()
                if not app.chat.showOlder():
                    break  # all held is drawn
                root.update()
                older.append((time.perf_counter() - start) * 1000)
    finally:
        tklog.PAGE = page
        app.closing = True
        for pending in root.tk.splitlist(root.tk.call("after", "info")):
            root.after_cancel(pending)
        root.destroy()
    result = {"p50": statistics.median(drawn), "p95": percentile(drawn, 0.95), "max": max(drawn),
              "layout_p50": statistics.median(layout)}
    if older:
        result["older_p50"] = statistics.median(older)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", default="1000,20000", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--repeat", default=30, type=int, help="switches timed per cell")
    p.add_argument("--whole-repeat", default=3, type=int, help="switches timed drawing everything (slow)")
    args = p.parse_args()
    display()
    print(f"{'events held':>12} {'drawing':>22} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9} {'older page p50':>15}")
    for count in args.events:
        for whole, label in ((False, "newest page (now)"), (True, "everything (0.2)")):
            r = run(count, args.whole_repeat if whole else args.repeat, whole)
            older = f"{r['older_p50']:.1f}" if "older_p50" in r else "-"
            print(f"{count:>12,} {label:>22} {r['p50']:>9.1f} {r['p95']:>9.1f} {r['max']:>9.1f} {older:>15}",
                  flush=True)


if __name__ == "__main__":
    main()
