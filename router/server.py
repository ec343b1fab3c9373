"""The router's ZeroMQ shell: receives commands, applies them to the topology, fans out.

Owns the ROUTER (commands) and XPUB (fanout) sockets, the per-gateway sequence numbers, gateway
liveness and the epoch. All decisions about membership come from
:class:`roomcast.core.topology.Topology`; this module only moves messages and keeps time.

Replies to a gateway travel on that gateway's topic (after any ``MemberUpdate`` they confirm);
replies to SDK clients and workers go back over the ROUTER socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import json
import logging
import secrets
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Iterable

import zmq

from roomcast.core import wire
from roomcast.core.errors import (
    BadRequest,
    InternalError,
    NoWorker,
    PayloadTooLarge,
    RoomcastError,
    RouterPassive,
    RouterUnavailable,
    Timeout,
    WireError,
)
from roomcast.core.rooms import validate_room, validate_rooms
from roomcast.core.topology import Changes, Topology
from roomcast.curve import ServerCurve
from roomcast.zmqio import Batch, BatchReader
from router.bstar import Decision, Role, State
from router.history import History, Recovery
from router.metrics import RouterMetrics
from router.peer import Pair, PairConfig
from router.presence import PRESENCE_EVENT, PresenceBuffer, encode_event
from router.receipts import Confirmations, Pending
from router.workers import Origin, WorkerPool

__all__ = ["GATEWAY_ID_PREFIX", "Router", "RouterConfig"]

log = logging.getLogger("roomcast.router")

# Gateways set their DEALER routing id to this prefix + their id, so the router knows which
# gateway (and topic) a command came from even when it has forgotten that gateway.
GATEWAY_ID_PREFIX = b"gw:"
MAX_PRESENCE_USER_BYTES = 256
MAX_PRESENCE_META_BYTES = 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouterConfig:
    # Endpoints (port 0 picks a free port; READY reports the real one)
    commands: str = "tcp://127.0.0.1:5570"
    fanout: str = "tcp://127.0.0.1:5571"
    # Liveness
    heartbeat_interval_s: float = 1.0
    gateway_timeout_s: float = 5.0
    # Limits
    max_rooms_per_socket: int = 1000
    fanout_hwm_messages: int = 200_000  # per gateway pipe; past it messages drop and are counted
    commands_hwm_messages: int = 200_000
    # Presence events: rooms matching these globs (or flagged by a backend) push join/leave
    presence_rooms: tuple[str, ...] = ()
    # Message history for recovery: rooms matching these globs keep their last messages
    history_rooms: tuple[str, ...] = ()
    history_size: int = 100  # messages per room
    history_ttl_s: float = 300.0
    presence_interval_s: float = 0.2  # coalescing window of presence events
    # Action workers
    worker_timeout_s: float = 5.0  # silent this long: no longer sent requests
    request_timeout_s: float = 30.0  # then the asker gets 504
    # A primary/backup pair (router/peer.py; docs/protocol.md "Failover"). "single": no peer,
    # serving from start to drain.
    role: str = "single"  # "single", "primary" or "backup"
    peer_bind: str = ""  # ROUTER for the peer to connect to
    peer_connect: str = ""  # the peer's peer_bind
    peer_timeout_s: float = 2.0  # silent this long: a client's vote may fail over
    # CURVE (roomcast/curve.py): both files, or neither (off)
    curve_secret_key: str = ""  # our .key_secret certificate (a pair shares one)
    curve_authorized_keys: str = ""  # directory of the clients' public .key certificates
    # Shutdown
    drain_timeout_s: float = 10.0


@dataclasses.dataclass(slots=True)
class _Gateway:
    topic: bytes
    seq: int = 0
    last_seen: float = 0.0


def _bind(sock: zmq.Socket[bytes], url: str) -> str:
    if url.endswith(":0"):
        url = url[:-2] + ":*"
    sock.bind(url)
    endpoint: bytes = sock.getsockopt(zmq.LAST_ENDPOINT)  # type: ignore[assignment]
    return endpoint.decode()


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
        self._presence = PresenceBuffer()
        self._confirms = Confirmations()
        self.history = History(
            patterns=config.history_rooms,
            size=config.history_size,
            ttl_s=config.history_ttl_s,
            epoch=self.epoch,
        )
        self._gateways: dict[str, _Gateway] = {}
        self.workers = WorkerPool(timeout_s=config.worker_timeout_s)
        self._known_workers = 0
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
        self._commands.setsockopt(zmq.SNDHWM, config.commands_hwm_messages)
        self._fanout = ctx.socket(zmq.XPUB)
        self.curve.server.apply(self._fanout)
        self._fanout.setsockopt(zmq.LINGER, int(config.drain_timeout_s * 1000))
        self._fanout.setsockopt(zmq.SNDHWM, config.fanout_hwm_messages)
        # Without NODROP a full pipe drops silently; with it the send fails and we can count it.
        self._fanout.setsockopt(zmq.XPUB_NODROP, 1)
        self.commands_endpoint = _bind(self._commands, config.commands)
        self.fanout_endpoint = _bind(self._fanout, config.fanout)
        self._readers = [
            BatchReader(self._commands, self._on_commands),
            BatchReader(self._fanout, _ignore_subscriptions),
        ]
        self._beat_task: asyncio.Task[None] | None = None
        self._presence_task: asyncio.Task[None] | None = None
        self.serving = False
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
                gateways=lambda: self._gateways,
                on_change=self._on_pair,
            )
        # After a failover: the gateways we wait for, and the client commands held meanwhile.
        self._settling: set[str] | None = None
        self._held: deque[tuple[bytes, wire.Message]] = deque()
        self._settle_timer: asyncio.TimerHandle | None = None
        metrics.bind_topology(self.topology.stats, self.topology.memberships)
        metrics.bind_workers(lambda: len(self.workers), lambda: self.workers.in_flight)

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
        for parts in batch:
            if len(parts) != 2:
                self.metrics.wire_errors.inc()
                continue
            identity, body = parts
            try:
                msg = wire.decode(body)
            except WireError:
                self.metrics.wire_errors.inc()
                continue
            kinds[msg.KIND] += 1
            self._handle(identity, msg, now)
        transitions = self.topology.take_transitions()
        if transitions:
            self._presence.add(transitions)
        self.metrics.batch_size.observe(len(batch))
        for kind, n in kinds.items():
            self.metrics.commands.labels(kind).inc(n)

    def _handle(self, identity: bytes, msg: wire.Message, now: float) -> None:
        gateway = _gateway_of(identity)
        if not self.serving and not self._admit(identity, gateway, msg, now):
            return
        if self._settling is not None and self._hold(identity, gateway, msg):
            return
        if gateway is not None and not isinstance(msg, wire.Hello):
            link = self._gateways.get(gateway)
            if link is None:
                self._reset(gateway)
                return
            link.last_seen = now
        elif gateway is None and isinstance(msg, (wire.Heartbeat, wire.Reply)):
            self.workers.seen(identity, now)
        known = len(self._gateways)
        try:
            self._dispatch(identity, gateway, msg, now)
        except RoomcastError as err:
            self._fail(identity, gateway, msg, err)
        except Exception:  # a bug of ours: answer 500, keep serving everyone else
            log.exception("command %s failed", msg.KIND)
            self._fail(identity, gateway, msg, InternalError("internal error"))
        if self.pair is not None and len(self._gateways) != known:
            self.pair.announce()  # the backup learns at once whom to wait for after a failover

    def _fail(
        self, identity: bytes, gateway: str | None, msg: wire.Message, err: RoomcastError
    ) -> None:
        self.metrics.command_errors.labels(err.code).inc()
        ref = getattr(msg, "ref", 0)
        if ref:
            self._reply(identity, gateway, _error_reply(ref, err))

    def _dispatch(
        self, identity: bytes, gateway: str | None, msg: wire.Message, now: float
    ) -> None:
        topo = self.topology
        if isinstance(msg, wire.Publish):
            self._publish(identity, gateway, msg)
        elif isinstance(msg, wire.Membership):
            if msg.recover and len(msg.rooms) != 1:
                raise BadRequest("a join with recovery names exactly one room")
            changes = topo.change(msg.sockets, msg.rooms, leave=msg.leave)
            if msg.recover and not msg.leave:
                # Join and catch up in one step: the missed messages ride in the reply, which
                # the asker's stream carries before any later live delivery for the room.
                self._apply(identity, gateway, 0, changes)
                since = self.history.since(msg.rooms[0], msg.since_epoch, msg.since_offset, now)
                self._reply(identity, gateway, wire.Reply(ref=msg.ref, body=_recovery(since)))
            else:
                self._apply(identity, gateway, msg.ref, changes)
        elif isinstance(msg, wire.SocketOpen):
            if gateway is None:
                raise BadRequest("only gateways open sockets")
            topo.open_sockets(gateway, msg.sockets, msg.users)
            self._reply(identity, gateway, wire.Reply(ref=msg.ref))
        elif isinstance(msg, wire.SocketClose):
            if gateway is not None:
                topo.close_sockets(gateway, msg.sockets)
        elif isinstance(msg, wire.Heartbeat):
            pass  # liveness already recorded in _handle
        elif isinstance(msg, wire.Query):
            self._reply(identity, gateway, self._query(msg))
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
            topo.resync(gateway, ((s.socket, s.rooms) for s in msg.sockets), identities)
            if msg.last:
                log.info("gateway %s resynced", gateway)
                self._reply(identity, gateway, wire.Reply(ref=msg.ref))
        elif isinstance(msg, wire.Hello):
            self._hello(identity, gateway, msg, now)
        elif isinstance(msg, wire.Request):
            self._forward_request(identity, gateway, msg, now)
        elif isinstance(msg, wire.Reply):
            self._answer_request(msg)
        elif isinstance(msg, wire.Delivered):
            if gateway is not None:
                self._delivered(msg, gateway)
        elif isinstance(msg, wire.SetPresence):
            self._set_presence(identity, gateway, msg)
        elif isinstance(msg, wire.TrackPresence):
            topo.track(msg.room, msg.enabled)
            self._reply(identity, gateway, wire.Reply(ref=msg.ref))
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
                self._unsequenced(gateway, _error_reply(msg.ref, err))
                return
            raise err
        ack = wire.HelloAck(
            ref=msg.ref,
            epoch=self.epoch,
            heartbeat_interval_ms=int(self.config.heartbeat_interval_s * 1000),
        )
        if gateway is None:
            if msg.role is wire.Role.WORKER and not self.workers.seen(identity, now):
                # Workers repeat Hello as their heartbeat; only a new one is news.
                self.workers.add(identity, now)
                self._known_workers = len(self.workers)
                log.info("worker %s hello (%d workers)", msg.node_id, len(self.workers))
            self._reply(identity, None, ack)
            return
        dropped = self.topology.add_gateway(gateway)
        known = gateway in self._gateways
        self._gateways[gateway] = _Gateway(wire.gateway_topic(gateway), 0, now)
        log.info(
            "gateway %s hello (%s, %d sockets dropped until its resync)",
            gateway,
            "known" if known else "new",
            dropped,
        )
        self._reply(identity, gateway, ack)

    def _query(self, msg: wire.Query) -> wire.Reply:
        topo = self.topology
        if msg.kind is wire.QueryKind.COUNT:
            return wire.Reply(ref=msg.ref, count=topo.count(validate_room(msg.target)))
        if msg.kind is wire.QueryKind.MEMBERS:
            return wire.Reply(ref=msg.ref, names=tuple(topo.members(validate_room(msg.target))))
        if msg.kind is wire.QueryKind.ROOMS:
            return wire.Reply(ref=msg.ref, names=tuple(topo.rooms_of(msg.target)))
        if msg.kind is wire.QueryKind.PRESENCE:
            users = topo.presence(validate_room(msg.target))
            body = {
                user: {"connections": n, "meta": json.loads(meta) if meta else None}
                for user, (n, meta) in users.items()
            }
            return wire.Reply(ref=msg.ref, body=_json(body))
        if msg.kind is wire.QueryKind.RECOVER:
            since = self.history.since(
                validate_room(msg.target), msg.epoch, msg.offset, time.monotonic()
            )
            return wire.Reply(ref=msg.ref, body=_recovery(since))
        if msg.kind is wire.QueryKind.PRESENCE_STATS:
            connections, unique = topo.presence_stats(validate_room(msg.target))
            return wire.Reply(
                ref=msg.ref, body=_json({"connections": connections, "users": unique})
            )
        raise BadRequest("unknown query kind")

    def _set_presence(self, identity: bytes, gateway: str | None, msg: wire.SetPresence) -> None:
        # Small by design: presence lives in router memory for every connection.
        if len(msg.user.encode()) > MAX_PRESENCE_USER_BYTES:
            raise BadRequest(f"a presence user id is at most {MAX_PRESENCE_USER_BYTES} bytes")
        if len(msg.meta) > MAX_PRESENCE_META_BYTES:
            raise PayloadTooLarge(size=len(msg.meta), limit=MAX_PRESENCE_META_BYTES)
        if msg.meta:
            try:
                json.loads(msg.meta)
            except ValueError:
                raise BadRequest("presence metadata must be json") from None
        owner = self.topology.set_presence(msg.socket, msg.user, msg.meta)
        # The socket's gateway keeps the identity for its resyncs.
        update = wire.MemberUpdate(
            identities=(wire.SocketRooms(socket=msg.socket, user=msg.user, meta=msg.meta),)
        )
        self._to_gateway(owner, wire.encode(update))
        self._reply(identity, gateway, wire.Reply(ref=msg.ref))

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
            self._to_gateway(gw, wire.encode(update))
        if ref:
            self._reply(identity, gateway, wire.Reply(ref=ref))

    def _publish(
        self, identity: bytes, gateway: str | None, msg: wire.Publish, *, record: bool = True
    ) -> None:
        offsets: tuple[wire.RoomOffset, ...] = ()
        if msg.everyone:
            targets: Iterable[str] = list(self._gateways)
        else:
            if not msg.rooms:
                raise BadRequest("broadcast needs at least one room")
            validate_rooms(msg.rooms)
            targets = self.topology.route(msg.rooms)
            if record and self.history.patterns:
                now = time.monotonic()
                offsets = tuple(
                    wire.RoomOffset(room=r, epoch=e, offset=o)
                    for r, e, o in self.history.append(msg.rooms, msg.event, msg.data, now)
                )
        reply = wire.Reply(ref=msg.ref)
        if msg.receipt or msg.confirm:
            # Only when asked: an exact count walks the rooms' members.
            sockets, omitted = self.topology.receipt(msg.rooms, msg.omit, everyone=msg.everyone)
            reply = dataclasses.replace(reply, sockets=sockets, omitted=omitted)
        confirm = 0
        if msg.confirm and msg.ref:
            targets = list(targets)
            pending = Pending(identity, gateway, reply, set(targets))
            confirm = self._confirms.open(pending)
            timeout = (msg.confirm_timeout_ms or 5000) / 1000
            asyncio.get_running_loop().call_later(timeout, self._confirm_timeout, confirm)
        body = wire.encode(
            wire.Deliver(
                rooms=msg.rooms,
                everyone=msg.everyone,
                event=msg.event,
                data=msg.data,
                omit=msg.omit,
                accepted_ns=time.time_ns(),
                confirm=confirm,
                offsets=offsets,
            )
        )
        sent = 0
        for gw in targets:
            if self._to_gateway(gw, body):
                sent += 1
        self.metrics.publishes.inc()
        self.metrics.deliveries.inc(sent)
        self.metrics.fanout_bytes.inc(sent * len(body))
        if confirm:
            pending.reply = dataclasses.replace(pending.reply, gateways=sent)
            if not pending.waiting:
                self._confirm_timeout(confirm)  # nobody to wait for
        elif msg.ref:
            self._reply(identity, gateway, dataclasses.replace(reply, gateways=sent))

    def _delivered(self, msg: wire.Delivered, gateway: str) -> None:
        done = self._confirms.delivered(msg.confirm, gateway, msg.sockets)
        if done is not None:
            self._reply(done.identity, done.gateway, Confirmations.answer(done, complete=True))

    def _confirm_timeout(self, confirm: int) -> None:
        pending = self._confirms.expire(confirm)
        if pending is not None:
            answer = Confirmations.answer(pending, complete=not pending.waiting)
            self._reply(pending.identity, pending.gateway, answer)

    def _forward_request(
        self, identity: bytes, gateway: str | None, msg: wire.Request, now: float
    ) -> None:
        if not msg.ref:
            raise BadRequest("a request needs a ref")
        # A worker that vanished without expiring yet makes the send fail (ROUTER_MANDATORY):
        # forget it and try the next one.
        for _ in range(len(self.workers)):
            picked = self.workers.forward(
                identity, gateway, msg.ref, now, self.config.request_timeout_s
            )
            if picked is None:
                break
            worker, router_ref = picked
            try:
                self._commands.send_multipart(
                    (worker, wire.encode(dataclasses.replace(msg, ref=router_ref))), zmq.NOBLOCK
                )
            except zmq.ZMQError:
                self.workers.answer(router_ref)
                self._orphaned(self.workers.remove(worker))
                continue
            self.metrics.requests_forwarded.inc()
            return
        raise NoWorker("no action worker is connected")

    def _answer_request(self, reply: wire.Reply) -> None:
        origin = self.workers.answer(reply.ref)
        if origin is None:
            return  # answered after its deadline: the asker already got 504
        self.metrics.requests_answered.labels(_status_class(reply.status)).inc()
        self._reply(origin.identity, origin.gateway, dataclasses.replace(reply, ref=origin.ref))

    # --- sending ---------------------------------------------------------------------------

    def _to_gateway(self, gateway: str, body: bytes) -> bool:
        link = self._gateways.get(gateway)
        if link is None:
            return False
        # The sequence advances even when the send fails, so the gateway sees the gap.
        link.seq += 1
        try:
            self._fanout.send_multipart((link.topic, wire.pack_seq(link.seq), body), zmq.NOBLOCK)
        except zmq.Again:
            self.metrics.fanout_dropped.inc()
            return False
        return True

    def _reply(self, identity: bytes, gateway: str | None, msg: wire.Message) -> None:
        body = wire.encode(msg)
        if gateway is not None:
            self._to_gateway(gateway, body)
            return
        try:
            self._commands.send_multipart((identity, body), zmq.NOBLOCK)
        except zmq.ZMQError:
            # ROUTER drops replies to peers that went away or are over their HWM.
            self.metrics.command_errors.labels("reply_dropped").inc()

    def _reset(self, gateway: str) -> None:
        """Tell a gateway we do not know it (expired, or we restarted): it must resync."""
        self.metrics.resets.inc()
        self._unsequenced(gateway, wire.Reset(epoch=self.epoch))

    def _unsequenced(self, gateway: str, msg: wire.Message) -> None:
        """A message for a gateway that has no sequenced stream with us (yet)."""
        body = wire.encode(msg)
        try:
            self._fanout.send_multipart((wire.gateway_topic(gateway), b"", body), zmq.NOBLOCK)
        except zmq.Again:
            self.metrics.fanout_dropped.inc()

    # --- a primary/backup pair --------------------------------------------------------------

    def _admit(self, identity: bytes, gateway: str | None, msg: wire.Message, now: float) -> bool:
        """Whether a standing-by router of a pair handles ``msg`` (else it answered it).

        Workers register with both routers of a pair all the time (their Hellos, heartbeats
        and late replies pass), so the router that takes over knows them at once. A gateway's
        Hello and any SDK command are client requests: the vote that may make us active
        (router.bstar). Anything else from a gateway means it still takes us for its router:
        Reset sends it back to Hello, where our refusal makes it try the other router.
        """
        if self.pair is None:
            return True  # a single router: as ever, whatever its state
        if gateway is None and (
            isinstance(msg, (wire.Heartbeat, wire.Reply))
            or (isinstance(msg, wire.Hello) and msg.role is wire.Role.WORKER)
        ):
            return True
        if gateway is not None and not isinstance(msg, wire.Hello):
            self._reset(gateway)
            return False
        decision = self.pair.vote(now)
        if decision.accept:
            return True
        err = RouterPassive(f"this router is standing by: {decision.reason}")
        self.metrics.command_errors.labels(err.code).inc()
        ref = getattr(msg, "ref", 0)
        if gateway is not None:
            # Not a gateway of ours: no sequenced stream, so answer on its topic directly.
            self._unsequenced(gateway, _error_reply(ref, err))
        elif ref:
            self._reply(identity, None, _error_reply(ref, err))
        return False

    def _on_pair(self, decision: Decision) -> None:
        if decision.after is State.ACTIVE:
            self._take_over(failover=decision.before is State.PASSIVE)
        elif decision.before is State.ACTIVE:
            self._step_down()

    def _take_over(self, *, failover: bool) -> None:
        # A new epoch for every serving period: gateways that knew us before resync anyway, and
        # history positions from another period (or router) are not recoverable here.
        self.epoch = secrets.token_hex(8)
        self.history = History(
            patterns=self.config.history_rooms,
            size=self.config.history_size,
            ttl_s=self.config.history_ttl_s,
            epoch=self.epoch,
        )
        self.serving = True
        self.metrics.serving.set(1)
        self.metrics.takeovers.inc()
        self._send_beat()  # gateways looking for the serving router see us at once
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
            self._settling = expected
            timeout = self.config.gateway_timeout_s
            self._settle_timer = asyncio.get_running_loop().call_later(timeout, self._release)
            log.info(
                "holding client commands until %d gateways resync (at most %.1fs)",
                len(expected),
                timeout,
            )

    def _step_down(self) -> None:
        """Fencing: forget every gateway (each is Reset and moves), answer requests in flight."""
        self.serving = False
        self.metrics.serving.set(0)
        self.metrics.stepdowns.inc()
        self._settling = None
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        held, self._held = self._held, deque()
        for identity, msg in held:  # never applied: the caller may send them elsewhere
            self._admit(identity, _gateway_of(identity), msg, time.monotonic())
        gateways = list(self._gateways)
        for gateway in gateways:
            self._reset(gateway)
            self.topology.drop_gateway(gateway)
        self._gateways.clear()
        self.topology.take_transitions()  # nobody is left to tell
        err = RouterUnavailable("the router stepped down before the action answered")
        for origin in self.workers.drain():
            self._reply(origin.identity, origin.gateway, _error_reply(origin.ref, err))
        log.warning("standing by: %d gateways reset", len(gateways))

    def _hold(self, identity: bytes, gateway: str | None, msg: wire.Message) -> bool:
        """While settling after a failover: hold client commands (True), count resyncs."""
        settling = self._settling
        if settling is None:
            return False
        if isinstance(msg, wire.Resync):
            if msg.last and gateway in settling:
                settling.discard(gateway)
                if not settling:
                    asyncio.get_running_loop().call_soon(self._release)  # after this batch
            return False
        if not isinstance(msg, _CLIENT_COMMANDS):
            return False
        if len(self._held) >= self.config.commands_hwm_messages:
            self._release()  # bounded: serve what we have rather than grow
            return False
        self._held.append((identity, msg))
        return True

    def _release(self) -> None:
        if self._settling is None:
            return
        missing = len(self._settling)
        self._settling = None
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

    # --- timers ----------------------------------------------------------------------------

    async def _beat(self) -> None:
        while True:
            now = time.monotonic()
            if self.serving:  # a standing-by router is silent: gateways see who serves
                self._send_beat()
                self._expire(now)
            self._expire_workers(now)
            self.history.sweep(now)
            await asyncio.sleep(self.config.heartbeat_interval_s)

    def _send_beat(self) -> None:
        beat = wire.encode(wire.RouterBeat(epoch=self.epoch))
        try:
            self._fanout.send_multipart((wire.CLUSTER_TOPIC, b"", beat), zmq.NOBLOCK)
        except zmq.Again:
            self.metrics.fanout_dropped.inc()

    async def _flush_presence(self) -> None:
        while True:
            await asyncio.sleep(self.config.presence_interval_s)
            # Timers change the topology too (an expired gateway's users leave): their
            # transitions are taken here, not only after a batch of commands.
            self._presence.add(self.topology.take_transitions())
            if self._presence:
                self._publish_presence()

    def _publish_presence(self) -> None:
        topo = self.topology
        for room, (joined, left) in self._presence.flush().items():
            data = encode_event(room, joined, left, topo.user_meta)
            presence = wire.Publish(rooms=(room,), event=PRESENCE_EVENT, data=data)
            self._publish(b"", None, presence, record=False)
            self.metrics.presence_events.inc()

    def _expire(self, now: float) -> None:
        limit = self.config.gateway_timeout_s
        for gateway, link in list(self._gateways.items()):
            if now - link.last_seen > limit:
                del self._gateways[gateway]
                dropped = self.topology.drop_gateway(gateway)
                self.metrics.gateway_expired.inc()
                log.warning(
                    "gateway %s expired after %.1fs without heartbeat (%d sockets removed)",
                    gateway,
                    now - link.last_seen,
                    dropped,
                )

    def _expire_workers(self, now: float) -> None:
        orphans, late = self.workers.expire(now)
        if orphans or len(self.workers) < self._known_workers:
            log.warning(
                "%d action workers expired after missed heartbeats (%d requests orphaned)",
                self._known_workers - len(self.workers),
                len(orphans),
            )
            self.metrics.worker_expired.inc(max(0, self._known_workers - len(self.workers)))
        self._known_workers = len(self.workers)
        self._orphaned(orphans)
        for origin in late:
            self._late(origin)

    def _orphaned(self, orphans: list[Origin]) -> None:
        """Requests whose worker went away: answer now rather than at the deadline."""
        for origin in orphans:
            self.metrics.requests_answered.labels("5xx").inc()
            err = NoWorker("the action worker went away before answering")
            self._reply(origin.identity, origin.gateway, _error_reply(origin.ref, err))

    def _late(self, origin: Origin) -> None:
        self.metrics.requests_answered.labels("timeout").inc()
        err = Timeout("the action did not answer in time")
        self._reply(origin.identity, origin.gateway, _error_reply(origin.ref, err))


def _recovery(since: Recovery) -> bytes:
    """The recovery answer as JSON, splicing each message's data JSON in without re-parsing."""
    messages = b",".join(
        b'{"offset":%d,"event":%s,"data":%s}' % (offset, _json(event), data or b"null")
        for offset, event, data in since.messages
    )
    head = _json({"recovered": since.recovered, "epoch": since.epoch, "offset": since.offset})
    return head[:-1] + b',"messages":[' + messages + b"]}"


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


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


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "invalid"


def _gateway_of(identity: bytes) -> str | None:
    if not identity.startswith(GATEWAY_ID_PREFIX):
        return None
    try:
        gateway = identity[len(GATEWAY_ID_PREFIX) :].decode()
    except UnicodeDecodeError:
        return None
    return gateway if gateway and "\x00" not in gateway else None


def _error_reply(ref: int, err: RoomcastError) -> wire.Reply:
    return wire.Reply(ref=ref, status=err.status, error=err.code, message=err.message)


def _ignore_subscriptions(batch: Batch) -> None:
    """XPUB hands us subscription frames; gateways announce themselves with Hello instead."""
