"""Rooms, direct messages, typing, read markers, presence and search, on StringTransports."""

from __future__ import annotations

from typing import Any, List

from tests.helpers import PASSKEY, Peer, kinds, make_factory
from tcpchat.server.chat import ChatFactory

RICH = {"features": ["rooms"]}


def login(factory: ChatFactory, name: str, host: str = "192.0.2.10", rich: bool = True, **extra: Any) -> Peer:
    peer = Peer(factory, host)
    frames = peer.login(name, **(RICH if rich else {}), **extra)
    assert frames[0]["type"] == "welcome", frames
    peer.frames()
    return peer


def events(frames: List[Any], kind: str = "message") -> List[Any]:
    return [f for f in frames if isinstance(f, dict) and f["type"] == "event" and f["kind"] == kind]


def texts(frames: List[Any]) -> List[str]:
    return [f.get("text") for f in events(frames)]


def settle(*peers: Peer) -> None:
    for peer in peers:
        peer.frames()


def test_room_messages_reach_members_only(tmp_path):
    """A room's messages go to its members; others, and clients without rooms, never see them."""
    factory = make_factory(tmp_path)
    alice, bob, carol = (login(factory, n) for n in ("alice", "bob", "carol"))
    old = login(factory, "olddave", rich=False)
    alice.send({"type": "join", "room": "#Lab"})
    room = [f for f in alice.frames() if f["type"] == "room"]
    assert room == [{"type": "room", "room": "Lab", "members": ["alice"], "seen": {}}]
    bob.send({"type": "join", "room": "lab"})  # names compare case-insensitively
    assert [f for f in bob.frames() if f["type"] == "room"][0]["members"] == ["alice", "bob"]
    settle(alice, carol, old)
    alice.send({"type": "say", "text": "lab only", "room": "lab", "cid": "a1"})
    assert kinds(alice.frames()) == ["ack"]
    got = bob.frames()
    assert texts(got) == ["lab only"] and events(got)[0]["room"] == "Lab"
    assert carol.frames() == [] and old.frames() == []
    carol.send({"type": "say", "text": "let me in", "room": "lab"})
    assert carol.frames()[0]["code"] == "not-a-member"
    # the default room still reaches everyone, old clients included
    carol.send({"type": "say", "text": "hello all"})
    assert texts(alice.frames()) == texts(old.frames()) == ["hello all"]
    # leaving: the leaver sees its leaving, then nothing more
    bob.send({"type": "leave", "room": "lab"})
    assert [f["kind"] for f in events(bob.frames(), "room-leave")] == ["room-leave"]
    alice.send({"type": "say", "text": "after bob left", "room": "lab"})
    assert texts(bob.frames()) == []
    bob.send({"type": "leave", "room": "general"})
    assert bob.frames()[0]["code"] == "cannot-leave"


def test_old_clients_cannot_use_rooms_but_keep_chatting(tmp_path):
    factory = make_factory(tmp_path)
    old = login(factory, "old", rich=False)
    old.send({"type": "join", "room": "lab"})
    assert old.frames()[0]["code"] == "unknown-type"
    old.send({"type": "say", "text": "still works", "cid": "c"})
    assert kinds(old.frames()) == ["ack"]


