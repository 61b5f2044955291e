"""
What the client does with each frame the server sends: one function per
frame type, ``f(client, proto, frame)``, in :data:`FRAMES`.  The conversation
itself is the model's business; this is the glue (answers to requests, the
outbox, refusals, the connection state).
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from tcpchat.client import login
from tcpchat.client.errors import LoginRefused, RequestFailed
from tcpchat.client.listener import CONNECTED, DISCONNECTED
from tcpchat.wire import ErrorCode

Frame = Dict[str, Any]
FRAMES: Dict[str, Callable[[Any, Any, Frame], None]] = {}


def on(kind: str) -> Callable[[Callable[[Any, Any, Frame], None]], Callable[[Any, Any, Frame], None]]:
    def register(f: Callable[[Any, Any, Frame], None]) -> Callable[[Any, Any, Frame], None]:
        FRAMES[kind] = f
        return f

    return register


@on("pake")
def pake(client: Any, proto: Any, frame: Frame) -> None:
    login.pake_answer(client, proto, frame)


@on("welcome")
def welcome(client: Any, proto: Any, frame: Frame) -> None:
    login.welcomed(client, frame)


@on("synced")
def synced(client: Any, proto: Any, frame: Frame) -> None:
    client._setState(CONNECTED, f"Connected to {client.info.get('server', client.host)} as {client.name}.")
    client.listener.synced()
    client.outbox.connectionLost()  # written offline, or not acknowledged before a drop: all of it goes again
    client.sender.pump()
    client.transfers.reconnected()
    if not client._loginWaiter.called:
        client._loginWaiter.callback(client.info)


@on("event")
def event(client: Any, proto: Any, frame: Frame) -> None:
    client.model.event({k: v for k, v in frame.items() if k not in ("type", "replay")}, bool(frame.get("replay")))


@on("ack")
def ack(client: Any, proto: Any, frame: Frame) -> None:
    cid = frame.get("cid")
    said = client.outbox.pop(cid, None) if cid else None
    client.sender.changed()
    stored = client.model.stored(frame, said)
    if stored is not None:
        client.listener.messageAcked(cid, stored)


@on("users")
def users(client: Any, proto: Any, frame: Frame) -> None:
    client.model.usersNow(frame["users"], frame.get("profiles"))


@on("roster")
def roster(client: Any, proto: Any, frame: Frame) -> None:
    client.model.rosterChanged(frame)
    if frame.get("more"):  # more came and went than one frame lists: ask for the whole list
        client.who()


@on("profile")
def profile(client: Any, proto: Any, frame: Frame) -> None:
    client.model.profileChanged(frame)


@on("history-page")
def history_page(client: Any, proto: Any, frame: Frame) -> None:
    client.listener.historyPage(client.model.older(frame["events"]), bool(frame["more"]))


@on("room")
def room(client: Any, proto: Any, frame: Frame) -> None:
    client.model.room(frame)
    client._answer(frame)


@on("presence")
def presence(client: Any, proto: Any, frame: Frame) -> None:
    client.model.presenceChanged(frame)


@on("typing")
def typing(client: Any, proto: Any, frame: Frame) -> None:
    client.model.typingSeen(frame)


@on("seen")
def seen(client: Any, proto: Any, frame: Frame) -> None:
    client.model.seen(frame)


@on("room-list")
@on("search-results")
@on("done")
@on("registered")
def answer(client: Any, proto: Any, frame: Frame) -> None:
    client._answer(frame)


@on("oper")
def oper(client: Any, proto: Any, frame: Frame) -> None:
    client.operator = True
    client._answer(frame)


@on("mod-done")
def mod_done(client: Any, proto: Any, frame: Frame) -> None:
    if isinstance(frame.get("passkey"), str) and frame["passkey"]:
        client.passkey = frame["passkey"]  # we rotated it: our next login needs the new one
    if not client._answer(frame) and frame.get("message"):
        client.listener.notice(str(frame["message"]))


@on("ping")
def ping(client: Any, proto: Any, frame: Frame) -> None:
    reply: Frame = {"type": "pong"}
    if "n" in frame:
        reply["n"] = frame["n"]
    proto.sendFrame(reply)


@on("bye")
def bye(client: Any, proto: Any, frame: Frame) -> None:
    message = str(frame.get("message") or "The server closed the connection.")
    if frame.get("reason") in ("kicked", "banned"):
        # the operator removed us: coming straight back would be rude (and refused); the state says why, once
        client.stopped = True
        client._stopService().addErrback(lambda f: None)
        client._setState(DISCONNECTED, message)
        return
    client.listener.errorReceived("bye", message)


@on("upload-done")
def upload_done(client: Any, proto: Any, frame: Frame) -> None:
    client.transfers.uploadDone(frame)


@on("download-start")
def download_start(client: Any, proto: Any, frame: Frame) -> None:
    client.transfers.started(frame)


@on("download-done")
def download_done(client: Any, proto: Any, frame: Frame) -> None:
    client.transfers.finishedDownload(frame)


@on("error")
def error(client: Any, proto: Any, frame: Frame) -> None:
    code = frame["code"]
    message = frame.get("message") or code
    ref = frame.get("ref")
    if ref not in ("hello", "pake-confirm") and client._answer(frame, RequestFailed(code, message)):
        return  # e.g. a wrong admin passkey: only that request failed
    if ref == "hello" or code in login.LOGIN_REFUSALS:
        if code in login.LOGIN_REFUSALS or not client.everLoggedIn:
            client._giveUp(LoginRefused(code, message), message)
        else:
            client.listener.errorReceived(code, message)  # e.g. busy: the server closes and we retry
        return
    tid = frame.get("tid")
    if isinstance(tid, int):
        transfer = client.transfers.byTid(tid, True if ref in ("upload", "data") else False)
        if transfer is None:
            transfer = client.transfers.byTid(tid, None)
        if transfer is not None:
            client.transfers.fail(transfer, message)
            return
    cid = frame.get("cid")
    if cid in client.outbox:
        if code in (ErrorCode.SLOW_DOWN, ErrorCode.INTERNAL, ErrorCode.STORE_BUSY):
            # not stored: try again in a moment (the server de-duplicates by cid)
            client.sender.rest(cid)
            if code in (ErrorCode.SLOW_DOWN, ErrorCode.STORE_BUSY):
                return  # nothing for the user to do
        elif code == ErrorCode.SERVER_BUSY:
            client.outbox.inFlight.discard(cid)
            return  # the server is going down: it stays in the outbox and is sent after reconnecting
        else:
            del client.outbox[cid]  # refused for good; retrying cannot help
            client.sender.changed()
    client.listener.errorReceived(code, message)
