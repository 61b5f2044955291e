"""
The tcpchat wire format: frame kinds, encoding, decoding and validation.

This module does no I/O and imports nothing from Twisted, so it can be tested
and fuzzed on its own.  ``PROTOCOL.rst`` is the specification; the constants
and tables here are its executable form and the two must agree.

A frame is the payload of one length-prefixed string (a 4-byte big-endian
length, then that many bytes; Twisted's ``Int32StringReceiver``).  A payload
is either

* a *control frame*: one UTF-8 JSON object whose ``"type"`` names its kind, or
* a *data frame*: the byte ``0x00``, a 4-byte big-endian transfer id, then raw
  file bytes.

:func:`decode` turns a payload into a validated :class:`dict` (control
frames) or :class:`Chunk` (data frames) and raises :class:`ProtocolError`
for anything else, and nothing but :class:`ProtocolError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

#: Protocol version spoken by this implementation (``hello.version``).
PROTOCOL_VERSION = 1
#: the port servers listen on and clients try unless told otherwise
DEFAULT_PORT = 12345
#: the longest join link (tcpchat://…) anyone needs to accept
MAX_LINK = 2048
#: Revision of version 1 documented in PROTOCOL.rst (additions only).
PROTOCOL_REVISION = "1.5"
#: Optional features a client may ask for in ``hello.features``.
FEATURES = ("rooms", "edits", "profiles", "roster")
#: The reactions a message may get (revision 1.4, feature "edits"): a small set, so that a reaction is a
#: choice, not a message, and a message's reactions stay a few bytes.
REACTIONS = ("👍", "❤️", "😂", "😮", "😢", "🎉", "✅", "👀")
#: Characters of the quoted text a reply carries (``event.reply.text``).
REPLY_EXCERPT = 120
#: The room everyone is in; the only room of clients without the ``rooms`` feature.
DEFAULT_ROOM = "general"
#: Longest room name, in characters.
MAX_ROOM_CHARS = 32
#: Longest status line, in characters.
MAX_STATUS_CHARS = 100
#: Longest profile bio (revision 1.5, feature "profiles"), in characters: one line.
MAX_BIO_CHARS = 160
#: Largest profile picture, in bytes (a PNG or JPEG; clients send a small one, e.g. 128x128).
MAX_PICTURE_BYTES = 64 * 1024
#: The picture types a profile may have: their first bytes, and the MIME type they are served as.
PICTURE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
#: Longest search query, in characters.
MAX_QUERY_CHARS = 200
#: Largest ``limit`` of a ``search`` request.
MAX_SEARCH_PAGE = 100

#: Largest file data carried by one data frame.
MAX_CHUNK = 256 * 1024
#: Chunk size our own clients and the server use when sending file data.
CHUNK_SIZE = 64 * 1024
#: Largest payload of any frame, in bytes.  A longer length prefix closes
#: the connection without reading the payload.
MAX_FRAME = MAX_CHUNK + 5
#: Largest message text, in bytes of UTF-8.
MAX_TEXT_BYTES = 8 * 1024
#: Longest user name, in characters (after NFC normalisation).
MAX_NAME_CHARS = 32
#: Longest client message id (``cid``).
MAX_CID_CHARS = 64
#: Longest file name offered for upload, in bytes of UTF-8.
MAX_FILE_NAME_BYTES = 255
#: Largest ``limit`` of a ``history`` request.
MAX_HISTORY_PAGE = 500
#: Transfer ids are 1 .. 2**31 - 1.
MAX_TRANSFER_ID = 2**31 - 1

DATA_TAG = 0x00
_DATA_HEADER = struct.Struct(">BI")


class ErrorCode:
    """
    Stable machine-readable error codes carried by ``error`` frames.
    """

    BAD_FRAME = "bad-frame"
    UNKNOWN_TYPE = "unknown-type"
    BAD_VERSION = "bad-version"
    NOT_LOGGED_IN = "not-logged-in"
    ALREADY_LOGGED_IN = "already-logged-in"
    BAD_PASSKEY = "bad-passkey"
    BAD_NAME = "bad-name"
    NAME_TAKEN = "name-taken"
    NAME_PROTECTED = "name-protected"
    TOO_MANY_ATTEMPTS = "too-many-attempts"
    LOGIN_TIMEOUT = "login-timeout"
    EMPTY_MESSAGE = "empty-message"
    TOO_LONG = "too-long"
    FRAME_TOO_LARGE = "frame-too-large"
    SERVER_BUSY = "server-busy"
    SLOW_DOWN = "slow-down"
    INTERNAL = "internal-error"
    # files
    FILE_TOO_LARGE = "file-too-large"
    QUOTA_EXCEEDED = "quota-exceeded"
    BAD_FILE_NAME = "bad-file-name"
    TOO_MANY_UPLOADS = "too-many-uploads"
    TRANSFER_IN_USE = "transfer-in-use"
    NO_SUCH_TRANSFER = "no-such-transfer"
    HASH_MISMATCH = "hash-mismatch"
    SIZE_MISMATCH = "size-mismatch"
    NO_SUCH_FILE = "no-such-file"
    BAD_OFFSET = "bad-offset"
    UPLOAD_TIMEOUT = "upload-timeout"
    # rooms, direct messages, moderation, search
    BAD_ROOM_NAME = "bad-room-name"
    NO_SUCH_ROOM = "no-such-room"
    NOT_A_MEMBER = "not-a-member"
    CANNOT_LEAVE = "cannot-leave"
    TOO_MANY_ROOMS = "too-many-rooms"
    NO_SUCH_USER = "no-such-user"
    NO_SUCH_MESSAGE = "no-such-message"
    NOT_ALLOWED = "not-allowed"
    NOT_OPERATOR = "not-operator"
    BANNED = "banned"
    MUTED = "muted"
    BAD_QUERY = "bad-query"
    STORE_BUSY = "store-busy"


#: A plain sentence for every error code, for people.
ERROR_TEXT: Dict[str, str] = {
    ErrorCode.BAD_FRAME: "That frame could not be understood.",
    ErrorCode.UNKNOWN_TYPE: "Unknown frame type.",
    ErrorCode.BAD_VERSION: "This server speaks protocol version 1; please update your client.",
    ErrorCode.NOT_LOGGED_IN: "Log in first.",
    ErrorCode.ALREADY_LOGGED_IN: "You are already logged in.",
    ErrorCode.BAD_PASSKEY: "Wrong passkey.",
    ErrorCode.BAD_NAME: "That name is not allowed: use 1-32 characters, no control characters, no leading or trailing spaces.",
    ErrorCode.NAME_TAKEN: "That name is taken.",
    ErrorCode.NAME_PROTECTED: "That name is protected by its owner's password: give it, or choose another name.",
    ErrorCode.TOO_MANY_ATTEMPTS: "Too many failed login attempts; try again later.",
    ErrorCode.LOGIN_TIMEOUT: "You did not log in in time.",
    ErrorCode.EMPTY_MESSAGE: "Empty messages are not sent.",
    ErrorCode.TOO_LONG: "That message is too long.",
    ErrorCode.FRAME_TOO_LARGE: "Frame too large.",
    ErrorCode.SERVER_BUSY: "The server is too busy; try again later.",
    ErrorCode.SLOW_DOWN: "You are sending too fast; slow down.",
    ErrorCode.INTERNAL: "The server hit an internal error.",
    ErrorCode.FILE_TOO_LARGE: "That file is larger than this server accepts.",
    ErrorCode.QUOTA_EXCEEDED: "The server has no room left for files.",
    ErrorCode.BAD_FILE_NAME: "That file name is not allowed.",
    ErrorCode.TOO_MANY_UPLOADS: "Too many uploads at once; wait for one to finish.",
    ErrorCode.TRANSFER_IN_USE: "That transfer id is already in use on this connection.",
    ErrorCode.NO_SUCH_TRANSFER: "No such transfer.",
    ErrorCode.HASH_MISMATCH: "The file arrived damaged (SHA-256 mismatch); nothing was stored.",
    ErrorCode.SIZE_MISMATCH: "More data arrived than the file's declared size.",
    ErrorCode.NO_SUCH_FILE: "No such file.",
    ErrorCode.BAD_OFFSET: "That offset is past the end of the file.",
    ErrorCode.UPLOAD_TIMEOUT: "The upload stalled and was abandoned.",
    ErrorCode.BAD_ROOM_NAME: "That room name is not allowed: use 1-32 letters, digits or - _ . without spaces.",
    ErrorCode.NO_SUCH_ROOM: "No such room.",
    ErrorCode.NOT_A_MEMBER: "You are not in that room; join it first.",
    ErrorCode.CANNOT_LEAVE: "Everyone stays in the default room.",
    ErrorCode.TOO_MANY_ROOMS: "Too many rooms: leave one first (or ask the operator).",
    ErrorCode.NO_SUCH_USER: "Nobody of that name has ever logged in here.",
    ErrorCode.NO_SUCH_MESSAGE: "No such message.",
    ErrorCode.NOT_ALLOWED: "Only the sender or an operator may do that.",
    ErrorCode.NOT_OPERATOR: "Only a server operator may do that.",
    ErrorCode.BANNED: "You are banned from this server.",
    ErrorCode.MUTED: "You are muted; your messages are not sent.",
    ErrorCode.BAD_QUERY: "That search could not be understood; search for words.",
    ErrorCode.STORE_BUSY: "The server's storage is busy; nothing was stored. Send it again (same cid).",
}

#: Codes after which the server closes the connection.
FATAL_CODES = frozenset(
    {
        ErrorCode.BAD_VERSION,
        ErrorCode.TOO_MANY_ATTEMPTS,
        ErrorCode.LOGIN_TIMEOUT,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.SERVER_BUSY,
        ErrorCode.BANNED,
    }
)


class ProtocolError(Exception):
    """
    A frame broke the protocol.  The only exception :func:`decode` raises.
    """

    def __init__(self, code: str, message: Optional[str] = None, ref: Optional[str] = None,
                 req: Optional[str] = None) -> None:
        self.code = code
        self.message = message or ERROR_TEXT.get(code, code)
        #: the frame type it answers, and the request id it carried, when they could be read
        self.ref = ref
        self.req = req
        super().__init__(f"{code}: {self.message}")


@dataclass(frozen=True)
class Chunk:
    """
    A data frame: part of the file moving in transfer ``tid``.  ``data`` is a
    read-only view into the frame (bytes-like: write it, hash it, ``bytes()`` it).
    """

    tid: int
    data: Union[bytes, memoryview]


Frame = Union[Dict[str, Any], Chunk]

# ---------------------------------------------------------------- validators

Validator = Callable[[Any], Any]


def _fail(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


def _int(lo: int, hi: int) -> Validator:
    def check(value: Any) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise _fail(f"expected an integer from {lo} to {hi}")
        return value

    return check


def _str(max_chars: int, min_chars: int = 0) -> Validator:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not min_chars <= len(value) <= max_chars:
            raise _fail(f"expected a string of {min_chars} to {max_chars} characters")
        return value

    return check


#: C0 and C1 control characters, DEL included.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
#: ... less tab, line feed and carriage return, which message text may hold.
_TEXT_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _line(max_chars: int, min_chars: int = 0) -> Validator:
    """A one-line string (a passkey, a query, a status): no control characters at all."""
    length = _str(max_chars, min_chars)

    def check(value: Any) -> str:
        value = length(value)
        if _CONTROLS.search(value):
            raise _fail("control characters are not allowed here")
        return value

    return check


def _text(value: Any) -> str:
    """Message text: a string of at most MAX_TEXT_BYTES bytes of UTF-8."""
    if not isinstance(value, str):
        raise _fail("expected a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _fail("text is not valid Unicode") from None
    if size > MAX_TEXT_BYTES:
        raise ProtocolError(ErrorCode.TOO_LONG)
    if _TEXT_CONTROLS.search(value):
        raise _fail("text may hold tabs and line breaks, but no other control characters")
    return value


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise _fail("expected 64 lowercase hex digits")
    return value


def _hex(nbytes: int) -> Validator:
    """Exactly ``nbytes`` bytes written as lowercase hex."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{%d}" % (2 * nbytes), value):
            raise _fail(f"expected {2 * nbytes} lowercase hex digits")
        return value

    return check


