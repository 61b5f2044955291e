"""
The conversation as one user sees it: a pure model, no network.

:class:`Conversations` keeps events by id (nothing is shown twice), who is
online, the rooms this user is in with their members and read markers, read
markers of direct conversations, presence, who is typing (hidden again after
:data:`TYPING_SHOWN` seconds of the injected clock) and unread counts.  The
client core feeds it the server's frames; UIs ask it through its methods.
It tells the listener (``IChatListener``) what changed.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Dict, List, Optional

from tcpchat import wire

#: the conversation every user is in ("#general")
LOBBY = "#" + wire.DEFAULT_ROOM
#: seconds a "typing…" hint is shown without a new typing frame
TYPING_SHOWN = 6.0
#: events a conversation holds at most; older ones are let go (and can be paged in from the server again)
HOLD = 20_000

Event = Dict[str, Any]


def conversation_of(event: Dict[str, Any], me: str) -> str:
    """
    The conversation an event (or typing/seen frame) belongs to, as the user
    ``me`` sees it: ``"#room"``, or ``"@name"`` for the direct conversation
    with ``name``.
    """
    to = event.get("to")
    if to is not None:
        sender = event.get("name") or ""
        other = sender if wire.name_key(to) == wire.name_key(me) else to
        return "@" + other
    return "#" + (event.get("room") or wire.DEFAULT_ROOM)


def conv_fields(conv: Optional[str]) -> Dict[str, str]:
    """The frame members naming conversation ``conv`` (``room`` or ``to``)."""
    if not conv:
        return {}
    if conv.startswith("@"):
        return {"to": conv[1:]}
    return {"room": conv.lstrip("#")}


def conv_key(conv: str) -> str:
    """What two names of one conversation have in common (case does not matter)."""
    return conv[:1] + wire.name_key(conv[1:])


def same_conv(a: str, b: str) -> bool:
    """Conversation names compare like user and room names: case does not matter."""
    return a[:1] == b[:1] and wire.name_key(a[1:]) == wire.name_key(b[1:])


class Conversations:
    """
    :param clock: ``callLater``/``seconds`` (a reactor, or ``task.Clock`` in tests).
    :param listener: told what changed.
    :param acked: ``acked(event) -> bool``: True if ``event`` is one of our own
        messages still waiting in the outbox (then it is taken as its ack).
    """

    def __init__(self, clock: Any, listener: Any, acked: Callable[[Event], bool] = lambda e: False) -> None:
        self.clock = clock
        self.listener = listener
        self.acked = acked
        self.name = ""
        #: event id -> event
        self.events: Dict[int, Event] = {}
        #: conversation key -> the ids held in it, in order (so a conversation is found without a scan)
        self._ids: Dict[str, List[int]] = {}
        self.lastEventId = 0
        self.users: List[str] = []
        #: rooms this user is in: name -> {"members": [...], "seen": {name: id}}
        self.rooms: Dict[str, Dict[str, Any]] = {}
        #: read markers of direct conversations: name key of the other -> {reader: id}
        self.dmSeen: Dict[str, Dict[str, int]] = {}
        #: who is away or has a status: name -> {"away", "status"}
        self.presence: Dict[str, Dict[str, Any]] = {}
        #: conv -> {name: delayed call hiding their typing hint}
        self.typing: Dict[str, Dict[str, Any]] = {}
        #: unread messages per conversation (live ones, not from this user)
        self.unread: Dict[str, int] = {}
        #: name key -> profile (bio, picture), of those the server told about
        self.profiles: Dict[str, Dict[str, Any]] = {}

    # ------------------------------------------------------------ questions the UIs ask

    def messages(self, conv: Optional[str] = None) -> List[Event]:
        """The conversation held so far (one of them, or all), in order."""
        if conv is None:
            return [self.events[i] for i in sorted(self.events)]
        return [self.events[i] for i in self._ids.get(conv_key(conv), ())]

    def _hold(self, event: Event) -> None:
        """Keep ``event``; a conversation holds at most :data:`HOLD` events (older ones can be paged in again)."""
        ident = event["id"]
        self.events[ident] = event
        ids = self._ids.setdefault(conv_key(conversation_of(event, self.name)), [])
        if not ids or ids[-1] < ident:
            ids.append(ident)
        else:
            bisect.insort(ids, ident)
        while len(ids) > HOLD:
            self.events.pop(ids.pop(0), None)

    def _drop(self, event: Event) -> None:
        self.events.pop(event["id"], None)
        ids = self._ids.get(conv_key(conversation_of(event, self.name)), [])
        at = bisect.bisect_left(ids, event["id"])
        if at < len(ids) and ids[at] == event["id"]:
            del ids[at]

    def lastOwnMessage(self, conv: str) -> Optional[Event]:
        """This user's latest message in ``conv`` held so far, if any."""
        for event in reversed(self.messages(conv)):
            if event["kind"] == "message" and event.get("name") == self.name:
                return event
        return None

    def typingIn(self, conv: str) -> List[str]:
        return sorted(self.typing.get(conv, {}))

    def unreadIn(self, conv: str) -> int:
        return self.unread.get(conv, 0)

    def presenceOf(self, name: str) -> Dict[str, Any]:
        """``{"away": bool, "status": str}`` (empty when here with no status)."""
        return self.presence.get(name) or {}

    def roomNames(self) -> List[str]:
        """The rooms this user is in: the default room first, then by name."""
        return sorted(self.rooms, key=lambda r: (wire.name_key(r) != wire.DEFAULT_ROOM, wire.name_key(r)))

    def members(self, room: str) -> List[str]:
        return list((self.rooms.get(room) or {}).get("members") or [])

    def roomOf(self, conv: str) -> Optional[Dict[str, Any]]:
        """``{"members", "seen"}`` of room ``conv`` ("#name", any case) if this user is in it, else None."""
        return next((r for name, r in self.rooms.items() if same_conv("#" + name, conv)), None)

    def markers(self, conv: str) -> Optional[Dict[str, int]]:
        """The read markers of ``conv`` (reader -> last id seen), or None if not known here."""
        if conv.startswith("@"):
            return self.dmSeen.setdefault(wire.name_key(conv[1:]), {})
        for name, room in self.rooms.items():
            if wire.name_key(name) == wire.name_key(conv[1:]):
                return room.setdefault("seen", {})
        return None

    def seenBy(self, conv: str, event: Event) -> List[str]:
        """Who else (not its sender, not this user) has seen ``event``."""
        markers = self.markers(conv) or {}
        skip = {wire.name_key(self.name), wire.name_key(event.get("name") or "")}
        return sorted((n for n, last in markers.items() if last >= event["id"] and wire.name_key(n) not in skip),
                      key=wire.name_key)

    # ------------------------------------------------------------ what the server said

    def welcome(self, frame: Dict[str, Any]) -> None:
        self.name = frame["name"]
        self.users = list(frame["users"])
        self.presence = dict(frame.get("presence") or {})
        self.profiles = {wire.name_key(n): p for n, p in (frame.get("profiles") or {}).items() if isinstance(p, dict)}
        self.rooms = {}

    def room(self, frame: Dict[str, Any]) -> None:
        self.rooms[frame["room"]] = {"members": list(frame["members"]), "seen": dict(frame.get("seen") or {})}
        self.listener.roomsChanged(self.roomNames())
        self.listener.seenChanged("#" + frame["room"])

    def usersNow(self, users: List[str], profiles: Optional[Dict[str, Any]] = None) -> None:
        self.users = list(users)
        for name, profile in (profiles or {}).items():
            if isinstance(profile, dict):
                self.profiles[wire.name_key(name)] = profile
        self.listener.usersChanged(list(self.users))

    def rosterChanged(self, frame: Dict[str, Any]) -> None:
        """Who came and went in a crowd (feature "roster": no join or leave events then)."""
        users = self.users
        gone = {name for name in frame.get("left", ()) if isinstance(name, str)}
        if gone:
            users[:] = [name for name in users if name not in gone]
        present = set(users)
        for name in frame.get("joined", ()):
            if isinstance(name, str) and name not in present:
                users.append(name)
                present.add(name)
        self.listener.usersChanged(list(users))

    def profileChanged(self, frame: Dict[str, Any]) -> None:
        profile: Dict[str, Any] = {k: frame[k] for k in ("bio", "picture") if k in frame}
        if profile:
            self.profiles[wire.name_key(frame["name"])] = profile
        else:
            self.profiles.pop(wire.name_key(frame["name"]), None)
        self.listener.profileChanged(frame["name"], profile)

    def profileOf(self, name: str) -> Dict[str, Any]:
        """``{"bio", "picture"}`` of ``name`` as far as known (each only when set; feature "profiles")."""
        return self.profiles.get(wire.name_key(name)) or {}

    def presenceChanged(self, frame: Dict[str, Any]) -> None:
        name, away, status = frame["name"], bool(frame["away"]), str(frame.get("status") or "")
        if away or status:
            self.presence[name] = {"away": away, "status": status}
        else:
            self.presence.pop(name, None)
        self.listener.presenceChanged(name, away, status)

    def typingSeen(self, frame: Dict[str, Any]) -> None:
        conv = conversation_of(frame, self.name)
        who = frame["name"]
        shown = self.typing.setdefault(conv, {})
        old = shown.pop(who, None)
        if old is not None and old.active():
            old.cancel()
        shown[who] = self.clock.callLater(TYPING_SHOWN, self.stoppedTyping, conv, who)
        self.listener.typingChanged(conv, sorted(shown))

    def stoppedTyping(self, conv: str, who: str) -> None:
        shown = self.typing.get(conv, {})
        call = shown.pop(who, None)
        if call is not None and call.active():
            call.cancel()
        self.listener.typingChanged(conv, sorted(shown))

    def clearTyping(self, conv: Optional[str] = None) -> None:
        """Hide every typing hint of ``conv`` (default: of every conversation)."""
        for c in [conv] if conv is not None else list(self.typing):
            for who in list(self.typing.get(c, {})):
                self.stoppedTyping(c, who)
            self.typing.pop(c, None)

    def seen(self, frame: Dict[str, Any]) -> None:
        conv = conversation_of(frame, self.name)
        markers = self.markers(conv)
        if markers is None:
            return
        if frame["id"] > markers.get(frame["name"], 0):
            markers[frame["name"]] = frame["id"]
        self.listener.seenChanged(conv)

    def read(self, conv: str) -> Optional[int]:
        """The user has seen everything held in ``conv``: the id to tell the server, or None if nothing new."""
        self.unread.pop(conv, None)
        held = self.messages(conv)
        if not held:
            return None
        last = held[-1]["id"]
        markers = self.markers(conv)
        if markers is not None and markers.get(self.name, 0) >= last:
            return None
        if markers is not None:
            markers[self.name] = last
        return int(last)

    def event(self, event: Event, replay: bool) -> None:
        self.lastEventId = max(self.lastEventId, event["id"])
        if event["id"] in self.events:
            return
        kind, who = event["kind"], event.get("name")
        conv = conversation_of(event, self.name)
        if kind in ("edit", "react"):
            self._hold(event)
            target = self.events.get(event.get("target"))  # type: ignore[arg-type]
            if target is not None and (target["kind"] == "message" or (kind == "react" and target["kind"] == "file")):
                changed = wire.apply_edit(target, event) if kind == "edit" else wire.apply_reaction(target, event)
                self.events[target["id"]] = changed
                self.listener.eventChanged(changed, event, conv)
            return
        if kind == "delete":
            target = self.events.get(event.get("target"))  # type: ignore[arg-type]
            if target is not None:
                self._drop(target)
                self.listener.eventRemoved(target, conv)
            self._hold(event)
            return
        if kind in ("message", "file", "announce") and who:
            if conv in self.typing and who in self.typing[conv]:
                self.stoppedTyping(conv, who)
            if not replay and who != self.name:
                self.unread[conv] = self.unread.get(conv, 0) + 1
        if kind in ("room-join", "room-leave"):
            self._membership(event)
        self._hold(event)
        if not (kind == "message" and who == self.name and self.acked(event)):
            self.listener.eventReceived(event, replay)
        if kind == "join" and who and who not in self.users:
            self.users.append(who)
            self.listener.usersChanged(list(self.users))
        elif kind == "leave" and who in self.users:
            self.users.remove(who)
            self.listener.usersChanged(list(self.users))

    def _membership(self, event: Event) -> None:
        room = self.rooms.get(event.get("room") or "")
        who = event.get("name")
        if event["kind"] == "room-leave" and who == self.name:
            self.rooms.pop(event.get("room") or "", None)
            self.listener.roomsChanged(self.roomNames())
        elif room is not None and who:
            members = room.setdefault("members", [])
            if event["kind"] == "room-join" and who not in members:
                members.append(who)
            elif event["kind"] == "room-leave" and who in members:
                members.remove(who)

    def stored(self, ack: Dict[str, Any], said: Optional[Dict[str, Any]]) -> Optional[Event]:
        """Our message ``said`` was stored (its ``ack``): the event as the conversation holds it."""
        if ack["id"] in self.events or said is None:
            return None
        event = {"id": ack["id"], "ts": ack["ts"], "kind": "message", "name": self.name, "text": said["text"],
                 "cid": said["cid"]}
        event.update({k: said[k] for k in ("room", "to") if k in said})
        target = self.events.get(said.get("reply"))  # type: ignore[arg-type]
        if target is not None:  # (quoted as the server quotes it for everyone else)
            event["reply"] = {"id": target["id"], "name": target.get("name"),
                              "text": str(target.get("text") or (target.get("file") or {}).get("name") or "")
                              [:wire.REPLY_EXCERPT]}
        if "room" not in event and "to" not in event:
            event["room"] = wire.DEFAULT_ROOM
        self._hold(event)
        return event

    def older(self, events: List[Any]) -> List[Event]:
        """A history page: the events not held yet (now held)."""
        fresh = [e for e in events if isinstance(e, dict) and isinstance(e.get("id"), int) and e["id"] not in self.events]
        for event in fresh:
            self._hold(event)
        return fresh
