"""The operator's powers: oper, kick, ban (name, address, expiry), mute, delete, rotate, announce."""

from __future__ import annotations

from tests.helpers import PASSKEY, Peer, make_factory
from tests.test_conversations import events, login, settle

ADMIN = "admin-key-1"


def operator(factory, name="teacher", host="192.0.2.1"):
    peer = login(factory, name, host)
    peer.send({"type": "oper", "passkey": ADMIN})
    assert peer.frames()[0]["type"] == "oper"
    return peer


def factory_with_admin(tmp_path, **limits):
    return make_factory(tmp_path, admin_passkey=ADMIN, **limits)


def mod(peer, **frame):
    """Send a mod frame; its answer (other traffic is dropped)."""
    peer.frames()
    peer.send({"type": "mod", **frame})
    return [f for f in peer.frames() if f["type"] in ("mod-done", "error")]


def test_only_the_admin_passkey_makes_an_operator(tmp_path):
    factory = factory_with_admin(tmp_path)
    eve = login(factory, "eve")
    assert mod(eve, action="kick", name="eve")[0]["code"] == "not-operator"
    eve.send({"type": "oper", "passkey": PASSKEY})
    assert eve.frames()[0]["code"] == "bad-passkey"
    operator(factory)


def test_kick(tmp_path):
    factory = factory_with_admin(tmp_path)
    op, eve = operator(factory), login(factory, "eve", "192.0.2.66")
    settle(op)
    op.send({"type": "mod", "action": "kick", "name": "EVE", "reason": "shouting"})
    seen = op.frames()
    assert [f["message"] for f in seen if f["type"] == "mod-done"] == ["eve was kicked."]
    assert [e["reason"] for e in events(seen, "leave")] == ["kicked"]
    bye = eve.frames()[-1]
    assert bye["type"] == "bye" and bye["reason"] == "kicked" and "shouting" in bye["message"]
    assert not eve.connected


def test_ban_by_address_refuses_reconnects_until_it_expires(tmp_path):
    factory = factory_with_admin(tmp_path)
    op, eve = operator(factory), login(factory, "eve", "192.0.2.66")
    done = mod(op, action="ban", name="eve", address=True, duration=600, reason="spam")
    assert done[0]["message"] == "Banned name eve and address 192.0.2.66 for 10 min."
    assert not eve.connected
    again = Peer(factory, "192.0.2.66")  # another name from the same machine
    refusal = again.frames()
    assert refusal[0]["code"] == "banned" and "10 min" in refusal[0]["message"] and not again.connected
    other = Peer(factory, "192.0.2.67")
    assert other.login("eve")[0]["code"] == "banned"  # the name is banned too
    factory.clock.advance(601)
    back = Peer(factory, "192.0.2.66")
    assert back.login("eve")[0]["type"] == "welcome"


def test_bans_survive_a_restart_and_can_be_lifted(tmp_path):
    factory = factory_with_admin(tmp_path)
    op = operator(factory)
    mod(op, action="ban", address="192.0.2.99")
    factory.stop()
    again = factory_with_admin(tmp_path)
    assert Peer(again, "192.0.2.99").frames()[0]["code"] == "banned"
    op = operator(again)
    assert [b["value"] for b in mod(op, action="bans")[0]["bans"]] == ["192.0.2.99"]
    assert "Lifted" in mod(op, action="unban", address="192.0.2.99")[0]["message"]
    assert Peer(again, "192.0.2.99").login("eve")[0]["type"] == "welcome"


def test_mute(tmp_path):
    factory = factory_with_admin(tmp_path)
    op, eve, bob = operator(factory), login(factory, "eve"), login(factory, "bob")
    mod(op, action="mute", name="eve", duration=60)
    assert [f["code"] for f in eve.frames() if f["type"] == "error"] == ["muted"]
    settle(bob)
    eve.send({"type": "say", "text": "spam", "cid": "1"})
    refusal = eve.frames()[0]
    assert refusal["code"] == "muted" and refusal["cid"] == "1"
    assert bob.frames() == []
    factory.clock.advance(61)
    eve.send({"type": "say", "text": "sorry"})
    assert [e["text"] for e in events(bob.frames())] == ["sorry"]


def test_operator_deletes_anyones_message(tmp_path):
    factory = factory_with_admin(tmp_path)
    op, eve = operator(factory), login(factory, "eve")
    eve.send({"type": "say", "text": "rude words", "cid": "1"})
    msg_id = eve.frames()[0]["id"]
    settle(op)
    op.send({"type": "delete", "id": msg_id})
    assert [(e["target"], e["by"]) for e in events(eve.frames(), "delete")] == [(msg_id, "teacher")]
    op.send({"type": "history"})
    assert "rude" not in str(op.frames())


def test_live_passkey_rotation(tmp_path):
    """Connected users stay; the old passkey is refused afterwards, the new one works."""
    factory = factory_with_admin(tmp_path)
    op, bob = operator(factory), login(factory, "bob")
    settle(op)
    done = mod(op, action="rotate")[0]
    new = done["passkey"]
    assert new != PASSKEY
    bob.send({"type": "say", "text": "still here"})
    assert [e["text"] for e in events(op.frames())] == ["still here"] and bob.connected
    late = Peer(factory, "192.0.2.50")
    assert late.login("late", PASSKEY)[0]["code"] == "bad-passkey"
    assert late.login("late", new)[0]["type"] == "welcome"
    assert mod(op, action="rotate", passkey="chosen one")[0]["passkey"] == "chosen one"
    assert Peer(factory).login("x", "CHOSEN-ONE")[0]["type"] == "welcome"


def test_announce_reaches_everyone(tmp_path):
    factory = factory_with_admin(tmp_path)
    op, old = operator(factory), login(factory, "old", rich=False)
    settle(op)
    mod(op, action="announce", text="Server restarts at 5 pm")
    got = events(old.frames(), "announce")
    assert [(e["name"], e["text"]) for e in got] == [("teacher", "Server restarts at 5 pm")]


def test_every_action_is_audited(tmp_path):
    factory = factory_with_admin(tmp_path)
    op = operator(factory)
    login(factory, "eve")
    mod(op, action="mute", name="eve", duration=5, reason="calm down")
    rows = factory.store._db.execute("SELECT actor, action, detail FROM audit").fetchall()
    assert rows == [("teacher", "mute", '{"name": "eve", "duration": 5, "reason": "calm down"}')]


def test_release_lifts_a_forgotten_name_password(tmp_path):
    factory = factory_with_admin(tmp_path)
    op, bob = operator(factory), login(factory, "bob")
    bob.send({"type": "register", "password": "forgotten pw"})
    bob.send({"type": "bye"})
    assert "no longer protected" in mod(op, action="release", name="bob")[0]["message"]
    assert Peer(factory).login("bob")[0]["type"] == "welcome"


def test_ban_by_address_of_someone_offline_changes_nothing(tmp_path):
    factory = factory_with_admin(tmp_path)
    op = operator(factory)
    login(factory, "eve").send({"type": "bye"})
    refused = mod(op, action="ban", name="eve", address=True)
    assert refused[0]["code"] == "no-such-user"
    assert Peer(factory).login("eve")[0]["type"] == "welcome"  # the name was not banned either