def _any(value: Any) -> Any:
    return value


def _nonce(value: Any) -> Any:
    """What a ping may carry to be echoed: a small integer or a short string."""
    if (type(value) is int and 0 <= value <= 2**53) or (isinstance(value, str) and len(value) <= 64):
        return value
    raise _fail("expected an integer from 0 to 2**53 or a string of at most 64 characters")


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _fail("expected true or false")
    return value


def _room(value: Any) -> str:
    return normalize_room(value)


def _features(value: Any) -> list:
    if not isinstance(value, list) or len(value) > 32 or not all(isinstance(v, str) and len(v) <= 32 for v in value):
        raise _fail("expected a list of up to 32 short strings")
    return value


def _address(value: Any) -> Any:
    """``true`` (the address the named user is connected from) or an IP address."""
    if value is True or (isinstance(value, str) and 1 <= len(value) <= 64):
        return value
    raise _fail("expected true or an address")


def _reaction(value: Any) -> str:
    if value not in REACTIONS:
        raise _fail("expected one of " + " ".join(REACTIONS))
    return value


def picture_type(data: bytes) -> Optional[str]:
    """The MIME type of a profile picture's bytes (PNG or JPEG, by their first bytes), or None."""
    for magic, mime in PICTURE_TYPES:
        if data.startswith(magic):
            return mime
    return None


