"""
Limits that keep one client (or one address) from hurting everyone else:
failed-login lockouts, a global budget for expensive login proofs, and a
per-user message rate.  Pure bookkeeping on an injected clock.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from tcpchat import wire


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; ``rate <= 0`` means unlimited."""

    __slots__ = ("clock", "rate", "burst", "tokens", "stamp")  # (two per connection)

    def __init__(self, clock: Any, rate: float, burst: float) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = clock.seconds()

    def take(self, n: float = 1.0) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class LoginGuard:
    """
    Failed logins per peer address: after ``allowed`` failures within
    ``window`` seconds the address is locked out for ``lockout`` seconds,
    doubling with each further lockout (at most ``max_lockout``).  A success
    clears the address's record.

    Login proofs in flight are *guesses not yet judged*: :meth:`begin` hands
    out a slot only while recent failures plus proofs in flight stay below
    ``allowed``, so a guesser never has more than ``allowed`` guesses per
    window, however many it starts at once; :meth:`end` judges one.  A login
    that finds no free slot waits (:meth:`wait`) instead of failing, so many
    correct logins from one address (a classroom behind one router) all get
    through, a few at a time.
    """

    def __init__(self, clock: Any, allowed: int = 10, window: float = 600.0, lockout: float = 60.0,
                 max_lockout: float = 3600.0) -> None:
        self.clock = clock
        self.allowed = allowed
        self.window = window
        self.lockout = lockout
        self.max_lockout = max_lockout
        self.failures: Dict[str, List[float]] = {}
        self.lockouts: Dict[str, int] = {}
        self.lockedUntil: Dict[str, float] = {}
        self.total = 0
        self.inFlight: Dict[str, int] = {}
        self.waiting: Dict[str, Deque[Callable[[], None]]] = {}

    def locked(self, host: str) -> Optional[float]:
        """Seconds left of ``host``'s lockout, or None."""
        until = self.lockedUntil.get(host)
        if until is None:
            return None
        left = until - self.clock.seconds()
        if left <= 0:
            del self.lockedUntil[host]
            return None
        return left

    def failed(self, host: str) -> bool:
        """Record a failure; True if ``host`` is now locked out."""
        self.total += 1
        now = self.clock.seconds()
        recent = [t for t in self.failures.get(host, []) if now - t < self.window]
        recent.append(now)
        self.failures[host] = recent
        if len(recent) >= self.allowed:
            count = self.lockouts.get(host, 0)
            self.lockouts[host] = count + 1
            self.lockedUntil[host] = now + min(self.max_lockout, self.lockout * 2**count)
            self.failures[host] = []
            return True
        return False

    def succeeded(self, host: str) -> None:
        self.failures.pop(host, None)
        self.lockouts.pop(host, None)

    def begin(self, host: str) -> bool:
        """Take a slot for one login proof from ``host``; False if none is free now."""
        now = self.clock.seconds()
        recent = sum(1 for t in self.failures.get(host, ()) if now - t < self.window)
        if recent + self.inFlight.get(host, 0) >= self.allowed:
            return False
        self.inFlight[host] = self.inFlight.get(host, 0) + 1
        return True

    def end(self, host: str, ok: bool) -> bool:
        """A proof from ``host`` was judged (an abandoned one is a failure); True if now locked out."""
        left = self.inFlight.get(host, 1) - 1
        if left > 0:
            self.inFlight[host] = left
        else:
            self.inFlight.pop(host, None)
        lockedOut = False
        if ok:
            self.succeeded(host)
        else:
            lockedOut = self.failed(host)
        self._wake(host, everyone=lockedOut)
        return lockedOut

    def wait(self, host: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when a slot may be free for ``host``; returns a function that cancels the wait."""
        queue = self.waiting.setdefault(host, collections.deque())
        queue.append(callback)

        def cancel() -> None:
            try:
                queue.remove(callback)
            except ValueError:
                pass
            if not queue and self.waiting.get(host) is queue:
                del self.waiting[host]

        return cancel

    def waiters(self, host: str) -> int:
        return len(self.waiting.get(host, ()))

    def _wake(self, host: str, everyone: bool = False) -> None:
        queue = self.waiting.get(host)
        if not queue:
            return
        count = len(queue) if everyone else max(0, self.allowed - self.inFlight.get(host, 0))
        for _ in range(min(count, len(queue))):
            queue.popleft()()  # it calls begin() again (or finds the lockout)
        if not queue:
            self.waiting.pop(host, None)

    def prune(self) -> None:
        """Forget stale records (called periodically) so memory stays bounded."""
        now = self.clock.seconds()
        for host in [h for h, ts in self.failures.items() if not ts or now - ts[-1] > self.window]:
            del self.failures[host]
        for host in [h for h, until in self.lockedUntil.items() if until <= now]:
            del self.lockedUntil[host]


class ConnectionCaps:
    """
    The caps on connections (a part of :class:`tcpchat.server.chat.ChatFactory`, which provides ``limits``,
    ``connections``, ``moderation``, ``perHost`` and ``waitingSockets``): in all, per address, banned addresses.
    """

    limits: Any
    connections: Any
    moderation: Any
    perHost: Dict[str, int]
    waitingSockets: int

    def admit(self, session: Any) -> Optional[Tuple[str, str]]:
        """Count a new connection; ``(error code, sentence)`` if it may not stay (then it is closed)."""
        self.perHost[session.host] = self.perHost.get(session.host, 0) + 1
        return self.refusal(session.host, counted=True)

    def refusal(self, host: str, counted: bool = False) -> Optional[Tuple[str, str]]:
        """Why a connection from ``host`` may not stay (``counted``: it is already in the counts), or None."""
        limits = self.limits
        banned = self.moderation.refusal("address", host)
        if banned is not None:
            return wire.ErrorCode.BANNED, banned
        extra = 0 if counted else 1
        if limits.max_connections and len(self.connections) + self.waitingSockets + extra > limits.max_connections:
            return wire.ErrorCode.SERVER_BUSY, "The server has too many connections; try again later."
        if limits.max_per_address and self.perHost.get(host, 0) + extra > limits.max_per_address:
            return wire.ErrorCode.SERVER_BUSY, "Too many connections from your address."
        return None

    def holdSocket(self, host: str) -> bool:
        """
        Count a socket accepted before its TLS handshake (it has no protocol yet);
        False if it is over a cap (then it is aborted: there is no TLS to say why).
        """
        limits = self.limits
        count = self.perHost.get(host, 0) + 1
        if (limits.max_connections and len(self.connections) + self.waitingSockets >= limits.max_connections) or \
                (limits.max_per_address and count > limits.max_per_address):
            return False
        self.perHost[host] = count
        self.waitingSockets += 1
        return True

    def releaseSocket(self, host: str) -> None:
        self.waitingSockets -= 1
        count = self.perHost.get(host, 1) - 1
        if count > 0:
            self.perHost[host] = count
        else:
            self.perHost.pop(host, None)

    def release(self, session: Any) -> None:
        count = self.perHost.get(session.host, 1) - 1
        if count > 0:
            self.perHost[session.host] = count
        else:
            self.perHost.pop(session.host, None)
