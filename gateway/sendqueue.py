"""A bounded per-connection send queue that coalesces frames into one write.

Pure: the shell pushes pre-built frames, takes everything pending as one ``bytes`` when the
previous write finished, and reports completion. At most one write is in flight per connection,
so queued bytes are visible here (not hidden in the stream's buffer) and bounded: ``push``
returns False once pending + in-flight bytes exceed the limit, and the shell closes the
connection with 4001 (slow consumer).
"""

from __future__ import annotations

__all__ = ["SendQueue"]


class SendQueue:
    __slots__ = ("_frames", "inflight", "limit", "pending", "queued_frames")

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self._frames: list[bytes] = []
        self.pending = 0  # bytes queued, not yet handed to the stream
        self.inflight = 0  # bytes handed to the stream, not yet flushed to the kernel
        self.queued_frames = 0

    def push(self, frame: bytes) -> bool:
        """Queue one frame; False when the bound is exceeded (the frame is not queued)."""
        size = len(frame)
        if self.pending + self.inflight + size > self.limit:
            return False
        self._frames.append(frame)
        self.pending += size
        return True

    def take(self) -> bytes | None:
        """Everything pending as one write, or None if a write is in flight or nothing waits."""
        if self.inflight or not self._frames:
            return None
        frames = self._frames
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self.queued_frames = len(frames)
        self._frames = []
        self.inflight = self.pending
        self.pending = 0
        return data

    def written(self) -> None:
        """The in-flight write reached the kernel."""
        self.inflight = 0
        self.queued_frames = 0

    def discard(self) -> int:
        """Drop everything pending (connection is being cut); returns frames dropped."""
        dropped = len(self._frames)
        self._frames = []
        self.pending = 0
        return dropped

    @property
    def idle(self) -> bool:
        return not self.inflight and not self._frames
