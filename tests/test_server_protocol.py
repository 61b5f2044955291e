"""The server protocol over StringTransport, with a fake clock and a synchronous store."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from tcpchat import wire
from tcpchat.store.sqlite import Store

from .helpers import PASSKEY, Peer, kinds, make_factory, new_store


@pytest.fixture
def factory(tmp_path):
    return make_factory(tmp_path)


@pytest.fixture
def logged_errors():
    """Collects every logged failure, so tests can assert there were none."""
    failures = []

    def observer(event):
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observer)
    yield failures
    globalLogPublisher.removeObserver(observer)


def events(frames, kind=None):
    return [f for f in frames if isinstance(f, dict) and f["type"] == "event" and (kind is None or f["kind"] == kind)]


# ---------------------------------------------------------------- login


def test_login_gets_welcome_history_marker_and_own_join(factory):
    """A successful login receives welcome, the replay marker, then its own join."""
    frames = Peer(factory).login("alice", client="test")
    assert kinds(frames) == ["welcome", "synced", "event"]
    welcome = frames[0]
    assert welcome["name"] == "alice" and welcome["server"] == "test server" and welcome["version"] == 1
    assert welcome["users"] == ["alice"]
    assert welcome["limits"]["max_text_bytes"] == wire.MAX_TEXT_BYTES
    assert frames[2]["kind"] == "join" and frames[2]["name"] == "alice"


def test_login_normalises_the_name(factory):
    """The name in welcome is the NFC form the server uses everywhere."""
    frames = Peer(factory).login("Zoe\u0308")
    assert frames[0]["name"] == "Zoë"


def test_wrong_passkey_gets_code_and_no_chat_data(factory):
    """A wrong passkey yields bad-passkey and nothing about the conversation."""
    alice = Peer(factory)
    alice.login("alice")
    alice.send({"type": "say", "text": "secret plans"})
    mallory = Peer(factory)
    frames = mallory.login("mallory", passkey="wrong-guess")
    assert frames == [{"type": "error", "code": "bad-passkey", "message": "Wrong passkey.", "ref": "hello"}]
    alice.send({"type": "say", "text": "more secrets"})
    assert mallory.frames() == []
    assert b"secret" not in mallory.transport.value()
    assert mallory.connected


def test_passkey_is_forgiving_about_case_and_dashes(factory):
    """People may type the passkey in capitals, with spaces or without the dash."""
    assert kinds(Peer(factory).login("a", passkey=PASSKEY.upper()))[0] == "welcome"
    assert kinds(Peer(factory).login("b", passkey=PASSKEY.replace("-", " ")))[0] == "welcome"


def test_client_may_retry_after_a_failed_login(factory):
    """After a wrong passkey the same connection can log in correctly."""
    peer = Peer(factory)
    assert peer.login("alice", passkey="nope")[0]["code"] == "bad-passkey"
    assert kinds(peer.login("alice"))[0] == "welcome"


def test_too_many_failed_logins_disconnect(factory):
    """The fifth failure on one connection ends it with too-many-attempts."""
    peer = Peer(factory)
    codes = [peer.login("alice", passkey=f"guess{i}")[0]["code"] for i in range(5)]
    assert codes == ["bad-passkey"] * 4 + ["too-many-attempts"]
    assert not peer.connected


def test_wrong_version_is_refused_and_closed(factory):
    """A client speaking another protocol version is told so and disconnected."""
    peer = Peer(factory)
    peer.send({"type": "hello", "version": 99, "name": "a", "passkey": PASSKEY})
    assert peer.frames()[0]["code"] == "bad-version"
    assert not peer.connected


@pytest.mark.parametrize("name", ["", " alice", "bob ", "x" * 33, "new\nline", "nul\x00"])
def test_invalid_names_are_refused(factory, name):
    """Invalid names get bad-name, and the connection may try again."""
    peer = Peer(factory)
    assert peer.login(name)[0]["code"] == "bad-name"
    assert peer.connected


def test_names_are_unique_ignoring_case(factory):
    """Five users whose names differ only in case: one gets in, four get name-taken."""
    results = [Peer(factory).login(n)[0] for n in ["alice", "Alice", "ALICE", "aLIce", "alicE"]]
    assert [r["type"] for r in results] == ["welcome", "error", "error", "error", "error"]
    assert {r.get("code") for r in results[1:]} == {"name-taken"}
    assert list(factory.users) == ["alice"]


def test_name_is_free_again_after_leaving(factory):
    """A name can be reused once its holder has left."""
    first = Peer(factory)
    first.login("alice")
    first.transport.loseConnection()
    assert kinds(Peer(factory).login("Alice"))[0] == "welcome"


def test_nothing_but_login_before_login(factory):
    """Chat frames before login are refused and reveal nothing."""
    alice = Peer(factory)
    alice.login("alice")
    peer = Peer(factory)
    for frame in ({"type": "say", "text": "hi"}, {"type": "who"}, {"type": "history"}):
        peer.send(frame)
    assert [f["code"] for f in peer.frames()] == ["not-logged-in"] * 3
    alice.send({"type": "say", "text": "hello"})
    assert peer.frames() == []


def test_second_hello_is_refused(factory):
    """Logging in twice on one connection is an error, not a second user."""
    peer = Peer(factory)
    peer.login("alice")
    assert peer.login("bob")[0]["code"] == "already-logged-in"
    assert factory.userNames() == ["alice"]


# ---------------------------------------------------------------- messages


def test_message_is_acked_to_sender_and_broadcast_to_others(factory):
    """The sender gets an ack with the id; everyone else gets the event."""
    alice, bob, carol = Peer(factory), Peer(factory), Peer(factory)
    for peer, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        peer.login(name)
    for peer in (alice, bob, carol):
        peer.frames()
    alice.send({"type": "say", "text": "hello 👋 мир", "cid": "m1"})
    ack = alice.frames()
    assert kinds(ack) == ["ack"] and ack[0]["cid"] == "m1"
    for peer in (bob, carol):
        (event,) = peer.frames()
        assert event["kind"] == "message" and event["name"] == "alice" and event["text"] == "hello 👋 мир"
        assert event["id"] == ack[0]["id"] and event["ts"] == ack[0]["ts"]


def test_everyone_sees_one_global_order(factory):
    """Interleaved senders produce the same id order for every user."""
    peers = [Peer(factory) for _ in range(3)]
    for i, peer in enumerate(peers):
        peer.login(f"user{i}")
    seen = {i: [] for i in range(3)}
    for round_ in range(5):
        for i, peer in enumerate(peers):
            peer.send({"type": "say", "text": f"{i}-{round_}"})
    for i, peer in enumerate(peers):
        for frame in peer.frames():
            if frame["type"] == "event" and frame["kind"] == "message":
                seen[i].append(frame["id"])
            elif frame["type"] == "ack":
                seen[i].append(frame["id"])
    assert seen[0] == seen[1] == seen[2]
    assert len(seen[0]) == 15 and seen[0] == sorted(seen[0])


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\u200b"])
def test_empty_messages_are_refused(factory, text):
    """Empty or whitespace-only text gets empty-message and is not stored."""
    peer = Peer(factory)
    peer.login("alice")
    peer.frames()
    last = factory.lastId
    peer.send({"type": "say", "text": text, "cid": "e"})
    (err,) = peer.frames()
    assert err["code"] == "empty-message" and err["ref"] == "say"
    assert factory.lastId == last


def test_too_long_message_is_refused(factory):
    """Text over the documented limit gets too-long."""
    peer = Peer(factory)
    peer.login("alice")
    peer.frames()
    peer.send({"type": "say", "text": "x" * (wire.MAX_TEXT_BYTES + 1)})
    assert peer.frames()[0]["code"] == "too-long"


def test_resent_cid_is_acked_again_but_not_repeated(factory):
    """A message resent with the same cid gets the original ack and no new event."""
    alice, bob = Peer(factory), Peer(factory)
    alice.login("alice")
    bob.login("bob")
    alice.frames(), bob.frames()
    alice.send({"type": "say", "text": "once", "cid": "abc"})
    first = alice.frames()[0]
    alice.send({"type": "say", "text": "once", "cid": "abc"})
    second = alice.frames()[0]
    assert first == second
    assert len(events(bob.frames(), "message")) == 1


def test_unknown_and_malformed_frames_get_errors_and_keep_the_connection(factory):
    """Garbage gets an error frame; the connection and chat go on."""
    peer = Peer(factory)
    peer.login("alice")
    peer.frames()
    peer.send_payload(b"not json")
    peer.send_payload(b'{"type":"teleport"}')
    peer.send_payload(b'{"type":"say","text":42}')
    assert [f["code"] for f in peer.frames()] == ["bad-frame", "unknown-type", "bad-frame"]
    peer.send({"type": "say", "text": "still here"})
    assert kinds(peer.frames()) == ["ack"]


def test_oversized_length_prefix_closes_without_buffering(factory):
    """A 2 GiB length prefix is refused at once; the payload is never awaited."""
    peer = Peer(factory)
    peer.login("alice")
    peer.frames()
    peer.proto.dataReceived(struct.pack(">I", 2**31) + b"x" * 1000)
    assert peer.frames()[-1]["code"] == "frame-too-large"
    assert not peer.connected
    assert len(peer.proto._unprocessed) == 0


def test_who_lists_online_users(factory):
    """who answers with everyone logged in."""
    a, b = Peer(factory), Peer(factory)
    a.login("alice")
    b.login("Bob")
    a.frames()
    a.send({"type": "who"})
    assert a.frames() == [{"type": "users", "users": ["alice", "Bob"]}]


def test_ping_gets_pong(factory):
    """A client ping is answered with a pong echoing n, even before login."""
    peer = Peer(factory)
    peer.send({"type": "ping", "n": 7})
    assert peer.frames() == [{"type": "pong", "n": 7}]


# ---------------------------------------------------------------- join/leave


def test_leave_is_broadcast_once_with_reason(factory):
    """A user quitting is announced once to everyone else, with why."""
    alice, bob = Peer(factory), Peer(factory)
    alice.login("alice")
    bob.login("bob")
    alice.frames()
    bob.send({"type": "bye"})
    bob.transport.loseConnection()
    leaves = events(alice.frames(), "leave")
    assert [(e["name"], e["reason"]) for e in leaves] == [("bob", "quit")]


def test_silent_client_is_pinged_then_dropped_and_announced_once(factory):
    """A vanished client (no FIN) is detected by the ping timeout and its leave announced once."""
    alice, bob = Peer(factory), Peer(factory)
    alice.login("alice")
    bob.login("bob")
    alice.frames(), bob.frames()
    clock = factory.clock
    for _ in range(7):  # 35 s: alice keeps talking, bob is silent
        clock.advance(5)
        alice.send({"type": "pong"})
    assert {"type": "ping"} in bob.frames()
    for _ in range(7):
        clock.advance(5)
        alice.send({"type": "pong"})
    assert not bob.connected
    assert alice.connected
    leaves = events(alice.frames(), "leave")
    assert [(e["name"], e["reason"]) for e in leaves] == [("bob", "timeout")]


def test_connection_that_never_logs_in_is_closed(factory):
    """A connection that sends nothing useful is closed after the login timeout."""
    peer = Peer(factory)
    factory.clock.advance(10)
    assert peer.connected
    factory.clock.advance(10)
    assert peer.frames()[-1]["code"] == "login-timeout"
    assert not peer.connected


# ---------------------------------------------------------------- history


def test_history_replays_last_n_marked_as_replay(tmp_path):
    """A new user gets the last N events, marked replay, then synced, then live."""
    factory = make_factory(tmp_path, history=5)
    alice = Peer(factory)
    alice.login("alice")
    for i in range(10):
        alice.send({"type": "say", "text": f"m{i}"})
    frames = Peer(factory).login("bob")
    replay = [f for f in frames if f.get("replay")]
    assert [f["text"] for f in replay] == ["m5", "m6", "m7", "m8", "m9"]
    assert kinds(frames) == ["welcome"] + ["event"] * 5 + ["synced", "event"]
    assert frames[-1]["kind"] == "join" and "replay" not in frames[-1]


def test_history_survives_a_restart(tmp_path):
    """Events stored by one server are replayed by the next on the same database."""
    first = make_factory(tmp_path)
    alice = Peer(first)
    alice.login("alice")
    alice.send({"type": "say", "text": "before restart"})
    first.stop()
    second = make_factory(tmp_path)
    frames = Peer(second).login("bob")
    texts = [f.get("text") for f in frames if f.get("replay")]
    assert "before restart" in texts
    assert second.lastId == first.lastId + 1  # bob's join follows without reusing ids


def test_reconnect_with_after_gets_exactly_what_was_missed(factory):
    """hello.after replays every event after that id, with no gap and no duplicate."""
    alice, bob = Peer(factory), Peer(factory)
    alice.login("alice")
    seen = max(f["id"] for f in events(bob.login("bob")))
    bob.transport.loseConnection()
    for i in range(300):  # more than one catch-up page
        alice.send({"type": "say", "text": f"while away {i}"})
    again = Peer(factory)
    frames = again.login("bob", after=seen)
    ids = [f["id"] for f in events(frames)]
    assert ids == list(range(seen + 1, factory.lastId + 1))
    assert [f["text"] for f in events(frames, "message")] == [f"while away {i}" for i in range(300)]


def test_catch_up_reads_storage_when_memory_is_short(tmp_path):
    """When memory no longer holds the gap, catch-up comes from SQLite, in order."""
    factory = make_factory(tmp_path, recent_cache=10, history=5)
    alice = Peer(factory)
    alice.login("alice")
    for i in range(50):
        alice.send({"type": "say", "text": str(i)})
    frames = Peer(factory).login("bob", after=0)
    assert [f["id"] for f in events(frames)] == list(range(1, factory.lastId + 1))


def test_history_pages_backwards(factory):
    """history returns earlier events, oldest first, saying whether more exist."""
    alice = Peer(factory)
    alice.login("alice")
    for i in range(30):
        alice.send({"type": "say", "text": str(i)})
    alice.frames()
    alice.send({"type": "history", "before": 12, "limit": 5})
    (page,) = alice.frames()
    assert [e["id"] for e in page["events"]] == [7, 8, 9, 10, 11] and page["more"] is True
    alice.send({"type": "history", "before": 3, "limit": 5})
    (page,) = alice.frames()
    assert [e["id"] for e in page["events"]] == [1, 2] and page["more"] is False


# ---------------------------------------------------------------- slow readers


def test_slow_reader_falls_back_to_catch_up_and_misses_nothing(tmp_path):
    """A client that stops reading is not buffered without bound and later gets every event once, in order."""
    factory = make_factory(tmp_path, sendq=4096)
    fast, slow = Peer(factory), Peer(factory)
    fast.login("fast")
    start = max(f["id"] for f in events(slow.login("slow")))
    slow.proto.pauseProducing()  # what the transport does when the peer stops reading
    for i in range(500):
        fast.send({"type": "say", "text": f"message number {i:04d} " + "x" * 50})
    assert len(slow.transport.value()) < 4096 + 1024  # bounded, not 500 messages
    assert slow.transport.producerState == "paused"  # we stopped reading from it too
    assert kinds(fast.frames()).count("ack") == 500  # others unaffected
    slow.proto.resumeProducing()
    frames = slow.frames()
    while slow.proto.writePaused or not slow.proto.live:
        slow.proto.resumeProducing()
        frames += slow.frames()
    ids = [f["id"] for f in events(frames)]
    assert ids == list(range(start + 1, factory.lastId + 1))
    assert slow.transport.producerState == "producing"


def test_reader_that_never_drains_is_disconnected(tmp_path):
    """A client that reads nothing at all for the send timeout is disconnected with a reason."""
    factory = make_factory(tmp_path)
    alice, stuck = Peer(factory), Peer(factory)
    alice.login("alice")
    stuck.login("stuck")
    stuck.proto.pauseProducing()
    for _ in range(30):
        factory.clock.advance(5)
        alice.send({"type": "pong"})
        stuck.send({"type": "pong"})  # it writes, but never reads
    assert not stuck.connected
    assert ("stuck", "not reading") in [(e["name"], e["reason"]) for e in events(alice.frames(), "leave")]


# ---------------------------------------------------------------- shutdown


def test_shutdown_says_bye_records_leaves_and_closes(tmp_path):
    """Stopping tells everyone, stores their leaving, and closes every connection."""
    factory = make_factory(tmp_path)
    alice, bob = Peer(factory), Peer(factory)
    alice.login("alice")
    bob.login("bob")
    alice.frames()
    factory.stop()
    frames = alice.frames()
    assert {"type": "bye", "reason": "shutdown", "message": "The server is shutting down."} in frames
    assert not alice.connected and not bob.connected
    store = new_store(tmp_path)
    store.open()
    stored = store.events_before(None, 10).result
    assert [(e["kind"], e.get("reason")) for e in stored[-2:]] == [("leave", "shutdown"), ("leave", "shutdown")]


# ---------------------------------------------------------------- fuzzing

client_frames = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda kind, fields: wire.encode({**fields, "type": kind}),
        st.sampled_from(sorted(wire.CLIENT_FRAMES) + ["nope"]),
        st.dictionaries(
            st.sampled_from(["version", "name", "passkey", "text", "cid", "after", "before", "limit", "tid", "n"]),
            st.one_of(st.integers(-5, 5), st.text(max_size=5), st.just(PASSKEY), st.just(1), st.none()),
            max_size=5,
        ),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(client_frames, max_size=25))
def test_random_frame_sequences_never_crash_the_server(tmp_path, logged_errors, sequence):
    """Any sequence of frames gets answers, never an internal error or a logged traceback."""
    factory = make_factory(tmp_path, store=Store(":memory:"))
    witness = Peer(factory)
    witness.login("witness")
    peer = Peer(factory)
    for payload in sequence:
        if payload:
            peer.send_payload(payload)
    for frame in peer.frames():
        assert not (frame["type"] == "error" and frame["code"] == "internal-error")
    assert logged_errors == []
    witness.frames()
    witness.send({"type": "say", "text": "still fine"})
    assert kinds(witness.frames()) == ["ack"]


# ---------------------------------------------------------------- login proof and abuse limits


def pake_login(peer, name, passkey=PASSKEY):
    """Log in with SPAKE2 as PROTOCOL.rst describes (plaintext: empty channel binding)."""
    from tcpchat import pake

    state, message = pake.client_start(passkey)
    peer.send({"type": "hello", "version": 1, "name": name, "pake": message.hex()})
    (answer,) = peer.frames()
    if answer["type"] != "pake":
        return [answer]
    try:
        confirm = pake.client_finish(state, bytes.fromhex(answer["msg"]), bytes.fromhex(answer["confirm"]), b"")
    except pake.PakeError:
        return ["client-rejected-server"]
    peer.send({"type": "pake-confirm", "confirm": confirm.hex()})
    return peer.frames()


def test_pake_login_never_sends_the_passkey(factory):
    """A SPAKE2 login succeeds and the passkey never crosses the wire."""
    peer = Peer(factory)
    frames = pake_login(peer, "alice")
    assert kinds(frames)[0] == "welcome"
    assert b"abcde" not in peer.transport.value() and PASSKEY.encode() not in peer.transport.value()


def test_pake_with_wrong_passkey_fails_on_both_sides(factory):
    """With a wrong passkey the client rejects the server's proof, and a forced confirm gets bad-passkey."""
    from tcpchat import pake

    assert pake_login(Peer(factory), "alice", passkey="wrong-key") == ["client-rejected-server"]
    peer = Peer(factory)
    state, message = pake.client_start("wrong-key")
    peer.send({"type": "hello", "version": 1, "name": "alice", "pake": message.hex()})
    peer.frames()
    peer.send({"type": "pake-confirm", "confirm": "00" * 32})
    assert peer.frames()[0]["code"] == "bad-passkey"
    assert factory.users == {}


