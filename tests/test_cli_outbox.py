"""Nothing the terminal client is given is dropped without a word: piped lines, quitting, crashes, long lines."""

import json
import os
import signal
import sqlite3
import subprocess

import pexpect
import pytest

from .procs import TWISTD, ServerProcess
from .test_joining import CLI

pytestmark = pytest.mark.skipif(not (os.path.exists(TWISTD) and os.path.exists(CLI)),
                                reason="twistd and tcpchat-cli are not installed next to this Python")


def cli_env(home):
    return dict(os.environ, TERM="dumb", LANG="C.UTF-8", HOME=str(home), XDG_DATA_HOME=str(home / "share"))


def stored_texts(data_dir):
    with sqlite3.connect(os.path.join(str(data_dir), "tcpchat.sqlite3")) as db:
        return [row[0] for row in db.execute("SELECT text FROM events WHERE kind = 'message' ORDER BY id")]


def outbox_files(home):
    found = []
    for folder, _, names in os.walk(home / "share"):
        found += [os.path.join(folder, n) for n in names if n.endswith(".json") and "outbox" in folder]
    return found


def test_four_hundred_piped_lines_then_quit_are_all_stored_before_it_exits(tmp_path):
    """With the server's default rate limit (10 a second, bursts of 30): /quit waits until every line is stored."""
    (tmp_path / "server").mkdir()
    server = ServerProcess(tmp_path / "server", limits=True).start()
    try:
        lines = "".join(f"line {n:03d}\n" for n in range(400)) + "/quit\n"
        done = subprocess.run([CLI, "--host", "127.0.0.1", "--port", str(server.port), "--name", "piper",
                               "--insecure-plaintext", "--passkey", server.passkey], input=lines, text=True,
                              capture_output=True, env=cli_env(tmp_path), timeout=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "Sending" in done.stdout and "Not sent" not in done.stdout
    finally:
        server.stop()
    assert stored_texts(tmp_path / "server") == [f"line {n:03d}" for n in range(400)]  # all, once, in order
    assert outbox_files(tmp_path) == []  # nothing left waiting


def test_a_line_over_the_limit_is_refused_with_a_word_and_reading_goes_on(tmp_path):
    (tmp_path / "server").mkdir()
    server = ServerProcess(tmp_path / "server").start()
    try:
        lines = "before\n" + "x" * 20_000 + "\n" + "y" * (2 * 1024 * 1024) + "\nafter\n/quit\n"
        done = subprocess.run([CLI, "--host", "127.0.0.1", "--port", str(server.port), "--name", "long",
                               "--insecure-plaintext", "--passkey", server.passkey], input=lines, text=True,
                              capture_output=True, env=cli_env(tmp_path), timeout=60)
        assert done.returncode == 0, done.stdout[-2000:]
        assert "Messages are limited to 8192 bytes." in done.stdout  # the 20 KB line
        assert "A line of more than 1024 KiB was not sent" in done.stdout  # the 2 MiB one
    finally:
        server.stop()
    assert stored_texts(tmp_path / "server") == ["before", "after"]


def test_quitting_with_the_server_gone_says_what_was_not_sent_and_a_crash_loses_nothing(tmp_path):
    """Server gone: /quit exits 1 naming what was not sent, kept on disk. Killed (-9) while disconnected: the next
    start sends what was queued, and everything arrives once."""
    (tmp_path / "server").mkdir()
    server = ServerProcess(tmp_path / "server").start()
    args = ["--host", "127.0.0.1", "--port", str(server.port), "--name", "walker", "--insecure-plaintext",
            "--passkey", server.passkey]

    def client():
        child = pexpect.spawn(CLI, args, env=cli_env(tmp_path), encoding="utf-8", timeout=30, dimensions=(40, 200))
        child.logfile_read = open(tmp_path / "walker.txt", "a", encoding="utf-8")
        return child

    try:
        child = client()
        child.expect("end of history")
        child.sendline("stored at once")
        child.expect("walker: stored at once")
        assert server.stop() == 0
        child.expect("reconnecting")
        child.sendline("written while it was down")
        child.expect("queued")
        child.sendline("/quit")
        child.expect(r"Not sent: 1 message\(s\) \(written while it was down\)\. They are kept")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 1

        child = client()  # the server is still down: the first connection fails, the message stays kept
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 1

        server.start()
        child = client()
        child.expect(r"1 message\(s\) written last time are waiting")
        child.expect("walker: written while it was down")  # sent once logged in
        assert server.stop() == 0
        child.expect("reconnecting")
        child.sendline("queued before the crash")
        child.expect("queued")
        for _ in range(500):  # bounded: until the outbox file holds both (written off the reactor thread)
            files = outbox_files(tmp_path)
            if files and len(json.load(open(files[0]))) == 2:
                break
            child.expect([pexpect.TIMEOUT], timeout=0.02)
        child.kill(signal.SIGKILL)
        child.close()

        server.start()
        child = client()
        child.expect(r"1 message\(s\) written last time are waiting")
        child.expect("end of history")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        server.close()
    assert stored_texts(tmp_path / "server") == ["stored at once", "written while it was down",
                                                 "queued before the crash"]
    assert outbox_files(tmp_path) == []
