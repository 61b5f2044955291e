"""
What a logged-in user may ask for, and how each request is answered: one
handler per frame type, over the session contract (:class:`ISession`), the
factory's shared state and the store.  No transport, no sockets.

Each handler is ``f(session, frame)`` with ``frame`` already validated by
:mod:`tcpchat.wire`; a :class:`ProtocolError` it raises becomes an ``error``
answering the frame (its ``ref``, ``cid`` and ``req`` echoed).
"""

from __future__ import annotations

from typing import Any, Dict

from twisted.logger import Logger

from tcpchat import wire
from tcpchat.server import moderation, social
from tcpchat.server.login import send_room
from tcpchat.server.table import ANY, EDITS, ROOMS, handles
from tcpchat.store.errors import StoreBusy, StoreClosed
from tcpchat.wire import ErrorCode, ProtocolError

log = Logger(namespace="tcpchat.server.rules")
Frame = Dict[str, Any]


# ---------------------------------------------------------------- messages

#: seconds after a refused ``say`` in which further ones are refused too (PROTOCOL.rst: wait a second, resend)
SLOW_DOWN_PAUSE = 1.0


@handles("say")
def say(session: Any, frame: Frame) -> None:
    factory = session.factory
    cid = frame.get("cid")
    if wire.is_blank(frame["text"]):
        raise ProtocolError(ErrorCode.EMPTY_MESSAGE)
    aud, where = factory.directory.resolve(session, frame)
    muted = factory.moderation.refusal("mute", session.nkey)
    if muted is not None:
        raise ProtocolError(ErrorCode.MUTED, muted)
    now = factory.clock.seconds()
    # after a slow-down, no message of this user is taken for a second, even if the rate would allow one: a
    # message sent right behind a refused one must not overtake it (they are stored in the order written)
    if now < session.sayRefusedUntil:
        raise ProtocolError(ErrorCode.SLOW_DOWN)
    if not session.bucket.take():
        session.sayRefusedUntil = now + SLOW_DOWN_PAUSE
        raise ProtocolError(ErrorCode.SLOW_DOWN)
    session.active()
    event = {"kind": "message", "name": session.name, "nkey": session.nkey, "text": frame["text"], **where,
             **social.placement(aud)}
    if cid is not None:
        event["cid"] = cid
    if frame.get("reply") is not None:
        session.run(frame, _reply(session, frame, event, aud))
        return
    _submit_say(session, frame, event)


async def _reply(session: Any, frame: Frame, event: Dict[str, Any], aud: Any) -> None:
    """A reply carries what it answers (its id, author and the start of its text), from the same conversation."""
    target = await session.factory.findEvent(frame["reply"])
    if target is None or target["kind"] not in ("message", "file") or \
            social.conv_of(social.audience(target)) != social.conv_of(aud):
        raise ProtocolError(ErrorCode.NO_SUCH_MESSAGE, "There is no such message in this conversation to reply to.")
    quoted = target.get("text") if target["kind"] == "message" else (target.get("file") or {}).get("name", "")
    event["reply"] = {"id": target["id"], "name": target.get("name"), "text": str(quoted or "")[:wire.REPLY_EXCERPT]}
    _submit_say(session, frame, event)


def _submit_say(session: Any, frame: Frame, event: Dict[str, Any]) -> None:
    factory = session.factory
    cid = frame.get("cid")
    received = factory.clock.seconds()

    def stored(result: Any) -> None:
        stored, _ = result
        factory.stats.ackSeconds.observe(factory.clock.seconds() - received)
        ack = {"type": "ack", "id": stored["id"], "ts": stored["ts"]}
        if cid is not None:
            ack["cid"] = cid
        session.answer(frame, ack)

    def failed(failure: Any) -> None:
        if failure.check(StoreBusy):
            session.refuse(frame, ErrorCode.STORE_BUSY)
        elif failure.check(StoreClosed):
            session.refuse(frame, ErrorCode.SERVER_BUSY, "The server is shutting down; try again in a moment.")
        else:
            session.refuse(frame, ErrorCode.INTERNAL, "The message could not be stored; it was not sent.")

    factory.submit(event).addCallbacks(stored, failed)