def test_pake_confirm_without_hello_is_refused(factory):
    """A confirmation with no proof in progress is a bad frame."""
    peer = Peer(factory)
    peer.send({"type": "pake-confirm", "confirm": "00" * 32})
    assert peer.frames()[0]["code"] == "bad-frame"


def test_invalid_pake_message_is_a_bad_frame(factory):
    """Garbage in hello.pake is refused without a traceback."""
    peer = Peer(factory)
    peer.send({"type": "hello", "version": 1, "name": "a", "pake": "ff" * 33})
    assert peer.frames()[0]["code"] == "bad-frame"


def test_pake_confirmation_vectors_in_protocol_document():
    """The HMAC test vectors printed in PROTOCOL.rst are what the code computes."""
    import pathlib

    from tcpchat import pake

    doc = (pathlib.Path(__file__).parent.parent / "PROTOCOL.rst").read_text(encoding="utf-8")
    key, cb = bytes(range(32)), b" " * 32
    assert pake.confirm(key, pake.SERVER_LABEL, cb).hex() in doc
    assert pake.confirm(key, pake.CLIENT_LABEL, cb).hex() in doc


def test_repeated_wrong_passkeys_lock_the_address_out(factory):
    """Ten wrong passkeys from one address lock it out, even for the right passkey, until the lockout ends."""
    codes = []
    for i in range(12):
        peer = Peer(factory, host="198.51.100.7")
        codes.append(peer.login("mallory", passkey=f"guess-{i}")[0]["code"])
    assert codes[:9] == ["bad-passkey"] * 9
    assert codes[9:] == ["too-many-attempts"] * 3
    locked = Peer(factory, host="198.51.100.7")
    assert locked.login("mallory")[0]["code"] == "too-many-attempts"
    assert kinds(Peer(factory, host="198.51.100.8").login("someone"))[0] == "welcome"  # others unaffected
    factory.clock.advance(61)
    assert kinds(Peer(factory, host="198.51.100.7").login("mallory"))[0] == "welcome"


