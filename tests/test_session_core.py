"""The session core driven directly: login, say, history and search, with no transport object at all."""

import struct

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


def test_a_peer_that_keeps_sending_refused_frames_is_not_read_for_a_second(tmp_path):
    """Answering a bad frame costs what a good one does: past 50 refused frames in a second, the connection is not
    read for a second (what it sends waits); a user next to it is answered at once meanwhile."""
    from .helpers import Peer, make_factory

    factory = make_factory(tmp_path, message_rate=10.0)
    attacker, witness = Peer(factory), Peer(factory, host="192.0.2.77")
    attacker.login("fuzzer")
    witness.login("witness")
    attacker.frames(), witness.frames()
    attacker.proto.dataReceived(b"".join(struct.pack(">I", 9) + b'{"type":1' for _ in range(500)))
    errors = [f for f in attacker.frames() if f["type"] == "error"]
    assert len(errors) == factory.limits.max_refused + 1
    assert {f["code"] for f in errors} == {"bad-frame"}
    witness.send({"type": "ping", "n": "here"})
    assert witness.frames() == [{"type": "pong", "n": "here"}]
    factory.clock.advance(1.0)
    assert len([f for f in attacker.frames() if f["type"] == "error"]) == factory.limits.max_refused + 1
    for _ in range(10):  # bounded
        factory.clock.advance(1.0)
        attacker.frames()
    attacker.send({"type": "ping", "n": "after"})
    assert attacker.frames()[-1] == {"type": "pong", "n": "after"}  # every one answered in the end, then this


def test_tls_handshakes_are_paced_a_few_per_reactor_turn():
    """A crowd of ClientHellos arriving at once: a few handshakes start per turn of the reactor, in arrival order,
    so whatever else the server has to do (a user's message) waits for a few handshakes, not for all of them."""
    from collections import deque

    from twisted.internet import task
    from twisted.internet.testing import StringTransport

    from tcpchat.server.lazytls import LazyTLSFactory, Waiting

    started = []

    class Probe(Waiting):
        def begin(self, data):
            started.append((self, data))

    class Chat:
        clock = task.Clock()

    owner = LazyTLSFactory.__new__(LazyTLSFactory)
    owner.chat = Chat()
    owner.turns, owner._turn, owner._started = deque(), None, 0
    crowd = []
    for n in range(10):
        probe = Probe(owner)
        probe.transport = StringTransport()  # (accepted: its slot in the caps is not what this is about)
        probe.transport.connected = True
        crowd.append(probe)
        probe.dataReceived(b"\x16hello %d" % n)
    assert [data for _, data in started] == [b"\x16hello %d" % n for n in range(LazyTLSFactory.perTurn)]
    crowd[5].connectionLost()  # gone while it waited: skipped
    for _ in range(5):  # bounded
        Chat.clock.advance(0)
    assert [p for p, _ in started] == [p for p in crowd if p is not crowd[5]]
    assert not owner.turns


def test_after_a_slow_down_nothing_overtakes_the_refused_message(tmp_path):
    """Past the burst a say is refused; for a second after that every say is, even once the rate would allow one,
    so a client that resends in order has its messages stored in order."""
    from .helpers import Peer, make_factory

    factory = make_factory(tmp_path, message_rate=10.0, message_burst=2.0)
    alice = Peer(factory)
    alice.login("alice")
    alice.frames()
    for n in range(3):
        alice.send({"type": "say", "text": f"m{n}", "cid": f"c{n}"})
    answers = alice.frames()
    assert [(f["type"], f.get("cid")) for f in answers if f["type"] in ("ack", "error")] == \
        [("ack", "c0"), ("ack", "c1"), ("error", "c2")]
    factory.clock.advance(0.5)  # five tokens back by now: still refused, for the second after the refusal
    alice.send({"type": "say", "text": "m3", "cid": "c3"})
    assert [f.get("code") for f in alice.frames() if f["type"] == "error"] == ["slow-down"]
    factory.clock.advance(0.6)
    for n in (2, 3):  # resent in order
        alice.send({"type": "say", "text": f"m{n}", "cid": f"c{n}"})
    assert [f.get("cid") for f in alice.frames() if f["type"] == "ack"] == ["c2", "c3"]


def test_in_a_crowd_a_welcome_lists_a_bounded_number_of_names(tmp_path):
    """Past Limits.welcome_users online, a welcome lists that many (and the newcomer) and says how many there are, so
    a login costs the same however many are online; who still lists them all while they fit in a frame."""
    from .helpers import Peer, make_factory

    factory = make_factory(tmp_path, welcome_users=3)
    peers = []
    for name in ("dora", "bea", "cai", "abe"):
        peer = Peer(factory)
        peer.login(name)
        peers.append(peer)
    small = next(f for f in Peer(factory).login("al") if f["type"] == "welcome")
    assert small["users"] == ["abe", "al", "bea"] and small["online"] == 5 and small["more"] is True
    late = next(f for f in Peer(factory).login("zed") if f["type"] == "welcome")
    assert late["users"] == ["abe", "al", "bea", "zed"] and late["online"] == 6  # (the newcomer is always there)
    asker = peers[0]
    asker.frames()
    asker.send({"type": "who", "req": "w"})
    (users,) = [f for f in asker.frames() if f.get("req") == "w"]
    assert users["users"] == ["abe", "al", "bea", "cai", "dora", "zed"]