def test_direct_messages_are_private(tmp_path):
    """Only the two people see a direct message: live, in replay, history, catch-up and search."""
    factory = make_factory(tmp_path)
    alice, bob, carol = (login(factory, n) for n in ("alice", "bob", "carol"))
    old = login(factory, "olddave", rich=False)
    settle(alice, bob, carol, old)
    alice.send({"type": "say", "text": "secret plan", "to": "BOB", "cid": "a1"})
    assert kinds(alice.frames()) == ["ack"]
    got = events(bob.frames())
    assert [(e["name"], e["to"], e["text"]) for e in got] == [("alice", "bob", "secret plan")]
    assert carol.frames() == [] and old.frames() == []
    bob.send({"type": "say", "text": "agreed", "to": "alice"})
    assert texts(alice.frames()) == ["agreed"]
    # history of the pair, from either side
    alice.send({"type": "history", "to": "bob"})
    page = alice.frames()[0]
    assert page["to"] == "bob" and [e["text"] for e in page["events"]] == ["secret plan", "agreed"]
    carol.send({"type": "history", "to": "alice"})
    assert carol.frames()[0]["events"] == []  # carol and alice have no conversation
    # replay on a fresh login, and catch-up from an old position
    carol.send({"type": "bye"})
    carol2 = Peer(factory, "192.0.2.10")
    frames = carol2.login("carol", **RICH)
    assert "secret plan" not in str(frames) and "agreed" not in str(frames)
    carol3 = Peer(factory)
    frames = carol3.login("carol3", after=0, **RICH)
    assert "secret plan" not in str(frames)
    # search
    carol2.frames()
    carol2.send({"type": "search", "q": "secret"})
    assert carol2.frames()[0]["events"] == []
    bob.frames()
    bob.send({"type": "search", "q": "secr"})
    assert [e["text"] for e in bob.frames()[0]["events"]] == ["secret plan"]
    # nobody can write to a name that never logged in
    alice.frames()
    alice.send({"type": "say", "text": "hello?", "to": "nobody"})
    assert alice.frames()[0]["code"] == "no-such-user"


def test_direct_messages_wait_for_an_offline_recipient(tmp_path):
    factory = make_factory(tmp_path)
    bob = login(factory, "bob")
    bob.send({"type": "bye"})
    alice = login(factory, "alice")
    alice.send({"type": "say", "text": "call me", "to": "bob"})
    bob = Peer(factory)
    assert "call me" in str(bob.login("bob", **RICH))


def test_typing_is_relayed_to_the_conversation_and_rate_limited(tmp_path):
    factory = make_factory(tmp_path)
    alice, bob, carol = (login(factory, n) for n in ("alice", "bob", "carol"))
    settle(alice, bob, carol)
    alice.send({"type": "typing", "to": "bob"})
    alice.send({"type": "typing", "to": "bob"})  # within 2 s: dropped
    assert bob.frames() == [{"type": "typing", "name": "alice", "to": "bob"}]
    assert carol.frames() == [] and alice.frames() == []
    factory.clock.advance(2.5)
    alice.send({"type": "typing"})
    assert bob.frames() == carol.frames() == [{"type": "typing", "name": "alice", "room": "general"}]


def test_read_markers_are_shared_and_survive_a_restart(tmp_path):
    factory = make_factory(tmp_path)
    alice, bob = login(factory, "alice"), login(factory, "bob")
    alice.send({"type": "join", "room": "lab"})
    bob.send({"type": "join", "room": "lab"})
    alice.send({"type": "say", "text": "read me", "room": "lab", "cid": "x"})
    ack = [f for f in alice.frames() if f["type"] == "ack"][0]
    settle(bob)
    bob.send({"type": "read", "room": "lab", "id": ack["id"]})
    assert alice.frames() == [{"type": "seen", "name": "bob", "id": ack["id"], "room": "lab"}]
    bob.send({"type": "read", "room": "lab", "id": ack["id"] - 1})  # markers only move forward
    assert alice.frames() == []
    factory.stop()
    again = make_factory(tmp_path)
    alice = Peer(again)
    frames = alice.login("alice", **RICH)
    rooms = [f for f in frames if f["type"] == "room"]
    assert {f["room"]: f["seen"] for f in rooms}["lab"] == {"bob": ack["id"]}


def test_presence_away_status_and_auto_away(tmp_path):
    factory = make_factory(tmp_path, away_after=600)
    alice, bob = login(factory, "alice"), login(factory, "bob")
    settle(alice, bob)
    alice.send({"type": "presence", "away": True, "status": "in a meeting"})
    assert bob.frames() == [{"type": "presence", "name": "alice", "away": True, "status": "in a meeting"}]
    bob.send({"type": "who"})
    assert bob.frames()[0]["presence"] == {"alice": {"away": True, "status": "in a meeting"}}
    # bob says nothing for ten minutes: he is shown away, and back when he speaks
    factory.clock.advance(605)
    factory.sweep()
    assert {"type": "presence", "name": "bob", "away": True, "status": ""} in alice.frames()
    bob.send({"type": "say", "text": "back"})
    assert {"type": "presence", "name": "bob", "away": False, "status": ""} in alice.frames()
    carol = Peer(factory)
    welcome = carol.login("carol", **RICH)[0]
    assert welcome["presence"] == {"alice": {"away": True, "status": "in a meeting"}}