async def _own_message(session: Any, event_id: int, kinds: tuple = ("message",)) -> Dict[str, Any]:
    """The stored event ``event_id`` if this user may read it (else no-such-message, as for a stranger)."""
    event = await session.factory.findEvent(event_id)
    if event is None or event["kind"] not in kinds or not session.canSee(social.audience(event)):
        raise ProtocolError(ErrorCode.NO_SUCH_MESSAGE)
    return event


@handles("edit", EDITS)
def edit(session: Any, frame: Frame) -> None:
    """Change the text of one's own message: stored as an ``edit`` event; the message then reads as edited."""
    factory = session.factory
    if wire.is_blank(frame["text"]):
        raise ProtocolError(ErrorCode.EMPTY_MESSAGE)
    muted = factory.moderation.refusal("mute", session.nkey)
    if muted is not None:
        raise ProtocolError(ErrorCode.MUTED, muted)
    if not session.bucket.take():
        raise ProtocolError(ErrorCode.SLOW_DOWN)

    async def change() -> None:
        target = await _own_message(session, frame["id"])
        if wire.name_key(target.get("name", "")) != session.nkey:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "Only its author can edit a message.")
        aud = social.audience(target)
        event = {"kind": "edit", "name": session.name, "nkey": session.nkey, "target": target["id"],
                 "text": frame["text"], **social.placement(aud)}
        event.update({k: target[k] for k in ("room", "to") if k in target})
        stored, _ = await factory.submit(event)
        session.answer(frame, {"type": "done", "ref": "edit", "id": stored["id"]})

    session.active()
    session.run(frame, change())


@handles("react", EDITS)
def react(session: Any, frame: Frame) -> None:
    """Add (or, with ``on: false``, take back) one of the reactions to a message or a shared file."""
    factory = session.factory

    async def change() -> None:
        target = await _own_message(session, frame["id"], ("message", "file"))
        aud = social.audience(target)
        event = {"kind": "react", "name": session.name, "nkey": session.nkey, "target": target["id"],
                 "emoji": frame["emoji"], "on": frame.get("on", True), **social.placement(aud)}
        if "room" in target:
            event["room"] = target["room"]
        elif "to" in target:  # the other one of the two, as this user sees the conversation
            author = target.get("name", "")
            event["to"] = target["to"] if wire.name_key(author) == session.nkey else author
        stored, _ = await factory.submit(event)
        session.answer(frame, {"type": "done", "ref": "react", "id": stored["id"]})

    session.active()
    session.run(frame, change())


@handles("history")
def history(session: Any, frame: Frame) -> None:
    factory = session.factory
    aud, where = factory.directory.resolve(session, frame)
    limit = frame.get("limit", factory.limits.history or 50)
    d = factory.read(session, factory.store.events_before, frame.get("before"), limit + 1, social.conv_of(aud))

    def send(events: Any) -> None:
        if events is None:
            return  # gone meanwhile
        more = len(events) > limit
        # (deletions, edits and reactions are already applied to the messages they change)
        events = [e for e in events[-limit:] if e["kind"] not in ("delete", "edit", "react")]
        reply = {"type": "history-page", "events": events, "more": more}
        if session.rich:
            reply.update(where)
        # a page holds what fits in one frame: the newest events, the rest is "more"
        session.answer(frame, wire.fit(reply, "events", keep="last"))

    d.addCallbacks(send, session.internal, errbackArgs=(frame,))


