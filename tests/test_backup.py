"""Live backup during a chat burst, then restore and start: every message acknowledged before the backup began is
there, every file's hash is right; restore refuses while a server runs on the directory, and a damaged backup."""

import hashlib
import os
import subprocess
import threading

import pytest


from .procs import BIN, TWISTD, RawClient, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")
ADMIN = os.path.join(BIN, "tcpchat-admin")
BURST = 3000


def admin(*args):
    return subprocess.run([ADMIN, *args], capture_output=True, text=True, timeout=120)


class Burst(threading.Thread):
    """One client saying BURST messages as fast as acks come back, recording every ack."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = RawClient(port, timeout=60)
        self.client.login("writer")
        self.acked = {}  # event id -> text
        self.lock = threading.Lock()
        self.started = threading.Event()

    def run(self):
        window = 32
        sent = 0
        while sent < min(window, BURST):
            self.client.send({"type": "say", "text": f"burst {sent}", "cid": f"b{sent}"})
            sent += 1
        while len(self.acked) < BURST:
            frame = self.client.recv()
            if isinstance(frame, dict) and frame.get("type") == "ack":
                with self.lock:
                    self.acked[frame["id"]] = f"burst {frame['cid'][1:]}"
                if len(self.acked) >= 300:
                    self.started.set()
                if sent < BURST:
                    self.client.send({"type": "say", "text": f"burst {sent}", "cid": f"b{sent}"})
                    sent += 1

    def snapshot(self):
        with self.lock:
            return dict(self.acked)


def test_backup_during_a_burst_restore_and_start(tmp_path):
    data, restored, out = str(tmp_path / "data"), str(tmp_path / "restored"), str(tmp_path / "backup")
    os.mkdir(data)
    server = ServerProcess(data).start()
    try:
        sharer = RawClient(server.port)
        sharer.login("sharer", features=["rooms", "edits", "profiles"])
        shared = {"minutes.txt": b"minutes of the meeting\n" * 100, "photo.bin": os.urandom(700_000)}
        ids = {name: sharer.upload(name, blob, tid=n + 1)["file"]["id"] for n, (name, blob) in enumerate(shared.items())}
        burst = Burst(server.port)
        burst.start()
        assert burst.started.wait(60)
        before = burst.snapshot()  # acknowledged before the backup began
        made = admin("--data-dir", data, "backup", out)
        assert made.returncode == 0, made.stderr
        assert "Backed up" in made.stdout and "2 stored files" in made.stdout
        burst.join(120)
        assert len(burst.acked) == BURST  # the burst went on, undisturbed
        refused = admin("--data-dir", data, "restore", out, "--force")
        assert refused.returncode == 1 and "a tcpchat server is running" in refused.stderr
    finally:
        server.close()
    back = admin("--data-dir", restored, "restore", out)
    assert back.returncode == 0, back.stderr
    assert "Restored" in back.stdout
    again = ServerProcess(restored).start()
    try:
        reader = RawClient(again.port, timeout=60)
        events = {f["id"]: f for f in reader.login("reader", after=0) if f.get("type") == "event"}
        missing = [i for i in before if events.get(i, {}).get("text") != before[i]]
        assert missing == []  # nothing acknowledged before the backup is missing
        texts = [e["text"] for e in events.values() if e.get("name") == "writer" and e["kind"] == "message"]
        assert len(texts) == len(set(texts))  # and nothing twice
        for n, (name, blob) in enumerate(shared.items()):
            assert hashlib.sha256(reader.download(ids[name], tid=n + 1)).hexdigest() == hashlib.sha256(blob).hexdigest()
        with open(os.path.join(data, "files", "link-key"), "rb") as a, \
                open(os.path.join(restored, "files", "link-key"), "rb") as b:
            assert a.read() == b.read()  # the keys came too (download links given before still work)
    finally:
        again.close()


def test_a_damaged_backup_is_refused_and_nothing_is_touched(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "backup")
    os.mkdir(data)
    server = ServerProcess(data).start()
    try:
        sharer = RawClient(server.port)
        sharer.login("sharer")
        sharer.upload("notes.txt", b"some notes\n")
    finally:
        server.close()
    assert admin("--data-dir", data, "backup", out).returncode == 0
    assert admin("--data-dir", data, "backup", out).returncode == 1  # (never into an existing directory)
    objects = os.path.join(out, "files", "objects")
    (sub,) = os.listdir(objects)
    (name,) = os.listdir(os.path.join(objects, sub))
    with open(os.path.join(objects, sub, name), "ab") as f:
        f.write(b"!")
    target = str(tmp_path / "target")
    damaged = admin("--data-dir", target, "restore", out)
    assert damaged.returncode == 1 and "is damaged" in damaged.stderr
    assert not os.path.exists(target)
    kept = admin("--data-dir", data, "restore", out)
    assert kept.returncode == 1  # (a directory holding data needs --force, and this backup is damaged anyway)
    assert os.path.exists(os.path.join(data, "tcpchat.sqlite3"))
