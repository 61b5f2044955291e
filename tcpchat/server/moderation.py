"""
Moderation: the server operator's powers.

A connection becomes an *operator* by sending ``oper`` with the admin passkey
(printed at start-up, separate from the passkey people join with).  An
operator can kick, ban (a name or an address, for a time or for good), mute,
delete any message, rotate the join passkey live and announce.  Bans and
mutes are stored (they survive a restart); every action is written to the
``audit`` table and the server log.
"""

from __future__ import annotations

import hmac
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from tcpchat import auth, wire
from tcpchat.wire import ErrorCode, ProtocolError

#: What ``mod.action`` may be.
#: what another node must do its part of (its users, its memory)
REMOTE_ACTIONS = ("kick", "ban", "unban", "mute", "unmute", "rotate", "release")
ACTIONS = ("kick", "ban", "unban", "mute", "unmute", "rotate", "announce", "bans", "release")


class Ban:
    def __init__(self, until: Optional[float], reason: Optional[str], actor: str) -> None:
        self.until = until
        self.reason = reason
        self.actor = actor

    def remaining(self, now: float) -> Optional[float]:
        """Seconds left (None: for good); <= 0 once expired."""
        return None if self.until is None else self.until - now

    def describe(self, now: float) -> str:
        left = self.remaining(now)
        when = "for good" if left is None else f"for {_duration(left)} more"
        return when + (f" ({self.reason})" if self.reason else "")


def _duration(seconds: float) -> str:
    seconds = max(1, int(seconds + 0.999))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


