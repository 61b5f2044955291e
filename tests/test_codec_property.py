"""
The codec against arbitrary JSON: whatever a peer sends, decoding either gives
a frame that is valid Unicode, finite and encodable again, or raises the
codec's own error.  Never anything else.
"""

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpchat import wire

#: strings a hostile peer likes: lone surrogates, NUL, controls, long ones
_nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "nul\x00", "\x1b[2J", "\u2028", "x" * 5000, "general", "#lab",
                     "rooms", "kick", "ab" * 33, "💥"]),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
)
_numbers = st.one_of(
    st.integers(), st.integers(min_value=2**53 - 2, max_value=2**64), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 10**400]),
)
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), _numbers, _nasty_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_nasty_text, inner, max_size=4)),
    max_leaves=12,
)
_field_names = sorted({f for table in (wire.CLIENT_FRAMES, wire.SERVER_FRAMES) for f in table.values() for f in f})


@st.composite
def frames(draw, table):
    kind = draw(st.sampled_from(sorted(table)))
    names = draw(st.lists(st.sampled_from(sorted(table[kind]) + _field_names), max_size=8))
    obj = {name: draw(_json) for name in names}
    obj["type"] = kind
    return obj


def _to_payload(obj, ascii_only):
    text = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def _check(payload, table):
    try:
        frame = wire.decode(payload, table)
    except wire.ProtocolError as e:
        assert e.code in wire.ERROR_TEXT
        return
    assert isinstance(frame, (dict, wire.Chunk))
    if isinstance(frame, dict):
        wire.encode(frame)  # valid Unicode, finite: can be sent back as it is
        stack = [frame]
        while stack:
            item = stack.pop()
            if isinstance(item, float):
                assert math.isfinite(item)
            elif isinstance(item, str):
                item.encode("utf-8")
            elif isinstance(item, dict):
                stack.extend(item.values())
                stack.extend(item.keys())
            elif isinstance(item, list):
                stack.extend(item)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(wire.CLIENT_FRAMES), st.booleans())
def test_every_client_frame_kind_with_arbitrary_values(obj, ascii_only):
    """Any value in any field of any client frame: a valid frame or the codec's own error."""
    _check(_to_payload(obj, ascii_only), wire.CLIENT_FRAMES)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(wire.SERVER_FRAMES), st.booleans())
def test_every_server_frame_kind_with_arbitrary_values(obj, ascii_only):
    """Clients decode with the same codec: a hostile server gets the same treatment."""
    _check(_to_payload(obj, ascii_only), wire.SERVER_FRAMES)


@given(st.integers(min_value=1, max_value=200_000))
@settings(max_examples=30, deadline=None)
def test_deep_nesting(depth):
    """Deeply nested arrays in a ping are refused by the codec, not by a crash."""
    payload = b'{"type":"ping","n":' + b"[" * depth + b"]" * depth + b"}"
    _check(payload[: wire.MAX_FRAME], wire.CLIENT_FRAMES)


def test_non_finite_and_huge_numbers():
    """1e400, NaN, Infinity and a 5,000-digit integer are refused."""
    for raw in (b"1e400", b"NaN", b"-Infinity", b"9" * 5000):
        try:
            wire.decode(b'{"type":"ping","n":' + raw + b"}")
        except wire.ProtocolError as e:
            assert e.code == wire.ErrorCode.BAD_FRAME
        else:
            raise AssertionError(raw)


def test_lone_surrogates_everywhere():
    """A lone surrogate in any string field (or key) is bad-frame; a proper pair is fine."""
    for field, kind in (("status", "presence"), ("cid", "say"), ("passkey", "hello"), ("q", "search"),
                        ("password", "register"), ("session", "hello"), ("passkey", "oper")):
        payload = ('{"type":"%s","%s":"\\ud800","text":"hi","version":1,"name":"x"}' % (kind, field)).encode()
        try:
            wire.decode(payload)
        except wire.ProtocolError as e:
            assert e.code == wire.ErrorCode.BAD_FRAME
        else:
            raise AssertionError(field)
    assert wire.decode(b'{"type":"say","text":"\\ud83d\\ude00"}')["text"] == "\U0001f600"
