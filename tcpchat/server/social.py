"""
Conversations: rooms, direct messages, who may read what, read markers.

Every stored event belongs to exactly one *conversation*: a room (everyone
is in the default room; other rooms have members) or a direct conversation
between two users.  The conversation key (``conv``) stored with an event is
``"#" + room key`` or ``"@" + the two name keys, sorted, joined by a newline``
(names cannot contain newlines).  On the wire an event names its room
(``room``) or, for a direct message, its sender (``name``) and recipient
(``to``).

:class:`Directory` holds the rooms, their members, the names that have ever
logged in and the read markers in memory; it changes storage only through
events (room joins and leaves are written with the event that records them)
and :meth:`Store.save_reads`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from tcpchat import wire
from tcpchat.wire import DEFAULT_ROOM, ErrorCode, ProtocolError

DEFAULT_KEY = wire.name_key(DEFAULT_ROOM)

#: An event's audience: ("room", room key) or ("dm", name key, name key); for the events only clients with
#: the "edits" feature know (edits, reactions), the same prefixed with "edits".
Audience = Tuple[str, ...]
#: event kinds delivered only to clients that asked for the "edits" feature
EDITS_KINDS = frozenset({"edit", "react"})
#: the ``conv`` of a stored file that is someone's profile picture (anyone logged in may download it)
PROFILE_CONV = "profile"


def room_conv(room_key: str) -> str:
    return "#" + room_key


def dm_conv(a: str, b: str) -> str:
    """The conversation key of two users' direct messages (by name key)."""
    return "@" + "\n".join(sorted((a, b)))


def audience(event: Dict[str, Any]) -> Audience:
    """Who may read ``event``, from its ``room`` or its ``name`` and ``to``."""
    to = event.get("to")
    if to is not None:
        aud: Audience = ("dm", wire.name_key(event.get("name") or ""), wire.name_key(to))
    else:
        aud = ("room", wire.name_key(event.get("room") or DEFAULT_ROOM))
    return ("edits", *aud) if event.get("kind") in EDITS_KINDS else aud


def conv_of(aud: Audience) -> str:
    if aud[0] == "edits":
        aud = aud[1:]
    return room_conv(aud[1]) if aud[0] == "room" else dm_conv(aud[1], aud[2])


def can_see(session: Any, aud: Audience) -> bool:
    """May the logged-in connection ``session`` read events with audience ``aud``?"""
    if aud[0] == "edits":
        return session.edits and can_see(session, aud[1:])
    if aud[0] == "room":
        return aud[1] in session.rooms
    return session.rich and (session.nkey == aud[1] or session.nkey == aud[2])


def placement(aud: Audience) -> Dict[str, str]:
    """The storage fields of an event in conversation ``aud`` (not sent on the wire)."""
    if aud[0] == "edits":
        aud = aud[1:]
    if aud[0] == "dm":
        return {"conv": conv_of(aud), "tkey": aud[2]}
    return {"conv": conv_of(aud)}


def may_read(session: Any, conv: Optional[str]) -> bool:
    """May ``session`` read stored conversation ``conv`` (None: the default room; ``!…``: nobody's)?"""
    if conv is None:
        return True
    if conv.startswith("#"):
        return can_see(session, ("room", conv[1:]))
    if conv.startswith("@"):
        return can_see(session, ("dm", *conv[1:].split("\n")))
    return conv == PROFILE_CONV  # a profile picture: anyone logged in; else deleted