class Moderation:
    """Bans, mutes and operator actions of one server."""

    log = Logger()

    def __init__(self, factory: Any, admin_passkey: Optional[str]) -> None:
        self.factory = factory
        self.admin_passkey = auth.canonical_passkey(admin_passkey) if admin_passkey else None
        #: (kind, value) -> Ban; kinds: "name" (a name key), "address", "mute" (a name key)
        self.bans: Dict[Tuple[str, str], Ban] = {}

    def load(self, rows: List[Tuple[Any, ...]]) -> None:
        for kind, value, until, reason, actor, _ in rows:
            self.bans[(kind, value)] = Ban(until, reason, actor or "")

    def active(self, kind: str, value: str) -> Optional[Ban]:
        """The ban of this kind on ``value`` if it is in force."""
        ban = self.bans.get((kind, value))
        if ban is None:
            return None
        left = ban.remaining(self.factory.clock.seconds())
        if left is not None and left <= 0:
            del self.bans[(kind, value)]
            self.factory.store.remove_ban(kind, value).addErrback(lambda f: None)
            return None
        return ban

    def refusal(self, kind: str, value: str) -> Optional[str]:
        """A sentence for someone a ban applies to, or None."""
        ban = self.active(kind, value)
        if ban is None:
            return None
        what = {"name": "That name is banned", "address": "Your address is banned", "mute": "You are muted"}[kind]
        return f"{what} {ban.describe(self.factory.clock.seconds())}."

    def check_oper(self, offered: str) -> bool:
        if self.admin_passkey is None:
            return False
        return hmac.compare_digest(self.admin_passkey.encode(), auth.canonical_passkey(offered).encode())

    # ------------------------------------------------------------ actions

    async def act(self, session: Any, frame: Dict[str, Any]) -> Dict[str, Any]:
        """Carry out an operator's ``mod`` frame; returns the ``mod-done`` frame."""
        action = frame["action"]
        if action not in ACTIONS:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"mod.action must be one of {', '.join(ACTIONS)}.")
        handler = getattr(self, "_" + action)
        reply: Dict[str, Any] = await handler(session, frame)
        detail = {k: v for k, v in frame.items() if k not in ("type", "action", "passkey")}
        now = self.factory.clock.seconds()
        self.log.info("Operator {actor} ({peer}): {action} {detail}", actor=session.name, peer=session.peer, action=action,
                      detail=detail)
        await self.factory.store.audit(now, session.name, action, detail)
        if self.factory.cluster is not None and action in REMOTE_ACTIONS:  # the other nodes do their part
            self.factory.cluster.publish("mod", action=action, frame={**detail, "passkey": reply.get("passkey")})
        reply.setdefault("type", "mod-done")
        reply.setdefault("action", action)
        return reply

    def remote(self, action: Any, frame: Dict[str, Any]) -> Deferred:
        """Another node's operator acted: do this node's part (its own users, its memory)."""

        async def remote() -> None:
            factory = self.factory
            key = wire.name_key(frame["name"]) if isinstance(frame.get("name"), str) else None
            target = factory.users.get(key) if key else None
            if action in ("ban", "unban", "mute", "unmute"):
                self.bans.clear()
                self.load((await factory.store.load_social())["bans"])
            reason = frame.get("reason")
            if action == "kick" and target is not None:
                target.kick("kicked", f"You were removed by the operator: {reason or 'no reason given'}.")
            elif action == "ban":
                message = f"You are banned: {reason}." if reason else "You are banned from this server."
                address = frame.get("address")
                for session in list(factory.connections):
                    if session is target or (isinstance(address, str) and session.host == address):
                        session.kick("banned", message)
            elif action == "mute" and target is not None and key is not None:
                target.sendFrame(wire.error(ErrorCode.MUTED, self.refusal("mute", key)))
            elif action == "rotate" and isinstance(frame.get("passkey"), str):
                factory.verifier.rotate(frame["passkey"])
                factory.onPasskeyRotated(frame["passkey"])
            elif action == "release" and key is not None:
                factory.directory.secrets.pop(key, None)

        return Deferred.fromCoroutine(remote())

    def _target(self, frame: Dict[str, Any]) -> Tuple[str, Optional[Any]]:
        """The named user's name key and connection (None if offline)."""
        name = frame.get("name")
        if not name:
            raise ProtocolError(ErrorCode.BAD_FRAME, "This action needs a name.")
        key = wire.name_key(name)
        return key, self.factory.users.get(key)

    async def _kick(self, session: Any, frame: Dict[str, Any]) -> Dict[str, Any]:
        key, target = self._target(frame)
        cluster = self.factory.cluster
        if target is None and cluster is not None and cluster.elsewhere(key):
            return {"message": f"{frame['name']} was kicked (on another node)."}  # (that node does it)
        if target is None:
            raise ProtocolError(ErrorCode.NO_SUCH_USER, "Nobody of that name is online.")
        reason = frame.get("reason") or "no reason given"
        target.kick("kicked", f"You were removed by the operator: {reason}.")
        return {"message": f"{target.name} was kicked."}

    async def _ban(self, session: Any, frame: Dict[str, Any]) -> Dict[str, Any]:
        now = self.factory.clock.seconds()
        duration = frame.get("duration") or 0
        until = now + duration if duration else None
        reason = frame.get("reason")
        done: List[str] = []
        targets: List[Any] = []
        address = frame.get("address")
        key, target = self._target(frame) if frame.get("name") else (None, None)
        if address is True:  # checked before anything is stored: all or nothing
            if target is None:
                raise ProtocolError(ErrorCode.NO_SUCH_USER, "Banning by address needs the name of someone online.")
            address = target.host
        if key is not None:
            await self._put("name", key, until, reason, session.name, now)
            done.append(f"name {frame['name']}")
            if target is not None:
                targets.append(target)
        if address:
            await self._put("address", address, until, reason, session.name, now)
            done.append(f"address {address}")
            targets += [p for p in self.factory.connections if p.host == address and p not in targets]
        if not done:
            raise ProtocolError(ErrorCode.BAD_FRAME, "Ban a name, an address, or both.")
        message = f"You are banned: {reason}." if reason else "You are banned from this server."
        for target in targets:
            if target is not session:
                target.kick("banned", message)
        when = f"for {_duration(duration)}" if duration else "for good"
        return {"message": f"Banned {' and '.join(done)} {when}."}

    async def _unban(self, session: Any, frame: Dict[str, Any]) -> Dict[str, Any]:
        removed = []
        if frame.get("name"):
            if await self._remove("name", wire.name_key(frame["name"])):
                removed.append(frame["name"])
        address = frame.get("address")
        if isinstance(address, str) and await self._remove("address", address):
            removed.append(address)
        if not removed:
            raise ProtocolError(ErrorCode.BAD_FRAME, "No such ban.")
        return {"message": f"Lifted the ban on {' and '.join(removed)}."}

    async def _mute(self, session: Any, frame: Dict[str, Any]) -> Dict[str, Any]:
        key, target = self._target(frame)
        if key not in self.factory.directory.known:
            raise ProtocolError(ErrorCode.NO_SUCH_USER)
        now = self.factory.clock.seconds()
        duration = frame.get("duration") or 0
        await self._put("mute", key, now + duration if duration else None, frame.get("reason"), session.name, now)
        if target is not None:
            target.sendFrame(wire.error(ErrorCode.MUTED, self.refusal("mute", key)))
        when = f"for {_duration(duration)}" if duration else "until unmuted"
        return {"message": f"{frame['name']} is muted {when}."}

    async def _unmute(self, session: Any, frame: Dict[str, Any]) -> Dict[str, Any]:
        key, _ = self._target(frame)
        if not await self._remove("mute", key):
            raise ProtocolError(ErrorCode.BAD_FRAME, f"{frame['name']} is not muted.")
        return {"message": f"{frame['name']} may speak again."}

    async def _rotate(self, session: Any, frame: Dict[str, Any]) -> Dict[str, Any]:
        passkey = frame.get("passkey") or auth.generate_passkey()
        if not auth.canonical_passkey(passkey):
            raise ProtocolError(ErrorCode.BAD_FRAME, "The passkey must not be empty.")
        self.factory.verifier.rotate(passkey)
        self.factory.onPasskeyRotated(passkey)
        return {"message": "The passkey was changed; people already here stay, new logins need the new one.",
                "passkey": passkey}

    async def _announce(self, session: Any, frame: Dict[str, Any]) -> Dict[str, Any]:
        text = frame.get("text")
        if not text or wire.is_blank(text):
            raise ProtocolError(ErrorCode.EMPTY_MESSAGE)
        stored, _ = await self.factory.submit({"kind": "announce", "name": session.name, "text": text,
                                               **self.factory.lobby()})
        return {"message": f"Announced (event {stored['id']})."}

    async def _release(self, session: Any, frame: Dict[str, Any]) -> Dict[str, Any]:
        """Lift a name's password (its owner forgot it)."""
        key, _ = self._target(frame)
        if self.factory.directory.secrets.pop(key, None) is None:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"{frame['name']} is not protected by a password.")
        await self.factory.store.set_secret(key, frame["name"], None)
        return {"message": f"{frame['name']} is no longer protected; its owner can log in and /register again."}

    async def _bans(self, session: Any, frame: Dict[str, Any]) -> Dict[str, Any]:
        now = self.factory.clock.seconds()
        listed = []
        for (kind, value), ban in sorted(self.bans.items()):
            if self.active(kind, value) is None:
                continue
            listed.append({"kind": kind, "value": value, "remaining": ban.remaining(now), "reason": ban.reason,
                           "by": ban.actor})
        return {"message": f"{len(listed)} bans and mutes in force.", "bans": listed}

    async def _put(self, kind: str, value: str, until: Optional[float], reason: Optional[str], actor: str,
                   now: float) -> None:
        await self.factory.store.put_ban(kind, value, until, reason, actor, now)
        self.bans[(kind, value)] = Ban(until, reason, actor)

    async def _remove(self, kind: str, value: str) -> bool:
        found = self.bans.pop((kind, value), None) is not None
        stored = await self.factory.store.remove_ban(kind, value)
        return found or bool(stored)



