"""
Profiles (revision 1.5, feature ``profiles``): a name's one-line bio and
picture.  The picture is stored like any shared file (content-addressed in
the file store, a row in ``files`` with ``conv = 'profile'``) and downloaded
like one, by anyone logged in; nothing about it is an event in a
conversation.  Profiles are kept with the known names (``known.bio``,
``known.picture``) and held in memory, one small dict per name that set one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Tuple

from twisted.logger import Logger

from tcpchat import wire
from tcpchat.server import social
from tcpchat.server.table import PROFILES, handles
from tcpchat.wire import ErrorCode, ProtocolError

log = Logger(namespace="tcpchat.server.profiles")

#: the most the ``profiles`` of a welcome or ``users`` frame may take (bytes, about)
PROFILE_BYTES = 256 * 1024
Profile = Dict[str, Any]


class Profiles:
    """name key -> ``{"bio": str, "picture": {"id", "sha256", "size", "mime"}}`` (each part only when set)."""

    def __init__(self) -> None:
        self.byKey: Dict[str, Profile] = {}

    def load(self, rows: List[Tuple[Any, ...]]) -> None:
        for nkey, _name, bio, fid, sha256, size, mime in rows:
            profile: Profile = {}
            if bio:
                profile["bio"] = bio
            if fid is not None and sha256:
                profile["picture"] = {"id": fid, "sha256": sha256, "size": size, "mime": mime}
            if profile:
                self.byKey[nkey] = profile

    def get(self, nkey: str) -> Optional[Profile]:
        return self.byKey.get(nkey)

    def online(self, factory: Any) -> Dict[str, Profile]:
        """The profiles of those online: name -> profile (bounded, like presence)."""
        out: Dict[str, Profile] = {}
        size = 0
        users = factory.users
        # (the smaller of the two is walked: a crowd's logins cost the same, however many are online)
        online = users.values() if len(users) <= len(self.byKey) else [users[k] for k in self.byKey if k in users]
        for session in online:
            profile = self.byKey.get(session.nkey)
            if profile:
                size += 4 * (len(session.name) + len(profile.get("bio", ""))) + 120
                if size > PROFILE_BYTES:
                    break  # (a login never gets a frame it cannot take; the rest come with "who" pages later)
                out[session.name] = profile
        return out

    def set(self, nkey: str, profile: Profile) -> None:
        if profile:
            self.byKey[nkey] = profile
        else:
            self.byKey.pop(nkey, None)


def announce(factory: Any, name: str, profile: Profile, exclude: Any = None) -> None:
    """Tell everyone who asked for profiles what ``name``'s is now."""
    factory.tellEveryone({"type": "profile", "name": name, **profile}, "profiles", exclude=exclude)


@handles("profile", PROFILES)
def profile(session: Any, frame: Dict[str, Any]) -> None:
    """Set one's bio (``bio``; "" clears it) and/or picture (``picture``: base64; "" removes it)."""
    factory = session.factory
    muted = factory.moderation.refusal("mute", session.nkey)
    if muted is not None:
        raise ProtocolError(ErrorCode.MUTED, muted)
    current = dict(factory.profiles.get(session.nkey) or {})

    async def change() -> None:
        updated = dict(current)
        if "bio" in frame:
            bio = frame["bio"].strip()
            if bio:
                updated["bio"] = bio
            else:
                updated.pop("bio", None)
        if "picture" in frame:
            data: bytes = frame["picture"]
            if data:
                updated["picture"] = await store_picture(session, data)
            else:
                updated.pop("picture", None)
        picture = updated.get("picture")
        await factory.store.set_profile(session.nkey, session.name, updated.get("bio"),
                                        picture["id"] if picture else None)
        factory.profiles.set(session.nkey, updated)
        log.info("{name} changed their profile", name=session.name)
        session.answer(frame, {"type": "done", "ref": "profile"})
        announce(factory, session.name, updated)

    session.active()
    session.run(frame, change())


async def store_picture(session: Any, data: bytes) -> Dict[str, Any]:
    """Keep a profile picture in the file store: its file object."""
    files = session.files()
    mime = wire.picture_type(data)
    ext = "png" if mime == "image/png" else "jpg"
    sha256 = hashlib.sha256(data).hexdigest()  # (at most 64 KiB: microseconds)
    record = {"sha256": sha256, "size": len(data), "name": f"{wire.safe_file_name(session.name)}.{ext}", "mime": mime,
              "uploader": session.name, "ts": round(session.factory.clock.seconds(), 3), "conv": social.PROFILE_CONV}
    fid = await files.storeBytes(data, record)
    return {"id": fid, "sha256": sha256, "size": len(data), "mime": mime}
