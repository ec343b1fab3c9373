"""Action workers known to the router, and the virtual requests in flight (pure).

Workers say Hello and heartbeat over the ROUTER socket; requests are spread over live workers
round-robin. Each forwarded request gets a router-wide ref so the worker's Reply finds its way
back to the gateway (or SDK client) and ref that asked. Time is passed in by the shell.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import OrderedDict

__all__ = ["Origin", "WorkerPool"]


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from: the asker's ROUTER identity, its gateway (if any), its ref."""

    identity: bytes
    gateway: str | None
    ref: int
    deadline: float
    worker: bytes


class WorkerPool:
    def __init__(self, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._last_seen: OrderedDict[bytes, float] = OrderedDict()
        self._pending: dict[int, Origin] = {}
        self._refs = itertools.count(1)

    def __len__(self) -> int:
        return len(self._last_seen)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def seen(self, worker: bytes, now: float) -> bool:
        """Record life from a worker; False if it is unknown (it must say Hello first)."""
        if worker not in self._last_seen:
            return False
        self._last_seen[worker] = now
        return True

    def add(self, worker: bytes, now: float) -> None:
        self._last_seen[worker] = now

    def leave(self, worker: bytes) -> bool:
        """Take a worker out of the rotation, keeping its requests in flight for its replies;
        whether it was in the rotation."""
        return self._last_seen.pop(worker, None) is not None

    def remove(self, worker: bytes) -> list[Origin]:
        """Forget a worker; returns the requests it had in flight (now orphaned)."""
        self._last_seen.pop(worker, None)
        orphaned = [ref for ref, o in self._pending.items() if o.worker == worker]
        return [self._pending.pop(ref) for ref in orphaned]

    def forward(
        self, identity: bytes, gateway: str | None, ref: int, now: float, request_timeout_s: float
    ) -> tuple[bytes, int] | None:
        """Pick a worker (round-robin) and register the request; None when no worker is live."""
        if not self._last_seen:
            return None
        # Rotate: the chosen worker moves to the back of the line.
        worker, seen = self._last_seen.popitem(last=False)
        self._last_seen[worker] = seen
        router_ref = next(self._refs)
        self._pending[router_ref] = Origin(identity, gateway, ref, now + request_timeout_s, worker)
        return worker, router_ref

    def answer(self, router_ref: int) -> Origin | None:
        return self._pending.pop(router_ref, None)

    def drain(self) -> list[Origin]:
        """Forget every request in flight (the router stopped serving); returns them."""
        pending, self._pending = self._pending, {}
        return list(pending.values())

    def expire(self, now: float) -> tuple[list[Origin], list[Origin]]:
        """Requests orphaned by workers silent for longer than the timeout (which are
        forgotten), and requests past their deadline."""
        dead = {w for w, seen in self._last_seen.items() if now - seen > self.timeout_s}
        for worker in dead:
            del self._last_seen[worker]
        orphaned = [ref for ref, o in self._pending.items() if o.worker in dead]
        orphans = [self._pending.pop(ref) for ref in orphaned]
        late = [ref for ref, o in self._pending.items() if o.deadline <= now]
        return orphans, [self._pending.pop(ref) for ref in late]