def test_unconfirmed_proofs_count_as_failures(factory):
    """Clients that start SPAKE2 and walk away (offline checking of one guess) are locked out too."""
    from tcpchat import pake

    answers, peers = [], []
    for i in range(11):
        peer = Peer(factory, host="198.51.100.9")
        state, message = pake.client_start(f"guess-{i}")
        peer.send({"type": "hello", "version": 1, "name": "eve", "pake": message.hex()})
        answers.append(kinds(peer.frames()))
        peers.append(peer)
    # ten guesses are in flight; the eleventh waits for one of them to be judged
    assert answers[:10] == [["pake"]] * 10 and answers[10] == []
    for peer in peers[:10]:  # each guesser learnt its guess was wrong and walked away
        peer.transport.loseConnection()
    assert peers[10].frames()[-1]["code"] == "too-many-attempts"
    assert factory.guard.locked("198.51.100.9") is not None


def test_a_proof_that_is_never_confirmed_counts_when_it_times_out(factory):
    """A proof left open is judged a failure when the login timeout closes its connection."""
    from tcpchat import pake

    peer = Peer(factory, host="198.51.100.9")
    peer.send({"type": "hello", "version": 1, "name": "eve", "pake": pake.client_start("guess")[1].hex()})
    assert kinds(peer.frames()) == ["pake"]
    factory.clock.advance(factory.limits.login_timeout + factory.limits.close_grace + 1)
    assert not peer.connected
    assert len(factory.guard.failures["198.51.100.9"]) == 1