@handles("search")
def search(session: Any, frame: Frame) -> None:
    factory = session.factory
    try:
        query = factory.store.parse_query(frame["q"])
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_QUERY) from None
    conv = None
    if "room" in frame or "to" in frame:
        aud, _ = factory.directory.resolve(session, frame)
        conv = social.conv_of(aud)
    limit = frame.get("limit", 20)
    rooms = [social.room_conv(k) for k in session.rooms]
    me = session.nkey if session.rich else "\n"  # a key no one has: no direct messages
    d = factory.read(session, factory.store.search, query, rooms, me, conv, frame.get("before"), limit + 1)

    def send(events: Any) -> None:
        if events is None:
            return  # gone meanwhile
        reply = {"type": "search-results", "q": frame["q"], "events": events[:limit], "more": len(events) > limit}
        session.answer(frame, wire.fit(reply, "events", keep="first"))

    d.addCallbacks(send, session.internal, errbackArgs=(frame,))


@handles("delete")
def delete(session: Any, frame: Frame) -> None:
    factory = session.factory

    async def remove() -> None:
        event = await factory.findEvent(frame["id"])
        aud = social.audience(event) if event is not None else None
        if event is None or event["kind"] not in ("message", "file") or not session.canSee(aud):
            raise ProtocolError(ErrorCode.NO_SUCH_MESSAGE)
        if not session.operator and wire.name_key(event.get("name", "")) != session.nkey:
            raise ProtocolError(ErrorCode.NOT_ALLOWED)
        assert aud is not None
        tomb = {"kind": "delete", "name": event.get("name"), "target": event["id"], "by": session.name,
                **social.placement(aud)}
        tomb.update({k: event[k] for k in ("room", "to") if k in event})
        await factory.submit(tomb)
        log.info("{actor} deleted message {id} by {name}", actor=session.name, id=event["id"], name=event.get("name"))
        if session.operator:
            await factory.store.audit(factory.clock.seconds(), session.name, "delete",
                                      {"id": event["id"], "name": event.get("name")})

    session.run(frame, remove())


@handles("who")
def who(session: Any, frame: Frame) -> None:
    reply = {"type": "users", "users": session.factory.userNames()}
    if session.rich:
        reply["presence"] = session.factory.presence()
    if session.profiles:
        reply["profiles"] = session.factory.profiles.online(session.factory)
    session.answer(frame, wire.fit(reply, "users"))


# ---------------------------------------------------------------- rooms, hints and presence

@handles("join", ROOMS)
def join(session: Any, frame: Frame) -> None:
    factory = session.factory
    directory, limits = factory.directory, factory.limits
    key = wire.name_key(frame["room"])
    if key not in session.rooms:
        if len(session.rooms) > limits.max_joined:  # (the default room does not count)
            raise ProtocolError(ErrorCode.TOO_MANY_ROOMS, f"You are in {limits.max_joined} rooms; leave one first.")
        if key not in directory.rooms and len(directory.rooms) > limits.max_rooms:
            raise ProtocolError(ErrorCode.TOO_MANY_ROOMS, "This server has as many rooms as it allows.")
    room, fresh = directory.join(frame["room"], session.nkey, session.name)
    session.rooms.add(key)
    send_room(session, key, frame)  # the answer first, then (once stored) the room-join event
    if fresh:
        log.info("{name} joined room {room}", name=session.name, room=room)
        event = {"kind": "room-join", "name": session.name, "nkey": session.nkey, "room": room,
                 **social.placement(("room", key))}
        factory.submit(event).addErrback(lambda f: None)


@handles("leave", ROOMS)
def leave(session: Any, frame: Frame) -> None:
    room = session.factory.directory.leave(frame["room"], session.nkey)
    key = wire.name_key(room)
    log.info("{name} left room {room}", name=session.name, room=room)
    event = {"kind": "room-leave", "name": session.name, "nkey": session.nkey, "room": room,
             **social.placement(("room", key))}
    # the leaver sees its own leaving, then nothing more of the room
    session.factory.submit(event).addBoth(lambda _: session.rooms.discard(key))


