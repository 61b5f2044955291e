"""
The running server's console: a UNIX socket in the data directory
(``DATA-DIR/admin.sock``, mode 0600, so only the server's own account — and
root — can connect) that ``tcpchat-admin`` talks to.  No chat client and no
admin passkey are needed: the file system's permissions are the check, and
the peer's uid is checked again on connecting (``SO_PEERCRED``).

One JSON object per line each way: ``{"action": …, members…}`` →
``{"ok": true, …}`` or ``{"ok": false, "code", "message"}``.  Operator
actions are the ``mod`` frame's, validated by the same codec and carried out
by the same :class:`~tcpchat.server.moderation.Moderation`, so they are
logged and audited exactly like ``/oper`` ones (the actor is ``console``).
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any, Dict, List

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from tcpchat import wire
from tcpchat.wire import ErrorCode, ProtocolError

#: what the console can do besides the operator actions of ``mod``
QUERIES = ("status", "who", "passkey", "audit", "expire")
#: the socket's file name in the data directory
SOCKET_NAME = "admin.sock"
#: the longest request line
MAX_REQUEST = 64 * 1024
#: audit records ``audit`` returns at most
MAX_AUDIT = 1000


class Console:
    """Who acts when the console does: what Moderation needs of a session."""

    name = "console"

    def __init__(self, uid: int) -> None:
        self.peer = f"admin socket, uid {uid}"
        self.host = None
        self.operator = True


def peer_uid(transport: Any) -> int:
    """The uid of the process at the other end of a UNIX socket (Linux), or -1 if it cannot be known."""
    try:
        sock = transport.getHandle()
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[1])
    except (AttributeError, OSError):
        return -1


class AdminProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST
    log = Logger()
    factory: "AdminFactory"
    transport: Any

    def connectionMade(self) -> None:
        self.uid = peer_uid(self.transport)
        if self.uid not in (os.getuid(), 0):  # (the socket's mode already says so; this says it again)
            self.log.warn("Admin socket: refused a connection from uid {uid}", uid=self.uid)
            self.reply({"ok": False, "code": ErrorCode.NOT_OPERATOR, "message": "Not the server's account."})
            self.transport.loseConnection()
            return
        self.console = Console(self.uid)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.reply({"ok": False, "code": ErrorCode.FRAME_TOO_LARGE, "message": "Request too long."})
        self.transport.loseConnection()

    def reply(self, answer: Dict[str, Any]) -> None:
        self.sendLine(json.dumps(answer, ensure_ascii=False).encode("utf-8"))

    def lineReceived(self, line: bytes) -> None:
        d = Deferred.fromCoroutine(self.factory.handle(self.console, line))

        def failed(failure: Any) -> Dict[str, Any]:
            if failure.check(ProtocolError):
                return {"ok": False, "code": failure.value.code, "message": failure.value.message}
            self.log.failure("Admin socket: the request failed", failure)
            return {"ok": False, "code": ErrorCode.INTERNAL, "message": "The server could not do that."}

        d.addErrback(failed).addCallback(self.reply)


class AdminFactory(Factory):
    protocol = AdminProtocol  # type: ignore[assignment]

    def __init__(self, chat: Any, server: Any) -> None:
        """:param chat: the ChatFactory; :param server: the TcpchatService (passkey, start time)."""
        self.chat = chat
        self.server = server

    async def handle(self, console: Console, line: bytes) -> Dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_FRAME, "Each request is one JSON object on a line.") from None
        if not isinstance(request, dict) or not isinstance(request.get("action"), str):
            raise ProtocolError(ErrorCode.BAD_FRAME, "A request needs an action.")
        action = request["action"]
        if action in QUERIES:
            answer: Dict[str, Any] = await getattr(self, "_" + action)(request)
        else:
            members = {k: v for k, v in request.items() if k != "action"}
            # the operator's own frame, through the one codec: what /oper could not send, this cannot either
            frame = wire.decode(wire.encode({"type": "mod", "action": action, **members}))
            answer = await self.chat.moderation.act(console, frame)
            answer.pop("type", None)
        answer["ok"] = True
        return answer

    async def _status(self, request: Dict[str, Any]) -> Dict[str, Any]:
        chat = self.chat
        clock = chat.clock
        database = chat.store.path
        size = sum(os.path.getsize(p) for p in (database, database + "-wal") if os.path.exists(p))
        from tcpchat import __version__

        return {"server": chat.serverName, "version": __version__, "uptime": round(clock.seconds() - self.server.startedAt),
                "online": len(chat.users), "connections": len(chat.connections), "last_event": chat.lastId,
                "files_bytes": chat.files.storedBytes if chat.files is not None else 0, "database_bytes": size,
                "retention": self.server.retention()}

    async def _who(self, request: Dict[str, Any]) -> Dict[str, Any]:
        now = self.chat.clock.seconds()
        people: List[Dict[str, Any]] = []
        for session in sorted(self.chat.users.values(), key=lambda s: s.nkey):
            people.append({"name": session.name, "address": session.host, "via": getattr(session.link, "kind", "?"),
                           "connected": round(now - session.connectedAt), "away": session.away,
                           "status": session.status, "operator": session.operator})
        return {"users": people}

    async def _passkey(self, request: Dict[str, Any]) -> Dict[str, Any]:
        return {"passkey": self.server.passkey}

    async def _expire(self, request: Dict[str, Any]) -> Dict[str, Any]:
        retainer = self.server.retainer
        if retainer is None:
            raise ProtocolError(ErrorCode.BAD_FRAME, "Retention is off (start with --keep-messages or --keep-files).")
        events, files = await retainer.sweep()
        return {"message": f"Removed {events} events and {files} files past their time.", "events": events,
                "files": files}

    async def _audit(self, request: Dict[str, Any]) -> Dict[str, Any]:
        count = request.get("count", 20)
        if type(count) is not int or not 1 <= count <= MAX_AUDIT:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"count must be from 1 to {MAX_AUDIT}.")
        rows = await self.chat.store.audit_tail(count)
        return {"audit": [{"id": i, "ts": ts, "actor": actor, "action": action, "detail": json.loads(detail or "{}")}
                          for i, ts, actor, action, detail in rows]}
