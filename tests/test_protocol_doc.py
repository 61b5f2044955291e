"""PROTOCOL.rst's examples are what the server does: its transcripts are played against a server and checked."""

import json
import os
import re

from tcpchat import wire

from .helpers import Peer, make_factory

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "PROTOCOL.rst")
ANY = "\u2026any"


def transcripts():
    """The Example section's literal blocks: lists of (who, frame) with who in C, S or a user's name."""
    text = open(DOC, encoding="utf-8").read()
    section = text.split("Example\n=======\n", 1)[1]
    blocks, current = [], None
    for line in section.split("\n"):
        match = re.match(r"    (C|S|[a-z]+): (\{.*\})\s*$", line)
        if match:
            if current is None:
                current = []
                blocks.append(current)
            current.append((match.group(1), lenient(match.group(2))))
        elif line.strip() and not line.startswith("    "):
            current = None
    return blocks


def lenient(text):
    """The document's JSON with ``…`` for what varies: ``…`` values match anything, a bare ``…,`` skips members."""
    text = text.replace("{…}", '"' + ANY + '"').replace("[…]", '"' + ANY + '"')
    text = text.replace(",…,", ",").replace(":…", ':"' + ANY + '"')
    return json.loads(text)


def matches(expected, actual):
    return all(k in actual and (v == ANY or actual[k] == v) for k, v in expected.items())


def test_the_example_transcripts_are_what_the_server_does(tmp_path):
    factory = make_factory(tmp_path)
    factory.serverName = "Room 4"
    factory.verifier.rotate("k7m2x-qp9ra")
    bob = Peer(factory, host="192.0.2.50")
    bob.login("bob", passkey="k7m2x-qp9ra", features=["rooms"])
    bob.send({"type": "say", "text": "hi", "cid": "b1"})
    bob.frames()
    blocks = transcripts()
    assert len(blocks) == 2 and sum(len(b) for b in blocks) > 20
    for block in blocks:
        me = Peer(factory)
        others = {"bob": bob}
        expected = []
        for who, frame in block + [("C", None)]:
            if who == "S":
                expected.append(frame)
                continue
            got = [f for f in me.frames() if isinstance(f, dict)]
            assert len(got) == len(expected), (expected, got)
            for want, have in zip(expected, got):
                assert matches(want, have), (want, have)
            expected = []
            if frame is None:
                break
            peer = me if who == "C" else others[who]
            peer.send(frame)
            if who != "C":
                peer.frames()


def test_the_example_hello_length_is_right():
    (first_block, _) = transcripts()
    hello = first_block[0][1]
    payload = json.dumps(hello, ensure_ascii=False, separators=(",", ":")).encode()
    assert "``00 00 00 %02x``" % len(payload) in open(DOC, encoding="utf-8").read()
    assert wire.decode(payload)["name"] == "alice"
