"""A bounded per-connection send queue that coalesces frames into one write.

Pure: the shell pushes pre-built frames and takes everything pending as one ``bytes``. Most
writes go straight to the kernel and are done when taken; bytes the stream holds (what the
kernel did not accept) stay *in flight* (``sending``) until the stream reports them flushed
(``written``), and nothing is taken meanwhile, so queued bytes are visible here (not hidden in
the stream's buffer) and bounded: ``push`` refuses a frame once pending + in-flight
bytes would exceed the limit, and the shell closes the connection with 4001 (slow consumer).

The API is shaped for the delivery loop, which runs once per recipient per message: one call to
queue a frame (``push`` also says whether a write must be scheduled) and one to take the write.
"""

from __future__ import annotations

__all__ = ["FIRST", "QUEUED", "REFUSED", "SendQueue"]

# What push() did with a frame.
REFUSED = 0  # over the bound: not queued
QUEUED = 1  # queued behind frames already waiting for a write (or behind one in flight)
FIRST = 2  # queued, and nothing else waits: the shell must schedule a write


class SendQueue:
    __slots__ = ("_frames", "inflight", "limit", "pending")

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self._frames: list[bytes] = []
        self.pending = 0  # bytes queued, not yet taken
        self.inflight = 0  # bytes handed to the stream, not yet flushed to the kernel

    def push(self, frame: bytes) -> int:
        """Queue one frame: FIRST, QUEUED or REFUSED (over the bound; the frame is dropped)."""
        size = len(frame)
        if self.pending + self.inflight + size > self.limit:
            return REFUSED
        frames = self._frames
        frames.append(frame)
        self.pending += size
        return QUEUED if self.inflight or len(frames) > 1 else FIRST

    def take(self) -> bytes | None:
        """Everything pending as one write, or None if a write is in flight or nothing waits."""
        frames = self._frames
        if self.inflight or not frames:
            return None
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        frames.clear()
        self.pending = 0
        return data

    def sending(self, size: int) -> None:
        """``size`` more bytes are held by the stream (the kernel did not take them yet)."""
        self.inflight += size

    def written(self) -> bool:
        """Everything in flight reached the kernel; True if more waits to be taken."""
        self.inflight = 0
        return bool(self._frames)

    def discard(self) -> int:
        """Drop everything pending (connection is being cut); returns frames dropped."""
        dropped = len(self._frames)
        self._frames.clear()
        self.pending = 0
        return dropped

    @property
    def idle(self) -> bool:
        return not self.inflight and not self._frames
