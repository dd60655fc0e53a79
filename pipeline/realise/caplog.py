"""A build log with a cap: the head is streamed to disk, the tail kept in a bounded buffer.

A run may print without end; the host keeps at most ``kept`` bytes of it (half head, half tail), never
holds more than the tail in memory, and writes a line saying how much was cut. A failing write (a full
disk) stops the log, not the pipeline: the error is kept and reported with the run.
"""

from __future__ import annotations

from typing import BinaryIO

__all__ = ["CappedLog"]


class CappedLog:
    """Bytes appended to an open binary file, at most ``kept`` of them (head and tail)."""

    def __init__(self, file: BinaryIO, kept: int):
        self.file = file
        self.head_left = max(kept // 2, 0)
        self.tail_cap = max(kept - self.head_left, 0)
        self.tail = bytearray()
        self.total = 0
        self.cut = 0
        self.error: OSError | None = None

    def _write(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        try:
            self.file.write(data)
            self.file.flush()
        except OSError as e:  # e.g. ENOSPC: keep draining the pipe, report it once the run is over
            self.error = e

    def write(self, data: bytes) -> None:
        self.total += len(data)
        if self.head_left:
            head, data = data[:self.head_left], data[self.head_left:]
            self.head_left -= len(head)
            self._write(head)
        if not data:
            return
        self.tail += data
        if len(self.tail) > self.tail_cap:
            drop = len(self.tail) - self.tail_cap
            self.cut += drop
            del self.tail[:drop]

    def close(self, note: str = "") -> None:
        """Write the cut marker, the tail and ``note`` (the host's own last word on the run)."""
        if self.cut:
            self._write(f"\n[wheelproof: log cut: {self.cut} of {self.total} bytes of output not kept]\n".encode())
        self._write(bytes(self.tail))
        self.tail = bytearray()
        if note:
            self._write(note.encode())
