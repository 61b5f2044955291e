"""Joining without friction: the passkey survives restarts (and rotations)."""

import os
import stat

import pytest

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
