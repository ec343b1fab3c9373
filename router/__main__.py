"""``python -m router``: parse flags (and ROOMCAST_* env), serve, print READY, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import Any

import tornado.httpserver
import tornado.netutil
from prometheus_client import CollectorRegistry

from roomcast import curve
from roomcast.flags import EnvArgumentParser, bind_failed, configure_logging, print_ready
from roomcast.zmqio import BindError, new_context
from router.http import make_app
from router.metrics import RouterMetrics
from router.server import Router, RouterConfig

__all__ = ["build_parser", "main", "parse_args"]

_PROG = "roomcast router"


def build_parser() -> EnvArgumentParser:
    """The router's flags (each also read from its ROOMCAST_* variable)."""
    d = RouterConfig()
    parser = EnvArgumentParser(prog="roomcast router", description="Run the roomcast router.")
    parser.add_argument(
        "--commands",
        default=d.commands,
        help="ROUTER bind address for gateways, SDK clients and workers (tcp://HOST:PORT; "
        "port 0: free)",
    )
    parser.add_argument(
        "--fanout",
        default=d.fanout,
        help="PUB bind address gateways subscribe to (tcp://HOST:PORT; port 0: free)",
    )
    parser.add_argument(
        "--http-host", default="127.0.0.1", help="address /healthz, /readyz and /metrics bind"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=5572,
        help="port for /healthz, /readyz and /metrics (port number; 0: free)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=d.heartbeat_interval_s,
        help="seconds between the router's beats to gateways",
    )
    parser.add_argument(
        "--gateway-timeout",
        type=float,
        default=d.gateway_timeout_s,
        help="seconds of silence after which a gateway is expired and its sockets removed",
    )
    parser.add_argument(
        "--max-rooms-per-socket",
        type=int,
        default=d.max_rooms_per_socket,
        help="rooms one socket may be in (count, its own id room included); a join past it "
        "gets 429 too_many_rooms",
    )
    parser.add_argument(
        "--max-publish-bytes",
        type=int,
        default=d.max_publish_bytes,
        help="bytes of event name + JSON data one broadcast may carry; larger ones are "
        "refused with 413 payload_too_large (0: no bound). Keep it under every gateway's "
        "--max-send-queue-bytes",
    )
    parser.add_argument(
        "--fanout-hwm",
        type=int,
        default=d.fanout_hwm_messages,
        help="messages queued per gateway before further ones are dropped and counted",
    )
    parser.add_argument(
        "--worker-timeout",
        type=float,
        default=d.worker_timeout_s,
        help="seconds of silence after which an action worker is no longer sent requests",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=d.request_timeout_s,
        help="seconds a virtual request may wait for its worker; then 504",
    )
    parser.add_argument(
        "--presence-rooms",
        action="append",
        default=[],
        help="room glob whose members get presence join/leave events (repeatable)",
    )
    parser.add_argument(
        "--presence-interval",
        type=float,
        default=d.presence_interval_s,
        help="seconds over which presence events are coalesced",
    )
    parser.add_argument(
        "--role",
        choices=("single", "primary", "backup"),
        default=d.role,
        help="single router, or one router of a primary/backup pair (docs/protocol.md, Failover)",
    )
    parser.add_argument(
        "--peer-bind",
        default="",
        help="pair: bind address for the peer router's link (port 0: free; READY says which)",
    )
    parser.add_argument(
        "--peer-connect", default="", help="pair: the peer router's --peer-bind address"
    )
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=d.peer_timeout_s,
        help="pair: seconds of peer silence after which a client's request makes a standby active",
    )
    parser.add_argument(
        "--history-rooms",
        action="append",
        default=[],
        help="room glob that keeps a message history clients can recover from (repeatable)",
    )
    parser.add_argument(
        "--history-size",
        type=int,
        default=d.history_size,
        help="messages kept per history room",
    )
    parser.add_argument(
        "--history-ttl",
        type=float,
        default=d.history_ttl_s,
        help="seconds a history message is kept",
    )
    parser.add_argument(
        "--history-room-max-bytes",
        type=int,
        default=d.history_room_max_bytes,
        help="bytes of history per room (then its oldest messages are evicted; a larger "
        "message is not kept)",
    )
    parser.add_argument(
        "--history-max-bytes",
        type=int,
        default=d.history_max_bytes,
        help="bytes of history in all rooms (then the least recently written room's oldest "
        "messages are evicted)",
    )
    parser.add_argument(
        "--history-max-rooms",
        type=int,
        default=d.history_max_rooms,
        help="rooms with a history (then the least recently written one is forgotten)",
    )
    parser.add_argument(
        "--curve-secret-key",
        default="",
        help="CURVE: this router's .key_secret certificate (a pair shares one); with "
        "--curve-authorized-keys, encrypts every link and admits only authorized clients",
    )
    parser.add_argument(
        "--curve-authorized-keys",
        default="",
        help="CURVE: directory of the public .key certificates of the gateways, workers and "
        "SDK clients allowed to connect",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=d.max_message_bytes,
        help="bytes of the largest message a peer may send on the commands port "
        "(ZMQ_MAXMSGSIZE); a peer that sends a larger one is disconnected by ZeroMQ",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=d.drain_timeout_s,
        help="seconds SIGTERM waits for gateways to say goodbye before the router exits",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="least severe log level written to stderr (DEBUG, INFO, WARNING, ERROR)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[RouterConfig, str, int, str]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.role != "single" and not (args.peer_bind or args.peer_connect):
        parser.error(f"--role {args.role} needs --peer-bind, --peer-connect or both")
    if args.peer_timeout <= 0:
        parser.error("--peer-timeout must be positive")
    if bool(args.curve_secret_key) != bool(args.curve_authorized_keys):
        parser.error("--curve-secret-key and --curve-authorized-keys go together")
    if args.curve_secret_key:
        try:  # now, with a clear message, rather than as a traceback from the router
            curve.server_options(args.curve_secret_key)
            curve.authorized_keys(args.curve_authorized_keys)
        except ValueError as exc:
            raise SystemExit(f"roomcast router: {exc}") from None
    config = RouterConfig(
        commands=args.commands,
        fanout=args.fanout,
        heartbeat_interval_s=args.heartbeat_interval,
        gateway_timeout_s=args.gateway_timeout,
        max_rooms_per_socket=args.max_rooms_per_socket,
        max_publish_bytes=args.max_publish_bytes,
        fanout_hwm_messages=args.fanout_hwm,
        worker_timeout_s=args.worker_timeout,
        request_timeout_s=args.request_timeout,
        presence_rooms=tuple(args.presence_rooms),
        presence_interval_s=args.presence_interval,
        history_rooms=tuple(args.history_rooms),
        history_size=args.history_size,
        history_ttl_s=args.history_ttl,
        history_room_max_bytes=args.history_room_max_bytes,
        history_max_bytes=args.history_max_bytes,
        history_max_rooms=args.history_max_rooms,
        role=args.role,
        peer_bind=args.peer_bind,
        peer_connect=args.peer_connect,
        peer_timeout_s=args.peer_timeout,
        curve_secret_key=args.curve_secret_key,
        curve_authorized_keys=args.curve_authorized_keys,
        max_message_bytes=args.max_message_bytes,
        drain_timeout_s=args.drain_timeout,
    )
    return config, args.http_host, args.http_port, args.log_level


def _bind_http(host: str, port: int) -> list[socket.socket]:
    try:
        return tornado.netutil.bind_sockets(port, host)
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        bind_failed(_PROG, f"{host}:{port}", "--http-port", reason)


def _router(config: RouterConfig, metrics: RouterMetrics, ctx: Any) -> Router:
    """The router with its ZeroMQ ports bound; one that cannot be had ends the process (2)."""
    try:
        return Router(config, metrics, ctx)
    except BindError as exc:
        flags = {
            config.commands: "--commands",
            config.fanout: "--fanout",
            config.peer_bind: "--peer-bind",
        }
        ctx.destroy(linger=0)
        bind_failed(_PROG, exc.url, flags.get(exc.url, "--commands/--fanout"), exc.reason)


async def serve(config: RouterConfig, http_host: str, http_socks: list[socket.socket]) -> None:
    """Serve with the HTTP port already bound; the ZeroMQ ports are bound before anything
    is sent to anyone."""
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    ctx = new_context()
    router = _router(config, metrics, ctx)
    router.start()
    server = tornado.httpserver.HTTPServer(make_app(registry, lambda: router.serving))
    server.add_sockets(http_socks)
    port = http_socks[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = {
        "commands": router.commands_endpoint,
        "fanout": router.fanout_endpoint,
        "http": f"http://{http_host}:{port}",
    }
    if router.pair is not None:
        ready |= {"role": config.role, "peer": router.pair.bind_endpoint}
    print_ready(ready)
    await stop.wait()
    logging.getLogger("roomcast.router").info("draining")
    server.stop()
    await router.stop()
    ctx.term()


def main(argv: list[str] | None = None) -> None:
    config, http_host, http_port, level = parse_args(argv)
    configure_logging(level)
    asyncio.run(serve(config, http_host, _bind_http(http_host, http_port)))


if __name__ == "__main__":
    main()
