"""
Privacy and moderation against the real server (``twistd -n tcpchat``) over
real sockets: a third user never receives, replays, catches up on, pages
through, searches or downloads another pair's direct messages or another
room's messages and files — not even after a ``kill -9`` and a restart.
"""

from __future__ import annotations

import hashlib

import pytest

from tcpchat import wire

from .helpers import PASSKEY
from .procs import RawClient, ServerProcess

RICH = {"features": ["rooms"]}
SECRETS = ("room-secret-R1", "dm-secret-D1", "dm-secret-D2", "lab-notes.txt", "private-photo.bin")
ADMIN = "admin-key-test"


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path, extra=["--admin-passkey", ADMIN]).start()
    yield proc
    proc.close()


def upload(client, name, data, **where):
    client.send({"type": "upload", "tid": 1, "name": name, "size": len(data),
                 "sha256": hashlib.sha256(data).hexdigest(), **where})
    client.send_payload(wire.encode_chunk(1, data))
    return client.recv_until(lambda f: f["type"] in ("upload-done", "error"))[-1]


def until_marker(client, marker):
    """Everything this client receives up to the event carrying ``marker``."""
    return client.recv_until(lambda f: f.get("type") == "event" and f.get("text") == marker)


def leaked(frames):
    shown = str(frames)
    return [s for s in SECRETS if s in shown]


def test_a_third_user_never_sees_another_pairs_or_rooms_conversation(server):
    alice, bob, carol, dave = (RawClient(server.port) for _ in range(4))
    alice.login("alice", **RICH)
    bob.login("bob", **RICH)
    carol.login("carol", **RICH)
    dave.login("dave")  # a 1.0 client: the default room only
    for client in (alice, bob):
        client.send({"type": "join", "room": "lab"})
        client.recv_until(lambda f: f["type"] == "room")
    alice.send({"type": "say", "text": "room-secret-R1", "room": "lab", "cid": "r1"})
    alice.send({"type": "say", "text": "dm-secret-D1", "to": "bob", "cid": "d1"})
    bob.send({"type": "say", "text": "dm-secret-D2", "to": "alice", "cid": "d2"})
    room_file = upload(alice, "lab-notes.txt", b"lab notes " * 100, room="lab")["file"]
    dm_file = upload(alice, "private-photo.bin", b"\x89PNG" * 1000, to="bob")["file"]
    alice.send({"type": "say", "text": "marker-1", "cid": "m1"})

    # live: bob gets all of it; carol and dave nothing of it
    got = until_marker(bob, "marker-1")
    assert not {"room-secret-R1", "dm-secret-D1", "lab-notes.txt", "private-photo.bin"} - set(leaked(got))
    for outsider in (carol, dave):
        assert leaked(until_marker(outsider, "marker-1")) == []

    # paging through history, in every conversation carol may name
    for where in ({}, {"to": "alice"}, {"to": "bob"}):
        carol.send({"type": "history", "limit": 500, **where})
        page = carol.recv_until(lambda f: f["type"] == "history-page")[-1]
        assert leaked(page) == []
    carol.send({"type": "history", "room": "lab"})
    assert carol.recv_until(lambda f: f["type"] == "error")[-1]["code"] == "not-a-member"
    dave.send({"type": "history", "limit": 500})
    assert leaked(dave.recv_until(lambda f: f["type"] == "history-page")) == []

    # search
    for query in ("secret", "room secret", "dm", "lab"):
        carol.send({"type": "search", "q": query, "limit": 100})
        assert carol.recv_until(lambda f: f["type"] == "search-results")[-1]["events"] == []
    carol.send({"type": "search", "q": "secret", "room": "lab"})
    assert carol.recv_until(lambda f: f["type"] == "error")[-1]["code"] == "not-a-member"

    # downloads, by guessing the ids
    for tid, file_id in enumerate((room_file["id"], dm_file["id"]), start=1):
        carol.send({"type": "download", "tid": tid, "file": file_id})
        assert carol.recv_until(lambda f: f["type"] == "error")[-1]["code"] == "no-such-file"
    bob.send({"type": "download", "tid": 9, "file": dm_file["id"]})
    fetched = bob.recv_until(lambda f: isinstance(f, dict) and f["type"] == "download-done")
    assert fetched[0]["type"] == "download-start"
    assert b"".join(bytes(f.data) for f in fetched if isinstance(f, wire.Chunk)) == b"\x89PNG" * 1000

    # replay and catch-up from the very beginning, after kill -9 and a restart
    server.kill()
    server.start()
    carol = RawClient(server.port)
    assert leaked(carol.login("carol", after=0, **RICH)) == []
    dave = RawClient(server.port)
    assert leaked(dave.login("dave", after=0)) == []
    carol2 = RawClient(server.port)
    assert leaked(carol2.login("carol2", **RICH)) == []
    bob = RawClient(server.port)
    assert set(leaked(bob.login("bob", after=0, **RICH))) == set(SECRETS)


