"""Gateway configuration: explicit, grouped, unit-named, frozen. Read from flags in __main__."""

from __future__ import annotations

import dataclasses

from gateway.requester import DEFAULT_HANDSHAKE_HEADERS

__all__ = ["GatewayConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    # Router link. A primary/backup pair: comma-separated, in the same order in both (pairs).
    router: str = "tcp://127.0.0.1:5570"
    fanout: str = "tcp://127.0.0.1:5571"
    gateway_id: str = ""  # empty: random
    heartbeat_interval_s: float = 1.0
    router_timeout_s: float = 5.0  # no RouterBeat this long: router unavailable, not ready
    router_unavailable_close_s: float = 30.0  # then clients are closed with 4002
    hello_retry_s: float = 0.25
    hello_timeout_s: float = 1.0  # several routers: no HelloAck from one this long, try the next
    command_timeout_s: float = 10.0
    # Virtual requests: the router answers 504 after its --request-timeout (30 s), so wait longer
    # than that and let the router's answer reach the client.
    request_timeout_s: float = 35.0
    resync_batch_sockets: int = 500
    # CURVE (roomcast/curve.py) on the router links: both files, or neither (off)
    curve_key: str = ""  # our .key_secret certificate
    curve_server_key: str = ""  # the router's public .key certificate
    # Public and internal HTTP
    host: str = "127.0.0.1"
    port: int = 8080
    internal_host: str = "127.0.0.1"
    internal_port: int = 9080  # the command line defaults it to port + 1000
    env: str = "production"  # "development": room ops open to clients, demo page, no guard
    # Sails hooks served by action workers (CONNECT / and DISCONNECT / virtual requests)
    connect_hook: bool = False
    disconnect_hook: bool = False
    # HTTP server API (internal port)
    api_keys: tuple[str, ...] = ()  # none: open in development, disabled (403) in production
    api_max_body_bytes: int = 1024 * 1024  # then 413
    # Who may connect, and do what (gateway/policy.py, gateway/tokens.py)
    token_secrets: tuple[bytes, ...] = ()  # HS256
    token_public_keys: tuple[str, ...] = ()  # PEM, RS256/ES256
    token_audience: str | None = None
    token_issuer: str | None = None
    token_leeway_s: float = 30.0  # clock skew tolerated on exp/nbf
    allow_anonymous: bool | None = None  # None: unless tokens are configured (dev: always)
    allowed_origins: tuple[str, ...] = ()  # exact; empty: any (browsers always send Origin)
    client_join: tuple[str, ...] = ()  # room patterns clients may join/leave (dev: "*")
    client_publish: tuple[str, ...] = ()  # room patterns clients may broadcast to (dev: "*")
    # Handshake headers action handlers see (gateway/requester.py), lower case; never authorization
    handshake_headers: tuple[str, ...] = DEFAULT_HANDSHAKE_HEADERS
    # Abuse limits
    max_connections: int = 100_000  # then 503 (connections before their upgrade count too)
    header_timeout_s: float = 10.0  # request headers must arrive within, on both ports
    body_timeout_s: float = 30.0  # a request body must arrive within, on both ports
    max_frames_per_s: float = 1000.0  # per connection, inbound; then 429
    frame_burst: int = 2000
    abuse_strikes: int = 200  # refused frames before the bucket is half full again; then 4003
    # Limits
    max_send_queue_bytes: int = 4 * 1024 * 1024  # then close 4001
    max_frame_bytes: int = 1024 * 1024  # inbound; then close 1009
    sio_ping_interval_s: float = 25.0  # Engine.IO heartbeats (Sails' defaults)
    sio_ping_timeout_s: float = 60.0
    # EIO4: CONNECT "/" (which may carry the token) due within; until then the connection
    # holds a --max-connections slot unauthenticated (Socket.IO's own default is 45 s)
    sio_connect_timeout_s: float = 5.0
    # Engine.IO HTTP long-polling (gateway/polling.py); a POST body is bounded by max_frame_bytes
    sio_poll_timeout_s: float = 30.0  # a poll with nothing to say is answered with a noop
    sio_post_body_timeout_s: float = 10.0  # a POST body that takes longer: cut, session closed
    sio_upgrade_timeout_s: float = 10.0  # probe to upgrade packet (the reference's default)
    sio_closed_linger_s: float = 10.0  # a closed session keeps its last payload for a poll
    ping_interval_s: float = 25.0  # WebSocket-level pings on every connection
    ping_timeout_s: float = 20.0  # no pong (or any frame) this long after a ping: close
    # Shutdown
    drain_timeout_s: float = 10.0

    @property
    def routers(self) -> tuple[str, ...]:
        """The routers' commands addresses (one, or a primary/backup pair)."""
        return _addresses(self.router)

    @property
    def fanouts(self) -> tuple[str, ...]:
        """Their fanout addresses, in the same order."""
        return _addresses(self.fanout)

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def anonymous_allowed(self) -> bool:
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        return self.development or not (self.token_secrets or self.token_public_keys)

    def production_problem(self) -> str | None:
        """Why this configuration must not serve in production (Sails' guard), or None."""
        if self.development:
            return None
        if not self.allowed_origins and not (self.token_secrets or self.token_public_keys):
            return (
                "refusing to start in production with neither an origin allowlist "
                "(--allowed-origin) nor token authentication (--token-secret-file / "
                "--token-public-key-file): any web page could open sockets here as its visitors. "
                "Configure one, or use --env development on a trusted machine."
            )
        return None


def _addresses(value: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in value.split(",") if a.strip())
