"""
Limits that keep one client (or one address) from hurting everyone else:
failed-login lockouts, a global budget for expensive login proofs, and a
per-user message rate.  Pure bookkeeping on an injected clock.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; ``rate <= 0`` means unlimited."""

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

    def prune(self) -> None:
        """Forget stale records (called periodically) so memory stays bounded."""
        now = self.clock.seconds()
        for host in [h for h, ts in self.failures.items() if not ts or now - ts[-1] > self.window]:
            del self.failures[host]
        for host in [h for h, until in self.lockedUntil.items() if until <= now]:
            del self.lockedUntil[host]
