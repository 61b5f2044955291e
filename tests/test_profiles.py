"""Profiles (revision 1.5, feature "profiles") over real sockets against twistd: a bio and a picture, kept across
a restart, downloaded like a file; what a 1.1 client sees (nothing new); bad pictures refused in the codec."""

import base64
import hashlib
import io
import os

import pytest

from tcpchat import wire

from .procs import TWISTD, RawClient, ServerProcess

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")

PROFILES = ["rooms", "edits", "profiles"]


def picture(colour=(30, 120, 200), fmt="PNG"):
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (128, 128), colour).save(out, fmt)
    return out.getvalue()


def test_a_profile_is_set_seen_downloaded_kept_and_invisible_to_older_clients(tmp_path):
    server = ServerProcess(tmp_path).start()
    try:
        alice, bob, old = RawClient(server.port), RawClient(server.port), RawClient(server.port)
        alice.login("alice", features=PROFILES)
        bob.login("bob", features=PROFILES)
        old.login("old", features=["rooms", "edits"])  # a 1.4 client: it never asked for profiles
        png = picture()
        alice.send({"type": "profile", "bio": "Maths and physics, room 12", "picture": base64.b64encode(png).decode(),
                    "req": "p1"})
        done = alice.recv_until(lambda f: f.get("req") == "p1")[-1]
        assert (done["type"], done["ref"]) == ("done", "profile")
        seen = bob.recv_until(lambda f: f.get("type") == "profile")[-1]
        assert seen["name"] == "alice" and seen["bio"] == "Maths and physics, room 12"
        shown = seen["picture"]
        assert (shown["mime"], shown["size"], shown["sha256"]) == ("image/png", len(png), hashlib.sha256(png).hexdigest())
        assert bob.download(shown["id"]) == png  # downloaded like a file, by anyone logged in
        assert old.download(shown["id"], tid=2) == png  # (even without the feature: it is a file)
        # the older client got no profile frame and its "who" is as it was
        old.send({"type": "who", "req": "w"})
        frames = old.recv_until(lambda f: f.get("req") == "w")
        assert not [f for f in frames if f.get("type") == "profile"] and "profiles" not in frames[-1]
        old.send({"type": "profile", "bio": "x", "req": "p"})
        refused = old.recv_until(lambda f: f.get("req") == "p")[-1]
        assert (refused["type"], refused["code"]) == ("error", "unknown-type")
        # who, for a client with the feature, carries the profiles of those online
        bob.send({"type": "who", "req": "w"})
        users = bob.recv_until(lambda f: f.get("req") == "w")[-1]
        assert users["profiles"]["alice"]["bio"] == "Maths and physics, room 12"
        # bad pictures and bios are refused by the codec, nothing changes
        for bad in ({"picture": base64.b64encode(b"GIF89a" + b"\0" * 30).decode()},
                    {"picture": base64.b64encode(png + b"\0" * wire.MAX_PICTURE_BYTES).decode()},
                    {"picture": "%%%"}, {"bio": "line one\nline two"}, {"bio": "b" * (wire.MAX_BIO_CHARS + 1)}):
            alice.send({"type": "profile", "req": "bad", **bad})
            error = alice.recv_until(lambda f: f.get("type") == "error")[-1]
            assert (error["type"], error["code"]) == ("error", "bad-frame"), bad
        # only the bio changes; the picture stays
        alice.send({"type": "profile", "bio": "Maths, room 12", "req": "p2"})
        alice.recv_until(lambda f: f.get("req") == "p2")
        again = bob.recv_until(lambda f: f.get("type") == "profile")[-1]
        assert again["bio"] == "Maths, room 12" and again["picture"] == shown
        for client in (alice, bob, old):
            client.close()
        assert server.stop() == 0
        # kept across a restart: a newcomer sees it in its welcome once alice is back
        server = ServerProcess(tmp_path).start()
        alice = RawClient(server.port)
        alice.login("alice", features=PROFILES)
        carol = RawClient(server.port)
        welcome = next(f for f in carol.login("carol", features=PROFILES) if f.get("type") == "welcome")
        assert welcome["profiles"]["alice"] == {"bio": "Maths, room 12", "picture": shown}
        # a later login tells those online
        dave = RawClient(server.port)
        dave.login("dave", features=PROFILES)
        dave.send({"type": "profile", "bio": "new here", "req": "d"})
        dave.recv_until(lambda f: f.get("req") == "d")
        dave.close()
        dave = RawClient(server.port)
        dave.login("dave", features=PROFILES)
        told = carol.recv_until(lambda f: f.get("type") == "profile" and f.get("name") == "dave" and "bio" in f)
        assert told[-1]["bio"] == "new here"
        # removing the picture
        alice.send({"type": "profile", "picture": "", "req": "p3"})
        alice.recv_until(lambda f: f.get("req") == "p3")
        now = carol.recv_until(lambda f: f.get("type") == "profile" and f.get("name") == "alice")[-1]
        assert now == {"type": "profile", "name": "alice", "bio": "Maths, room 12"}
        assert "Traceback" not in server.log()
    finally:
        server.close()
