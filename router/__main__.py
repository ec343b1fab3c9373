"""``python -m router``: parse flags (and ROOMCAST_* env), serve, print READY, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import tornado.httpserver
import tornado.netutil
from prometheus_client import CollectorRegistry

from roomcast import curve
from roomcast.flags import EnvArgumentParser, configure_logging, print_ready
from roomcast.zmqio import new_context
from router.http import make_app
from router.metrics import RouterMetrics
from router.server import Router, RouterConfig

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> tuple[RouterConfig, str, int, str]:
    parser = EnvArgumentParser(prog="roomcast router", description="Run the roomcast router.")
    parser.add_argument("--commands", default="tcp://127.0.0.1:5570", help="ROUTER bind address")
    parser.add_argument("--fanout", default="tcp://127.0.0.1:5571", help="PUB bind address")
    parser.add_argument("--http-host", default="127.0.0.1", help="health/metrics bind host")
    parser.add_argument("--http-port", type=int, default=5572, help="health/metrics port (0: free)")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0, help="seconds")
    parser.add_argument(
        "--gateway-timeout", type=float, default=5.0, help="expire a silent gateway (seconds)"
    )
    parser.add_argument("--max-rooms-per-socket", type=int, default=1000)
    parser.add_argument(
        "--fanout-hwm", type=int, default=200_000, help="messages queued per gateway before drops"
    )
    parser.add_argument(
        "--worker-timeout", type=float, default=5.0, help="expire a silent action worker (seconds)"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=30.0, help="answer 504 after (seconds)"
    )
    parser.add_argument(
        "--presence-rooms",
        action="append",
        default=[],
        help="room glob whose members get presence join/leave events (repeatable)",
    )
    parser.add_argument(
        "--presence-interval", type=float, default=0.2, help="presence coalescing window (s)"
    )
    parser.add_argument(
        "--role",
        choices=("single", "primary", "backup"),
        default="single",
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
        default=2.0,
        help="pair: peer silent this long, a client's request makes a standby active (seconds)",
    )
    parser.add_argument(
        "--history-rooms",
        action="append",
        default=[],
        help="room glob that keeps a message history clients can recover from (repeatable)",
    )
    parser.add_argument("--history-size", type=int, default=100, help="messages per room")
    parser.add_argument(
        "--history-ttl", type=float, default=300.0, help="seconds a message is kept"
    )
    parser.add_argument(
        "--history-room-max-bytes",
        type=int,
        default=1024 * 1024,
        help="bytes of history per room (then its oldest messages are evicted; a larger "
        "message is not kept)",
    )
    parser.add_argument(
        "--history-max-bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="bytes of history in all rooms (then the least recently written room's oldest "
        "messages are evicted)",
    )
    parser.add_argument(
        "--history-max-rooms",
        type=int,
        default=10_000,
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
        default=16 * 1024 * 1024,
        help="largest message a peer may send on the commands port (ZMQ_MAXMSGSIZE); a peer "
        "that sends a larger one is disconnected by ZeroMQ",
    )
    parser.add_argument("--drain-timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--log-level", default="INFO")
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


async def serve(config: RouterConfig, http_host: str, http_port: int) -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    ctx = new_context()
    router = Router(config, metrics, ctx)
    router.start()
    server = tornado.httpserver.HTTPServer(make_app(registry, lambda: router.serving))
    [sock] = tornado.netutil.bind_sockets(http_port, http_host)
    server.add_sockets([sock])
    port = sock.getsockname()[1]
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
    asyncio.run(serve(config, http_host, http_port))


if __name__ == "__main__":
    main()