def test_deleted_message_is_gone_from_history_replay_and_search(tmp_path):
    factory = make_factory(tmp_path)
    alice, bob = login(factory, "alice"), login(factory, "bob")
    alice.send({"type": "say", "text": "oops wrong chat", "cid": "1"})
    msg_id = [f for f in alice.frames() if f["type"] == "ack"][0]["id"]
    settle(bob)
    bob.send({"type": "delete", "id": msg_id})
    assert bob.frames()[0]["code"] == "not-allowed"
    alice.send({"type": "delete", "id": msg_id})
    removal = events(bob.frames(), "delete")
    assert [(e["target"], e["by"]) for e in removal] == [(msg_id, "alice")]
    bob.send({"type": "history"})
    assert "oops" not in str(bob.frames())
    bob.send({"type": "search", "q": "oops"})
    assert bob.frames()[0]["events"] == []
    carol = Peer(factory)
    assert "oops" not in str(carol.login("carol", **RICH))
    old = Peer(factory)
    assert "oops" not in str(old.login("old", after=0))
    factory.stop()
    again = make_factory(tmp_path)
    dave = Peer(again)
    assert "oops" not in str(dave.login("dave", after=0, **RICH))


def test_search_sees_only_what_the_user_may_read(tmp_path):
    factory = make_factory(tmp_path)
    alice, bob, carol = (login(factory, n) for n in ("alice", "bob", "carol"))
    alice.send({"type": "join", "room": "staff"})
    alice.send({"type": "say", "text": "exam on friday", "room": "staff"})
    alice.send({"type": "say", "text": "Exam moved", "to": "bob"})
    alice.send({"type": "say", "text": "no exams this week, says café"})
    settle(alice, bob, carol)
    results = {}
    for peer, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        peer.send({"type": "search", "q": "exam"})
        results[name] = [e["text"] for e in peer.frames()[0]["events"]]
    # the last word may be the start of a word: "exam" finds "exams" too
    assert results["alice"] == ["no exams this week, says café", "Exam moved", "exam on friday"]
    assert results["bob"] == ["no exams this week, says café", "Exam moved"]
    assert results["carol"] == ["no exams this week, says café"]
    carol.send({"type": "search", "q": "cafe week"})  # accents and word order do not matter
    assert [e["text"] for e in carol.frames()[0]["events"]] == ["no exams this week, says café"]
    carol.send({"type": "search", "q": "exam", "room": "staff"})
    assert carol.frames()[0]["code"] == "not-a-member"
    carol.send({"type": "search", "q": "()*"})
    assert carol.frames()[0]["code"] == "bad-query"


def test_room_list(tmp_path):
    factory = make_factory(tmp_path)
    alice, bob = login(factory, "alice"), login(factory, "bob")
    alice.send({"type": "join", "room": "lab"})
    settle(alice)
    bob.send({"type": "rooms"})
    assert bob.frames()[0]["rooms"] == [
        {"room": "general", "members": 2, "joined": True},
        {"room": "lab", "members": 1, "joined": False},
    ]


def test_membership_survives_a_restart(tmp_path):
    factory = make_factory(tmp_path)
    alice = login(factory, "alice")
    alice.send({"type": "join", "room": "lab"})
    factory.stop()
    again = make_factory(tmp_path)
    alice = Peer(again)
    assert [f["room"] for f in alice.login("alice", **RICH) if f["type"] == "room"] == ["general", "lab"]


def test_room_file_is_downloadable_by_members_only(tmp_path):
    import hashlib

    from tcpchat import wire

    factory = make_factory(tmp_path, files=True)
    alice, bob, carol = (login(factory, n) for n in ("alice", "bob", "carol"))
    alice.send({"type": "join", "room": "lab"})
    bob.send({"type": "join", "room": "lab"})
    data = b"lab results"
    alice.send({"type": "upload", "tid": 1, "name": "r.txt", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "room": "lab"})
    alice.send_payload(wire.encode_chunk(1, data))
    done = [f for f in alice.frames() if isinstance(f, dict) and f["type"] == "upload-done"]
    assert done, "upload did not finish"
    file_id = done[0]["file"]["id"]
    assert [e["room"] for e in events(bob.frames(), "file")] == ["lab"]
    assert events(carol.frames(), "file") == []
    carol.send({"type": "download", "tid": 5, "file": file_id})
    assert carol.frames()[0]["code"] == "no-such-file"
    bob.send({"type": "download", "tid": 5, "file": file_id})
    assert kinds(bob.frames())[0] == "download-start"


