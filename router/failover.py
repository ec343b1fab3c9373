"""How a router of a primary/backup pair treats commands differently from a single router.

Owns the two places where being one of a pair changes command handling (docs/protocol.md
"Failover"). While standing by, a client's command is its vote that may make this router
active (router.bstar); if the vote fails, the command is refused, and a gateway that still
takes us for its router is sent back to Hello. Right after a failover, client commands are
held until every gateway the peer served has resynced: applied earlier, a broadcast would
reach nobody and a join of their sockets would fail. The serving state, the epoch and the
history stay with the shell (router/server.py), which calls in here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from roomcast.core import wire
from roomcast.core.errors import RouterPassive
from router.links import Links, error_reply, gateway_of
from router.metrics import RouterMetrics
from router.peer import Pair

__all__ = ["Failover"]

log = logging.getLogger("roomcast.router")

# Commands a settling router holds: what a client (SDK or gateway) asks of the topology.
_CLIENT_COMMANDS = (
    wire.Publish,
    wire.Membership,
    wire.LeaveAll,
    wire.CopyMembers,
    wire.Query,
    wire.Request,
    wire.SetPresence,
    wire.TrackPresence,
)


class Failover:
    """``pair`` None: a single router, which admits everything and never settles.

    ``handle(identity, msg, now)`` is the shell's command handler, which held commands go
    through once released; at most ``max_held`` are held (then they are served at once).
    """

    def __init__(
        self,
        pair: Pair | None,
        links: Links,
        metrics: RouterMetrics,
        *,
        handle: Callable[[bytes, wire.Message, float], None],
        max_held: int,
    ) -> None:
        self._pair = pair
        self._links = links
        self._metrics = metrics
        self._handle = handle
        self._max_held = max_held
        # After a failover: the gateways we wait for, and the client commands held meanwhile.
        self.settling: set[str] | None = None
        self._held: deque[tuple[bytes, wire.Message]] = deque()
        self._settle_timer: asyncio.TimerHandle | None = None

    def admit(self, identity: bytes, gateway: str | None, msg: wire.Message, now: float) -> bool:
        """Whether a standing-by router of a pair handles ``msg`` (else it answered it).

        Workers register with both routers of a pair all the time (their Hellos, heartbeats
        and late replies pass), so the router that takes over knows them at once. A gateway's
        Hello and any SDK command are client requests: the vote that may make us active
        (router.bstar). Anything else from a gateway means it still takes us for its router:
        Reset sends it back to Hello, where our refusal makes it try the other router.
        """
        if self._pair is None:
            return True  # a single router: as ever, whatever its state
        if gateway is None and (
            isinstance(msg, (wire.Heartbeat, wire.Reply))
            or (isinstance(msg, (wire.Hello, wire.Goodbye)) and msg.role is wire.Role.WORKER)
        ):
            return True
        if gateway is not None and isinstance(msg, wire.Goodbye):
            return False  # not our gateway: nothing to forget, and it is going away anyway
        if gateway is not None and not isinstance(msg, wire.Hello):
            self._links.reset(gateway)
            return False
        decision = self._pair.vote(now)
        if decision.accept:
            return True
        err = RouterPassive(f"this router is standing by: {decision.reason}")
        self._metrics.command_errors.labels(err.code).inc()
        ref = getattr(msg, "ref", 0)
        if gateway is not None:
            # Not a gateway of ours: no sequenced stream, so answer on its topic directly.
            self._links.unsequenced(gateway, error_reply(ref, err))
        elif ref:
            self._links.reply(identity, None, error_reply(ref, err))
        return False

    def settle(self, expected: set[str], timeout_s: float) -> None:
        """Hold client commands until the ``expected`` gateways resynced, or ``timeout_s``."""
        self.settling = expected
        self._settle_timer = asyncio.get_running_loop().call_later(timeout_s, self.release)
        log.info(
            "holding client commands until %d gateways resync (at most %.1fs)",
            len(expected),
            timeout_s,
        )

    def hold(self, identity: bytes, gateway: str | None, msg: wire.Message) -> bool:
        """While settling after a failover: hold client commands (True), count resyncs."""
        settling = self.settling
        if settling is None:
            return False
        if isinstance(msg, wire.Resync):
            if msg.last and gateway in settling:
                settling.discard(gateway)
                if not settling:
                    asyncio.get_running_loop().call_soon(self.release)  # after this batch
            return False
        if not isinstance(msg, _CLIENT_COMMANDS):
            return False
        if len(self._held) >= self._max_held:
            self.release()  # bounded: serve what we have rather than grow
            return False
        self._held.append((identity, msg))
        return True

    def release(self) -> None:
        if self.settling is None:
            return
        missing = len(self.settling)
        self.settling = None
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        held, self._held = self._held, deque()
        log.log(
            logging.WARNING if missing else logging.INFO,
            "serving %d held client commands (%s)",
            len(held),
            f"{missing} gateways did not come back" if missing else "every gateway resynced",
        )
        now = time.monotonic()
        for identity, msg in held:
            self._handle(identity, msg, now)

    def abandon(self) -> None:
        """Stop settling (we step down): the held commands get the standing-by answer."""
        self.settling = None
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        held, self._held = self._held, deque()
        for identity, msg in held:  # never applied: the caller may send them elsewhere
            self.admit(identity, gateway_of(identity), msg, time.monotonic())
