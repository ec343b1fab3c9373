"""Measuring helpers for the flood and bounds tests: a timed bystander and a process's RSS.

A flood test proves two things besides its limit: the process stays within memory (``rss_bytes``
before and after, from ``/proc``) and other clients are still served (``Bystander``: round
trips of a broadcast to its own room, echoed back through the router, timed until stopped).
Both are bounded: a bystander stops after ``60 * TIMEOUT_UNIT`` even if nobody stops it.
"""

from __future__ import annotations

import threading
import time

from tests.conftest import TIMEOUT_UNIT as T
from tests.integration.harness import WsClient, fresh_room

__all__ = ["Bystander", "p99_ms", "rss_bytes"]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def p99_ms(latencies: list[float]) -> float:
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    return 1000 * ordered[int(0.99 * (len(ordered) - 1))]


class Bystander(threading.Thread):
    """Round trips (a broadcast to its own room, echoed back) until stopped; bounded."""

    def __init__(self, ws_url: str) -> None:
        super().__init__(name="bystander", daemon=True)
        self.client = WsClient(ws_url, name="bystander")
        self.room = fresh_room("bystander")
        self.client.join(self.room)
        self.stopping = threading.Event()
        self.latencies: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            until = time.monotonic() + 60 * T
            while not self.stopping.is_set() and time.monotonic() < until:
                started = time.monotonic()
                self.client.broadcast(self.room, {"t": started}, echo=True)
                self.client.next_event(10 * T, what="the bystander's echo")
                self.latencies.append(time.monotonic() - started)
        except BaseException as exc:  # handed to the test by finish()
            self.error = exc

    def mark(self) -> int:
        return len(self.latencies)

    def finish(self) -> None:
        """Stop, close, and fail if a round trip failed."""
        self.stopping.set()
        self.join(15 * T)
        self.client.close()
        assert self.error is None, f"bystander failed: {self.error!r}"
