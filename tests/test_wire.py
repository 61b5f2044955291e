"""The wire codec alone: no I/O, no Twisted."""

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpchat import wire
from tcpchat.wire import ErrorCode, ProtocolError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


def test_every_client_frame_round_trips():
    """Each documented client frame survives encode then decode unchanged."""
    samples = [
        {"type": "hello", "version": 1, "name": "alice", "passkey": "abcde-fghjk", "after": 7, "client": "x"},
        {"type": "hello", "version": 1, "name": "bob", "pake": "ab" * 33},
        {"type": "pake-confirm", "confirm": "cd" * 32, "password": "pw"},
        {"type": "say", "text": "hi 👋", "cid": "c-1"},
        {"type": "history", "before": 10, "limit": 20},
        {"type": "who"},
        {"type": "ping", "n": 3},
        {"type": "pong", "n": 3},
        {"type": "bye"},
        {"type": "upload", "tid": 1, "name": "a.pdf", "size": 10, "sha256": "0" * 64, "mime": "application/pdf"},
        {"type": "upload-cancel", "tid": 1},
        {"type": "download", "tid": 2, "file": 5, "offset": 3},
        {"type": "download-cancel", "tid": 2},
        {"type": "file-link", "file": 3},
        {"type": "edit", "id": 3, "text": "better words"},
        {"type": "react", "id": 3, "emoji": "👍", "on": False},
        {"type": "say", "text": "psst", "to": "bob"},
        {"type": "join", "room": "lab-2"},
        {"type": "leave", "room": "lab-2"},
        {"type": "rooms"},
        {"type": "typing", "room": "lab-2"},
        {"type": "read", "id": 9, "to": "bob"},
        {"type": "presence", "away": True, "status": "at lunch"},
        {"type": "profile", "bio": "Maths and physics, room 12"},
        {"type": "search", "q": "exam date", "room": "general", "before": 99, "limit": 5},
        {"type": "delete", "id": 4},
        {"type": "oper", "passkey": "x"},
        {"type": "register", "password": "correct horse"},
        {"type": "hello", "version": 1, "name": "bob", "passkey": "k", "password": "pw", "features": ["rooms"]},
        {"type": "mod", "action": "ban", "name": "eve", "address": True, "duration": 600, "reason": "spam"},
    ]
    assert {s["type"] for s in samples} == set(wire.CLIENT_FRAMES)
    for sample in samples:
        assert wire.decode(wire.encode(sample)) == sample


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 20


def test_profile_pictures_are_checked_in_the_codec():
    """A picture arrives as base64 and leaves the codec as bytes: only PNG or JPEG, at most 64 KiB, strict
    base64; "" removes it; a bio is one line of at most 160 characters."""
    import base64

    frame = wire.decode(wire.encode({"type": "profile", "picture": base64.b64encode(PNG).decode()}))
    assert frame["picture"] == PNG and wire.picture_type(PNG) == "image/png"
    assert wire.decode(b'{"type":"profile","picture":""}')["picture"] == b""
    too_big = base64.b64encode(PNG + b"\0" * wire.MAX_PICTURE_BYTES).decode()
    for bad in (base64.b64encode(b"GIF89a....").decode(), "not base64!", too_big, 42,
                base64.b64encode(PNG).decode().rstrip("=") + "%"):
        with pytest.raises(wire.ProtocolError) as e:
            wire.decode(wire.encode({"type": "profile", "picture": bad}))
        assert e.value.code == wire.ErrorCode.BAD_FRAME
    for bad in ("x" * (wire.MAX_BIO_CHARS + 1), "two\nlines"):
        with pytest.raises(wire.ProtocolError):
            wire.decode(wire.encode({"type": "profile", "bio": bad}))


def test_unknown_fields_are_ignored():
    """A newer client's extra fields do not break an older server."""
    frame = wire.decode(b'{"type":"who","colour":"x"}')
    assert frame == {"type": "who"}


@pytest.mark.parametrize("raw, room", [("general", "general"), ("#Lab-2", "Lab-2"), ("café.1", "café.1")])
def test_room_names_are_normalized(raw, room):
    assert wire.normalize_room(raw) == room


@pytest.mark.parametrize("raw", ["", "#", "two words", "a/b", "x" * 33, "#@", 7, "tab\t", "new\nline"])
def test_bad_room_names_are_refused(raw):
    with pytest.raises(ProtocolError) as e:
        wire.normalize_room(raw)
    assert e.value.code == ErrorCode.BAD_ROOM_NAME