def test_two_hundred_correct_logins_at_once_from_one_address(factory):
    """A classroom behind one router: 200 proofs started at once, all correct, all logged in."""
    from tcpchat import pake

    peers = []
    for i in range(200):
        peer = Peer(factory, host="198.51.100.20")
        state, message = pake.client_start(PASSKEY)
        peer.send({"type": "hello", "version": 1, "name": f"pupil{i}", "pake": message.hex()})
        peers.append((peer, state))
    done = set()
    for _ in range(50):  # each round: whoever has the server's answer confirms
        for i, (peer, state) in enumerate(peers):
            if i in done:
                continue
            for frame in peer.frames():
                if frame["type"] == "pake":
                    mine = pake.client_finish(state, bytes.fromhex(frame["msg"]), bytes.fromhex(frame["confirm"]), b"")
                    peer.send({"type": "pake-confirm", "confirm": mine.hex()})
                elif frame["type"] == "welcome":
                    done.add(i)
                elif frame["type"] == "error":
                    raise AssertionError(frame)
        if len(done) == 200:
            break
    assert len(done) == 200
    assert len(factory.users) == 200
    assert factory.guard.locked("198.51.100.20") is None


def test_message_rate_limit_says_slow_down(tmp_path):
    """Past the burst, say gets slow-down (nothing stored); after a pause it works again."""
    factory = make_factory(tmp_path, message_rate=10, message_burst=30)
    peer = Peer(factory)
    peer.login("alice")
    peer.frames()
    for i in range(31):
        peer.send({"type": "say", "text": f"spam {i}", "cid": f"c{i}"})
    frames = peer.frames()
    assert kinds(frames).count("ack") == 30
    assert frames[-1] == {"type": "error", "code": "slow-down", "message": wire.ERROR_TEXT["slow-down"],
                          "ref": "say", "cid": "c30"}
    last = factory.lastId
    factory.clock.advance(1)
    peer.send({"type": "say", "text": "calm now", "cid": "c31"})
    assert kinds(peer.frames()) == ["ack"] and factory.lastId == last + 1