class Directory:
    """Rooms, memberships, known user names and read markers of one server."""

    def __init__(self) -> None:
        #: room key -> display name
        self.rooms: Dict[str, str] = {DEFAULT_KEY: DEFAULT_ROOM}
        #: room key -> {name key: name}; the default room has everyone and is not listed
        self.members: Dict[str, Dict[str, str]] = {}
        #: name key -> name, of everyone who ever logged in
        self.known: Dict[str, str] = {}
        #: name key -> password hash, for names their owners protected
        self.secrets: Dict[str, str] = {}
        #: conv -> {name key: (name, last id read)}
        self.reads: Dict[str, Dict[str, Tuple[str, int]]] = {}
        self._dirty: Set[Tuple[str, str]] = set()

    def load(self, social: Dict[str, List[Tuple[Any, ...]]]) -> None:
        for key, name in social["rooms"]:
            self.rooms[key] = name
        for room, nkey, name in social["members"]:
            self.members.setdefault(room, {})[nkey] = name
        for nkey, name in social["known"]:
            self.known[nkey] = name
        for nkey, secret in social.get("secrets", ()):
            self.secrets[nkey] = secret
        for conv, nkey, name, last in social["reads"]:
            self.reads.setdefault(conv, {})[nkey] = (name, last)

    # ------------------------------------------------------------ rooms

    def rooms_of(self, nkey: str) -> Set[str]:
        """The keys of the rooms ``nkey`` is in (always the default room)."""
        out = {DEFAULT_KEY}
        for key, members in self.members.items():
            if nkey in members:
                out.add(key)
        return out

    def member_names(self, room_key: str) -> List[str]:
        return sorted(self.members.get(room_key, {}).values(), key=wire.name_key)

    def listing(self, session: Any) -> List[Dict[str, Any]]:
        """Every room, with its number of members and whether ``session`` is in it."""
        out = []
        for key, name in sorted(self.rooms.items()):
            if key == DEFAULT_KEY:
                count = len(self.known)
            else:
                count = len(self.members.get(key, ()))
                if not count:
                    continue  # empty rooms are not listed (they come back when someone joins)
            out.append({"room": name, "members": count, "joined": key in session.rooms})
        return out

    def join(self, room: str, nkey: str, name: str) -> Tuple[str, bool]:
        """Add ``nkey`` to ``room`` (created if new); ``(display name, newly joined)``."""
        key = wire.name_key(room)
        display = self.rooms.setdefault(key, room)
        if key == DEFAULT_KEY:
            return display, False
        members = self.members.setdefault(key, {})
        fresh = nkey not in members
        members[nkey] = name
        return display, fresh

    def leave(self, room: str, nkey: str) -> str:
        key = wire.name_key(room)
        if key == DEFAULT_KEY:
            raise ProtocolError(ErrorCode.CANNOT_LEAVE)
        members = self.members.get(key, {})
        if nkey not in members:
            raise ProtocolError(ErrorCode.NOT_A_MEMBER)
        del members[nkey]
        return self.rooms[key]

    # ------------------------------------------------------------ conversations

    def resolve(self, session: Any, frame: Dict[str, Any], member: bool = True) -> Tuple[Audience, Dict[str, str]]:
        """
        The conversation a client frame names (``room`` or ``to``, default:
        the default room) and the fields naming it in events.  Raises unless
        ``session`` may write to (and read) it.
        """
        to = frame.get("to")
        if to is not None:
            if not session.rich:
                raise ProtocolError(ErrorCode.BAD_FRAME, "Direct messages need the 'rooms' feature (hello.features).")
            key = wire.name_key(to)
            name = self.known.get(key)
            if name is None:
                raise ProtocolError(ErrorCode.NO_SUCH_USER)
            if key == session.nkey:
                raise ProtocolError(ErrorCode.NO_SUCH_USER, "You cannot send direct messages to yourself.")
            return ("dm", session.nkey, key), {"to": name}
        room = frame.get("room", DEFAULT_ROOM)
        key = wire.name_key(room)
        if key not in self.rooms:
            raise ProtocolError(ErrorCode.NO_SUCH_ROOM)
        if member and key not in session.rooms:
            raise ProtocolError(ErrorCode.NOT_A_MEMBER)
        return ("room", key), {"room": self.rooms[key]}

    # ------------------------------------------------------------ read markers

    def mark_read(self, conv: str, nkey: str, name: str, last: int) -> bool:
        """Move a read marker forward; False if it was already there or beyond."""
        markers = self.reads.setdefault(conv, {})
        old = markers.get(nkey)
        if old is not None and old[1] >= last:
            return False
        markers[nkey] = (name, last)
        self._dirty.add((conv, nkey))
        return True

    def seen(self, conv: str, limit: int = 500) -> Dict[str, int]:
        """Read markers of one conversation: name -> last id read (the latest ``limit``)."""
        markers = sorted(self.reads.get(conv, {}).values(), key=lambda m: m[1], reverse=True)[:limit]
        return {name: last for name, last in markers}

    def dm_markers(self, nkey: str) -> List[Tuple[str, str, int, str]]:
        """Read markers of ``nkey``'s direct conversations: (conv, reader, id, other name key)."""
        out = []
        for conv, markers in self.reads.items():
            if conv.startswith("@"):
                pair = conv[1:].split("\n")
                if nkey in pair:
                    other = pair[0] if pair[1] == nkey else pair[1]
                    for reader, (name, last) in markers.items():
                        out.append((conv, name, last, other))
        return out

    def take_dirty(self) -> List[Tuple[str, str, str, int]]:
        """Read markers changed since the last call, to be stored."""
        out = []
        for conv, nkey in self._dirty:
            name, last = self.reads[conv][nkey]
            out.append((conv, nkey, name, last))
        self._dirty = set()
        return out

    def other_name(self, aud: Audience, nkey: str) -> Optional[str]:
        """In a direct conversation, the name of the one who is not ``nkey``."""
        if aud[0] != "dm":
            return None
        other = aud[2] if aud[1] == nkey else aud[1]
        return self.known.get(other, other)