def _picture(value: Any) -> bytes:
    """A profile picture: base64 (RFC 4648, padded) of a PNG or JPEG of at most MAX_PICTURE_BYTES; "" removes it."""
    if not isinstance(value, str) or len(value) > (MAX_PICTURE_BYTES + 2) // 3 * 4:
        raise _fail(f"expected base64 of at most {MAX_PICTURE_BYTES} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _fail("the picture is not valid base64") from None
    if data and picture_type(data) is None:
        raise _fail("a profile picture must be a PNG or a JPEG")
    return data


_ID = _int(0, 2**53)
_TID = _int(1, MAX_TRANSFER_ID)
_SIZE = _int(0, 2**53)

#: Frames a client may send: type -> {field: (validator, required)}.
#: Unknown fields are ignored (forward compatibility); missing required
#: fields and wrongly typed fields are ``bad-frame``.
CLIENT_FRAMES: Mapping[str, Mapping[str, Tuple[Validator, bool]]] = {
    "hello": {
        "version": (_int(0, 2**31), True),
        "name": (_str(256), True),
        "passkey": (_line(256), False),
        "pake": (_hex(33), False),
        "after": (_ID, False),
        "session": (_line(64), False),
        "client": (_line(100), False),
        "features": (_features, False),
        "password": (_line(256), False),
    },
    "pake-confirm": {"confirm": (_hex(32), True), "password": (_line(256), False)},
    "register": {"password": (_line(256), True)},
    "say": {"text": (_text, True), "cid": (_line(MAX_CID_CHARS, 1), False), "room": (_room, False),
            "to": (_str(256), False), "reply": (_ID, False)},
    "edit": {"id": (_ID, True), "text": (_text, True)},
    "react": {"id": (_ID, True), "emoji": (_reaction, True), "on": (_bool, False)},
    "history": {"before": (_ID, False), "limit": (_int(1, MAX_HISTORY_PAGE), False), "room": (_room, False),
                "to": (_str(256), False)},
    "who": {},
    "join": {"room": (_room, True)},
    "leave": {"room": (_room, True)},
    "rooms": {},
    "typing": {"room": (_room, False), "to": (_str(256), False)},
    "read": {"id": (_ID, True), "room": (_room, False), "to": (_str(256), False)},
    "presence": {"away": (_bool, False), "status": (_line(MAX_STATUS_CHARS), False)},
    "profile": {"bio": (_line(MAX_BIO_CHARS), False), "picture": (_picture, False)},
    "search": {"q": (_line(MAX_QUERY_CHARS, 1), True), "room": (_room, False), "to": (_str(256), False),
               "before": (_ID, False), "limit": (_int(1, MAX_SEARCH_PAGE), False)},
    "delete": {"id": (_ID, True)},
    "oper": {"passkey": (_line(256), True)},
    "mod": {
        "action": (_line(16, 1), True),
        "name": (_str(256), False),
        "address": (_address, False),
        "duration": (_int(0, 10 * 365 * 86400), False),
        "reason": (_line(500), False),
        "text": (_text, False),
        "passkey": (_line(256), False),
    },
    "ping": {"n": (_nonce, False)},
    "pong": {"n": (_nonce, False)},
    "bye": {},
    "upload": {
        "tid": (_TID, True),
        "name": (_str(1024), True),
        "size": (_SIZE, True),
        "sha256": (_sha256, True),
        "mime": (_line(255), False),
        "room": (_room, False),
        "to": (_str(256), False),
    },
    "upload-cancel": {"tid": (_TID, True)},
    "download": {"tid": (_TID, True), "file": (_ID, True), "offset": (_SIZE, False)},
    "download-cancel": {"tid": (_TID, True)},
    "file-link": {"file": (_ID, True)},
}

#: Frames the server sends (validated by clients the same way).
SERVER_FRAMES: Mapping[str, Mapping[str, Tuple[Validator, bool]]] = {
    "welcome": {
        "version": (_int(0, 2**31), True),
        "name": (_str(MAX_NAME_CHARS * 4, 1), True),
        "server": (_str(256), True),
        "users": (_any, True),
        "session": (_str(64), False),
        "limits": (_any, False),
        "features": (_any, False),
        "presence": (_any, False),
        "operator": (_any, False),
        "link": (_line(MAX_LINK), False),
        "profiles": (_any, False),
        "online": (_any, False),
        "more": (_any, False),
    },
    "event": {
        "id": (_ID, True),
        "ts": (_any, True),
        "kind": (_str(64, 1), True),
        "name": (_str(MAX_NAME_CHARS * 4), False),
        "text": (_any, False),
        "cid": (_any, False),
        "file": (_any, False),
        "reason": (_any, False),
        "replay": (_any, False),
        "room": (_any, False),
        "to": (_any, False),
        "target": (_any, False),
        "by": (_any, False),
        # revision 1.4 (feature "edits"): what a message answers, when it was edited, its reactions;
        # an "react" event's emoji and whether it was added (true) or taken back
        "reply": (_any, False),
        "edited": (_any, False),
        "reactions": (_any, False),
        "emoji": (_any, False),
        "on": (_any, False),
    },
    "pake": {"msg": (_hex(33), True), "confirm": (_hex(32), True)},
    "synced": {"last": (_ID, True)},
    "ack": {"id": (_ID, True), "ts": (_any, True), "cid": (_any, False)},
    "done": {"ref": (_any, True), "id": (_any, False)},
    "history-page": {"events": (_any, True), "more": (_any, True), "room": (_any, False), "to": (_any, False)},
    "users": {"users": (_any, True), "presence": (_any, False), "profiles": (_any, False)},
    "roster": {"joined": (_any, True), "left": (_any, True), "online": (_any, True), "more": (_any, False)},
    "room": {"room": (_any, True), "members": (_any, True), "seen": (_any, False)},
    "room-list": {"rooms": (_any, True)},
    "typing": {"name": (_any, True), "room": (_any, False), "to": (_any, False)},
    "seen": {"name": (_any, True), "id": (_ID, True), "room": (_any, False), "to": (_any, False)},
    "presence": {"name": (_any, True), "away": (_any, True), "status": (_any, False)},
    "profile": {"name": (_any, True), "bio": (_any, False), "picture": (_any, False)},
    "search-results": {"q": (_any, True), "events": (_any, True), "more": (_any, True)},
    "oper": {"actions": (_any, False)},
    "registered": {"name": (_any, True)},
    "mod-done": {"action": (_any, True), "message": (_any, False), "passkey": (_any, False), "bans": (_any, False)},
    "error": {
        "code": (_str(64, 1), True),
        "message": (_str(2048), False),
        "ref": (_any, False),
        "cid": (_any, False),
        "tid": (_any, False),
    },
    "ping": {"n": (_any, False)},
    "pong": {"n": (_any, False)},
    "bye": {"reason": (_any, False), "message": (_any, False)},
    "upload-ready": {"tid": (_TID, True)},
    "upload-done": {"tid": (_TID, True), "id": (_ID, True), "file": (_any, True)},
    "download-start": {"tid": (_TID, True), "file": (_any, True), "offset": (_SIZE, True)},
    "file-link": {"file": (_ID, True), "url": (_any, True), "expires": (_any, True)},
    "download-done": {"tid": (_TID, True)},
}


#: JSON may escape UTF-16 surrogates (``\\ud800``): a lone one is valid JSON but not Unicode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("numbers must be finite")
    return value


def _has_surrogate(obj: Any) -> bool:
    """True if any string in ``obj`` (keys too, at any depth) holds a lone surrogate."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATES.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def decode(payload: bytes, table: Mapping[str, Mapping[str, Tuple[Validator, bool]]] = CLIENT_FRAMES) -> Frame:
    """
    Decode and validate one frame payload.

    :param table: which side's frames are acceptable (:data:`CLIENT_FRAMES`
        on the server, :data:`SERVER_FRAMES` on a client).
    :raises ProtocolError: for anything that is not a valid frame.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise _fail("payload must be bytes")
    payload = bytes(payload)
    if len(payload) > MAX_FRAME:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE)
    if not payload:
        raise _fail("empty frame")
    if payload[0] == DATA_TAG:
        if len(payload) < _DATA_HEADER.size:
            raise _fail("short data frame")
        _, tid = _DATA_HEADER.unpack_from(payload)
        if not 1 <= tid <= MAX_TRANSFER_ID:
            raise _fail("bad transfer id")
        return Chunk(tid, memoryview(payload)[_DATA_HEADER.size :])  # no copy of the file data
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail("not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise _fail("a control frame must be a JSON object")
    if _SURROGATE_ESCAPE.search(payload) and _has_surrogate(obj):
        raise _fail("strings must be valid Unicode (a lone surrogate was escaped)")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise _fail("missing type")
    req = obj.get("req")
    if req is not None:
        try:
            req = _REQ(req)
        except ProtocolError:
            raise _fail("req must be a string of 1-64 printable characters") from None
    fields = table.get(kind)
    if fields is None:
        ref = kind[:40] if kind and not _CONTROLS.search(kind) else None
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"Unknown frame type {kind[:40]!r}.", ref=ref, req=req)
    out: Dict[str, Any] = {"type": kind}
    if req is not None:
        out["req"] = req  # any frame may carry a request id; answers and errors echo it
    for name, (check, required) in fields.items():
        if name in obj and obj[name] is not None:
            try:
                out[name] = check(obj[name])
            except ProtocolError as e:
                if e.code == ErrorCode.BAD_FRAME:
                    raise _fail(f"{kind}.{name}: {e.message}") from None
                raise
        elif required:
            raise _fail(f"{kind}: missing field {name!r}")
    return out


