"""Action workers known to the router, and the virtual requests in flight (pure).

Workers say Hello (repeated as their heartbeat) with the routes they serve
(:mod:`roomcast.core.routes`); each request goes only to live workers that serve its method
and path, round-robin among them (per route), preferring workers that are not ``busy`` (every
sync-handler thread taken). None serves it: 404 if no worker ever announced a matching route,
503 if the workers that served it are gone (and 503 when no worker is connected at all). Older
workers that announce no routes serve everything.

Each forwarded request gets an unguessable router-wide ref (64 random bits, from ``refs``), so a
peer cannot answer a request it was not sent; and a reply counts only from the worker the
request went to. Time and randomness are passed in by the shell.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import OrderedDict
from collections.abc import Callable, Sequence

from roomcast.core.routes import MAX_ROUTES, Route, parse_route, path_segments

__all__ = ["MAX_KNOWN_ROUTES", "Miss", "Origin", "Picked", "WorkerPool"]

MAX_KNOWN_ROUTES = 10_000  # route patterns remembered for "404 or 503" (bounds router memory)
ANY = "*"  # the metric label of a request served by a worker that announced no routes


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from: the asker's ROUTER identity, its gateway (if any), its ref."""

    identity: bytes
    gateway: str | None
    ref: int
    deadline: float
    worker: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Picked:
    worker: bytes
    ref: int  # the router's ref for the request (what the worker answers with)
    route: str  # the route pattern it matched (a bounded metric label)


class Miss(enum.Enum):
    NOT_FOUND = "not_found"  # no worker serves it, nor ever did: 404
    NO_WORKER = "no_worker"  # its workers are gone (or there is none at all): 503


@dataclasses.dataclass(slots=True)
class _Worker:
    last_seen: float
    routes: tuple[Route, ...] | None = None  # None: serves everything (announced no routes)
    busy: bool = False

    def serves(self, method: str, segments: list[str]) -> str | None:
        """The first of its routes that matches, as a label; None if it does not serve it."""
        if self.routes is None:
            return ANY
        for route in self.routes:
            if route.match(method, segments) is not None:
                return route.spec
        return None


