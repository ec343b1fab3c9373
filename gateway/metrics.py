"""Gateway metrics, declared once against an injected registry (``roomcast_gateway_*``).

Labels come from small fixed sets (close reasons, error codes, ops); never a room, socket or
user. The delivery path counts per router batch, not per recipient.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

_NS, _SUB = "roomcast", "gateway"
# Hops on one host take tens of microseconds to a few milliseconds.
_FAST_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=_NS, subsystem=_SUB, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, namespace=_NS, subsystem=_SUB, registry=registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(
                name,
                doc,
                labels,
                namespace=_NS,
                subsystem=_SUB,
                registry=registry,
                buckets=_FAST_BUCKETS,
            )

        self.connections = gauge("connections", "Open client connections.")
        self.connections_opened = counter("connections_opened_total", "Client connections opened.")
        self.disconnects = counter(
            "disconnects_total",
            "Client connections closed, by reason (client, slow_consumer, frame_too_big, "
            "going_away, router_unavailable, error).",
            ("reason",),
        )
        self.rejected = counter(
            "rejected_total",
            "Connections refused, by reason (origin, token, max_connections, draining).",
            ("reason",),
        )
        self.frames_in = counter("frames_in_total", "Frames received from clients.")
        self.client_errors = counter(
            "client_errors_total", "Client frames answered with an error, by code.", ("code",)
        )
        self.deliveries = counter("deliveries_total", "Deliver messages received from the router.")
        self.messages_out = counter("messages_out_total", "Frames queued to clients.")
        self.bytes_out = counter("bytes_out_total", "Bytes written to clients.")
        self.writes = counter("writes_total", "Socket writes to clients (each carries 1+ frames).")
        self.dropped = counter(
            "dropped_total",
            "Frames dropped before reaching a client, by reason (slow_consumer; oversize: one "
            "message larger than the whole send-queue bound).",
            ("reason",),
        )
        self.lost = counter(
            "lost_total",
            "Messages from the router lost: missing in the sequence, or discarded with the rest "
            "of a broken stream until the resync.",
        )
        self.wire_errors = counter("wire_errors_total", "Undecodable messages from the router.")
        self.resyncs = counter("resyncs_total", "Completed resyncs with the router.")
        self.router_timeouts = counter(
            "router_timeouts_total", "Router heartbeats missed for longer than the timeout."
        )
        self.router_switches = counter(
            "router_switches_total", "Times a gateway turned to the other router of a pair."
        )
        self.commands_dropped = counter(
            "commands_dropped_total", "Commands that could not be sent to the router."
        )
        self.api_requests = counter(
            "api_requests_total",
            "HTTP server API requests, by operation and status code.",
            ("operation", "status"),
        )
        self.refused = counter(
            "refused_total", "Hellos refused for an incompatible protocol version (either side)."
        )
        self.polling_sessions = gauge(
            "polling_sessions", "Socket.IO sessions on HTTP long-polling (not upgraded)."
        )
        self.polling_requests = counter(
            "polling_requests_total",
            "Engine.IO long-polling HTTP requests, by method (GET, POST, OPTIONS).",
            ("method",),
        )
        self.polling_errors = counter(
            "polling_errors_total",
            "Engine.IO long-polling requests refused, by reason (unknown_sid, bad_request, "
            "poll_overlap, post_overlap, too_large, no_length, bad_payload, body_timeout, "
            "poll_closed, rate_limited, origin, full, draining, unsupported_version).",
            ("reason",),
        )
        self.upgrades = counter(
            "upgrades_total", "Socket.IO sessions upgraded from long-polling to WebSocket."
        )
        self.id_conflicts = counter(
            "id_conflicts_total",
            "Hellos refused because another live gateway process holds this --gateway-id.",
        )
        self.heartbeats_unanswered = counter(
            "heartbeats_unanswered_total",
            "Times the router stopped answering this gateway's heartbeats (its commands no "
            "longer reached the router): the gateway went not-ready and said Hello again.",
        )
        self.router_link = gauge("router_link", "1 while connected to the router and resynced.")
        self.accept_errors = counter(
            "accept_errors_total",
            "accept() calls that ran out of resources (emfile, enfile, enobufs, enomem): "
            "accepting paused for a backoff.",
            ("reason",),
        )
        self.pending_connections = gauge(
            "pending_connections",
            "Public connections still in their HTTP exchange (before the WebSocket upgrade); "
            "they count toward --max-connections.",
        )
        self.delivery_latency = histogram(
            "delivery_latency_seconds", "Router accept to frames queued for clients."
        )
        self.command_duration = histogram(
            "command_duration_seconds", "Client op round trip through the router, by op.", ("op",)
        )