def test_data_frame_round_trips():
    """Data frames carry raw bytes and their transfer id, no base64."""
    payload = wire.encode_chunk(42, b"\x00\xffdata")
    assert payload[:5] == b"\x00\x00\x00\x00\x2a"
    assert wire.decode(payload) == wire.Chunk(42, b"\x00\xffdata")


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"", ErrorCode.BAD_FRAME),
        (b"\x00\x00\x00", ErrorCode.BAD_FRAME),
        (b"\x00\x00\x00\x00\x00data", ErrorCode.BAD_FRAME),  # transfer id 0
        (b"\xff\xfe", ErrorCode.BAD_FRAME),
        (b"[1,2]", ErrorCode.BAD_FRAME),
        (b'{"type":3}', ErrorCode.BAD_FRAME),
        (b'{"type":"launch"}', ErrorCode.UNKNOWN_TYPE),
        (b'{"type":"say"}', ErrorCode.BAD_FRAME),
        (b'{"type":"say","text":5}', ErrorCode.BAD_FRAME),
        (b'{"type":"hello","version":"1","name":"a","passkey":"b"}', ErrorCode.BAD_FRAME),
        (b'{"type":"hello","version":true,"name":"a","passkey":"b"}', ErrorCode.BAD_FRAME),
        (b'{"type":"upload","tid":1,"name":"a","size":1,"sha256":"XYZ"}', ErrorCode.BAD_FRAME),
        (b'{"type":"download","tid":0,"file":1}', ErrorCode.BAD_FRAME),
        (b"[" * 150000 + b"]" * 150000, ErrorCode.FRAME_TOO_LARGE),
        (b"[" * 50000 + b"]" * 50000, ErrorCode.BAD_FRAME),
    ],
)
def test_bad_payloads_raise_protocol_errors(payload, code):
    """Malformed frames are refused with the documented code."""
    with pytest.raises(ProtocolError) as e:
        wire.decode(payload)
    assert e.value.code == code
    assert e.value.message


def test_text_limit_counts_utf8_bytes():
    """Message text is limited in bytes of UTF-8, so emoji count fully."""
    ok = "é" * (wire.MAX_TEXT_BYTES // 2)
    assert wire.decode(wire.encode({"type": "say", "text": ok}))["text"] == ok
    with pytest.raises(ProtocolError) as e:
        wire.decode(wire.encode({"type": "say", "text": ok + "é"}))
    assert e.value.code == ErrorCode.TOO_LONG


def test_lone_surrogate_is_refused():
    """Text that is not valid Unicode is a bad frame, not a crash."""
    with pytest.raises(ProtocolError):
        wire.decode(b'{"type":"say","text":"\\ud800"}')


def test_encode_refuses_oversized_frames():
    """We never send what a peer would have to refuse."""
    with pytest.raises(ProtocolError):
        wire.encode({"type": "say", "text": "x" * (wire.MAX_FRAME + 1)})
    with pytest.raises(ProtocolError):
        wire.encode_chunk(1, b"x" * (wire.MAX_CHUNK + 1))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_bytes_only_raise_protocol_error(payload):
    """Random bytes decode or raise ProtocolError, never anything else."""
    try:
        wire.decode(payload)
    except ProtocolError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(wire.CLIENT_FRAMES)), st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_random_objects_only_raise_protocol_error(kind, fields):
    """Any JSON object with a known type decodes to a valid frame or raises ProtocolError."""
    for name in list(wire.CLIENT_FRAMES[kind])[:3]:
        fields.setdefault(name, fields.get(name))
    fields["type"] = kind
    payload = json.dumps(fields).encode()
    try:
        frame = wire.decode(payload)
    except ProtocolError:
        return
    assert frame["type"] == kind
    for name, (_, required) in wire.CLIENT_FRAMES[kind].items():
        assert name in frame or not required


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("alice", "alice"),
        ("Zoë", "Zoë"),
        ("Zoe\u0308", "Zoë"),  # decomposed form is normalised to NFC
        ("名前", "名前"),
        ("a" * 32, "a" * 32),
        ("🙂 smile", "🙂 smile"),
    ],
)
def test_good_names_are_normalised(raw, expected):
    """Names are NFC-normalised and kept otherwise."""
    assert wire.normalize_name(raw) == expected


@pytest.mark.parametrize("raw", ["", " ", " alice", "alice ", "a" * 33, "al\nice", "al\x00ice", "\u200balice", "bad\u2028"])
def test_bad_names_are_refused(raw):
    """Empty, padded, overlong and control-character names are refused."""
    with pytest.raises(ProtocolError) as e:
        wire.normalize_name(raw)
    assert e.value.code == ErrorCode.BAD_NAME