_REQ = _line(MAX_CID_CHARS, 1)


def encode(frame: Mapping[str, Any]) -> bytes:
    """
    Encode a control frame (a mapping with a ``type``) as a payload.

    :raises ProtocolError: if the result would exceed :data:`MAX_FRAME`.
    """
    try:
        payload = json.dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError):
        raise _fail("not encodable as UTF-8 JSON") from None
    if len(payload) > MAX_FRAME:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE)
    return payload


def encode_chunk(tid: int, data: bytes) -> bytes:
    """
    Encode a data frame carrying ``data`` for transfer ``tid``.
    """
    if len(data) > MAX_CHUNK:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE)
    return _DATA_HEADER.pack(DATA_TAG, tid) + data


#: Room left in a frame for the fields around a list that :func:`fit` trims.
_FIT_MARGIN = 1024


def fit(frame: Dict[str, Any], key: str, keep: str = "first", limit: int = MAX_FRAME - _FIT_MARGIN) -> Dict[str, Any]:
    """
    ``frame`` with its list ``frame[key]`` cut so the encoded frame fits in
    ``limit`` bytes.  Keeps the ``first`` or the ``last`` items; if any were
    cut, ``frame["more"]`` becomes true (the client asks for the next page).
    """
    items = frame[key]
    budget = limit - len(encode({**frame, key: []}))
    whole = len(json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if whole <= budget:
        return frame  # (the usual case, measured in one go: a login storm fits thousands of names N times)
    sizes = [len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")) + 1 for item in items]
    order = range(len(items)) if keep == "first" else range(len(items) - 1, -1, -1)
    kept = 0
    for i in order:
        budget -= sizes[i]
        if budget < 0:
            break
        kept += 1
    cut = items[:kept] if keep == "first" else items[len(items) - kept:]
    return {**frame, key: cut, "more": True}


def error(code: str, message: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    """
    Build an ``error`` frame for ``code``.
    """
    frame: Dict[str, Any] = {"type": "error", "code": code, "message": message or ERROR_TEXT.get(code, code)}
    frame.update({k: v for k, v in extra.items() if v is not None})
    return frame


# ---------------------------------------------------------------- user names

_BAD_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def normalize_name(raw: str) -> str:
    """
    Return the canonical form of a user name, or raise ``bad-name``.

    Names are NFC-normalised, 1..MAX_NAME_CHARS characters, contain no
    control, format, private-use, unassigned or line/paragraph-separator
    characters, and do not start or end with white space.
    """
    if not isinstance(raw, str):
        raise ProtocolError(ErrorCode.BAD_NAME)
    name = unicodedata.normalize("NFC", raw)
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ProtocolError(ErrorCode.BAD_NAME)
    if name != name.strip() or any(unicodedata.category(c) in _BAD_NAME_CATEGORIES for c in name):
        raise ProtocolError(ErrorCode.BAD_NAME)
    return name


_ROOM_CHARS = re.compile(r"[\w.\-]+")


def normalize_room(raw: Any) -> str:
    """
    The canonical form of a room name (an optional leading ``#`` is dropped),
    or raise ``bad-room-name``.  Room names are 1..MAX_ROOM_CHARS letters,
    digits, ``-``, ``_`` or ``.``, NFC-normalised; they compare like user
    names (case-insensitively, see :func:`name_key`).
    """
    if not isinstance(raw, str):
        raise ProtocolError(ErrorCode.BAD_ROOM_NAME)
    room = unicodedata.normalize("NFC", raw)
    if room.startswith("#"):
        room = room[1:]
    if not 1 <= len(room) <= MAX_ROOM_CHARS or not _ROOM_CHARS.fullmatch(room):
        raise ProtocolError(ErrorCode.BAD_ROOM_NAME)
    return room


def name_key(name: str) -> str:
    """
    The key under which names collide: case-folded, then NFC again.
    """
    return unicodedata.normalize("NFC", name.casefold())


def is_blank(text: str) -> bool:
    """
    True for text that has nothing a person could read.
    """
    return not text.strip() or all(unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp") for c in text)


# ---------------------------------------------------------------- file names

_RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)
_UNSAFE_CHARS = set('/\\:*?"<>|')


def safe_file_name(raw: str) -> str:
    """
    A file name that is safe to create in any directory on Linux, macOS and
    Windows: no path separators or characters Windows forbids, no control
    characters, no leading/trailing dots or spaces, not a reserved device name,
    at most :data:`MAX_FILE_NAME_BYTES` bytes of UTF-8.  Returns ``"file"``
    when nothing usable is left.

    The server refuses any offered name this function would change; a
    downloader passes the name it is given through it again.
    """
    name = unicodedata.normalize("NFC", raw if isinstance(raw, str) else "")
    name = "".join(
        "_" if c in _UNSAFE_CHARS or unicodedata.category(c) in _BAD_NAME_CATEGORIES else c for c in name
    )
    name = name.strip(" .")
    stem = name.split(".", 1)[0].upper().rstrip(" ")
    if stem in _RESERVED_NAMES:
        name = "_" + name
    while len(name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        base, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16 and base:
            name = base[:-1] + "." + ext
        else:
            name = name[:-1]
        name = name.rstrip(" .")
    return name or "file"


def apply_reaction(event: Dict[str, Any], react: Dict[str, Any]) -> Dict[str, Any]:
    """``event`` (a message, or its ``extra``) with one ``react`` event applied: ``reactions`` is emoji -> names."""
    reactions = {k: list(v) for k, v in (event.get("reactions") or {}).items()}
    names = reactions.setdefault(react["emoji"], [])
    who = react.get("name")
    if react.get("on", True) and who not in names:
        names.append(who)
    elif not react.get("on", True) and who in names:
        names.remove(who)
    reactions = {k: v for k, v in reactions.items() if v}
    changed = {k: v for k, v in event.items() if k != "reactions"}
    if reactions:
        changed["reactions"] = reactions
    return changed


def apply_edit(event: Dict[str, Any], edit: Dict[str, Any]) -> Dict[str, Any]:
    """``event`` (a message) with an ``edit`` event applied: the new text, and when."""
    return {**event, "text": edit["text"], "edited": edit["ts"]}
