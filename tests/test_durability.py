"""
An acknowledgement is a promise: every ack follows a sync of the data it
acknowledges (seen in the server's system calls), and a SIGTERM under load
stops cleanly with every acknowledged message kept.
"""

import os
import re
import shutil
import sqlite3
import threading

import pytest

from .procs import TWISTD, RawClient, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_every_ack_follows_a_sync_of_the_wal(tmp_path):
    """Under strace: between reading a say and writing its ack, the server fsyncs/fdatasyncs the database."""
    trace = tmp_path / "strace.out"
    prefix = ["strace", "-f", "-qq", "-tt", "-s", "256", "-e", "trace=fsync,fdatasync,recvfrom,read,sendto,write,writev",
              "-o", str(trace)]
    server = ServerProcess(tmp_path, prefix=prefix)
    try:
        server.start()
    except AssertionError as e:
        if "ptrace" in str(e) or "Operation not permitted" in str(e):
            pytest.skip("ptrace is not allowed here")
        raise
    try:
        alice = RawClient(server.port)
        alice.login("alice")
        for i in range(20):
            alice.send({"type": "say", "text": f"promise {i}", "cid": f"p{i}"})
            alice.recv_until(lambda f: f["type"] == "ack" and f.get("cid") == f"p{i}")
    finally:
        server.close()
    lines = trace.read_text(errors="replace").splitlines()
    syncs = [i for i, l in enumerate(lines) if re.search(r"\b(fsync|fdatasync)\(", l)]
    assert syncs, "the server never synced"
    checked = 0
    for i in range(20):
        said = next(n for n, l in enumerate(lines) if re.search(r"\b(recvfrom|read)\(", l) and f'\\"cid\\":\\"p{i}\\"' in l)
        acked = next(n for n, l in enumerate(lines) if re.search(r"\b(sendto|write|writev)\(", l)
                     and '\\"ack\\"' in l and f'\\"cid\\":\\"p{i}\\"' in l)
        assert said < acked
        assert any(said < s < acked for s in syncs), f"ack of p{i} was not preceded by a sync"
        checked += 1
    assert checked == 20


def test_sigterm_under_load_stops_cleanly_and_keeps_every_ack(tmp_path):
    """Twenty users sending as fast as they can; SIGTERM: exit 0, a clean log, every acked message stored."""
    server = ServerProcess(tmp_path).start()
    acked, stop = [], threading.Event()
    lock = threading.Lock()

    def flood(n):
        client = RawClient(server.port)
        client.login(f"busy{n}")
        i = 0
        try:
            while not stop.is_set() and i < 20000:
                client.send({"type": "say", "text": f"{n}-{i}", "cid": f"{n}-{i}"})
                i += 1
                while client.buffer or i % 8 == 0:
                    frame = client.recv()
                    if frame["type"] == "ack":
                        with lock:
                            acked.append(frame["cid"])
                    if not client.buffer:
                        break
        except (ConnectionError, OSError, AssertionError, ValueError):
            pass  # the server went down under us: exactly the point

    threads = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(20)]
    for t in threads:
        t.start()
    server.wait_for(r"busy19 logged in")
    while len(acked) < 2000:
        stop.wait(0.05)
    status = server.stop()
    stop.set()
    for t in threads:
        t.join(10)
    log = server.log()
    assert status == 0, log
    assert "Traceback" not in log and "Could not store" not in log, log
    assert "stopped cleanly" in log
    db = sqlite3.connect(str(tmp_path / "tcpchat.sqlite3"))
    stored = {row[0] for row in db.execute("SELECT cid FROM events WHERE cid IS NOT NULL")}
    with lock:
        missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged messages lost"
