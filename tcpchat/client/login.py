"""
The client's half of logging in: which certificate to accept (a join link's,
else the pinned one), ``hello`` (the passkey to a pinned server, a SPAKE2
proof otherwise), the proof's second step, and what a refusal means.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from tcpchat import wire
from tcpchat.client.errors import IdentityChanged, LoginRefused
from tcpchat.wire import ErrorCode

#: Login errors that retrying with the same details cannot fix.
LOGIN_REFUSALS = frozenset(
    {ErrorCode.BAD_PASSKEY, ErrorCode.BAD_NAME, ErrorCode.NAME_TAKEN, ErrorCode.BAD_VERSION, ErrorCode.TOO_MANY_ATTEMPTS,
     ErrorCode.BANNED, ErrorCode.NAME_PROTECTED}
)


def identity_complaint(client: Any, pinned: Optional[str]) -> Optional[str]:
    """Why the certificate just shown is not to be trusted (None: it is): the join link's, else the pin, decides."""
    where = f"the server at {client.host}:{client.port}"
    if client.expectedFingerprint is not None:
        if client.fingerprint == client.expectedFingerprint:
            return None
        return (f"WARNING: {where} is not the one in the join link: it shows certificate {client.fingerprint}, the "
                f"link names {client.expectedFingerprint}. Someone may be intercepting the connection; ask whoever "
                "runs the server for a new link.")
    if pinned is None or pinned == client.fingerprint or client.trustNewCertificate:
        return None
    return (f"WARNING: {where} shows a different certificate than before ({client.fingerprint}; it was {pinned}). "
            "Someone may be intercepting the connection. If the server was reinstalled, ask its operator, then "
            "forget the old certificate and connect again.")


def hello(client: Any, proto: Any) -> Optional[Dict[str, Any]]:
    """The hello frame for a fresh connection, or None if the server's certificate is refused (then it is closed)."""
    frame: Dict[str, Any] = {
        "type": "hello",
        "version": wire.PROTOCOL_VERSION,
        "name": client.name,
        "client": "tcpchat-python",
        "features": list(wire.FEATURES),
    }
    pinned = None
    if client.tls:
        from tcpchat import tls

        client.fingerprint = tls.peer_fingerprint(proto.transport)
        pinned = client.knownServers.get(client.host, client.port)
        complaint = identity_complaint(client, pinned)
        if complaint is not None:
            proto.transport.abortConnection()
            client._giveUp(IdentityChanged(complaint), complaint)
            return None
        if client.expectedFingerprint is not None and pinned != client.fingerprint:
            pinned = None  # the link vouches for it (newer word than a pin); the login proves it, then it is pinned
    if pinned is not None and pinned == client.fingerprint:
        frame["passkey"] = client.passkey  # a pinned, already-proved server: the cheap way
        if client.password:
            frame["password"] = client.password
    else:
        # first contact (or no TLS): prove the passkey without sending it
        from tcpchat import pake

        client._pake, message = pake.client_start(client.passkey)
        frame["pake"] = message.hex()
    if client.everLoggedIn:
        frame["after"] = client.lastEventId
        frame["session"] = client.info.get("session")
    return frame


def pake_answer(client: Any, proto: Any, frame: Dict[str, Any]) -> None:
    """The server's half of the proof: check it, and confirm ours (or give up: the passkey is wrong)."""
    from tcpchat import pake
    from tcpchat import tls

    state, client._pake = client._pake, None
    if state is None:
        return
    try:
        reply = pake.client_finish(state, bytes.fromhex(frame["msg"]), bytes.fromhex(frame["confirm"]),
                                   tls.channel_binding(proto.transport))
    except pake.PakeError:
        proto.transport.abortConnection()
        # the server could not prove it knows the passkey: almost always a typo; on a first
        # contact it could also be an impostor, and the two cannot be told apart (by design)
        message = "Wrong passkey."
        client._giveUp(LoginRefused(ErrorCode.BAD_PASSKEY, message), message)
        return
    confirm: Dict[str, Any] = {"type": "pake-confirm", "confirm": reply.hex()}
    if client.password:
        confirm["password"] = client.password  # only now: the server has proved it knows the passkey
    proto.sendFrame(confirm)


def welcomed(client: Any, frame: Dict[str, Any]) -> None:
    if client.tls and client.fingerprint and client.knownServers.get(client.host, client.port) != client.fingerprint:
        client.knownServers.pin(client.host, client.port, client.fingerprint)  # proved by the login: trusted now
    client.loggedIn = True
    client.everLoggedIn = True
    client.info = frame
    client.model.welcome(frame)
    client.listener.welcomed(frame)
    client.listener.usersChanged(list(client.users))


def invite_link(client: Any, with_passkey: bool = False) -> str:
    """
    A join link for someone else: the address the server gave for its
    network (else the one we used), the certificate this login proved (not
    the server's word) and, if asked, the passkey.
    """
    from tcpchat import link

    try:
        joined = link.parse(str(client.info.get("link") or ""))
    except link.BadLink:
        joined = link.JoinLink(client.host, client.port)
    fingerprint = client.fingerprint if client.tls else None
    return link.JoinLink(joined.host, joined.port, fingerprint, client.passkey if with_passkey else None,
                         joined.name).format()
