"""
Pacing file data behind chat on one connection (both directions: the server's downloads, the client core's
uploads).

A chat message written to a connection waits behind whatever is already queued for it: in the program's
buffer, in the kernel's send queue, on the link.  On a 1 Mbit/s link one 64 KiB data frame is half a second.
So file data is written only while what is queued and not yet acknowledged by the peer (the kernel's send
queue, ``SIOCOUTQ``, plus the program's own buffer) stays under a *budget*: the bytes the link carries in
:data:`TARGET` seconds, measured as the rate at which that queue drains.  A chat frame then waits behind at
most about :data:`TARGET` seconds of file data, and on a fast link the budget grows so large that pacing
never holds a transfer back.  Data frames shrink to fit the budget on slow links.

:class:`Pacer` is pure arithmetic on (time, bytes written, bytes queued) samples; the transports supply the
samples (:func:`queue_state` reads the kernel's counts for a TCP socket, under TLS too).
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from typing import Any, Optional, Tuple

#: seconds of file data a chat message may wait behind, at most (about)
TARGET = 0.1
#: the budget never goes below this (a link must be kept busy), bytes
FLOOR = 8 * 1024
#: smallest data frame on a slow link, bytes
MIN_CHUNK = 4 * 1024
#: weight of a new rate sample
ALPHA = 0.5
#: seconds over which a rate is measured
WINDOW = 0.05
#: the rate assumed before any is measured, bytes/s: modest (a slow link is not flooded before it is measured;
#: on a fast one the first acks, a millisecond later, raise it at once)
START_RATE = 256e3


class Pacer:
    """How much file data may be queued on one connection now."""

    __slots__ = ("rate", "_t", "_acked", "_busy")

    def __init__(self) -> None:
        self.rate = START_RATE
        self._t: Optional[float] = None
        self._acked = 0
        self._busy = True  # was something queued all through the current window?

    def sample(self, now: float, acked: int, queued: int) -> None:
        """``acked``: all bytes the peer has acknowledged so far; ``queued``: those written and not yet acked."""
        if self._t is None or acked < self._acked:
            self._t, self._acked, self._busy = now, acked, queued > 0
            return
        if queued == 0 and acked == self._acked:
            self._t, self._busy = now, False  # idle: this window says nothing of the link
            return
        elapsed = now - self._t
        if elapsed >= WINDOW or (elapsed > 0 and not self._busy and acked - self._acked > self.budget):
            rate = (acked - self._acked) / elapsed
            if self._busy or rate > self.rate:  # (a window that was partly idle can only say "at least")
                self.rate = (1 - ALPHA) * self.rate + ALPHA * rate
            self._t, self._acked, self._busy = now, acked, queued > 0
        elif queued == 0:
            self._busy = False

    @property
    def budget(self) -> int:
        return max(FLOOR, int(self.rate * TARGET))

    def room(self, queued: int) -> int:
        """Bytes of file data that may be written now (0: wait)."""
        return max(0, self.budget - queued)

    def chunk(self, largest: int) -> int:
        """The data frame size for now: ``largest`` on a fast link, smaller on a slow one."""
        return max(MIN_CHUNK, min(largest, self.budget // 4))


#: where ``tcpi_bytes_acked`` is in Linux's ``struct tcp_info`` (a u64; Linux 4.1 and later)
_BYTES_ACKED = 120
_TCP_INFO_SIZE = 232


def link_state(sock: Any) -> Optional[Tuple[int, int]]:
    """
    ``(acked, queued)`` of a TCP socket (Linux): all bytes the peer has acknowledged, and the bytes in the send
    queue it has not (sent or not); None where the kernel does not tell.
    """
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, AttributeError, ValueError):
        return None
    if len(info) < _BYTES_ACKED + 8:
        return None
    (acked,) = struct.unpack_from("Q", info, _BYTES_ACKED)
    return int(acked), int(struct.unpack("i", raw)[0])


def tcp_transport(transport: Any) -> Any:
    """The TCP transport under a protocol's transport (TLS wraps it), or None."""
    for _ in range(4):
        if hasattr(transport, "getHandle") and hasattr(transport, "dataBuffer"):
            return transport
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def queue_state(transport: Any) -> Optional[Tuple[int, int]]:
    """``(acked, queued)`` for a Twisted TCP (or TLS-over-TCP) transport: queued counts Twisted's own buffer too."""
    tcp = tcp_transport(transport)
    if tcp is None:
        return None
    state = link_state(tcp.getHandle())
    if state is None:
        return None
    buffered = len(tcp.dataBuffer) - getattr(tcp, "offset", 0) + getattr(tcp, "_tempDataLen", 0)
    return state[0], state[1] + buffered


#: seconds between looks at a connection's queue while file data waits for room
POLL = 0.01


class Gate:
    """
    One connection's pacing for file data: :meth:`room` asks the kernel how much is queued (None: this transport
    cannot tell, so nothing is paced); :meth:`later` calls back once, :data:`POLL` seconds on, to look again.
    """

    __slots__ = ("pacer", "clock", "transport", "call")

    def __init__(self, clock: Any, transport: Any) -> None:
        self.pacer = Pacer()
        self.clock = clock
        self.transport = transport
        self.call: Any = None

    def room(self) -> Optional[int]:
        state = queue_state(self.transport)
        if state is None:
            return None
        self.pacer.sample(self.clock.seconds(), *state)
        return self.pacer.room(state[1])

    def chunk(self, largest: int) -> int:
        return self.pacer.chunk(largest)

    def later(self, f: Any, *args: Any) -> None:
        if self.call is None or not self.call.active():
            self.call = self.clock.callLater(POLL, f, *args)

    def cancel(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