def test_connections_over_the_per_address_cap_are_refused(tmp_path):
    """The 4th connection from one address (cap 3) gets server-busy and is closed; others are fine."""
    factory = make_factory(tmp_path, max_per_address=3)
    peers = [Peer(factory, host="203.0.113.5") for _ in range(4)]
    assert [p.connected for p in peers] == [True, True, True, False]
    assert peers[3].frames()[0]["code"] == "server-busy"
    peers[0].transport.loseConnection()
    assert Peer(factory, host="203.0.113.5").connected
    assert Peer(factory, host="203.0.113.6").connected


# ---------------------------------------------------------------- storage faults


def test_a_locked_database_answers_store_busy_and_the_resend_is_stored_once(tmp_path):
    """A lock held by another process: say gets store-busy with its cid; the same cid sent again is stored once."""
    from tcpchat.store.sqlite import StoreBusy

    factory = make_factory(tmp_path)
    alice = Peer(factory)
    alice.login("alice")
    alice.frames()
    real = factory.store._do_append

    def locked(events):
        raise StoreBusy("database is locked")

    factory.store._do_append = locked
    alice.send({"type": "say", "text": "hello", "cid": "c1"})
    error = alice.frames()[-1]
    assert (error["type"], error["code"], error["cid"]) == ("error", "store-busy", "c1")
    factory.store._do_append = real
    alice.send({"type": "say", "text": "hello", "cid": "c1"})
    alice.send({"type": "say", "text": "hello", "cid": "c1"})
    acks = [f for f in alice.frames() if f["type"] == "ack"]
    assert len(acks) == 2 and acks[0]["id"] == acks[1]["id"]


