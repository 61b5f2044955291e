"""
Joins and leaves in a crowd (protocol revision 1.6, feature ``"roster"``).

Every login and logout is an event (stored, in the history, replayed on
catch-up).  Delivered live to everyone, N logins cost about N²/2 deliveries.
So once ``Limits.crowd`` users or more are online, clients that asked for the
``"roster"`` feature no longer get ``join`` and ``leave`` events live: they
get one ``roster`` frame at most every ``Limits.roster_interval`` seconds,
listing who came and who went meanwhile.  A login then costs the same however
many are online; clients without the feature get the events as before.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from tcpchat import wire

#: the kinds a roster frame replaces, in a crowd
PRESENCE_KINDS = frozenset({"join", "leave"})
#: names one roster frame lists at most (more: it says so, and the client asks ``who``)
ROSTER_NAMES = 500


class Roster:
    def __init__(self, factory: Any) -> None:
        self.factory = factory
        #: name -> True (came) or False (went) since the last roster frame, in order
        self._changes: Dict[str, bool] = {}
        self._call: Any = None
        #: logged-in sessions without the feature: the only ones a batch of nothing but joins and leaves is
        #: offered to in a crowd, so such a batch costs the same however many are online
        self.plain: Set[Any] = set()
        #: the id of the last event of the last batch offered to everyone: a live "roster" session whose next
        #: batch does not follow on may skip the gap if it had that one (the gap held joins and leaves only)
        self.lastLoud = self._loudBefore = 0

    def crowded(self) -> bool:
        return self.factory.onlineCount() >= self.factory.limits.crowd

    def quiet(self, events: List[Dict[str, Any]], shared: Any,
              audiences: Optional[List[Any]]) -> Optional[Tuple[List[Dict[str, Any]], Any, Optional[List[Any]]]]:
        """
        A batch about to be offered to everyone: in a crowd, note its joins and leaves for the next roster
        frame and return the batch without them (``events``, ``shared``, ``audiences``) for "roster" clients;
        None when they get the whole batch.
        """
        if not any(e["kind"] in PRESENCE_KINDS for e in events) or not self.crowded():
            return None
        from tcpchat.server.session import Shared

        keep = []
        for i, event in enumerate(events):
            if event["kind"] in PRESENCE_KINDS:
                name = event.get("name")
                if name:
                    self._changes.pop(name, None)  # (a later change of the same name wins, in its place)
                    self._changes[name] = event["kind"] == "join"
            else:
                keep.append(i)
        self._schedule()
        return ([events[i] for i in keep], Shared([shared.payloads[i] for i in keep]),
                None if audiences is None else [audiences[i] for i in keep])

    def audience(self, events: List[Dict[str, Any]], quiet: Any) -> Iterable[Any]:
        """Who a batch is offered to: everyone, or (nothing but joins and leaves, in a crowd) those without the
        feature."""
        if quiet is not None and not quiet[0]:
            return list(self.plain)
        self._loudBefore, self.lastLoud = self.lastLoud, events[-1]["id"]
        return list(self.factory.users.values())

    def skips(self, sent_up_to: int) -> bool:
        """May a live "roster" session that has everything up to ``sent_up_to`` skip to the batch being offered
        (what is between held only joins and leaves, which it gets as roster frames)?"""
        return self._loudBefore <= sent_up_to

    def _schedule(self) -> None:
        if self._call is None or not self._call.active():
            self._call = self.factory.clock.callLater(self.factory.limits.roster_interval, self.flush)

    def flush(self) -> None:
        """Tell every live "roster" client who came and went since the last roster frame."""
        self._call = None
        changes, self._changes = self._changes, {}
        if not changes:
            return
        factory = self.factory
        joined = [name for name, came in changes.items() if came]
        left = [name for name, came in changes.items() if not came]
        frame: Dict[str, Any] = {"type": "roster", "joined": joined[:ROSTER_NAMES], "left": left[:ROSTER_NAMES],
                                 "online": factory.onlineCount()}
        if len(joined) > ROSTER_NAMES or len(left) > ROSTER_NAMES:
            frame["more"] = True
        from tcpchat.server.session import Shared

        shared = Shared([wire.encode(frame)])  # (2 × 500 names of at most 32 characters: well under a frame)
        for session in list(factory.users.values()):
            if session.roster and session.delivery.live:
                session.deliver(shared.payloads, shared)
