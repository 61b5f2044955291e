"""Edits, replies and reactions (revision 1.4, feature "edits") over real sockets, and what a 1.1 client sees."""

import os

import pytest

from .procs import TWISTD, RawClient, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")

EDITS = ["rooms", "edits"]


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path).start()
    yield proc
    proc.close()


def said(client, text, **extra):
    client.send({"type": "say", "text": text, "cid": text[:20], **extra})
    return client.recv_until(lambda f: f.get("type") in ("ack", "error"))[-1]


def test_an_edit_reply_and_reactions_as_three_kinds_of_client_see_them(server):
    alice, bob, old = RawClient(server.port), RawClient(server.port), RawClient(server.port)
    alice.login("alice", features=EDITS)
    bob.login("bob", features=EDITS)
    old.login("old", features=["rooms"])  # a 1.1 client: it never asked for edits

    first = said(alice, "Meeting at 10 in room 4")
    assert first["type"] == "ack"
    alice.send({"type": "edit", "id": first["id"], "text": "Meeting at 11 in room 4", "req": "e1"})
    done = alice.recv_until(lambda f: f.get("req") == "e1")[-1]
    assert (done["type"], done["ref"]) == ("done", "edit")
    edit = bob.recv_until(lambda f: f.get("kind") == "edit")[-1]
    assert (edit["target"], edit["text"], edit["name"]) == (first["id"], "Meeting at 11 in room 4", "alice")

    reply = said(bob, "11 works for me", reply=first["id"])
    event = alice.recv_until(lambda f: f.get("kind") == "message" and f.get("name") == "bob")[-1]
    assert event["reply"] == {"id": first["id"], "name": "alice", "text": "Meeting at 11 in room 4"}

    bob.send({"type": "react", "id": first["id"], "emoji": "👍", "req": "r1"})
    assert bob.recv_until(lambda f: f.get("req") == "r1")[-1]["type"] == "done"
    alice.send({"type": "react", "id": first["id"], "emoji": "👍"})
    alice.send({"type": "react", "id": first["id"], "emoji": "🎉"})
    alice.send({"type": "react", "id": first["id"], "emoji": "🎉", "on": False, "req": "last"})
    alice.recv_until(lambda f: f.get("req") == "last")  # stored (a "done" follows the commit)

    # what everyone sees on joining: the message as it is now
    for features in (EDITS, ["rooms"], None):
        late = RawClient(server.port)
        frames = late.login(f"late{len(features or [])}", **({"features": features} if features else {}))
        shown = {f["id"]: f for f in frames if f.get("type") == "event"}
        message = shown[first["id"]]
        assert message["text"] == "Meeting at 11 in room 4" and "edited" in message
        assert message["reactions"] == {"👍": ["bob", "alice"]}
        assert shown[reply["id"]]["reply"]["id"] == first["id"]
        assert not [f for f in shown.values() if f["kind"] in ("edit", "react")]  # applied, not listed

    # the 1.1 client saw the messages live (the reply as a plain message) and none of the edit/react events
    old.send({"type": "ping", "n": "old"})
    live = old.recv_until(lambda f: f.get("type") == "pong")
    kinds = [f.get("kind") for f in live if f.get("type") == "event"]
    assert "edit" not in kinds and "react" not in kinds
    assert "11 works for me" in [f.get("text") for f in live]
    old.send({"type": "edit", "id": first["id"], "text": "x"})
    assert old.recv_until(lambda f: f.get("type") == "error")[-1]["code"] == "unknown-type"

    # search finds the new words, not the old ones
    alice.send({"type": "search", "q": "11", "req": "s"})
    found = alice.recv_until(lambda f: f.get("req") == "s")[-1]
    assert first["id"] in [e["id"] for e in found["events"]]


def test_only_the_author_edits_and_nobody_reacts_or_replies_to_what_they_cannot_read(server):
    alice, bob = RawClient(server.port), RawClient(server.port)
    alice.login("alice", features=EDITS)
    bob.login("bob", features=EDITS)
    alice.send({"type": "join", "room": "staff"})
    alice.recv_until(lambda f: f.get("type") == "room")
    secret = said(alice, "staff only", room="staff")
    mine = said(bob, "bob's own words")

    for frame, code in (
        ({"type": "edit", "id": mine["id"], "text": "alice was here"}, "not-allowed"),  # not hers
        ({"type": "edit", "id": mine["id"], "text": "   "}, "empty-message"),
        ({"type": "edit", "id": 10**9, "text": "x"}, "no-such-message"),
        ({"type": "react", "id": mine["id"], "emoji": "🤡"}, "bad-frame"),  # not one of the reactions
    ):
        alice.send(frame)
        assert alice.recv_until(lambda f: f.get("type") == "error")[-1]["code"] == code, frame
    for frame in ({"type": "react", "id": secret["id"], "emoji": "👀"},
                  {"type": "say", "text": "what is this?", "reply": secret["id"], "cid": "q"},
                  {"type": "edit", "id": secret["id"], "text": "x"}):
        bob.send(frame)
        assert bob.recv_until(lambda f: f.get("type") == "error")[-1]["code"] == "no-such-message", frame