def test_name_keys_fold_case():
    """Names differing only in case (or Unicode case forms) collide."""
    assert len({wire.name_key(n) for n in ["Alice", "alice", "ALICE", "aLiCe", "ALİCE".replace("İ", "I")]}) == 1
    assert wire.name_key("Straße") == wire.name_key("STRASSE")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "file"),
        ("a/b\\c", "a_b_c"),
        ("nul\x00byte.txt", "nul_byte.txt"),
        ("CON", "_CON"),
        ("com1.txt", "_com1.txt"),
        ("line\nbreak", "line_break"),
        ("  .hidden. ", "hidden"),
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
        ("ü" * 200, "ü" * 127),
    ],
)
def test_file_names_are_cleaned(raw, expected):
    """Hostile file names become harmless plain names."""
    cleaned = wire.safe_file_name(raw)
    assert cleaned == expected
    assert "/" not in cleaned and "\\" not in cleaned and "\x00" not in cleaned
    assert len(cleaned.encode()) <= wire.MAX_FILE_NAME_BYTES


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_file_name_cleans_to_a_single_safe_component(raw):
    """Whatever the name, the result is one path component that is not special."""
    cleaned = wire.safe_file_name(raw)
    assert cleaned and cleaned not in (".", "..")
    assert not set(cleaned) & set('/\\:*?"<>|\x00')
    assert len(cleaned.encode()) <= wire.MAX_FILE_NAME_BYTES
    assert wire.safe_file_name(cleaned) == cleaned


def test_error_frames_have_codes_and_sentences():
    """Every error code has a human sentence, and error() builds the frame."""
    codes = [v for k, v in vars(ErrorCode).items() if k.isupper()]
    assert set(codes) <= set(wire.ERROR_TEXT)
    assert wire.error(ErrorCode.BAD_PASSKEY, ref="hello") == {
        "type": "error",
        "code": "bad-passkey",
        "message": "Wrong passkey.",
        "ref": "hello",
    }


def test_length_prefix_format():
    """Frames are 4-byte big-endian length prefixed, as Int32StringReceiver."""
    from twisted.protocols.basic import Int32StringReceiver

    assert Int32StringReceiver.structFormat == "!I"
    assert struct.calcsize("!I") == 4


def test_protocol_document_lists_every_frame_and_error_code():
    """PROTOCOL.rst names every frame type and documents every error code the code has."""
    import pathlib
    import re

    doc = (pathlib.Path(__file__).parent.parent / "PROTOCOL.rst").read_text(encoding="utf-8")
    for kind in list(wire.CLIENT_FRAMES) + list(wire.SERVER_FRAMES):
        assert f"``{kind}``" in doc, kind
    table = doc[doc.index("\nError codes\n") :]
    codes = {v for k, v in vars(ErrorCode).items() if k.isupper()}
    assert codes <= set(re.findall(r"^``([a-z-]+)``\s", table, re.M))
    fatal = set(re.findall(r"^``([a-z-]+)``\s+yes\s", table, re.M))
    assert fatal == set(wire.FATAL_CODES)
    assert "Version: 1" in doc and wire.PROTOCOL_VERSION == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(1, 400), min_size=1, max_size=30))
def test_frame_receiver_matches_twisted_for_any_split(frames, cuts):
    """FrameReceiver delivers exactly the frames Int32StringReceiver would, however the bytes are split."""
    from twisted.protocols.basic import Int32StringReceiver

    from tcpchat.framing import FrameReceiver

    stream = b"".join(struct.pack(">I", len(f)) + f for f in frames)
    got = {}
    for cls in (FrameReceiver, Int32StringReceiver):
        received = []
        proto = cls()
        proto.stringReceived = received.append
        proto.makeConnection(None) if cls is FrameReceiver else None
        pos, i = 0, 0
        while pos < len(stream):
            step = cuts[i % len(cuts)]
            proto.dataReceived(stream[pos : pos + step])
            pos, i = pos + step, i + 1
        got[cls] = received
    assert got[FrameReceiver] == got[Int32StringReceiver] == frames


def test_frame_receiver_refuses_oversized_prefix_without_buffering():
    """A length over MAX_LENGTH calls lengthLimitExceeded at once and keeps nothing."""
    from tcpchat.framing import FrameReceiver

    seen = []
    proto = FrameReceiver()
    proto.makeConnection(None)
    proto.MAX_LENGTH = 100
    proto.stringReceived = seen.append
    proto.lengthLimitExceeded = lambda n: seen.append(("too long", n))
    proto.dataReceived(struct.pack(">I", 3) + b"abc" + struct.pack(">I", 2**31) + b"x" * 50)
    assert seen == [b"abc", ("too long", 2**31)]
