"""
A server that cannot start says why in one line and exits non-zero within
seconds: a damaged, truncated, zero-paged or locked database, a busy port.
"""

import os
import socket
import sqlite3
import subprocess
import time

import pytest

from .procs import TWISTD, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")


def start(data_dir, *extra, listen="tcp:0:interface=127.0.0.1"):
    """Run twistd until it exits (10 s at most); returns (status, output, seconds)."""
    began = time.monotonic()
    proc = subprocess.run([TWISTD, "-n", "--pidfile=", "tcpchat", "--listen", listen, "--data-dir", str(data_dir),
                           "--insecure-plaintext", *extra], cwd=str(data_dir), capture_output=True, text=True,
                          timeout=10)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - began


def a_database(tmp_path):
    """A real database with a few messages, made by running the server once."""
    server = ServerProcess(tmp_path).start()
    assert server.stop() == 0
    return tmp_path / "tcpchat.sqlite3"


def assert_refused(status, output, seconds, *words):
    assert status != 0, output
    assert seconds < 10
    line = [l for l in output.splitlines() if "could not start" in l]
    assert len(line) == 1, output
    for word in words:
        assert word in line[0], line[0]
    assert "Traceback" not in output, output
    assert "is ready" not in output


def test_corrupt_database(tmp_path):
    """Garbage where the database should be: a clear line, exit 1."""
    (tmp_path / "tcpchat.sqlite3").write_bytes(b"this is not a database" * 1000)
    assert_refused(*start(tmp_path), "tcpchat.sqlite3", "backup")


def test_truncated_database(tmp_path):
    """A database cut short (a full disk, a bad copy): a clear line, exit 1."""
    path = a_database(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3 + 100])
    for extra in ("-wal", "-shm"):
        if os.path.exists(str(path) + extra):
            os.remove(str(path) + extra)
    assert_refused(*start(tmp_path), "tcpchat.sqlite3")


def test_zero_paged_database(tmp_path):
    """One page zeroed in the middle: found at start, a clear line, exit 1."""
    path = a_database(tmp_path)
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) >= 3 * page
    data[page : 2 * page] = bytes(page)
    path.write_bytes(bytes(data))
    assert_refused(*start(tmp_path), "tcpchat.sqlite3")


def test_locked_database(tmp_path):
    """Another process holds an exclusive lock: the server gives up after a bounded wait, exit 1."""
    path = a_database(tmp_path)
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert_refused(*start(tmp_path), "locked")
    finally:
        holder.close()


def test_busy_port(tmp_path):
    """The port is taken: the line names it, exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_refused(*start(tmp_path, listen=f"tcp:{port}:interface=127.0.0.1"), str(port))
