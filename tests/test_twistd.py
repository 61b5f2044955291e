"""End to end: the installed ``twistd -n tcpchat`` driven over real sockets."""

import os
import re

import pytest

from tcpchat import auth

from .helpers import PASSKEY
from .procs import TWISTD, RawClient, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path).start()
    yield proc
    proc.close()


def strip(frames):
    """Frames without the parts that vary from run to run (ids, times, limits)."""
    out = []
    for f in frames:
        f = {k: v for k, v in f.items() if k not in ("ts", "id", "limits", "last", "version", "server", "session", "link")}
        out.append(f)
    return out


def test_three_users_chat_and_one_leaves(server):
    """Three users log in, chat and one leaves; each sees exactly the right frames in order."""
    alice, bob, carol = RawClient(server.port), RawClient(server.port), RawClient(server.port)
    assert strip(alice.login("alice")) == [{"type": "welcome", "name": "alice", "users": ["alice"]}, {"type": "synced"}]
    assert strip(alice.recv_until(lambda f: f["type"] == "event")) == [{"type": "event", "kind": "join", "room": "general", "name": "alice"}]
    assert strip(bob.login("bob")) == [
        {"type": "welcome", "name": "bob", "users": ["alice", "bob"]},
        {"type": "event", "kind": "join", "room": "general", "name": "alice", "replay": True},
        {"type": "synced"},
    ]
    assert strip([bob.recv()]) == [{"type": "event", "kind": "join", "room": "general", "name": "bob"}]
    assert strip([alice.recv()]) == [{"type": "event", "kind": "join", "room": "general", "name": "bob"}]
    carol.login("carol")
    carol.recv()
    for peer in (alice, bob):
        assert strip([peer.recv()]) == [{"type": "event", "kind": "join", "room": "general", "name": "carol"}]

    alice.send({"type": "say", "text": "hello everyone 👋", "cid": "a1"})
    (ack,) = alice.recv_until(lambda f: True)
    assert ack["type"] == "ack" and ack["cid"] == "a1"
    for peer in (bob, carol):
        event = peer.recv()
        assert strip([event]) == [{"type": "event", "kind": "message", "room": "general", "name": "alice", "text": "hello everyone 👋", "cid": "a1"}]
        assert event["id"] == ack["id"]

    bob.send({"type": "say", "text": "hi alice", "cid": "b1"})
    assert bob.recv()["type"] == "ack"
    for peer in (alice, carol):
        assert strip([peer.recv()]) == [{"type": "event", "kind": "message", "room": "general", "name": "bob", "text": "hi alice", "cid": "b1"}]

    carol.send({"type": "bye"})
    assert carol.closed_by_server()
    for peer in (alice, bob):
        assert strip([peer.recv()]) == [{"type": "event", "kind": "leave", "room": "general", "name": "carol", "reason": "quit"}]
    alice.send({"type": "who"})
    assert alice.recv() == {"type": "users", "users": ["alice", "bob"]}
    for peer in (alice, bob, carol):
        peer.close()
    assert re.search(r"carol left \(quit\)", server.wait_for(r"carol left").string)


def test_wrong_passkey_gets_no_chat_data_over_tcp(server):
    """Over a real socket, a wrong passkey yields only the bad-passkey error."""
    alice = RawClient(server.port)
    alice.login("alice")
    alice.send({"type": "say", "text": "the secret is 42"})
    alice.recv_until(lambda f: f["type"] == "ack")
    mallory = RawClient(server.port)
    assert mallory.login("mallory", passkey="guess") == [
        {"type": "error", "code": "bad-passkey", "message": "Wrong passkey.", "ref": "hello"}
    ]
    mallory.send({"type": "who"})
    assert mallory.recv()["code"] == "not-logged-in"
    log = server.wait_for(r"Failed login from 127\.0\.0\.1:\d+: bad-passkey").string
    assert "guess" not in log


def test_acknowledged_history_survives_kill_9(tmp_path):
    """Every acknowledged message is still there after kill -9 and a restart on the same port."""
    first = ServerProcess(tmp_path).start()
    try:
        alice = RawClient(first.port)
        alice.login("alice")
        acked = []
        for i in range(50):
            alice.send({"type": "say", "text": f"durable {i}", "cid": f"c{i}"})
        for frame in alice.recv_until(lambda f: f["type"] == "ack" and f["cid"] == "c49"):
            if frame["type"] == "ack":
                acked.append(frame["id"])
        first.kill()
        alice.close()
        second = ServerProcess(tmp_path, port=first.port).start()
        try:
            assert second.port == first.port
            bob = RawClient(second.port)
            frames = bob.login("bob", after=0)
            replayed = {f["id"]: f for f in frames if f["type"] == "event"}
            assert set(acked) <= set(replayed)
            assert [replayed[i]["text"] for i in acked] == [f"durable {i}" for i in range(50)]
        finally:
            second.close()
    finally:
        first.close()


def test_generated_passkey_is_logged_with_addresses_and_sigterm_exits_0(tmp_path):
    """With no passkey given, one is generated and logged; SIGTERM says bye and exits 0."""
    server = ServerProcess(tmp_path, passkey=None).start()
    try:
        passkey = server.passkey
        assert re.fullmatch(r"[%s]{5}-[%s]{5}" % (auth.ALPHABET, auth.ALPHABET), passkey)
        alice = RawClient(server.port)
        assert alice.login("alice", passkey=passkey.upper())[0]["type"] == "welcome"
        assert alice.recv()["kind"] == "join"
        assert server.stop() == 0
        assert alice.recv() == {"type": "bye", "reason": "shutdown", "message": "The server is shutting down."}
        assert alice.closed_by_server()
        assert "tcpchat stopped cleanly" in server.log()
        assert "Traceback" not in server.log()
    finally:
        server.close()
    assert PASSKEY not in server.log() or server.passkey == PASSKEY