@handles("rooms", ROOMS)
def rooms(session: Any, frame: Frame) -> None:
    listing = session.factory.directory.listing(session)
    session.answer(frame, wire.fit({"type": "room-list", "rooms": listing}, "rooms"))


@handles("typing", ROOMS)
def typing(session: Any, frame: Frame) -> None:
    factory = session.factory
    aud, where = factory.directory.resolve(session, frame)
    conv = social.conv_of(aud)
    now = factory.clock.seconds()
    if now - session.typingSent.get(conv, -1e9) < factory.limits.typing_interval:
        return  # relayed recently: typing notices are hints, extra ones are dropped
    if factory.moderation.active("mute", session.nkey) is not None:
        return
    session.typingSent[conv] = now
    session.active()
    factory.tellConversation(aud, {"type": "typing", "name": session.name, **where}, exclude=session)


@handles("read", ROOMS)
def read(session: Any, frame: Frame) -> None:
    factory = session.factory
    aud, where = factory.directory.resolve(session, frame)
    last = min(frame["id"], factory.lastId)
    conv = social.conv_of(aud)
    if factory.directory.mark_read(conv, session.nkey, session.name, last):
        factory.tellConversation(aud, {"type": "seen", "name": session.name, "id": last, **where}, exclude=session)


@handles("presence")
def presence(session: Any, frame: Frame) -> None:
    away = frame.get("away", session.away)
    session.autoAway = False
    if not away:
        session.lastActive = session.factory.clock.seconds()
    session.setPresence(away, frame.get("status", session.status).strip())


# ---------------------------------------------------------------- moderation

@handles("oper")
def oper(session: Any, frame: Frame) -> None:
    factory = session.factory
    guard = factory.operGuard  # its own lockout: a mistyped admin key must not lock anyone out of logging in
    locked = guard.locked(session.host)
    if locked is not None:
        raise ProtocolError(ErrorCode.BAD_PASSKEY,
                            f"Too many wrong admin passkeys from your address; try again in {int(locked) + 1} s.")
    if not factory.moderation.check_oper(frame["passkey"]):
        guard.failed(session.host)
        log.warn("{name} from {peer} gave a wrong admin passkey", name=session.name, peer=session.peer)
        raise ProtocolError(ErrorCode.BAD_PASSKEY, "Wrong admin passkey.")
    session.operator = True
    log.info("{name} from {peer} is now an operator", name=session.name, peer=session.peer)
    session.answer(frame, {"type": "oper", "actions": ["delete", *moderation.ACTIONS]})


@handles("mod")
def mod(session: Any, frame: Frame) -> None:
    if not session.operator:
        raise ProtocolError(ErrorCode.NOT_OPERATOR)

    async def act() -> None:
        session.answer(frame, await session.factory.moderation.act(session, frame))

    session.run(frame, act())


# ---------------------------------------------------------------- keeping the connection

@handles("ping", ANY)
def ping(session: Any, frame: Frame) -> None:
    reply: Dict[str, Any] = {"type": "pong"}
    if "n" in frame:
        reply["n"] = frame["n"]
    session.answer(frame, reply)


@handles("pong", ANY)
def pong(session: Any, frame: Frame) -> None:
    pass  # hearing anything is what counts


@handles("bye", ANY)
def bye(session: Any, frame: Frame) -> None:
    session.leaveReason = "quit"
    session.close()


# ---------------------------------------------------------------- files (handled by the file service)

@handles("upload")
def upload(session: Any, frame: Frame) -> None:
    session.files().upload(session, frame)


@handles("upload-cancel")
def upload_cancel(session: Any, frame: Frame) -> None:
    session.files().cancelUpload(session, frame["tid"])


@handles("download")
def download(session: Any, frame: Frame) -> None:
    session.files().download(session, frame)


@handles("download-cancel")
def download_cancel(session: Any, frame: Frame) -> None:
    session.files().cancelDownload(session, frame["tid"])


@handles("file-link")
def file_link(session: Any, frame: Frame) -> None:
    session.files().link(session, frame)