@pytest.mark.tracebacks_expected  # the bad event's failure is logged, as an unexpected storage error should be
def test_one_bad_event_does_not_fail_the_others_in_its_batch(tmp_path):
    """A group commit that fails is written again one event at a time: only the bad event fails."""
    from twisted.internet.defer import Deferred

    calls = []

    def later(f, *args):  # a runner that runs when told, so events pile up into one batch
        d = Deferred()
        calls.append((f, args, d))
        return d

    def run_all():
        while calls:
            f, args, d = calls.pop(0)
            try:
                result = f(*args)
            except Exception as e:
                d.errback(e)
            else:
                d.callback(result)

    from tcpchat.store.sqlite import Store

    store = Store(str(tmp_path / "chat.sqlite3"), later)
    factory = make_factory(tmp_path, store=store)
    run_all()
    real = store._do_append

    def picky(events):
        if any(e.get("text") == "poison" for e in events):
            raise ValueError("this one cannot be stored")
        return real(events)

    store._do_append = picky
    outcomes = {}
    for text in ("first", "second", "poison", "third", "fourth"):
        d = factory.submit({"kind": "message", "name": "a", "nkey": "a", "text": text, **factory.lobby()})
        d.addCallbacks(lambda r, t=text: outcomes.__setitem__(t, "stored"),
                       lambda f, t=text: outcomes.__setitem__(t, "failed"))
    run_all()
    assert outcomes == {"first": "stored", "second": "stored", "poison": "failed", "third": "stored",
                        "fourth": "stored"}
