"""The terminal client in a real terminal (tmux): the input line survives incoming traffic, history, completion."""

import os
import shutil
import subprocess
import time

import pytest

from .procs import TWISTD, RawClient, ServerProcess
from .test_joining import CLI

pytestmark = pytest.mark.skipif(not (shutil.which("tmux") and os.path.exists(TWISTD) and os.path.exists(CLI)),
                                reason="needs tmux and the installed tcpchat-cli")
DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")


class Terminal:
    """One tmux session of its own (its own server socket), 100x24, running a command."""

    def __init__(self, tmp, command):
        self.socket = f"tcpchat-test-{os.getpid()}-{id(self)}"
        env = dict(os.environ, HOME=str(tmp), XDG_DATA_HOME=str(tmp / "share"), TERM="xterm-256color",
                   LANG="C.UTF-8")
        self.tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "24", command, env=env)

    def tmux(self, *args, env=None):
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              env=env, timeout=20).stdout

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys, literal=False):
        self.tmux("send-keys", "-t", "t", *(["-l"] if literal else []), *keys)

    def until(self, predicate, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded: polling what the terminal shows
            shown = self.screen()
            if predicate(shown):
                return shown
            time.sleep(0.05)
        raise AssertionError("the terminal never showed it:\n" + self.screen())

    def input_line(self):
        return next((line for line in self.screen().splitlines() if line.startswith("› ")), None)

    def close(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


def test_typing_survives_incoming_messages_and_history_and_completion_work(tmp_path):
    (tmp_path / "server").mkdir()
    server = ServerProcess(tmp_path / "server").start()
    term = Terminal(tmp_path, f"{CLI} --host 127.0.0.1 --port {server.port} --name alice "
                              f"--passkey {server.passkey} --insecure-plaintext")
    try:
        term.until(lambda s: "end of history" in s and "connected  ·  #general" in s)
        bob = RawClient(server.port)
        bob.login("bob", features=["rooms"])
        term.until(lambda s: "bob joined" in s)
        term.keys("half of what I want to s", literal=True)
        bob.send({"type": "say", "text": "a message while alice types", "cid": "b1"})
        term.until(lambda s: "bob: a message while alice types" in s)
        assert term.input_line() == "› half of what I want to s"  # intact, and still last

        term.keys("ay", literal=True)
        term.keys("Enter")
        seen = bob.recv_until(lambda f: f.get("text") == "half of what I want to say")
        assert {"type": "typing", "name": "alice", "room": "general"} in seen  # a hint went out while she typed
        term.until(lambda s: "alice: half of what I want to say" in s)
        term.keys("Up")
        term.until(lambda s: "› half of what I want to say" in s)  # history
        term.keys("C-u")
        term.keys("hello b", literal=True)
        term.keys("Tab")
        term.until(lambda s: "› hello bob" in s)  # a name (and a space: the terminal does not show it)
        term.keys("C-u")
        term.keys("/jo", literal=True)
        term.keys("Tab")
        term.until(lambda s: "› /join" in s)  # a command
        term.keys("lab", literal=True)
        term.keys("Enter")
        term.until(lambda s: "#lab" in s.splitlines()[-1])  # the status line says where lines go
        bob.send({"type": "say", "text": "see you in the lab", "cid": "b2"})
        term.until(lambda s: "bob: see you in the lab" in s)
        term.keys("on my way", literal=True)
        term.until(lambda s: "› on my way" in s)
        if os.environ.get("TCPCHAT_WRITE_DOCS"):
            with open(os.path.join(DOCS, "cli-tui.txt"), "w", encoding="utf-8") as f:
                f.write(term.screen().rstrip() + "\n")
        term.keys("C-u")
        term.keys("/quit", literal=True)
        term.keys("Enter")
        term.until(lambda s: "Bye." in s)
    finally:
        term.close()
        server.close()