def test_a_deleted_file_cannot_be_downloaded(tmp_path):
    import hashlib

    from tcpchat import wire

    factory = make_factory(tmp_path, files=True)
    alice, bob = login(factory, "alice"), login(factory, "bob")
    data = b"wrong file"
    alice.send({"type": "upload", "tid": 1, "name": "oops.txt", "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()})
    alice.send_payload(wire.encode_chunk(1, data))
    done = [f for f in alice.frames() if isinstance(f, dict) and f["type"] == "upload-done"][0]
    alice.send({"type": "delete", "id": done["id"]})
    assert [e["target"] for e in events(bob.frames(), "delete")] == [done["id"]]
    bob.send({"type": "download", "tid": 3, "file": done["file"]["id"]})
    assert bob.frames()[0]["code"] == "no-such-file"


def test_room_limits(tmp_path):
    factory = make_factory(tmp_path, max_joined=2, max_rooms=3)
    alice, bob = login(factory, "alice"), login(factory, "bob")
    for room in ("a", "b"):
        alice.send({"type": "join", "room": room})
    alice.send({"type": "join", "room": "c"})
    assert [f["code"] for f in alice.frames() if f["type"] == "error"] == ["too-many-rooms"]
    bob.send({"type": "join", "room": "c"})
    bob.send({"type": "join", "room": "d"})
    assert [f["code"] for f in bob.frames() if f["type"] == "error"] == ["too-many-rooms"]
    bob.send({"type": "join", "room": "A"})  # an existing room is always open
    assert [f["room"] for f in bob.frames() if f["type"] == "room"] == ["a"]


def test_a_protected_name_needs_its_password(tmp_path):
    """/register protects a name: without its password nobody else reads its direct messages."""
    factory = make_factory(tmp_path)
    bob = login(factory, "bob")
    bob.send({"type": "register", "password": "short"})
    assert bob.frames()[0]["code"] == "bad-frame"
    bob.send({"type": "register", "password": "correct horse"})
    assert bob.frames() == [{"type": "registered", "name": "bob"}]
    alice = login(factory, "alice")
    alice.send({"type": "say", "text": "for bob only", "to": "bob"})
    bob.send({"type": "bye"})
    factory.stop()
    factory = make_factory(tmp_path)  # it is stored
    mallory = Peer(factory, "192.0.2.66")
    refused = mallory.login("Bob", **RICH)
    assert [f["code"] for f in refused] == ["name-protected"]
    refused = mallory.login("bob", password="guess", **RICH)
    assert refused[0]["code"] == "name-protected" and refused[0]["message"] == "Wrong password for that name."
    assert len(factory.guard.failures["192.0.2.66"]) == 1  # a wrong password counts toward the lockout
    back = Peer(factory)
    frames = back.login("bob", password="correct horse", **RICH)
    assert frames[0]["type"] == "welcome" and "for bob only" in str(frames)


def test_protected_name_over_the_login_proof(tmp_path):
    """With SPAKE2 the password travels in pake-confirm, after the server proved itself."""
    from tcpchat import pake

    factory = make_factory(tmp_path)
    carol = login(factory, "carol")
    carol.send({"type": "register", "password": "carol's secret"})
    carol.send({"type": "bye"})
    peer = Peer(factory)
    for password, expected in ((None, "error"), ("carol's secret", "welcome")):
        state, message = pake.client_start(PASSKEY)
        peer.send({"type": "hello", "version": 1, "name": "carol", "pake": message.hex()})
        answer = peer.frames()[0]
        reply = pake.client_finish(state, bytes.fromhex(answer["msg"]), bytes.fromhex(answer["confirm"]), b"")
        confirm = {"type": "pake-confirm", "confirm": reply.hex()}
        if password:
            confirm["password"] = password
        peer.send(confirm)
        assert peer.frames()[0]["type"] == expected