def oper(client):
    client.send({"type": "oper", "passkey": ADMIN})
    assert client.recv_until(lambda f: f["type"] in ("oper", "error"))[-1]["type"] == "oper"


def mod(client, **frame):
    client.send({"type": "mod", **frame})
    return client.recv_until(lambda f: f["type"] in ("mod-done", "error"))[-1]


def test_live_passkey_rotation(server):
    """Connected users stay; the old passkey is refused afterwards; the new one works."""
    op, bob = RawClient(server.port), RawClient(server.port)
    op.login("teacher", **RICH)
    bob.login("bob", **RICH)
    oper(op)
    new = mod(op, action="rotate")["passkey"]
    assert new != PASSKEY
    bob.send({"type": "say", "text": "still connected", "cid": "s"})
    assert bob.recv_until(lambda f: f["type"] == "ack")[-1]["cid"] == "s"
    late = RawClient(server.port)
    assert late.login("late", PASSKEY)[-1]["code"] == "bad-passkey"
    assert late.login("late", new)[-1]["type"] == "synced"


def test_ban_by_address_refuses_reconnects_until_lifted(server):
    op = RawClient(server.port)
    op.login("teacher", **RICH)
    oper(op)
    eve = RawClient(server.port, source="127.0.0.2")
    eve.login("eve", **RICH)
    done = mod(op, action="ban", name="eve", address=True, duration=3600, reason="spam")
    assert done["message"] == "Banned name eve and address 127.0.0.2 for 60 min."
    bye = eve.recv_until(lambda f: f["type"] == "bye")[-1]
    assert bye["reason"] == "banned"
    again = RawClient(server.port, source="127.0.0.2")
    refusal = again.recv()
    assert refusal["code"] == "banned" and "for 60 min more (spam)" in refusal["message"]
    assert again.closed_by_server()
    # a restart does not lift it
    server.stop()
    server.start()
    assert RawClient(server.port, source="127.0.0.2").recv()["code"] == "banned"
    op = RawClient(server.port)
    op.login("teacher", **RICH)
    oper(op)
    assert "Lifted" in mod(op, action="unban", name="eve", address="127.0.0.2")["message"]
    back = RawClient(server.port, source="127.0.0.2")
    assert back.login("eve", **RICH)[-1]["type"] == "synced"
    log = server.log()  # every action is in the server log, with who did it from where
    assert "Operator teacher (127.0.0.1:" in log and ": ban {'name': 'eve'" in log and ": unban {" in log


def test_a_deleted_message_is_gone_from_history_and_replay(server):
    alice, bob = RawClient(server.port), RawClient(server.port)
    alice.login("alice", **RICH)
    bob.login("bob", **RICH)
    alice.send({"type": "say", "text": "posted-by-mistake", "cid": "x"})
    msg_id = alice.recv_until(lambda f: f["type"] == "ack")[-1]["id"]
    bob.recv_until(lambda f: f.get("text") == "posted-by-mistake")
    alice.send({"type": "delete", "id": msg_id})
    removal = bob.recv_until(lambda f: f.get("kind") == "delete")[-1]
    assert (removal["target"], removal["by"]) == (msg_id, "alice")  # clients take it off the screen
    bob.send({"type": "history", "limit": 500})
    assert "posted-by-mistake" not in str(bob.recv_until(lambda f: f["type"] == "history-page"))
    server.kill()
    server.start()
    late = RawClient(server.port)
    assert "posted-by-mistake" not in str(late.login("late", after=0, **RICH))
    late.send({"type": "search", "q": "mistake"})
    assert late.recv_until(lambda f: f["type"] == "search-results")[-1]["events"] == []
