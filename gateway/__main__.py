"""``python -m gateway``: parse flags (and ROOMCAST_* env), serve, print READY, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry

from gateway.api import Api
from gateway.app import make_internal_app, make_public_app
from gateway.config import GatewayConfig
from gateway.hub import Gateway
from gateway.listener import Listener, connection_caps
from gateway.metrics import GatewayMetrics
from gateway.requester import parse_allowlist
from roomcast import curve
from roomcast.flags import EnvArgumentParser, bind_failed, configure_logging, print_ready
from roomcast.zmqio import new_context

__all__ = ["build_parser", "main", "parse_args"]

log = logging.getLogger("roomcast.gateway")


def build_parser() -> EnvArgumentParser:
    """The gateway's flags (each also read from its ROOMCAST_* variable)."""
    d = GatewayConfig()
    p = EnvArgumentParser(prog="roomcast gateway", description="Run a roomcast gateway.")
    p.add_argument(
        "--router",
        default=d.router,
        help="router commands address to connect (a primary/backup pair: both, comma-separated)",
    )
    p.add_argument(
        "--fanout",
        default=d.fanout,
        help="router fanout address to connect (a pair: both, in --router's order)",
    )
    p.add_argument(
        "--curve-key",
        default="",
        help="CURVE: this gateway's .key_secret certificate (with --curve-server-key)",
    )
    p.add_argument(
        "--curve-server-key", default="", help="CURVE: the router's public .key certificate"
    )
    p.add_argument("--gateway-id", default="", help="stable id (default: random per process)")
    p.add_argument("--host", default=d.host, help="address the public (client) port binds")
    p.add_argument(
        "--port", type=int, default=d.port, help="public port for clients (port number; 0: free)"
    )
    p.add_argument(
        "--internal-host", default=d.internal_host, help="address the internal port binds"
    )
    p.add_argument(
        "--internal-port",
        type=int,
        default=None,
        help="port of the HTTP server API and /metrics (port number; 0: free). Default: "
        "--port + 1000 (9080 for 8080, so a second gateway on 8081 collides with nothing), "
        "or 0 when --port is 0",
    )
    p.add_argument(
        "--env",
        choices=("production", "development"),
        default=d.env,
        help="development opens client room ops and the server API without a key and serves "
        "the demo page; production refuses to start without an origin allowlist or tokens",
    )
    p.add_argument(
        "--connect-hook",
        action="store_true",
        help="ask the action workers' CONNECT / (beforeConnect) before welcoming a socket",
    )
    p.add_argument(
        "--disconnect-hook",
        action="store_true",
        help="tell the action workers' DISCONNECT / (afterDisconnect) when a socket leaves",
    )
    p.add_argument(
        "--api-key-file",
        default="",
        help="file with server API keys, one per line (also: ROOMCAST_API_KEYS, comma-separated)",
    )
    p.add_argument(
        "--api-max-body-bytes",
        type=int,
        default=d.api_max_body_bytes,
        help="bytes an HTTP server API request body may have; then 413",
    )
    # Who may connect, and do what
    p.add_argument(
        "--token-secret-file",
        default="",
        help="HS256 secret(s) for connection tokens, one per line (also: ROOMCAST_TOKEN_SECRET)",
    )
    p.add_argument(
        "--token-public-key-file",
        action="append",
        default=[],
        help="PEM public key (RS256/ES256) for connection tokens (repeatable)",
    )
    p.add_argument("--token-audience", default="", help="required aud claim (empty: not checked)")
    p.add_argument("--token-issuer", default="", help="required iss claim (empty: not checked)")
    p.add_argument(
        "--token-leeway",
        type=float,
        default=d.token_leeway_s,
        help="seconds of clock skew tolerated on a token's exp and nbf",
    )
    p.add_argument(
        "--allow-anonymous",
        choices=("auto", "yes", "no"),
        default="auto",
        help="connections without a token; auto: allowed unless token keys are configured "
        "(always in development)",
    )
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        help="exact Origin allowed to open WebSockets (repeatable; env: comma-separated)",
    )
    p.add_argument(
        "--client-join",
        action="append",
        default=[],
        help="room pattern (glob, {user} = token subject) clients may join/leave (repeatable)",
    )
    p.add_argument(
        "--client-publish",
        action="append",
        default=[],
        help="room pattern clients may broadcast to (repeatable)",
    )
    p.add_argument(
        "--handshake-headers",
        default=",".join(d.handshake_headers),
        help="handshake headers that action handlers see in req.headers, comma-separated "
        "(add the x- headers your proxies set; authorization is never passed on)",
    )
    # Abuse limits
    p.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help="open client connections (count), and connections still sending their request; "
        "more get 503 before the upgrade; lowered to what the open-files limit allows",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=d.header_timeout_s,
        help="seconds for a request's headers to arrive (both ports), then the connection closes",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=d.body_timeout_s,
        help="seconds for a request's body to arrive (both ports), then the connection closes",
    )
    p.add_argument(
        "--max-frames-per-second",
        type=float,
        default=d.max_frames_per_s,
        help="frames per second one connection may send; then 429",
    )
    p.add_argument(
        "--frame-burst",
        type=int,
        default=d.frame_burst,
        help="frames a connection may send at once above --max-frames-per-second",
    )
    p.add_argument(
        "--abuse-strikes",
        type=int,
        default=d.abuse_strikes,
        help="refused frames (count; pings included) before close 4003; reset only once the "
        "client slowed down enough to refill half its --frame-burst",
    )
    p.add_argument(
        "--max-send-queue-bytes",
        type=int,
        default=d.max_send_queue_bytes,
        help="bytes queued for one connection; past it the client is closed with 4001 (slow "
        "consumer), and a single message larger than it is never delivered (dropped and "
        "counted; keep the router's --max-publish-bytes below it)",
    )
    p.add_argument(
        "--max-frame-bytes",
        type=int,
        default=d.max_frame_bytes,
        help="bytes one inbound client frame may have; then close 1009",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=d.heartbeat_interval_s,
        help="seconds between this gateway's heartbeats to the router",
    )
    p.add_argument(
        "--router-timeout",
        type=float,
        default=d.router_timeout_s,
        help="seconds without a router beat before the router counts as unavailable (not ready)",
    )
    p.add_argument(
        "--router-unavailable-close",
        type=float,
        default=d.router_unavailable_close_s,
        help="close clients with 4002 after the router is gone this long (seconds)",
    )
    p.add_argument(
        "--command-timeout",
        type=float,
        default=d.command_timeout_s,
        help="seconds a client op waits for the router's answer; then 504",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=d.request_timeout_s,
        help="seconds a virtual request waits; keep it above the router's --request-timeout",
    )
    p.add_argument(
        "--sio-ping-interval",
        type=float,
        default=d.sio_ping_interval_s,
        help="seconds between Engine.IO pings",
    )
    p.add_argument(
        "--sio-ping-timeout",
        type=float,
        default=d.sio_ping_timeout_s,
        help="seconds an Engine.IO client may stay silent after a ping",
    )
    p.add_argument(
        "--sio-connect-timeout",
        type=float,
        default=d.sio_connect_timeout_s,
        help="seconds a Socket.IO v4 client has to CONNECT (and so present its token); then 1008",
    )
    p.add_argument(
        "--sio-poll-timeout",
        type=float,
        default=d.sio_poll_timeout_s,
        help="seconds an Engine.IO long-poll waits before it is answered with a noop",
    )
    p.add_argument(
        "--sio-post-body-timeout",
        type=float,
        default=d.sio_post_body_timeout_s,
        help="seconds an Engine.IO polling POST has to send its body; then the session closes",
    )
    p.add_argument(
        "--sio-upgrade-timeout",
        type=float,
        default=d.sio_upgrade_timeout_s,
        help="seconds from an upgrade's probe to its upgrade packet; then the probe is closed",
    )
    p.add_argument(
        "--ping-interval",
        type=float,
        default=d.ping_interval_s,
        help="seconds between WebSocket pings on every connection",
    )
    p.add_argument(
        "--ping-timeout",
        type=float,
        default=d.ping_timeout_s,
        help="seconds without a pong (or any frame) after a ping before the connection closes",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=d.drain_timeout_s,
        help="seconds SIGTERM waits for clients to leave (after close 1001) before exiting",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        help="least severe log level written to stderr (DEBUG, INFO, WARNING, ERROR)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> tuple[GatewayConfig, str]:
    p = build_parser()
    a = p.parse_args(argv)
    routers = [r for r in a.router.split(",") if r.strip()]
    fanouts = [f for f in a.fanout.split(",") if f.strip()]
    if not routers or len(routers) != len(fanouts):
        p.error("--router and --fanout need the same number of addresses (one each per router)")
    if bool(a.curve_key) != bool(a.curve_server_key):
        p.error("--curve-key and --curve-server-key go together")
    try:  # now, with a clear message, rather than as a traceback from the router link
        curve.client_options(a.curve_key, a.curve_server_key)
    except ValueError as exc:
        raise SystemExit(f"roomcast gateway: {exc}") from None
    try:
        handshake_headers = parse_allowlist(a.handshake_headers)
    except ValueError as exc:
        raise SystemExit(f"roomcast gateway: --handshake-headers: {exc}") from None
    config = GatewayConfig(
        router=a.router,
        fanout=a.fanout,
        gateway_id=a.gateway_id,
        curve_key=a.curve_key,
        curve_server_key=a.curve_server_key,
        host=a.host,
        port=a.port,
        internal_host=a.internal_host,
        internal_port=_internal_port(a.port, a.internal_port),
        env=a.env,
        api_keys=load_api_keys(a.api_key_file, os.environ.get("ROOMCAST_API_KEYS", "")),
        api_max_body_bytes=a.api_max_body_bytes,
        token_secrets=load_secrets(
            a.token_secret_file, os.environ.get("ROOMCAST_TOKEN_SECRET", "")
        ),
        token_public_keys=tuple(load_public_key(path) for path in a.token_public_key_file),
        token_audience=a.token_audience or None,
        token_issuer=a.token_issuer or None,
        token_leeway_s=a.token_leeway,
        allow_anonymous={"auto": None, "yes": True, "no": False}[a.allow_anonymous],
        allowed_origins=tuple(o.rstrip("/") for o in a.allowed_origin),
        client_join=tuple(a.client_join),
        client_publish=tuple(a.client_publish),
        handshake_headers=handshake_headers,
        max_connections=a.max_connections,
        header_timeout_s=a.header_timeout,
        body_timeout_s=a.body_timeout,
        max_frames_per_s=a.max_frames_per_second,
        frame_burst=a.frame_burst,
        abuse_strikes=a.abuse_strikes,
        connect_hook=a.connect_hook,
        disconnect_hook=a.disconnect_hook,
        max_send_queue_bytes=a.max_send_queue_bytes,
        max_frame_bytes=a.max_frame_bytes,
        heartbeat_interval_s=a.heartbeat_interval,
        router_timeout_s=a.router_timeout,
        router_unavailable_close_s=a.router_unavailable_close,
        command_timeout_s=a.command_timeout,
        request_timeout_s=a.request_timeout,
        sio_ping_interval_s=a.sio_ping_interval,
        sio_ping_timeout_s=a.sio_ping_timeout,
        sio_connect_timeout_s=a.sio_connect_timeout,
        sio_poll_timeout_s=a.sio_poll_timeout,
        sio_post_body_timeout_s=a.sio_post_body_timeout,
        sio_upgrade_timeout_s=a.sio_upgrade_timeout,
        ping_interval_s=a.ping_interval,
        ping_timeout_s=a.ping_timeout,
        drain_timeout_s=a.drain_timeout,
    )
    return config, a.log_level


def _internal_port(port: int, internal_port: int | None) -> int:
    """--internal-port, or by default --port + 1000 (0 with --port 0): never a neighbour's
    public port when gateways run side by side on 8080, 8081, ..."""
    if internal_port is not None:
        return internal_port
    return port + 1000 if port else 0


def _read(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise SystemExit(f"roomcast gateway: cannot read {flag}: {exc}") from None


MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash


def load_secrets(path: str, env_value: str) -> tuple[bytes, ...]:
    """HS256 secrets from a file (one per line) and/or a variable (one secret)."""
    lines = _read(path, "--token-secret-file").splitlines() if path else []
    secrets = [s.strip() for s in [env_value, *lines] if s.strip() and not s.startswith("#")]
    for secret in secrets:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise SystemExit(
                f"roomcast gateway: token secrets must be at least {MIN_SECRET_BYTES} bytes"
            )
    return tuple(s.encode() for s in secrets)


def load_public_key(path: str) -> str:
    """A PEM public key, checked now: a bad file would otherwise refuse every token later."""
    pem = _read(path, "--token-public-key-file")
    try:
        serialization.load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise SystemExit(f"roomcast gateway: {path} is not a PEM public key: {exc}") from None
    return pem


def load_api_keys(path: str, env_value: str) -> tuple[str, ...]:
    """API keys from a file (one per line, # comments) and a comma-separated variable."""
    keys = [k.strip() for k in env_value.split(",")]
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                keys += [line.strip() for line in f if not line.lstrip().startswith("#")]
        except OSError as exc:
            raise SystemExit(f"roomcast gateway: cannot read --api-key-file: {exc}") from None
    return tuple(k for k in keys if k)


def bind_port(host: str, port: int, flag: str, prog: str = "roomcast gateway") -> list[Any]:
    """Listening sockets for ``host:port``; a port that cannot be had ends the process with one
    line naming the address and the flag, and exit status 2 (nothing else has started yet)."""
    try:
        return tornado.netutil.bind_sockets(port, host, backlog=4096)
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        bind_failed(prog, f"{host}:{port}", flag, reason)


def _listen(
    app: tornado.web.Application,
    sockets: list[Any],
    config: GatewayConfig,
    metrics: GatewayMetrics,
    *,
    admit: Callable[[int], bool] = lambda pending: True,
    max_body_size: int | None = None,
) -> tuple[Listener, int]:
    server = Listener(
        app,
        max_body_size=max_body_size,
        idle_connection_timeout=config.header_timeout_s,
        body_timeout=config.body_timeout_s,
    )
    server.limit(
        admit=admit,
        refused=lambda: metrics.rejected.labels("max_connections").inc(),
        accept_failed=lambda reason: metrics.accept_errors.labels(reason).inc(),
    )
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


def _descriptors_in_use() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: only the reserve is kept
        return 0


async def serve(config: GatewayConfig, public_socks: list[Any], internal_socks: list[Any]) -> None:
    """Serve on sockets already bound: the router hears of this gateway only once every port
    it needs is its own."""
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    ctx = new_context()
    gateway = Gateway(config, metrics, ctx)
    gateway.start()
    if config.curve_key:
        log.info("CURVE on: the links to the router are encrypted and authenticated")
    open_files, in_use = resource.getrlimit(resource.RLIMIT_NOFILE)[0], _descriptors_in_use()
    cap, hard = connection_caps(config.max_connections, open_files, in_use)
    if cap < config.max_connections:
        log.warning(
            "--max-connections %d lowered to %d by the open-files limit (%d, %d in use)",
            config.max_connections,
            cap,
            open_files,
            in_use,
        )
    gateway.connection_cap = cap
    public, port = _listen(
        make_public_app(gateway),
        public_socks,
        config,
        metrics,
        admit=lambda pending: pending + len(gateway.conns) < hard,
    )
    gateway.pending_connections = lambda: public.pending
    metrics.pending_connections.set_function(lambda: public.pending)
    api = Api(
        config.router,
        config.api_keys,
        development=config.development,
        max_body_bytes=config.api_max_body_bytes,
        metrics=metrics,
        version=_version(),
        curve_key=config.curve_key,
        curve_server_key=config.curve_server_key,
    )
    internal, internal_port = _listen(
        make_internal_app(gateway, registry, api),
        internal_socks,
        config,
        metrics,
        # Above our own limit, so oversize bodies get our 413 rather than a dropped connection.
        max_body_size=4 * config.api_max_body_bytes,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # READY means "serving and linked to the router": wait (bounded by SIGTERM) for the link.
    while not gateway.ready and not stop.is_set():
        await asyncio.sleep(0.01)
    print_ready(
        {
            "public": f"http://{config.host}:{port}",
            "internal": f"http://{config.internal_host}:{internal_port}",
        }
    )
    log.info("gateway %s serving on %s:%d", gateway.upstream.node_id, config.host, port)
    await stop.wait()
    started = time.monotonic()
    log.info("draining %d connections", len(gateway.conns))
    public.stop()
    await gateway.drain()
    internal.stop()
    await api.close()
    await gateway.stop()
    ctx.term()
    log.info("drained in %.2fs", time.monotonic() - started)


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one: each client is a file descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def _version() -> str:
    try:
        return importlib.metadata.version("roomcast")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def main(argv: list[str] | None = None) -> None:
    config, level = parse_args(argv)
    problem = config.production_problem()
    if problem:
        sys.stderr.write(f"roomcast gateway: {problem}\n")
        raise SystemExit(2)
    configure_logging(level)
    log.info("open-files limit %d", raise_fd_limit())
    public_socks = bind_port(config.host, config.port, "--port")
    internal_socks = bind_port(config.internal_host, config.internal_port, "--internal-port")
    asyncio.run(serve(config, public_socks, internal_socks))


if __name__ == "__main__":
    main()
