"""The terminal client, driven end to end in a real pseudo-terminal and through pipes."""

import hashlib
import os
import re
import subprocess

import pexpect
import pytest

from tcpchat import wire

from .helpers import PASSKEY
from .procs import BIN, RawClient, ServerProcess

CLI = os.path.join(BIN, "tcpchat-cli")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\x07")
DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")

pytestmark = pytest.mark.skipif(not os.path.exists(CLI), reason="tcpchat-cli is not installed next to this Python")


@pytest.fixture
def server(tmp_path):
    (tmp_path / "server").mkdir()
    proc = ServerProcess(tmp_path / "server").start()
    yield proc
    proc.close()


def upload_raw(client, name, data, tid=1):
    client.send({"type": "upload", "tid": tid, "name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    for i in range(0, len(data), wire.CHUNK_SIZE):
        client.send_payload(wire.encode_chunk(tid, data[i : i + wire.CHUNK_SIZE]))
    return client.recv_until(lambda f: f["type"] == "upload-done")[-1]["file"]


def quit_cleanly(child, transcript):
    """Type /quit, check the client exits with status 0; the transcript as a person saw it."""
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    child.logfile_read.flush()
    return ANSI.sub("", transcript.read_text(encoding="utf-8")).replace("\r", "")


def test_terminal_session_chat_share_fetch_quit(server, tmp_path):
    """In a real terminal: log in, chat with a second client, share and fetch a file, quit."""
    transcript = tmp_path / "transcript.txt"
    downloads = tmp_path / "downloads"
    env = dict(os.environ, TERM="xterm", LANG="C.UTF-8", HOME=str(tmp_path))
    child = pexpect.spawn(CLI, ["--host", "127.0.0.1", "--port", str(server.port), "--name", "alice", "--insecure-plaintext",
                                "--download-dir", str(downloads), "--plain"],
                          env=env, encoding="utf-8", timeout=20, dimensions=(30, 100))
    with open(transcript, "w", encoding="utf-8") as log:
        child.logfile_read = log
        child.expect("Passkey: ")
        child.sendline(PASSKEY)  # typed without echo
        child.expect("end of history")
        bob = RawClient(server.port)
        bob.login("bob")
        child.expect("bob joined")
        bob.send({"type": "say", "text": "hi alice, welcome 👋", "cid": "b1"})
        child.expect("bob: hi alice, welcome 👋")
        child.sendline("hello bob")
        said = bob.recv_until(lambda f: f.get("kind") == "message")[-1]
        assert (said["name"], said["text"]) == ("alice", "hello bob")
        child.expect(r"alice: hello bob")

        mine = tmp_path / "minutes.txt"
        mine.write_text("Minutes of the meeting\n" * 100)
        child.sendline(f"/file {mine}")
        child.expect(r"Shared minutes\.txt")
        shared = bob.recv_until(lambda f: f.get("kind") == "file")[-1]["file"]
        assert shared["name"] == "minutes.txt" and shared["size"] == mine.stat().st_size

        data = os.urandom(300_000)
        info = upload_raw(bob, "photo.jpg", data)
        child.expect(r"bob shared photo\.jpg \(293\.0 KiB\) — file #(\d+)")
        assert int(child.match.group(1)) == info["id"]
        child.sendline(f"/get {info['id']}")
        child.expect(r"Saved photo\.jpg to (\S+) \(SHA-256 checked\)")
        assert (downloads / "photo.jpg").read_bytes() == data

        child.sendline("/who")
        child.expect(r"Online \(2\):\s+● alice \(you\)\s+● bob")
        shown = quit_cleanly(child, transcript)
    bob.recv_until(lambda f: f.get("kind") == "leave")
    assert PASSKEY not in shown  # the passkey was not echoed
    if os.environ.get("TCPCHAT_WRITE_DOCS"):
        with open(os.path.join(DOCS, "cli-session.txt"), "w", encoding="utf-8") as f:
            f.write(shown)


def test_terminal_rooms_direct_messages_typing_and_seen(server, tmp_path):
    """In a real terminal: rooms, a direct message each way, typing, "seen by", presence, search."""
    transcript = tmp_path / "transcript.txt"
    env = dict(os.environ, TERM="xterm", LANG="C.UTF-8", HOME=str(tmp_path))
    # (--plain: the line-by-line view in a terminal; the interactive input line has tests/test_tui.py)
    child = pexpect.spawn(CLI, ["--host", "127.0.0.1", "--port", str(server.port), "--name", "alice",
                                "--insecure-plaintext", "--passkey", PASSKEY, "--plain"],
                          env=env, encoding="utf-8", timeout=20, dimensions=(30, 100))
    with open(transcript, "w", encoding="utf-8") as log:
        child.logfile_read = log
        child.expect("end of history")
        bob = RawClient(server.port)
        bob.login("bob", features=["rooms"])
        child.expect("bob joined")
        child.sendline("/join lab")
        child.expect(r"Now talking in #lab")
        bob.send({"type": "join", "room": "lab"})
        child.expect("bob joined #lab")
        child.sendline("lab meeting at 3")
        said = bob.recv_until(lambda f: f.get("kind") == "message")[-1]
        assert (said["room"], said["text"]) == ("lab", "lab meeting at 3")
        child.expect(r"#lab alice: lab meeting at 3")
        bob.send({"type": "typing", "room": "lab"})
        child.expect("bob is typing…")
        bob.send({"type": "read", "room": "lab", "id": said["id"]})
        child.expect("✓ Seen by bob")
        bob.send({"type": "say", "text": "psst, a secret", "to": "alice"})
        child.expect("bob → alice: psst, a secret")
        child.sendline("/msg bob ok, see you there")
        child.expect("Now talking in @bob")
        dm = bob.recv_until(lambda f: f.get("kind") == "message")[-1]
        assert (dm["name"], dm["to"], dm["text"]) == ("alice", "bob", "ok, see you there")
        bob.send({"type": "presence", "away": True, "status": "lunch"})
        child.expect("bob is away: lunch")
        child.sendline("/who")
        child.expect(r"○ bob — away: lunch")
        child.sendline("/rooms")
        child.expect(r"#lab  \(2 members\)  — joined")
        child.sendline("/search secret")
        child.expect(r"Found 1 message for “secret”:\s+\[\d\d:\d\d\] @bob  bob → alice: psst, a secret")
        shown = quit_cleanly(child, transcript)
    if os.environ.get("TCPCHAT_WRITE_DOCS"):
        with open(os.path.join(DOCS, "cli-rooms-session.txt"), "w", encoding="utf-8") as f:
            f.write(shown)


def test_wrong_passkey_says_so_and_exits_1(server, tmp_path):
    """A wrong passkey is shown in plain words and the client exits with status 1."""
    result = subprocess.run([CLI, "--host", "127.0.0.1", "--port", str(server.port), "--name", "alice", "--insecure-plaintext",
                             "--passkey", "not-it"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "Wrong passkey." in result.stdout


def test_unreachable_server_is_explained(tmp_path):
    """Nobody listening: the user reads 'Unable to connect to …: connection refused'."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run([CLI, "--host", "127.0.0.1", "--port", str(port), "--name", "a", "--passkey", "x", "--insecure-plaintext"],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert f"Unable to connect to 127.0.0.1:{port}: connection refused" in result.stdout


def test_without_a_terminal_output_is_plain(server, tmp_path):
    """With pipes instead of a terminal there are no colour codes, and input still works."""
    bob = RawClient(server.port)
    bob.login("bob")
    proc = subprocess.Popen([CLI, "--host", "127.0.0.1", "--port", str(server.port), "--name", "alice", "--insecure-plaintext",
                             "--passkey", PASSKEY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8")
    bob.recv_until(lambda f: f.get("kind") == "join" and f.get("name") == "alice")
    proc.stdin.write("piped hello\n")
    proc.stdin.flush()
    said = bob.recv_until(lambda f: f.get("kind") == "message")[-1]
    assert said["text"] == "piped hello"
    proc.stdin.write("/quit\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "\x1b" not in out
    assert "alice: piped hello" in out and "Bye." in out
