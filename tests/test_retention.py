"""Retention (--keep-messages, --keep-files) over a store with old and new events and files, against twistd: the
old ones go (their files' data too), profile pictures stay, acks during the sweep stay on time (p99 measured),
catch-up and search agree with what is left."""

import base64
import os
import sqlite3
import statistics
import subprocess
import threading
import time

import pytest

from .procs import BIN, TWISTD, RawClient, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")
ADMIN = os.path.join(BIN, "tcpchat-admin")
OLD = 20_000
DAY = 86400


def say_many(client, texts, window=64):
    """Say every text, ``window`` in flight at once; the acked ids."""
    ids, sent, acked = [], 0, 0
    while acked < len(texts):
        while sent < len(texts) and sent - acked < window:
            client.send({"type": "say", "text": texts[sent], "cid": f"s{sent}"})
            sent += 1
        frame = client.recv()
        if isinstance(frame, dict) and frame.get("type") == "ack":
            ids.append(frame["id"])
            acked += 1
    return ids


class Timed(threading.Thread):
    """Says a message, waits for its ack, again, until told to stop: every ack's latency in seconds."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = RawClient(port, timeout=60)
        self.client.login("timer")
        self.latencies = []
        self.stop = threading.Event()
        self.warm = threading.Event()  # set once 20 acks have come back

    def run(self):
        n = 0
        while not self.stop.is_set() and n < 100_000:
            start = time.perf_counter()
            self.client.send({"type": "say", "text": f"during the sweep {n}", "cid": f"t{n}"})
            self.client.recv_until(lambda f: isinstance(f, dict) and f.get("cid") == f"t{n}")
            self.latencies.append(time.perf_counter() - start)
            n += 1
            if n == 20:
                self.warm.set()


def test_old_events_and_files_go_acks_stay_on_time_catch_up_and_search_agree(tmp_path, capsys):
    import io

    from PIL import Image

    data = str(tmp_path / "data")
    os.mkdir(data)
    server = ServerProcess(data).start()
    try:
        old = RawClient(server.port, timeout=60)
        old.login("ann", features=["rooms", "edits", "profiles"])
        old_file = old.upload("old timetable.txt", b"the old timetable\n" * 1000)["file"]
        face = io.BytesIO()
        Image.new("RGB", (128, 128), (10, 200, 90)).save(face, "PNG")
        old.send({"type": "profile", "picture": base64.b64encode(face.getvalue()).decode(), "req": "p"})
        picture = old.recv_until(lambda f: isinstance(f, dict) and f.get("type") == "profile")[-1]["picture"]
        old_ids = say_many(old, [f"old news {n}" for n in range(OLD)])
    finally:
        server.close()
    db = sqlite3.connect(os.path.join(data, "tcpchat.sqlite3"))
    with db:  # ten days pass
        db.execute("UPDATE events SET ts = ts - ?", (10 * DAY,))
        db.execute("UPDATE files SET ts = ts - ?", (10 * DAY,))
    (stored_old,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
    db.close()
    old_object = os.path.join(data, "files", "objects", old_file["sha256"][:2], old_file["sha256"])
    assert os.path.exists(old_object)

    server = ServerProcess(data, extra=["--keep-messages", "1", "--keep-files", "1"]).start()
    try:
        assert "messages are deleted after 1 days, files are deleted after 1 days" in server.log()
        new = RawClient(server.port, timeout=60)
        new.login("bo", features=["rooms"])
        new_file = new.upload("new timetable.txt", b"the new timetable\n" * 1000)["file"]
        new_ids = say_many(new, [f"fresh news {n}" for n in range(50)])
        timer = Timed(server.port)
        timer.start()
        assert timer.warm.wait(60)  # acks are flowing before the sweep starts
        swept = subprocess.run([ADMIN, "--data-dir", data, "expire"], capture_output=True, text=True, timeout=300)
        during = list(timer.latencies[20:])
        timer.stop.set()
        timer.join(60)
        assert swept.returncode == 0, swept.stderr
        assert f"Removed {stored_old} events and 1 files" in swept.stdout, swept.stdout  # (the picture stays)
        assert len(during) >= 20
        p99 = statistics.quantiles(during, n=100)[98]
        with capsys.disabled():
            print(f"\n  retention sweep of {OLD} events: {len(during)} acks during it, "
                  f"p50 {statistics.median(during) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
                  f"max {max(during) * 1000:.1f} ms")
        assert p99 < 0.25  # acks on time while the sweep runs

        reader = RawClient(server.port, timeout=60)
        frames = reader.login("reader", after=0, features=["rooms"])
        texts = [f.get("text") for f in frames if f.get("type") == "event" and f.get("kind") == "message"]
        assert not [t for t in texts if t.startswith("old news")]
        assert [t for t in texts if t.startswith("fresh news")] == [f"fresh news {n}" for n in range(50)]
        # catch-up after a deleted id: what is left, no error
        late = RawClient(server.port, timeout=60)
        frames = late.login("late", after=old_ids[100], features=["rooms"])
        assert frames[-1]["type"] == "synced"
        assert [f["id"] for f in frames if f.get("type") == "event" and f.get("kind") == "message"
                and f.get("name") == "bo"] == new_ids
        reader.send({"type": "search", "q": "news", "limit": 100, "req": "s"})
        found = reader.recv_until(lambda f: isinstance(f, dict) and f.get("req") == "s")[-1]
        assert found["events"] and all(e["text"].startswith("fresh news") for e in found["events"])
        # the old file is gone, with its data; the new one and the profile picture stay
        reader.send({"type": "download", "tid": 9, "file": old_file["id"], "req": "d"})
        gone = reader.recv_until(lambda f: isinstance(f, dict) and f.get("type") == "error")[-1]
        assert gone["code"] == "no-such-file"
        assert not os.path.exists(old_object)
        assert reader.download(new_file["id"], tid=10) == b"the new timetable\n" * 1000
        assert reader.download(picture["id"], tid=11) == face.getvalue()
        assert "Traceback" not in server.log()
    finally:
        server.close()
