"""The session core driven directly: login, say, history and search, with no transport object at all."""

from tcpchat import wire

from .helpers import PASSKEY
from .sessiontools import connect, make_session_factory


def test_login_say_history_and_search_without_a_transport(tmp_path):
    factory = make_session_factory(str(tmp_path))
    alice, alink = connect(factory)
    alice.receive({"type": "hello", "version": 1, "name": "alice", "passkey": PASSKEY, "features": ["rooms"],
                   "req": "r1"})
    frames = alink.frames()
    assert [f["type"] for f in frames] == ["welcome", "room", "synced", "event"]  # then her own join
    assert frames[0]["req"] == "r1" and frames[1]["room"] == wire.DEFAULT_ROOM

    bob, blink = connect(factory, "192.0.2.21")
    bob.receive({"type": "hello", "version": 1, "name": "bob", "passkey": PASSKEY})
    blink.frames()
    alink.frames()
    alice.receive({"type": "say", "text": "the minutes are in the shared folder", "cid": "c1"})
    (ack,) = alink.frames()
    assert (ack["type"], ack["cid"]) == ("ack", "c1")
    (event,) = blink.frames()
    assert (event["type"], event["name"], event["text"]) == ("event", "alice", "the minutes are in the shared folder")

    bob.receive({"type": "history", "limit": 10, "req": "h"})
    (page,) = blink.frames()
    assert page["type"] == "history-page" and page["req"] == "h"
    assert [e.get("text") for e in page["events"] if e["kind"] == "message"] == ["the minutes are in the shared folder"]

    factory.store.index_pending()
    bob.receive({"type": "search", "q": "minutes", "req": "s"})
    (found,) = blink.frames()
    assert (found["type"], found["req"], [e["id"] for e in found["events"]]) == ("search-results", "s", [ack["id"]])


def test_errors_echo_what_the_request_carried(tmp_path):
    """An error answering a say names it (ref), and echoes its cid and request id — for every kind of refusal."""
    factory = make_session_factory(str(tmp_path))
    alice, link = connect(factory)
    alice.receive({"type": "hello", "version": 1, "name": "alice", "passkey": PASSKEY, "features": ["rooms"]})
    link.frames()
    alice.receive({"type": "say", "text": "   ", "cid": "c9", "req": "q9"})
    alice.receive({"type": "say", "text": "hi", "cid": "c10", "to": "nobody", "req": "q10"})
    errors = link.frames()
    assert [(e["code"], e["ref"], e["cid"], e["req"]) for e in errors] == [
        ("empty-message", "say", "c9", "q9"), ("no-such-user", "say", "c10", "q10")]
    old, link = connect(factory, "192.0.2.30")  # a 1.0 client (no "rooms" feature)
    old.receive({"type": "hello", "version": 1, "name": "old", "passkey": PASSKEY})
    link.frames()
    old.receive({"type": "rooms", "req": "q11"})
    (error,) = link.frames()
    assert (error["code"], error["ref"], error["req"]) == ("unknown-type", "rooms", "q11")


def test_a_session_before_login_gets_nothing_of_the_chat(tmp_path):
    factory = make_session_factory(str(tmp_path))
    stranger, link = connect(factory)
    for frame in ({"type": "who"}, {"type": "history"}, {"type": "say", "text": "hi"}):
        stranger.receive(frame)
    assert [(f["code"], f["ref"]) for f in link.frames()] == [("not-logged-in", "who"), ("not-logged-in", "history"),
                                                                 ("not-logged-in", "say")]