class WorkerPool:
    def __init__(self, *, timeout_s: float, refs: Callable[[], int]) -> None:
        self.timeout_s = timeout_s
        self._refs = refs
        self._workers: OrderedDict[bytes, _Worker] = OrderedDict()
        self._pending: dict[int, Origin] = {}
        self._known_routes: dict[str, Route] = {}  # every pattern announced since start
        self._turns: dict[str, int] = {}  # round-robin position per route pattern

    def __len__(self) -> int:
        return len(self._workers)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def busy(self) -> int:
        return sum(1 for w in self._workers.values() if w.busy)

    def seen(self, worker: bytes, now: float) -> bool:
        """Record life from a worker; False if it is unknown (it must say Hello first)."""
        entry = self._workers.get(worker)
        if entry is None:
            return False
        entry.last_seen = now
        return True

    def add(
        self,
        worker: bytes,
        now: float,
        routes: Sequence[str] | None = None,
        *,
        busy: bool = False,
    ) -> bool:
        """A worker's Hello: (re)register it with its routes (None: serves everything) and busy
        state. Returns True when it was not known. Unparseable routes are left out; more than
        MAX_ROUTES of them count as "serves everything" (the worker answers 404 itself)."""
        parsed: tuple[Route, ...] | None = None
        if routes is not None and len(routes) <= MAX_ROUTES:
            parsed = tuple(r for r in (self._parse(spec) for spec in routes) if r is not None)
        entry = self._workers.get(worker)
        if entry is None:
            self._workers[worker] = _Worker(now, parsed, busy)
            return True
        entry.last_seen, entry.routes, entry.busy = now, parsed, busy
        return False

    def _parse(self, spec: str) -> Route | None:
        route = self._known_routes.get(spec)
        if route is not None:
            return route
        try:
            route = parse_route(spec)
        except ValueError:
            return None
        if len(self._known_routes) < MAX_KNOWN_ROUTES:
            self._known_routes[spec] = route
        return route

    def leave(self, worker: bytes) -> bool:
        """Take a worker out of the rotation, keeping its requests in flight for its replies;
        whether it was in the rotation."""
        return self._workers.pop(worker, None) is not None

    def remove(self, worker: bytes) -> list[Origin]:
        """Forget a worker; returns the requests it had in flight (now orphaned)."""
        self._workers.pop(worker, None)
        orphaned = [ref for ref, o in self._pending.items() if o.worker == worker]
        return [self._pending.pop(ref) for ref in orphaned]

    def forward(
        self,
        identity: bytes,
        gateway: str | None,
        ref: int,
        now: float,
        request_timeout_s: float,
        method: str,
        path: str,
    ) -> Picked | Miss:
        """Pick a worker that serves ``method path`` (round-robin, idle ones first) and register
        the request under a fresh ref; or say why none can answer."""
        segments = path_segments(path)
        method = method.upper()
        idle: list[tuple[bytes, str]] = []
        busy: list[tuple[bytes, str]] = []  # used only when no idle worker serves it
        for worker, entry in self._workers.items():
            label = entry.serves(method, segments)
            if label is not None:
                (busy if entry.busy else idle).append((worker, label))
        candidates = idle or busy
        if not candidates:
            return self._miss(method, segments)
        # Round-robin per route (the first candidate's pattern), so that each route's load is
        # spread over the workers serving it whatever other routes are asked in between.
        key = candidates[0][1]
        turn = self._turns.get(key, 0)
        worker, label = candidates[turn % len(candidates)]
        if key in self._turns or len(self._turns) < MAX_KNOWN_ROUTES:
            self._turns[key] = turn + 1
        router_ref = self._fresh_ref()
        self._pending[router_ref] = Origin(identity, gateway, ref, now + request_timeout_s, worker)
        return Picked(worker, router_ref, label)

    def _miss(self, method: str, segments: list[str]) -> Miss:
        if not self._workers:
            return Miss.NO_WORKER
        for route in self._known_routes.values():
            if route.match(method, segments) is not None:
                return Miss.NO_WORKER
        return Miss.NOT_FOUND

    def _fresh_ref(self) -> int:
        while True:
            ref = self._refs()
            if ref and ref not in self._pending:
                return ref

    def answer(self, router_ref: int, worker: bytes) -> tuple[Origin | None, bool]:
        """The request a worker's reply answers, removed from the pending ones; and whether the
        reply was foreign (a request in flight, sent to another peer: ignored, kept pending)."""
        origin = self._pending.get(router_ref)
        if origin is None:
            return None, False
        if origin.worker != worker:
            return None, True
        del self._pending[router_ref]
        return origin, False

    def cancel(self, router_ref: int) -> None:
        """Forget a request that could not be sent."""
        self._pending.pop(router_ref, None)

    def routes_served(self) -> dict[str, int]:
        """Live workers per route pattern (``*``: workers that announced no routes)."""
        counts: dict[str, int] = {}
        for entry in self._workers.values():
            specs = [ANY] if entry.routes is None else {r.spec for r in entry.routes}
            for spec in specs:
                counts[spec] = counts.get(spec, 0) + 1
        return counts

    def drain(self) -> list[Origin]:
        """Forget every request in flight (the router stopped serving); returns them."""
        pending, self._pending = self._pending, {}
        return list(pending.values())

    def expire(self, now: float) -> tuple[list[Origin], list[Origin]]:
        """Requests orphaned by workers silent for longer than the timeout (which are
        forgotten), and requests past their deadline."""
        dead = {w for w, e in self._workers.items() if now - e.last_seen > self.timeout_s}
        for worker in dead:
            del self._workers[worker]
        orphaned = [ref for ref, o in self._pending.items() if o.worker in dead]
        orphans = [self._pending.pop(ref) for ref in orphaned]
        late = [ref for ref, o in self._pending.items() if o.deadline <= now]
        return orphans, [self._pending.pop(ref) for ref in late]
