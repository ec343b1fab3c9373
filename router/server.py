"""The router's ZeroMQ shell: receives commands, applies them to the topology, fans out.

Owns the ROUTER (commands) and XPUB (fanout) sockets, the command loop (decode, dispatch, the
error answer), gateway liveness, the epoch and the serving state. All decisions about
membership come from :class:`roomcast.core.topology.Topology`; this module only moves messages
and keeps time, and hands the rest to one module per concern: sends and the gateways'
sequenced streams (router/links.py), publishing and confirmations (router/publish.py), queries
and presence limits (router/queries.py), action requests (router/requests.py), and what being
one of a pair changes (router/failover.py).

Replies to a gateway travel on that gateway's topic (after any ``MemberUpdate`` they confirm);
replies to SDK clients and workers go back over the ROUTER socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import logging
import secrets
import time
from collections import Counter as Tally

import zmq

from roomcast.core import wire
from roomcast.core.errors import (
    BadRequest,
    Conflict,
    InternalError,
    RoomcastError,
    RouterUnavailable,
    WireError,
)
from roomcast.core.rooms import validate_room, validate_rooms
from roomcast.core.topology import Changes, Topology
from roomcast.curve import ServerCurve
from roomcast.zmqio import Batch, BatchReader, bind
from router import queries
from router.bstar import Decision, Role, State
from router.config import RouterConfig
from router.failover import Failover
from router.history import History, Recovery
from router.links import GATEWAY_ID_PREFIX, Links, error_reply, gateway_of
from router.metrics import RouterMetrics
from router.peer import Pair, PairConfig
from router.publish import Publisher
from router.requests import Requests
from router.workers import WorkerPool

__all__ = ["GATEWAY_ID_PREFIX", "MAX_CONTEXT_BYTES", "Router", "RouterConfig"]

# A gateway bounds each socket's requester context (gateway/requester.py: 16 KiB); the router
# keeps one per socket, so it drops any larger one rather than trust every peer to.
MAX_CONTEXT_BYTES = 64 * 1024

log = logging.getLogger("roomcast.router")

_CLAIM_LOG_INTERVAL_S = 10.0  # refused claims are counted each; logged at most this often
# CURVE key roles that may speak as a gateway (roomcast.curve: "router" is the router's own key,
# "any" a key named without a role prefix).
_GATEWAY_ROLES = frozenset({"gateway", "router", "any"})
_WORKER_ROLES = frozenset({"worker", "any"})


class Router:
    def __init__(
        self, config: RouterConfig, metrics: RouterMetrics, ctx: zmq.Context[zmq.Socket[bytes]]
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.epoch = secrets.token_hex(8)
        patterns = config.presence_rooms
        self.topology = Topology(
            max_rooms_per_socket=config.max_rooms_per_socket,
            tracked=lambda room: any(fnmatch.fnmatchcase(room, p) for p in patterns),
        )
        self.history = self._new_history()
        # Unguessable refs: a peer cannot answer a request it was not sent (router/workers.py).
        self.workers = WorkerPool(
            timeout_s=config.worker_timeout_s, refs=lambda: secrets.randbits(64)
        )
        # Its authenticator runs before any bind, so no handshake completes unchecked.
        self.curve = ServerCurve(
            ctx,
            config.curve_secret_key,
            config.curve_authorized_keys,
            refused=lambda reason: metrics.curve_refused.labels(reason).inc(),
        )
        self.curve.start()
        self._commands = ctx.socket(zmq.ROUTER)
        self.curve.server.apply(self._commands)
        self._commands.setsockopt(zmq.LINGER, 0)
        self._commands.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # Sends to a peer that is gone fail loudly instead of vanishing (then we can reroute).
        self._commands.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._commands.setsockopt(zmq.RCVHWM, config.commands_hwm_messages)
        self._commands.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
        self._commands.setsockopt(zmq.SNDHWM, config.commands_hwm_messages)
        self._fanout = ctx.socket(zmq.XPUB)
        self.curve.fanout.apply(self._fanout)  # with CURVE on: gateway keys only
        self._fanout.setsockopt(zmq.LINGER, int(config.drain_timeout_s * 1000))
        self._fanout.setsockopt(zmq.SNDHWM, config.fanout_hwm_messages)
        # Without NODROP a full pipe drops silently; with it the send fails and we can count it.
        self._fanout.setsockopt(zmq.XPUB_NODROP, 1)
        self.commands_endpoint = bind(self._commands, config.commands)
        self.fanout_endpoint = bind(self._fanout, config.fanout)
        self.links = Links(self._commands, self._fanout, metrics, epoch=lambda: self.epoch)
        self.publisher = Publisher(
            self.topology,
            self.links,
            metrics,
            history=lambda: self.history,
            max_publish_bytes=config.max_publish_bytes,
        )
        self.requests = Requests(
            self.workers, self.links, metrics, timeout_s=config.request_timeout_s
        )
        self._readers = [
            # With CURVE on, each command comes with its key's role (the ZAP User-Id).
            BatchReader(self._commands, self._on_commands, user_id=self.curve.enabled),
            BatchReader(self._fanout, _ignore_subscriptions),
        ]
        self._beat_task: asyncio.Task[None] | None = None
        self._presence_task: asyncio.Task[None] | None = None
        self.serving = False
        self._claim_logged = -_CLAIM_LOG_INTERVAL_S
        self.pair: Pair | None = None
        if config.role != "single":
            pair = PairConfig(
                role=Role(config.role),
                bind=config.peer_bind,
                connect=config.peer_connect,
                timeout_s=config.peer_timeout_s,
                curve_server=self.curve.server,
                curve_client=self.curve.peer,
            )
            self.pair = Pair(
                pair,
                ctx,
                metrics,
                epoch=lambda: self.epoch,
                gateways=lambda: self.links.gateways,
                on_change=self._on_pair,
            )
        self.failover = Failover(
            self.pair,
            self.links,
            metrics,
            handle=self._handle,
            max_held=config.commands_hwm_messages,
        )
        metrics.bind_topology(self.topology.stats, self.topology.memberships)
        metrics.history_bytes.set_function(lambda: self.history.bytes())
        metrics.history_rooms.set_function(lambda: self.history.rooms())
        metrics.bind_workers(
            lambda: len(self.workers),
            lambda: self.workers.in_flight,
            busy=lambda: self.workers.busy,
            routes=self.workers.routes_served,
        )

    def _new_history(self) -> History:
        return History(
            patterns=self.config.history_rooms,
            size=self.config.history_size,
            ttl_s=self.config.history_ttl_s,
            epoch=self.epoch,
            room_max_bytes=self.config.history_room_max_bytes,
            max_bytes=self.config.history_max_bytes,
            max_rooms=self.config.history_max_rooms,
        )

    def _recovery(self, since: Recovery, max_bytes: int) -> bytes:
        body, fits = queries.recovery_within(since, max_bytes)
        if not fits:
            self.metrics.recoveries_too_large.inc()
        return body

    def _count_evictions(self) -> None:
        for reason, n in self.history.take_evictions().items():
            self.metrics.history_evicted.labels(reason).inc(n)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        for reader in self._readers:
            reader.start()
        loop = asyncio.get_running_loop()
        self._beat_task = loop.create_task(self._beat())
        self._presence_task = loop.create_task(self._flush_presence())
        self.serving = self.pair is None or self.pair.serving
        self.metrics.serving.set(int(self.serving))
        if self.pair is not None:
            self.pair.start()
        self.metrics.up.set(1)
        log.info(
            "router epoch %s: commands %s, fanout %s",
            self.epoch,
            self.commands_endpoint,
            self.fanout_endpoint,
        )

    async def stop(self) -> None:
        if self.pair is not None and self.serving:
            self._hand_over()
        self.serving = False
        self.metrics.up.set(0)
        self.metrics.serving.set(0)
        if self.pair is not None:
            self.pair.stop()
        for task in (self._beat_task, self._presence_task):
            if task is not None:
                task.cancel()
        for reader in self._readers:
            reader.stop()
        self._commands.close()
        # Linger (bounded by the drain timeout) flushes what is queued for gateways.
        self._fanout.close()
        self.curve.stop()

    # --- commands --------------------------------------------------------------------------

    def _on_commands(self, batch: Batch) -> None:
        kinds: Tally[str] = Tally()
        now = time.monotonic()
        roles = self.curve.enabled
        # What the batch sends each gateway leaves as one message (a Bundle) at its end.
        self.links.hold()
        try:
            for parts in batch:
                if len(parts) != 2 + roles:
                    self.metrics.wire_errors.inc()
                    continue
                identity, body = parts[0], parts[1]
                if roles and identity.startswith(GATEWAY_ID_PREFIX):
                    role = parts[2].decode("ascii", "replace")
                    if role not in _GATEWAY_ROLES:
                        # A backend's or worker's key speaking as a gateway: refused, whatever
                        # it says.
                        self._refuse_role(identity, role, "a gateway")
                        continue
                try:
                    msg = wire.decode(body)
                except WireError:
                    self.metrics.wire_errors.inc()
                    continue
                if (
                    roles
                    and isinstance(msg, wire.Hello)
                    and msg.role is wire.Role.WORKER
                    and parts[2].decode("ascii", "replace") not in _WORKER_ROLES
                ):
                    # Only worker keys are sent requests (with their headers and data).
                    self._refuse_role(identity, parts[2].decode("ascii", "replace"), "a worker")
                    continue
                kinds[msg.KIND] += 1
                self._handle(identity, msg, now)
        finally:
            self.links.release()
        transitions = self.topology.take_transitions()
        if transitions:
            self.publisher.presence.add(transitions)
        self._count_evictions()
        self.metrics.batch_size.observe(len(batch))
        for kind, n in kinds.items():
            self.metrics.commands.labels(kind).inc(n)

    def _handle(self, identity: bytes, msg: wire.Message, now: float) -> None:
        gateway = gateway_of(identity)
        if not self.serving and not self.failover.admit(identity, gateway, msg, now):
            return
        if self.failover.settling is not None and self.failover.hold(identity, gateway, msg):
            return
        if gateway is not None:
            link = self.links.gateways.get(gateway)
            if link is not None and link.identity != identity:
                # Whatever it says (a Goodbye too): only the process that said Hello speaks.
                self._refuse_claim(identity, gateway, msg, now)
                return
            if not isinstance(msg, (wire.Hello, wire.Goodbye)):
                if link is None:
                    self.links.reset(gateway)
                    return
                link.last_seen = now
        elif gateway is None and isinstance(msg, (wire.Heartbeat, wire.Reply)):
            self.workers.seen(identity, now)
        known = len(self.links.gateways)
        try:
            self._dispatch(identity, gateway, msg, now)
        except RoomcastError as err:
            self._fail(identity, gateway, msg, err)
        except Exception:  # a bug of ours: answer 500, keep serving everyone else
            log.exception("command %s failed", msg.KIND)
            self._fail(identity, gateway, msg, InternalError("internal error"))
        if self.pair is not None and len(self.links.gateways) != known:
            self.pair.announce()  # the backup learns at once whom to wait for after a failover

    def _refuse_role(self, identity: bytes, role: str, speaking_as: str) -> None:
        self.metrics.claims_refused.labels("role").inc()
        now = time.monotonic()
        if now - self._claim_logged >= _CLAIM_LOG_INTERVAL_S:
            self._claim_logged = now
            log.warning(
                "refused a CURVE key whose role is %s speaking as %s (only %s keys may)",
                role,
                speaking_as,
                speaking_as.split()[-1],
            )

    def _refuse_claim(self, identity: bytes, gateway: str, msg: wire.Message, now: float) -> None:
        """Another process speaks for a live gateway: a second gateway started with the same
        --gateway-id, or a peer that learnt the id from the fanout. The live one keeps its link
        (its stream, its sockets); the claimant is answered directly, never on the topic."""
        self.metrics.claims_refused.labels("gateway").inc()
        if now - self._claim_logged >= _CLAIM_LOG_INTERVAL_S:
            self._claim_logged = now
            log.warning(
                "refused %s from a second process claiming live gateway %s (same --gateway-id "
                "twice, or a peer impersonating it)",
                msg.KIND,
                gateway,
            )
        ref = getattr(msg, "ref", 0)
        if ref:
            err = Conflict(
                f"gateway id {gateway} is held by another live gateway process; retry after "
                "it leaves (or is expired)"
            )
            self.metrics.command_errors.labels(err.code).inc()
            self.links.direct(identity, error_reply(ref, err))

    def _fail(
        self, identity: bytes, gateway: str | None, msg: wire.Message, err: RoomcastError
    ) -> None:
        self.metrics.command_errors.labels(err.code).inc()
        ref = getattr(msg, "ref", 0)
        if ref:
            self.links.reply(identity, gateway, error_reply(ref, err))

    def _dispatch(
        self, identity: bytes, gateway: str | None, msg: wire.Message, now: float
    ) -> None:
        topo = self.topology
        reply = self.links.reply
        if isinstance(msg, wire.Publish):
            self.publisher.publish(identity, gateway, msg)
        elif isinstance(msg, wire.Membership):
            if msg.recover and len(msg.rooms) != 1:
                raise BadRequest("a join with recovery names exactly one room")
            changes = topo.change(
                msg.sockets, msg.rooms, leave=msg.leave, reserve_own_rooms=msg.client
            )
            if msg.recover and not msg.leave:
                # Join and catch up in one step: the missed messages ride in the reply, which
                # the asker's stream carries before any later live delivery for the room.
                self._apply(identity, gateway, 0, changes)
                since = self.history.since(msg.rooms[0], msg.since_epoch, msg.since_offset, now)
                body = self._recovery(since, msg.recover_max_bytes)
                reply(identity, gateway, wire.Reply(ref=msg.ref, body=body))
            else:
                self._apply(identity, gateway, msg.ref, changes)
        elif isinstance(msg, wire.SocketOpen):
            if gateway is None:
                raise BadRequest("only gateways open sockets")
            bounded = tuple(_bounded(c) for c in msg.contexts)
            try:
                topo.open_sockets(gateway, msg.sockets, msg.users, bounded)
            except Conflict:
                self.metrics.claims_refused.labels("socket").inc()
                if now - self._claim_logged >= _CLAIM_LOG_INTERVAL_S:
                    self._claim_logged = now
                    log.warning("refused gateway %s's claim on another gateway's socket", gateway)
                raise
            reply(identity, gateway, wire.Reply(ref=msg.ref))
        elif isinstance(msg, wire.SocketClose):
            if gateway is not None:
                topo.close_sockets(gateway, msg.sockets)
        elif isinstance(msg, wire.Heartbeat):
            # Liveness is recorded in _handle. A gateway's numbered heartbeat is answered on
            # its stream: that is how it learns its commands still reach us.
            if gateway is not None and msg.ref:
                reply(identity, gateway, wire.Reply(ref=msg.ref))
        elif isinstance(msg, wire.Query):
            if msg.kind is wire.QueryKind.RECOVER:
                room = validate_room(msg.target)
                since = self.history.since(room, msg.epoch, msg.offset, time.monotonic())
                body = self._recovery(since, msg.max_bytes)
                reply(identity, gateway, wire.Reply(ref=msg.ref, body=body))
            else:
                reply(identity, gateway, queries.answer(msg, topo, self.history, time.monotonic()))
        elif isinstance(msg, wire.LeaveAll):
            self._apply(identity, gateway, msg.ref, topo.leave_all(msg.room))
        elif isinstance(msg, wire.CopyMembers):
            validate_rooms(msg.rooms)
            changes = topo.copy_members(msg.source, msg.rooms, remove=msg.remove)
            self._apply(identity, gateway, msg.ref, changes)
        elif isinstance(msg, wire.Resync):
            if gateway is None:
                raise BadRequest("only gateways resync")
            identities = {s.socket: (s.user, s.meta) for s in msg.sockets if s.user}
            contexts = {s.socket: _bounded(s.context) for s in msg.sockets if s.context}
            refused = topo.resync(
                gateway, ((s.socket, s.rooms) for s in msg.sockets), identities, contexts
            )
            if refused:
                self.metrics.claims_refused.labels("socket").inc(refused)
                log.warning(
                    "gateway %s resynced %d socket ids another gateway holds: refused",
                    gateway,
                    refused,
                )
            if msg.last:
                log.info("gateway %s resynced", gateway)
                reply(identity, gateway, wire.Reply(ref=msg.ref))
        elif isinstance(msg, wire.Hello):
            self._hello(identity, gateway, msg, now)
        elif isinstance(msg, wire.Goodbye):
            self._goodbye(identity, gateway, msg)
        elif isinstance(msg, wire.Request):
            self.requests.forward(identity, gateway, self._with_requester(msg), now)
        elif isinstance(msg, wire.Reply):
            self.requests.answer(identity, msg)
        elif isinstance(msg, wire.Delivered):
            if gateway is not None:
                self.publisher.delivered(msg, gateway)
        elif isinstance(msg, wire.SetPresence):
            self._set_presence(identity, gateway, msg)
        elif isinstance(msg, wire.TrackPresence):
            topo.track(msg.room, msg.enabled)
            reply(identity, gateway, wire.Reply(ref=msg.ref))
        else:
            raise BadRequest(f"unexpected {msg.KIND} command")

    def _hello(self, identity: bytes, gateway: str | None, msg: wire.Hello, now: float) -> None:
        if not wire.compatible(msg.protocol_version):
            self.metrics.refused_peers.inc()
            log.warning(
                "refusing %s %r: protocol %s is not compatible with the router's %s",
                msg.role.name.lower(),
                msg.node_id,
                wire.version_name(msg.protocol_version),
                wire.version_name(wire.PROTOCOL_VERSION),
            )
            err = BadRequest(
                f"protocol {wire.version_name(msg.protocol_version)} is not compatible with "
                f"the router's {wire.version_name(wire.PROTOCOL_VERSION)}"
            )
            if gateway is not None:
                # Not a known gateway, so no sequenced stream: answer on its topic directly.
                self.links.unsequenced(gateway, error_reply(msg.ref, err))
                return
            raise err
        ack = wire.HelloAck(
            ref=msg.ref,
            epoch=self.epoch,
            heartbeat_interval_ms=int(self.config.heartbeat_interval_s * 1000),
            heartbeat_acks=True,
        )
        if gateway is None:
            if msg.role is wire.Role.WORKER:
                self.requests.hello(identity, msg, now)
            self.links.reply(identity, None, ack)
            return
        dropped = self.topology.add_gateway(gateway)
        known = self.links.add(gateway, identity, now)
        log.info(
            "gateway %s hello (%s, %d sockets dropped until its resync)",
            gateway,
            "known" if known else "new",
            dropped,
        )
        self.links.reply(identity, gateway, ack)

    def _goodbye(self, identity: bytes, gateway: str | None, msg: wire.Goodbye) -> None:
        """A peer leaves on purpose: forget it now, not after the expiry meant for crashes."""
        if gateway is None:
            if msg.role is wire.Role.WORKER and self.requests.goodbye(identity, msg.node_id):
                self.metrics.goodbyes.labels("worker").inc()
            if msg.ref:
                # Ordered after every request we sent it: none follows this acknowledgement.
                self.links.reply(identity, None, wire.Reply(ref=msg.ref))
            return
        if self.links.gateways.pop(gateway, None) is None:
            return  # already expired or reset: nothing left of it
        dropped = self.topology.drop_gateway(gateway)
        self.metrics.goodbyes.labels("gateway").inc()
        log.info("gateway %s left after draining (%d sockets removed)", gateway, dropped)

    def _set_presence(self, identity: bytes, gateway: str | None, msg: wire.SetPresence) -> None:
        queries.check_presence(msg)
        owner = self.topology.set_presence(msg.socket, msg.user, msg.meta)
        if msg.context and gateway == owner:  # only the socket's own gateway vouches for it
            self.topology.set_context(msg.socket, _bounded(msg.context))
        # The socket's gateway keeps the identity for its resyncs.
        update = wire.MemberUpdate(
            identities=(wire.SocketRooms(socket=msg.socket, user=msg.user, meta=msg.meta),)
        )
        self.links.to_gateway(owner, wire.encode(update))
        self.links.reply(identity, gateway, wire.Reply(ref=msg.ref))

    def _with_requester(self, msg: wire.Request) -> wire.Request:
        """The request with who is asking, as the router knows the socket (whatever the asker
        claimed): its user (token subject, or what set_presence set) and its gateway's context."""
        known = self.topology.requester(msg.socket)
        user, context = ("", b"") if known is None else known[1:]
        return dataclasses.replace(msg, user=user, context=context)

    def _apply(self, identity: bytes, gateway: str | None, ref: int, changes: Changes) -> None:
        """Send each affected gateway its MemberUpdate, then acknowledge the caller."""
        for gw, change in changes.items():
            update = wire.MemberUpdate(
                joins=tuple(
                    wire.SocketRooms(socket=s, rooms=tuple(r)) for s, r in change.joins.items()
                ),
                leaves=tuple(
                    wire.SocketRooms(socket=s, rooms=tuple(r)) for s, r in change.leaves.items()
                ),
            )
            self.links.to_gateway(gw, wire.encode(update))
        if ref:
            self.links.reply(identity, gateway, wire.Reply(ref=ref))

    # --- a primary/backup pair (commands while standing by or settling: router/failover.py) --

    def _on_pair(self, decision: Decision) -> None:
        if decision.after is State.ACTIVE:
            self._take_over(failover=decision.before is State.PASSIVE)
        elif decision.before is State.ACTIVE:
            self._step_down()

    def _take_over(self, *, failover: bool) -> None:
        # A new epoch for every serving period: gateways that knew us before resync anyway, and
        # history positions from another period (or router) are not recoverable here.
        self.epoch = secrets.token_hex(8)
        self.history = self._new_history()
        self.serving = True
        self.metrics.serving.set(1)
        self.metrics.takeovers.inc()
        self.links.beat()  # gateways looking for the serving router see us at once
        log.log(
            logging.WARNING if failover else logging.INFO,
            "serving as the active router of the pair (epoch %s)",
            self.epoch,
        )
        expected = set(self.pair.peer_gateways) if self.pair is not None else set()
        if failover and expected:
            # Client commands accepted before the gateways are back would reach nobody (a
            # broadcast) or fail (a join of their sockets): hold them until every gateway the
            # peer served has resynced, or for --gateway-timeout (after which we would expire
            # a silent gateway anyway).
            self.failover.settle(expected, self.config.gateway_timeout_s)

    def _hand_over(self) -> None:
        """Stopping while serving a pair (a rolling restart): the peer takes over now, not
        after the peer timeout, and our gateways move to it at once. Deliveries already
        queued go out first (a gateway's stream is ordered), then its Reset."""
        assert self.pair is not None
        self.serving = False
        self.pair.leave()  # the peer hears it with our gateways: whom its takeover waits for
        gateways = list(self.links.gateways)
        for gateway in gateways:
            self.links.reset(gateway)
        self.links.gateways.clear()
        self.requests.drain(RouterUnavailable("the router stopped before the action answered"))
        log.info("handed over to the peer router: %d gateways sent to it", len(gateways))

    def _step_down(self) -> None:
        """Fencing: forget every gateway (each is Reset and moves), answer requests in flight."""
        self.serving = False
        self.metrics.serving.set(0)
        self.metrics.stepdowns.inc()
        self.failover.abandon()
        gateways = list(self.links.gateways)
        for gateway in gateways:
            self.links.reset(gateway)
            self.topology.drop_gateway(gateway)
        self.links.gateways.clear()
        self.topology.take_transitions()  # nobody is left to tell
        self.requests.drain(RouterUnavailable("the router stepped down before the action answered"))
        log.warning("standing by: %d gateways reset", len(gateways))

    # --- timers ----------------------------------------------------------------------------

    async def _beat(self) -> None:
        while True:
            now = time.monotonic()
            if self.serving:  # a standing-by router is silent: gateways see who serves
                self.links.beat()
                self._expire(now)
            self.requests.expire(now)
            self.metrics.refresh_routes()
            self.history.sweep(now)
            await asyncio.sleep(self.config.heartbeat_interval_s)

    async def _flush_presence(self) -> None:
        while True:
            await asyncio.sleep(self.config.presence_interval_s)
            # Timers change the topology too (an expired gateway's users leave): their
            # transitions are taken here, not only after a batch of commands.
            self.publisher.presence.add(self.topology.take_transitions())
            if self.publisher.presence:
                self.publisher.publish_presence()

    def _expire(self, now: float) -> None:
        limit = self.config.gateway_timeout_s
        for gateway, link in list(self.links.gateways.items()):
            if now - link.last_seen > limit:
                del self.links.gateways[gateway]
                dropped = self.topology.drop_gateway(gateway)
                self.metrics.gateway_expired.inc()
                log.warning(
                    "gateway %s expired after %.1fs without heartbeat (%d sockets removed)",
                    gateway,
                    now - link.last_seen,
                    dropped,
                )


def _ignore_subscriptions(batch: Batch) -> None:
    """XPUB hands us subscription frames; gateways announce themselves with Hello instead."""


def _bounded(context: bytes) -> bytes:
    return context if len(context) <= MAX_CONTEXT_BYTES else b""
