"""
Length-prefixed framing with fewer copies than Twisted's ``IntNStringReceiver``.

Same wire format and the same interface (``stringReceived``, ``sendString``,
``MAX_LENGTH``, ``lengthLimitExceeded``, ``paused``), but received bytes are
kept in one reusable ``bytearray``: a 64 KiB file chunk is copied once into it
and once out of it, instead of being re-concatenated with each partial read.
That matters for multi-gigabyte uploads.
"""

from __future__ import annotations

from twisted.protocols.basic import Int32StringReceiver


class FrameReceiver(Int32StringReceiver):
    """An ``Int32StringReceiver`` with a reusable receive buffer."""

    _buffer: bytearray

    def makeConnection(self, transport) -> None:
        self._buffer = bytearray()
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        buf = self._buffer
        if data:
            buf += data
        offset = 0
        size = len(buf)
        view = memoryview(buf)
        try:
            while not self.paused and size - offset >= 4:
                length = int.from_bytes(view[offset : offset + 4], "big")
                if length > self.MAX_LENGTH:
                    view.release()
                    view = None  # type: ignore[assignment]
                    del buf[:offset]
                    self.lengthLimitExceeded(length)
                    return
                end = offset + 4 + length
                if size < end:
                    break
                payload = bytes(view[offset + 4 : end])
                offset = end
                self.stringReceived(payload)
                buf = self._buffer  # stringReceived may have reset it
                size = len(buf)
                if buf is not view.obj:
                    return
        finally:
            if view is not None:
                view.release()
        if offset:
            del buf[:offset]

    @property
    def _unprocessed(self) -> bytes:  # compatibility: what is buffered and not yet handled
        return bytes(self._buffer)

    @_unprocessed.setter
    def _unprocessed(self, value: bytes) -> None:
        self._buffer = bytearray(value)
