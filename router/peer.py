"""The router-router link of a primary/backup pair: a ZeroMQ shell around :mod:`router.bstar`.

Each router of a pair may bind a ROUTER socket for its peer (``--peer-bind``) and may connect a
DEALER to its peer's (``--peer-connect``); one direction is enough, because states travel both
ways over one connection: the connecting side sends its ``PeerState`` every peer interval (a
quarter of ``--peer-timeout``) and on every change, the bound side answers each one it receives
with its own and also announces its changes to the last peer it heard. (Both may connect, as
in k8s/, where each pod only knows the other's Service name; then states simply arrive twice.)
The DEALER sets ``IMMEDIATE``, so no stale state waits in a queue for a link that is down.

:class:`Pair` owns the sockets, the timer and the :class:`~router.bstar.BinaryStar`, logs every
transition, and calls ``on_change`` with each decision that changed the state; the router
shell does what becoming or ceasing to be ACTIVE means (docs/protocol.md, "Failover").
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable

import zmq

from roomcast.core import wire
from roomcast.core.errors import WireError
from roomcast.curve import PLAIN, SocketOptions
from roomcast.zmqio import Batch, BatchReader, bind
from router.bstar import BinaryStar, Decision, Event, Role, State, peer_event
from router.metrics import RouterMetrics

__all__ = ["Pair", "PairConfig"]

log = logging.getLogger("roomcast.router.pair")

_TO_WIRE_ROLE = {Role.PRIMARY: wire.RouterRole.PRIMARY, Role.BACKUP: wire.RouterRole.BACKUP}
_TO_WIRE_STATE = {
    State.PRIMARY: wire.RouterState.PRIMARY,
    State.BACKUP: wire.RouterState.BACKUP,
    State.ACTIVE: wire.RouterState.ACTIVE,
    State.PASSIVE: wire.RouterState.PASSIVE,
    State.LEAVING: wire.RouterState.LEAVING,
}
_FROM_WIRE_STATE = {v: k for k, v in _TO_WIRE_STATE.items()}
_HANDING_OVER = (State.ACTIVE, State.LEAVING)
_PEER_HWM = 16
_LEAVE_LINGER_MS = 500  # a few states at most: a newer one always follows


@dataclasses.dataclass(frozen=True, kw_only=True)
class PairConfig:
    role: Role
    bind: str = ""  # ROUTER for the peer's DEALER ("" none; port 0: pick one)
    connect: str = ""  # DEALER to the peer's bind address ("" none)
    timeout_s: float = 2.0  # peer silent this long: a client's vote may make us active
    # CURVE (roomcast/curve.py): the ROUTER is a server, the DEALER a client of the peer's
    curve_server: SocketOptions = PLAIN
    curve_client: SocketOptions = PLAIN

    @property
    def interval_s(self) -> float:
        return self.timeout_s / 4


class Pair:
    def __init__(
        self,
        config: PairConfig,
        ctx: zmq.Context[zmq.Socket[bytes]],
        metrics: RouterMetrics,
        *,
        epoch: Callable[[], str],
        gateways: Callable[[], Iterable[str]],
        on_change: Callable[[Decision], None],
    ) -> None:
        if not (config.bind or config.connect):
            raise ValueError("a router pair needs --peer-bind, --peer-connect or both")
        self.config = config
        self.metrics = metrics
        self.fsm = BinaryStar(config.role, peer_timeout_s=config.timeout_s, now=time.monotonic())
        self._epoch = epoch
        self._gateways = gateways
        self._on_change = on_change
        # The gateways the peer served when last heard active: whom a takeover waits for.
        self.peer_gateways: tuple[str, ...] = ()
        self._conflict = False  # logged once per streak of same-role peer states
        self._peer_identity: bytes | None = None
        self._readers: list[BatchReader] = []
        self._task: asyncio.Task[None] | None = None
        self._router: zmq.Socket[bytes] | None = None
        self._dealer: zmq.Socket[bytes] | None = None
        self.bind_endpoint = ""
        if config.bind:
            self._router = ctx.socket(zmq.ROUTER)
            config.curve_server.apply(self._router)
            self._router.setsockopt(zmq.LINGER, 0)
            self._router.setsockopt(zmq.SNDHWM, _PEER_HWM)
            self.bind_endpoint = bind(self._router, config.bind)
            router = self._router
            self._readers.append(BatchReader(router, lambda b: self._on_batch(router, b)))
        if config.connect:
            self._dealer = ctx.socket(zmq.DEALER)
            config.curve_client.apply(self._dealer)
            self._dealer.setsockopt(zmq.LINGER, 0)
            self._dealer.setsockopt(zmq.IMMEDIATE, 1)
            self._dealer.setsockopt(zmq.SNDHWM, _PEER_HWM)
            self._dealer.connect(config.connect)
            dealer = self._dealer
            self._readers.append(BatchReader(dealer, lambda b: self._on_batch(dealer, b)))
        metrics.peer_alive.set_function(lambda: float(self.fsm.peer_alive(time.monotonic())))
        metrics.paired.set_function(
            lambda: float(self.fsm.peer_state is not None and self.fsm.peer_alive(time.monotonic()))
        )

    @property
    def state(self) -> State:
        return self.fsm.state

    @property
    def serving(self) -> bool:
        return self.fsm.serving

    def start(self) -> None:
        for reader in self._readers:
            reader.start()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        log.info(
            "%s router of a pair (peer timeout %.1fs; bound %s, connected to %s): %s",
            self.config.role.value,
            self.config.timeout_s,
            self.bind_endpoint or "-",
            self.config.connect or "-",
            self.fsm.state.value,
        )

    def leave(self) -> None:
        """We stop on purpose: serve no more and tell the peer now, with the gateways we
        serve, so that it takes over at once instead of after the peer timeout."""
        decision = self.fsm.leave()
        log.info("%s -> %s: %s", decision.before.value, decision.after.value, decision.reason)
        for sock in (self._router, self._dealer):
            if sock is not None:
                sock.setsockopt(zmq.LINGER, _LEAVE_LINGER_MS)  # let the announcement out
        self.announce()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for reader in self._readers:
            reader.stop()
        for sock in (self._router, self._dealer):
            if sock is not None:
                sock.close()

    # --- events ----------------------------------------------------------------------------

    def vote(self, now: float) -> Decision:
        """A client request reached us while not serving: its vote (see router.bstar)."""
        decision = self.fsm.handle(Event.CLIENT_REQUEST, now)
        if decision.changed:
            self._changed(decision)
        return decision

    def _on_batch(self, sock: zmq.Socket[bytes], batch: Batch) -> None:
        now = time.monotonic()
        for parts in batch:
            try:
                msg = wire.decode(parts[-1])
            except WireError:
                self.metrics.wire_errors.inc()
                continue
            if not isinstance(msg, wire.PeerState) or msg.state not in _FROM_WIRE_STATE:
                self.metrics.wire_errors.inc()
                continue
            if sock is self._router and len(parts) == 2:
                self._peer_identity = parts[0]
                self._send(sock, parts[0])  # answer with ours: the link works both ways
            self._peer(msg, now)

    def _peer(self, msg: wire.PeerState, now: float) -> None:
        if msg.state in (wire.RouterState.ACTIVE, wire.RouterState.LEAVING):
            self.peer_gateways = msg.gateways
        decision = self.fsm.handle(peer_event(_FROM_WIRE_STATE[msg.state]), now)
        conflict = decision.conflict or msg.role == _TO_WIRE_ROLE[self.config.role]
        if conflict and not self._conflict:
            log.error(
                "the peer router says it is %s too (state %s, epoch %s): configure one primary "
                "and one backup",
                self.config.role.value,
                msg.state.name.lower(),
                msg.epoch,
            )
        self._conflict = conflict
        if decision.changed:
            self._changed(decision, msg.epoch)
        elif decision.reason and not conflict:
            log.warning("%s (peer epoch %s)", decision.reason, msg.epoch)

    def _changed(self, decision: Decision, peer_epoch: str = "") -> None:
        level = logging.WARNING if decision.before is State.ACTIVE else logging.INFO
        log.log(
            level,
            "%s -> %s: %s%s",
            decision.before.value,
            decision.after.value,
            decision.reason,
            f" (peer epoch {peer_epoch})" if peer_epoch else "",
        )
        self._on_change(decision)  # first: an activation takes a new epoch to announce
        self.announce()

    # --- sending ---------------------------------------------------------------------------

    def announce(self) -> None:
        """Tell the peer our state now (both directions that exist)."""
        if self._dealer is not None:
            self._send(self._dealer, None)
        if self._router is not None and self._peer_identity is not None:
            self._send(self._router, self._peer_identity)

    def _send(self, sock: zmq.Socket[bytes], identity: bytes | None) -> None:
        state = wire.PeerState(
            role=_TO_WIRE_ROLE[self.config.role],
            state=_TO_WIRE_STATE[self.fsm.state],
            epoch=self._epoch(),
            # Whom a takeover waits for: the gateways we serve, or served until we left.
            gateways=tuple(self._gateways()) if self.fsm.state in _HANDING_OVER else (),
        )
        body = wire.encode(state)
        try:
            if identity is None:
                sock.send(body, zmq.NOBLOCK)
            else:
                sock.send_multipart((identity, body), zmq.NOBLOCK)
        except zmq.ZMQError:
            return  # no live link (IMMEDIATE) or a full queue: the next interval tries again
        for reader in self._readers:
            reader.kick()  # a send can consume the edge that announced a state (zmqio)

    async def _loop(self) -> None:
        while True:
            if self._dealer is not None:
                self._send(self._dealer, None)
            await asyncio.sleep(self.config.interval_s)
