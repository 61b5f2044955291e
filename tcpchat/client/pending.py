"""Requests waiting for their answers, matched by request id (``req``), or by kind for servers that echo none."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, Tuple

from twisted.internet.defer import Deferred

from tcpchat.client.errors import RequestFailed

#: answer frame type -> the request type it answers (for servers that do not echo request ids)
ANSWERS = {"room": "join", "room-list": "rooms", "search-results": "search", "registered": "register",
           "oper": "oper", "mod-done": "mod"}


class PendingRequests:
    def __init__(self) -> None:
        #: request id -> (request type, Deferred), oldest first
        self.waiting: Dict[str, Tuple[str, Deferred]] = {}
        self._ids = itertools.count(1)

    def ask(self, frame: Dict[str, Any], send: Callable[[Dict[str, Any]], bool]) -> Deferred:
        """Give ``frame`` a request id and send it; the Deferred fires with its answer frame."""
        d: Deferred = Deferred()
        req = f"r{next(self._ids)}"
        frame["req"] = req
        if not send(frame):
            d.errback(RequestFailed("not-connected", "Not connected."))
            return d
        self.waiting[req] = (frame["type"], d)
        return d

    def answer(self, frame: Dict[str, Any], failure: Any = None) -> bool:
        """``frame`` answers a request (or is an error about one: then ``failure``); False if none was waiting."""
        req = frame.get("req")
        if req not in self.waiting:
            kind = frame.get("ref") if frame["type"] == "error" else ANSWERS.get(frame["type"])
            req = next((r for r, (k, _) in self.waiting.items() if k == kind), None)
            if req is None:
                return False
        _, d = self.waiting.pop(req)
        if isinstance(failure, Exception):
            d.errback(failure)
        else:
            d.callback(frame)
        return True

    def failAll(self, failure: Exception) -> None:
        waiting, self.waiting = self.waiting, {}
        for _, d in waiting.values():
            d.errback(failure)
