"""Joins and leaves in a crowd (revision 1.6, feature "roster"): one roster frame a second, not an event each."""

from twisted.internet import task

from tcpchat.client.model import Conversations

from .helpers import Peer, make_factory


def events_of(frames, kind):
    return [f for f in frames if isinstance(f, dict) and f.get("type") == "event" and f.get("kind") == kind]


def rosters(frames):
    return [f for f in frames if isinstance(f, dict) and f.get("type") == "roster"]


def test_in_a_crowd_roster_clients_get_one_roster_frame_instead_of_each_join_and_leave(tmp_path):
    """Below the crowd size everyone sees joins as events; at it, a "roster" client gets none live but one
    roster frame a second naming who came and went; a client without the feature still gets the events, and
    the history keeps every join and leave."""
    factory = make_factory(tmp_path, crowd=4)
    watcher = Peer(factory)
    watcher.login("watcher", features=["rooms", "roster"])
    old = Peer(factory)
    old.login("old")
    first = Peer(factory)
    first.login("first", features=["roster"])
    assert [e["name"] for e in events_of(watcher.frames(), "join")] == ["old", "first"]  # (2, then 3 online)
    old.frames()
    crowd = []
    for name in ("c1", "c2", "c3"):
        peer = Peer(factory)
        peer.login(name, features=["roster"])
        crowd.append(peer)
    crowd[0].transport.loseConnection()
    seen = watcher.frames()
    assert events_of(seen, "join") == [] and events_of(seen, "leave") == [] and rosters(seen) == []
    assert [e["name"] for e in events_of(old.frames(), "join")] == ["c1", "c2", "c3"]
    factory.clock.advance(factory.limits.roster_interval)
    (roster,) = rosters(watcher.frames())
    assert roster["joined"] == ["c2", "c3"] and roster["left"] == ["c1"] and roster["online"] == 5
    factory.clock.advance(5)
    assert rosters(watcher.frames()) == []  # nothing changed: no frame
    # the history still has them all, for catch-up and for clients that replay it
    stored = factory.store.events_before(None, 50).result
    assert [e["name"] for e in stored if e["kind"] == "join"][-3:] == ["c1", "c2", "c3"]
    assert [e["name"] for e in stored if e["kind"] == "leave"] == ["c1"]


def test_messages_in_the_same_batch_as_joins_still_reach_roster_clients(tmp_path):
    factory = make_factory(tmp_path, crowd=3)
    watcher, speaker = Peer(factory), Peer(factory)
    watcher.login("watcher", features=["roster"])
    speaker.login("speaker", features=["roster"])
    watcher.frames()
    speaker.send({"type": "say", "text": "hello crowd", "cid": "h1"})
    late = Peer(factory)
    late.login("late", features=["roster"])
    seen = watcher.frames()
    assert [e["text"] for e in events_of(seen, "message")] == ["hello crowd"]
    assert events_of(seen, "join") == []


class Users:
    def __init__(self):
        self.changes = []

    def usersChanged(self, users):
        self.changes.append(users)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def test_the_client_model_applies_a_roster_frame():
    listener = Users()
    model = Conversations(task.Clock(), listener)
    model.usersNow(["ann", "bob", "cy"])
    model.rosterChanged({"type": "roster", "joined": ["dee", "bob"], "left": ["cy"], "online": 3})
    assert model.users == ["ann", "bob", "dee"] and listener.changes[-1] == ["ann", "bob", "dee"]
