"""Router metrics, declared once against an injected registry (``roomcast_router_*``).

No label ever carries a room, socket or gateway id: label values come from small fixed sets
(command kinds, error codes, drop reasons). Hot paths count per batch, not per message.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["MAX_ROUTE_LABELS", "OTHER", "UNMATCHED", "RouterMetrics"]

_NS, _SUB = "roomcast", "router"
# Route labels are the patterns workers announce (an app's code, not a client's paths); past
# this many distinct ones, the rest count as OTHER so a misbehaving peer cannot grow the series.
MAX_ROUTE_LABELS = 200
OTHER, UNMATCHED = "other", "unmatched"


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=_NS, subsystem=_SUB, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, namespace=_NS, subsystem=_SUB, registry=registry)

        self.commands = counter("commands_total", "Commands received, by kind.", ("kind",))
        self.command_errors = counter(
            "command_errors_total", "Commands answered with an error, by code.", ("code",)
        )
        self.wire_errors = counter(
            "wire_errors_total", "Undecodable or misframed messages from peers (dropped)."
        )
        self.refused_peers = counter(
            "refused_peers_total", "Hellos refused for an incompatible protocol version."
        )
        self.curve_refused = counter(
            "curve_refused_total",
            "CURVE handshakes refused, by reason (unauthorized_key, handshake_failed).",
            ("reason",),
        )
        self.publishes = counter("publishes_total", "Broadcasts and blasts accepted.")
        self.deliveries = counter(
            "deliveries_total", "Deliver messages handed to gateways (one per gateway per publish)."
        )
        self.fanout_bytes = counter("fanout_bytes_total", "Bytes published to gateways.")
        self.fanout_dropped = counter(
            "fanout_dropped_total",
            "Messages to gateways dropped at the ZeroMQ high-water mark (gateways see a gap).",
        )
        self.presence_events = counter(
            "presence_events_total", "Coalesced presence join/leave events published (per room)."
        )
        self.gateway_expired = counter(
            "gateway_expired_total", "Gateways expired after missed heartbeats."
        )
        self.goodbyes = counter(
            "goodbyes_total",
            "Peers that left on purpose (a drained gateway, a stopping worker), by role.",
            ("role",),
        )
        self.resets = counter("resets_total", "Reset messages sent to unknown gateways.")
        self.claims_refused = counter(
            "claims_refused_total",
            "Commands refused because the sender claimed an id another live peer holds, or a "
            "role its CURVE key lacks, by what (gateway: another process's gateway id; socket: "
            "another gateway's socket id; role: a non-gateway key speaking as a gateway).",
            ("what",),
        )
        self.requests_forwarded = counter(
            "requests_forwarded_total", "Virtual requests forwarded to action workers."
        )
        self.requests_answered = counter(
            "requests_answered_total",
            "Virtual requests answered, by status class (2xx..5xx, timeout).",
            ("status",),
        )
        self.worker_expired = counter("worker_expired_total", "Action workers expired.")
        self.history_evicted = counter(
            "history_evicted_total",
            "History evicted before its TTL, by reason: room_bytes, total_bytes, too_large "
            "(messages) and rooms (whole rooms, past --history-max-rooms).",
            ("reason",),
        )
        self.history_bytes = gauge("history_bytes", "Bytes kept in message history.")
        self.recoveries_too_large = counter(
            "recoveries_too_large_total",
            "Recovery answers larger than the asker's connection could queue, answered "
            "recovered=false instead.",
        )
        self.history_rooms = gauge("history_rooms", "Rooms with a message history.")
        self.gateways = gauge("gateways", "Live gateways.")
        self._routes: Callable[[], dict[str, int]] = dict
        self.sockets = gauge("sockets", "Registered sockets (connections) cluster-wide.")
        self.rooms = gauge("rooms", "Non-empty rooms, own-id rooms included.")
        self.memberships = gauge("memberships", "Socket-room pairs, own-id rooms included.")
        self.batch_size = Histogram(
            "batch_messages",
            "Commands drained per loop wake-up.",
            namespace=_NS,
            subsystem=_SUB,
            registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.up = gauge("up", "1 while the router process runs (serving or standing by).")
        # A primary/backup pair (router.peer); a single router serves from start to drain.
        self.serving = gauge(
            "serving", "1 while this router serves commands (single, or the active of a pair)."
        )
        self.peer_alive = gauge(
            "peer_alive", "1 while the pair's peer router was heard within --peer-timeout."
        )
        self.paired = gauge(
            "paired",
            "1 while this router of a pair hears its peer's state (in a rolling restart, wait "
            "for it on the restarted router before stopping the other).",
        )
        self.takeovers = counter("takeovers_total", "Times this router of a pair became active.")
        self.stepdowns = counter(
            "stepdowns_total", "Times this router of a pair stopped serving (fencing)."
        )
        self.requests_by_route = counter(
            "requests_total",
            "Virtual requests routed, by the route pattern they matched (unmatched: 404).",
            ("route",),
        )
        self._route_labels: set[str] = set()
        self.foreign_replies = counter(
            "foreign_replies_total",
            "Replies dropped: they came from a peer the request was not sent to.",
        )
        self.workers_busy = gauge(
            "workers_busy", "Live action workers reporting every sync-handler thread taken."
        )
        self.route_workers = Gauge(
            "route_workers",
            "Live action workers per route pattern they announced (*: serve everything).",
            ("route",),
            namespace=_NS,
            subsystem=_SUB,
            registry=registry,
        )
        self.workers = gauge("workers", "Live action workers.")
        self.requests_in_flight = gauge("requests_in_flight", "Virtual requests awaiting a worker.")

    def bind_workers(
        self,
        workers: Callable[[], int],
        in_flight: Callable[[], int],
        *,
        busy: Callable[[], int],
        routes: Callable[[], dict[str, int]],
    ) -> None:
        self.workers.set_function(workers)
        self.requests_in_flight.set_function(in_flight)
        self.workers_busy.set_function(busy)
        self._routes = routes

    def count_request(self, route: str) -> None:
        self.requests_by_route.labels(self._route_label(route)).inc()

    def _route_label(self, route: str) -> str:
        if route in self._route_labels or route == UNMATCHED:
            return route
        if len(self._route_labels) >= MAX_ROUTE_LABELS:
            return OTHER
        self._route_labels.add(route)
        return route

    def refresh_routes(self) -> None:
        """Set the workers-per-route gauge from the pool (called on the expiry timer, not on
        the hot path); routes no live worker serves any more drop to 0."""
        served = self._routes()
        for route in list(self._route_labels | set(served)):
            label = self._route_label(route)
            if label != OTHER:
                self.route_workers.labels(label).set(served.get(route, 0))

    def bind_topology(
        self,
        stats: Callable[[], tuple[int, int, int]],
        memberships: Callable[[], int],
    ) -> None:
        """Gauges read at scrape time, so the hot path never updates them."""
        self.gateways.set_function(lambda: stats()[0])
        self.sockets.set_function(lambda: stats()[1])
        self.rooms.set_function(lambda: stats()[2])
        self.memberships.set_function(memberships)
