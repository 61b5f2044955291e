"""
The dispatch table: for every client frame type, what it needs before it is
handled (:data:`ANY`, :data:`LOGGED_IN`, :data:`ROOMS`), what it costs from
the sender's request budget, and the function that handles it.  ``login.py``
and ``rules.py`` fill :data:`HANDLERS` with :func:`handles`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

# session states
NEW, CHECKING, LIVE, CLOSED = "new", "checking", "live", "closed"
# what a frame needs before it is handled
ANY, LOGGED_IN, ROOMS, EDITS, PROFILES = "any", "logged-in", "rooms", "edits", "profiles"

#: What each kind of request costs from the sender's request budget (PROTOCOL.rst,
#: "Request budget").  ``say`` has a budget of its own; data frames are paced by TCP.
COSTS: Dict[str, float] = {
    "hello": 1, "pake-confirm": 0, "register": 5, "say": 0, "history": 2, "who": 2, "join": 1, "leave": 1,
    "rooms": 2, "typing": 0.25, "read": 0.25, "presence": 1, "search": 3, "delete": 1, "oper": 1, "mod": 1,
    "ping": 0.5, "pong": 0, "bye": 0, "upload": 1, "upload-cancel": 0.25, "download": 1, "download-cancel": 0.25,
    "file-link": 1, "edit": 0, "react": 1, "profile": 5,
}

Handler = Callable[[Any, Dict[str, Any]], None]
#: frame type -> (what it needs, handler); every client frame type of wire.CLIENT_FRAMES has one
HANDLERS: Dict[str, Tuple[str, Handler]] = {}


def handles(kind: str, needs: str = LOGGED_IN) -> Callable[[Handler], Handler]:
    """Register ``f(session, frame)`` as the handler of frames of type ``kind``."""

    def register(f: Handler) -> Handler:
        HANDLERS[kind] = (needs, f)
        return f

    return register
