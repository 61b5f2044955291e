"""Joining without friction: the passkey survives restarts (and rotations)."""

import os
import stat

import pexpect
import pytest

from tcpchat.ui import text

from .procs import TWISTD, RawClient, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")


def test_passkey_survives_restarts_and_rotation(tmp_path):
    """Generated once, kept (0600), the same after a restart; a /passkey rotation is what the next start uses."""
    server = ServerProcess(tmp_path, passkey=None).start()
    first = server.passkey
    kept = tmp_path / "passkey"
    assert kept.read_text().strip() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert "kept in" in server.log() and str(kept) in server.log()
    assert server.stop() == 0

    server = ServerProcess(tmp_path, passkey=None).start()
    assert server.passkey == first
    alice = RawClient(server.port)
    assert alice.login("alice", passkey=first)[-1]["type"] == "synced"
    alice.send({"type": "oper", "passkey": (tmp_path / "admin-passkey").read_text().strip()})
    assert alice.recv_until(lambda f: f["type"] in ("oper", "error"))[-1]["type"] == "oper"
    alice.send({"type": "mod", "action": "rotate"})
    rotated = alice.recv_until(lambda f: f["type"] == "mod-done")[-1]["passkey"]
    assert rotated != first
    assert server.stop() == 0

    server = ServerProcess(tmp_path, passkey=None).start()
    assert server.passkey == rotated == kept.read_text().strip()
    bob = RawClient(server.port)
    assert bob.login("bob", passkey=first)[-1]["code"] == "bad-passkey"
    assert RawClient(server.port).login("carol", passkey=rotated)[-1]["type"] == "synced"
    server.close()


def test_passkey_on_the_command_line_overrides_but_does_not_replace(tmp_path):
    """--passkey wins for this run; the kept passkey stays for the next run without it."""
    server = ServerProcess(tmp_path, passkey=None).start()
    kept = server.passkey
    server.stop()
    server = ServerProcess(tmp_path, passkey="just-today").start()
    assert "from the command line" in server.log()
    server.stop()
    assert (tmp_path / "passkey").read_text().strip() == kept


CLI = os.path.join(os.path.dirname(TWISTD), "tcpchat-cli")


def terminal_client(tmp_path, port, name, passkey):
    env = dict(os.environ, TERM="dumb", LANG="C.UTF-8", HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "share"),
               TCPCHAT_PASSKEY=passkey)
    transcript = open(tmp_path / f"{name}.txt", "w", encoding="utf-8")
    child = pexpect.spawn(CLI, ["--host", "127.0.0.1", "--port", str(port), "--name", name], env=env,
                          encoding="utf-8", timeout=30, dimensions=(40, 200))
    child.logfile_read = transcript
    child.expect("end of history")
    return child


def expect_all(child, patterns):
    """Wait until every pattern has been printed, in whatever order."""
    left = list(patterns)
    while left:
        left.pop(child.expect(left))


@pytest.mark.skipif(not os.path.exists(CLI), reason="tcpchat-cli is not installed next to this Python")
def test_restart_and_rotation_from_the_clients_side(tmp_path):
    """
    Two terminal clients over TLS: a restart brings both back by themselves with what was written meanwhile; after
    /passkey and a restart, the operator's client goes on and the other asks for the new passkey (hidden), then
    delivers the message it queued.
    """
    (tmp_path / "server").mkdir()
    server = ServerProcess(tmp_path / "server", passkey=None, tls=True).start()
    first = server.passkey
    alice = terminal_client(tmp_path, server.port, "alice", first)
    bob = terminal_client(tmp_path, server.port, "bob", first)
    try:
        assert server.stop() == 0
        for child in (alice, bob):
            child.expect("reconnecting")
        alice.sendline("written during the outage")
        alice.expect("queued")
        server.start()  # the same command: the same port, the same passkey
        assert server.passkey == first
        alice.expect("Connected to")
        expect_all(bob, ["Connected to", "alice: written during the outage"])  # in either order

        alice.sendline("/oper " + (tmp_path / "server" / "admin-passkey").read_text().strip())
        alice.expect("operator")
        alice.sendline("/passkey")
        rotated = alice.expect(r"New passkey: (\S+) ") == 0 and alice.match.group(1)
        assert rotated and rotated != first

        assert server.stop() == 0
        bob.expect("reconnecting")
        bob.sendline("bob wrote this while it was down")
        bob.expect("queued")
        server.start()
        assert server.passkey == rotated  # kept across the restart
        alice.expect("Connected to")  # the operator's client knows the rotated passkey
        bob.expect_exact(text.PASSKEY_CHANGED)
        bob.expect_exact("New passkey (or /quit): ")
        bob.sendline(rotated)
        bob.expect(r"Rejoining \(1 message\(s\) waiting to be sent\)")
        bob.expect("Connected to")
        expect_all(alice, ["bob: bob wrote this while it was down"])
        assert rotated not in (tmp_path / "bob.txt").read_text()  # typed without echo
        for child in (alice, bob):
            child.sendline("/quit")
            child.expect(pexpect.EOF)
            child.close()
            assert child.exitstatus == 0
    finally:
        for child in (alice, bob):
            child.close(force=True)
        server.close()
