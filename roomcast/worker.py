"""The action worker: serves an :class:`roomcast.app.App`'s actions to the cluster.

A DEALER connection to the router announces the worker (``Hello`` with role WORKER, repeated
every heartbeat interval so a restarted router learns of it again), receives routed
``Request`` commands, runs the matching handler and answers with a ``Reply``. Handlers get a
:class:`roomcast.requests.Request` whose ``cluster`` is a :class:`roomcast.Cluster` (async
handlers) or :class:`roomcast.SyncCluster` (sync handlers, run in threads).

With a primary/backup pair of routers (``--router`` lists both, comma-separated) the worker
keeps one DEALER per router and says Hello on each, so both know it at all times and the one
that takes over can route requests to it at once; each reply goes back on the socket its
request came from. Handlers' clusters get the same list (the SDK fails over by itself).

Its Hello announces the routes it serves (``App.route_specs``), so the router sends it only
requests it can answer. Sync handlers run on a bounded pool of ``sync_threads`` threads: when
every one is taken (hung handlers keep theirs past the timeout), a request for a sync handler
is answered 503 at once, and the worker tells the router it is ``busy`` (a Hello right away, and
with every heartbeat until a thread frees) so requests go to other workers meanwhile; the
router's ``roomcast_router_workers_busy`` gauge shows it.

Errors never leak: no action -> 404, handler exception -> 500 ``action_failed`` with no trace
or exception text (the traceback goes to this process's log), handler past
``handler_timeout_s`` -> 504, every sync thread taken -> 503 ``no_worker``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import importlib
import inspect
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable
from typing import Any

import zmq

from roomcast.app import App
from roomcast.cluster import Cluster, encode_json
from roomcast.core import wire
from roomcast.core.errors import (
    ActionFailed,
    NotFound,
    NoWorker,
    RoomcastError,
    Timeout,
    WireError,
)
from roomcast.curve import client_options
from roomcast.flags import EnvArgumentParser, configure_logging, print_ready
from roomcast.requests import Request, Response
from roomcast.zmqio import Batch, BatchReader, new_context

__all__ = ["Worker", "WorkerConfig", "build_parser", "load_app", "main", "normalize_result"]

log = logging.getLogger("roomcast.worker")

_GOODBYE_REF = 1  # the only ref a worker sends: its Goodbye (requests carry the router's refs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    router: str = "tcp://127.0.0.1:5570"
    heartbeat_interval_s: float = 1.0
    handler_timeout_s: float = 25.0  # below the router's request timeout, so we answer first
    max_concurrency: int = 64
    goodbye_timeout_s: float = 2.0  # how long a stopping worker waits for the routers' ack
    sync_threads: int = 16  # sync handlers at once; then 503 and "busy" to the router
    # CURVE (roomcast/curve.py): both files, or neither (off)
    curve_key: str = ""  # our .key_secret certificate
    curve_server_key: str = ""  # the router's public .key certificate


def normalize_result(result: Any) -> tuple[int, Any, dict[str, Any]]:
    """A handler's return value as (status, body, headers).

    A :class:`Response`, or a 2- or 3-tuple whose first item is an int (not a bool), gives the
    status; anything else is a 200 body. A status outside 100-599 raises ``ValueError`` (the
    worker answers 500 and logs it: it is the handler's bug, and the wire cannot carry it).
    """
    if isinstance(result, Response):
        status, body, headers = result.status, result.body, dict(result.headers)
    elif (
        isinstance(result, tuple)
        and len(result) in (2, 3)
        and isinstance(result[0], int)
        and not isinstance(result[0], bool)
    ):
        status, body = result[0], result[1]
        headers = dict(result[2]) if len(result) == 3 else {}
    else:
        return 200, result, {}
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"an action status must be an int in 100-599, got {status!r}")
    return status, body, headers


class Worker:
    def __init__(self, app: App, config: WorkerConfig) -> None:
        self.app = app
        self.config = config
        self.node_id = "w-" + secrets.token_hex(5)
        self._ctx = new_context()
        self._routers = [r.strip() for r in config.router.split(",") if r.strip()]
        self._socks: list[zmq.Socket[bytes]] = []
        self._readers: list[BatchReader] = []
        curve = client_options(config.curve_key, config.curve_server_key)
        for _ in self._routers:
            sock = self._ctx.socket(zmq.DEALER)
            curve.apply(sock)
            sock.setsockopt(zmq.LINGER, 1000)
            self._socks.append(sock)
            self._readers.append(BatchReader(sock, functools.partial(self._on_batch, sock)))
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.cluster = Cluster(
            config.router, curve_key=config.curve_key, curve_server_key=config.curve_server_key
        )
        self._sync_cluster: Any = None
        self._goodbyes: dict[int, asyncio.Future[None]] = {}  # per socket, once leaving
        self._leaving = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            config.sync_threads, thread_name_prefix="roomcast-action"
        )
        self._sync_running = 0  # threads taken, hung ones included
        self.served = 0

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        for hook in self.app.startup:
            await hook()
        for sock, router, reader in zip(self._socks, self._routers, self._readers, strict=True):
            sock.connect(router)
            reader.start()
        log.info(
            "worker %s serving %d actions via %s",
            self.node_id,
            len(self.app.routes),
            self.config.router,
        )
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                self._hello()
                try:
                    await asyncio.wait_for(stop.wait(), self.config.heartbeat_interval_s)
                except TimeoutError:
                    pass
            await self.leave()
        finally:
            await self.close()

    async def leave(self) -> None:
        """Say Goodbye to every router and wait (bounded) for each acknowledgement: a router
        routes nothing to us after it, so once the requests in flight are answered (close()),
        no request is left without its answer."""
        loop = asyncio.get_running_loop()
        self._leaving = True  # no Hello after this: it would put us back in the rotation
        self._goodbyes = {id(sock): loop.create_future() for sock in self._socks}
        bye = wire.encode(
            wire.Goodbye(ref=_GOODBYE_REF, node_id=self.node_id, role=wire.Role.WORKER)
        )
        for sock in self._socks:
            self._send(sock, bye)
        _, missing = await asyncio.wait(
            self._goodbyes.values(), timeout=self.config.goodbye_timeout_s
        )
        log.info(
            "worker %s leaving: %d of %d routers acknowledged; finishing %d requests in flight",
            self.node_id,
            len(self._socks) - len(missing),
            len(self._socks),
            len(self._tasks),
        )

    @property
    def busy(self) -> bool:
        return self._sync_running >= self.config.sync_threads

    def _hello(self) -> None:
        if self._leaving:
            return
        hello = wire.Hello(
            node_id=self.node_id,
            role=wire.Role.WORKER,
            routes=tuple(self.app.route_specs),
            routes_known=True,
            busy=self.busy,
        )
        body = wire.encode(hello)
        for sock in self._socks:
            if not sock.closed:
                self._send(sock, body)

    def _run_sync(self, handler: Any, req: Request) -> asyncio.Future[Any]:
        """Run a sync handler on the bounded pool; 503 at once when every thread is taken."""
        if self.busy:
            raise NoWorker("every sync-handler thread of this worker is busy")
        self._sync_running += 1
        if self.busy:
            self._hello()  # the router prefers other workers from now on
        loop = asyncio.get_running_loop()
        future: concurrent.futures.Future[Any] = self._pool.submit(handler, req)
        # The thread is free only when the handler returns, not when the wait times out.
        future.add_done_callback(lambda _: _call_soon(loop, self._sync_finished))
        return asyncio.wrap_future(future)

    def _sync_finished(self) -> None:
        was_busy = self.busy
        self._sync_running -= 1
        if was_busy and not self.busy:
            self._hello()

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.config.handler_timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for hook in self.app.shutdown:
            await hook()
        for reader, sock in zip(self._readers, self._socks, strict=True):
            reader.stop()
            sock.close()
        await self.cluster.close()
        if self._sync_cluster is not None:
            await asyncio.to_thread(self._sync_cluster.close)
        self._ctx.term()

    def _send(self, sock: zmq.Socket[bytes], body: bytes) -> None:
        try:
            sock.send(body, zmq.NOBLOCK)
        except zmq.Again:
            log.debug("router not reachable; will retry")
        self._readers[self._socks.index(sock)].kick()

    def _on_batch(self, sock: zmq.Socket[bytes], batch: Batch) -> None:
        for parts in batch:
            try:
                msg = wire.decode(parts[-1])
            except WireError:
                log.warning("undecodable message from the router dropped")
                continue
            if isinstance(msg, wire.Request):
                task = asyncio.ensure_future(self._serve(sock, msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(msg, wire.Reply) and msg.ref == _GOODBYE_REF:
                acked = self._goodbyes.get(id(sock))
                if acked is not None and not acked.done():
                    acked.set_result(None)

    async def _serve(self, sock: zmq.Socket[bytes], msg: wire.Request) -> None:
        async with self._slots:
            reply = await self._answer(msg)
        self.served += 1
        if not sock.closed:
            self._send(sock, wire.encode(reply))

    async def _answer(self, msg: wire.Request) -> wire.Reply:
        try:
            match = self.app.resolve(msg.method, msg.url)
            if match is None:
                raise NotFound(f"no action for {msg.method} {msg.url.split('?')[0][:200]}")
            is_async = inspect.iscoroutinefunction(match.handler)
            context = _json_object(msg.context)
            handshake = _str_dict(context.get("headers"))
            claims = context.get("claims")
            req = Request(
                msg.socket,
                method=msg.method,
                url=msg.url,
                headers={**handshake, **_str_dict(_json_object(msg.headers))},
                data=json.loads(msg.data) if msg.data else None,
                params=match.params,
                cluster=self.cluster if is_async else self._sync(),
                user=msg.user or None,
                claims=claims if isinstance(claims, dict) else {},
                handshake_headers=handshake,
                query=match.query,
                route_params=match.route_params,
            )
            call = match.handler(req) if is_async else self._run_sync(match.handler, req)
            result = await asyncio.wait_for(call, self.config.handler_timeout_s)
        except RoomcastError as err:
            return _error(msg.ref, err)
        except TimeoutError:
            # The client sees only 504: say here which action was too slow.
            log.warning(
                "action %s %s timed out after %g s: answered 504",
                msg.method,
                msg.url.split("?")[0][:200],
                self.config.handler_timeout_s,
            )
            return _error(msg.ref, Timeout("the action did not answer in time"))
        except Exception:
            log.exception("action %s %s failed", msg.method, msg.url.split("?")[0][:200])
            return _error(msg.ref, ActionFailed("internal server error"))
        # What the handler returned is its own bug when unusable (a bad status, a body that is
        # not JSON): a 500 logged here, never a 400 that would blame the client.
        try:
            status, body, headers = normalize_result(result)
            return wire.Reply(
                ref=msg.ref,
                status=status,
                body=encode_json(body, "body"),
                headers=encode_json(headers, "headers"),
            )
        except (RoomcastError, TypeError, ValueError) as exc:
            log.error(
                "action %s %s returned an unusable result: %s",
                msg.method,
                msg.url.split("?")[0][:200],
                exc,
            )
            return _error(msg.ref, ActionFailed("internal server error"))

    def _sync(self) -> Any:
        if self._sync_cluster is None:
            from roomcast.sync import SyncCluster

            self._sync_cluster = SyncCluster(
                self.config.router,
                curve_key=self.config.curve_key,
                curve_server_key=self.config.curve_server_key,
            )
        return self._sync_cluster


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """From a handler thread: a thread that outlived the worker's loop has nobody to tell."""
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:
        pass


def _str_dict(value: object) -> dict[str, str]:
    """Header-like: lower-case string keys to string values (anything else left out)."""
    if not isinstance(value, dict):
        return {}
    return {k.lower(): v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _error(ref: int, err: RoomcastError) -> wire.Reply:
    body = json.dumps(err.as_body()).encode()
    return wire.Reply(ref=ref, status=err.status, error=err.code, message=err.message, body=body)


def _import(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"roomcast worker: {spec!r} is not MODULE:APP")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"roomcast worker: cannot import {module_name!r}: {exc}") from None
    return getattr(module, attr, None)


def load_app(spec: str) -> App:
    """Import ``module:attribute`` and check it is an :class:`App`."""
    app = _import(spec)
    if not isinstance(app, App):
        raise SystemExit(f"roomcast worker: {spec} is not a roomcast.App")
    return app


def load_web_app(spec: str, *, wsgi: bool, routes: tuple[str, ...]) -> App:
    """An ASGI app (or a WSGI one, through a2wsgi) as an :class:`App` serving ``routes`` (none
    given: the app's own routes when it lists them — Starlette/FastAPI, Flask — else all)."""
    from roomcast.asgi import ANY_ROUTE, app_from_asgi, introspect_routes

    web_app = _import(spec)
    if not callable(web_app):
        raise SystemExit(f"roomcast worker: {spec} is not an ASGI/WSGI app (not callable)")
    if not routes:
        found = introspect_routes(web_app)
        routes = found or (ANY_ROUTE,)
        log.info(
            "%s: announcing %s",
            spec,
            f"its {len(found)} routes" if found else "every route (its routes are not listed)",
        )
    if wsgi:
        try:
            from a2wsgi import WSGIMiddleware
        except ImportError:
            raise SystemExit(
                "roomcast worker: --wsgi needs a2wsgi (pip install 'roomcast[wsgi]')"
            ) from None
        web_app = WSGIMiddleware(web_app)
    try:
        return app_from_asgi(web_app, routes)
    except ValueError as exc:
        raise SystemExit(f"roomcast worker: --route: {exc}") from None


def build_parser() -> EnvArgumentParser:
    """The worker's flags (each also read from its ROOMCAST_* variable)."""
    d = WorkerConfig()
    p = EnvArgumentParser(prog="roomcast worker", description="Serve an App's actions.")
    p.add_argument(
        "app",
        metavar="MODULE:APP",
        nargs="?",
        help="the roomcast.App to serve, imported from the current directory first",
    )
    p.add_argument(
        "--asgi",
        default="",
        metavar="MODULE:APP",
        help="serve virtual requests with this ASGI app (FastAPI, Starlette, Django) instead",
    )
    p.add_argument(
        "--wsgi",
        default="",
        metavar="MODULE:APP",
        help="...or with this WSGI app (Flask, Django), through a2wsgi (the wsgi extra)",
    )
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="'METHOD /path'",
        help="with --asgi/--wsgi: a route the app serves, announced to the router "
        "(repeatable; :name and a last * allowed; default: the app's own routes when it lists "
        "them (Starlette/FastAPI, Flask), else '* /*', everything)",
    )
    p.add_argument(
        "--router",
        default=d.router,
        help="the router's commands address (a primary/backup pair: both, comma-separated)",
    )
    p.add_argument(
        "--curve-key",
        default="",
        help="CURVE: this worker's .key_secret certificate (with --curve-server-key)",
    )
    p.add_argument(
        "--curve-server-key", default="", help="CURVE: the router's public .key certificate"
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=d.heartbeat_interval_s,
        help="seconds between this worker's hellos to the router",
    )
    p.add_argument(
        "--handler-timeout",
        type=float,
        default=d.handler_timeout_s,
        help="seconds a handler may take; then the client gets 504 and this log a warning",
    )
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=d.max_concurrency,
        help="requests (count) this worker handles at once; more wait their turn",
    )
    p.add_argument(
        "--sync-threads",
        type=int,
        default=d.sync_threads,
        help="threads (count) for sync handlers; when all are taken: 503 at once, and the "
        "router sends requests to other workers",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        help="least severe log level written to stderr (DEBUG, INFO, WARNING, ERROR)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """``roomcast worker MODULE:APP``: serve until SIGTERM, print READY once connected."""
    p = build_parser()
    a = p.parse_args(argv)
    if bool(a.curve_key) != bool(a.curve_server_key):
        p.error("--curve-key and --curve-server-key go together")
    try:
        client_options(a.curve_key, a.curve_server_key)
    except ValueError as exc:
        raise SystemExit(f"roomcast worker: {exc}") from None
    if a.sync_threads < 1:
        p.error("--sync-threads must be at least 1")
    if sum(bool(x) for x in (a.app, a.asgi, a.wsgi)) != 1:
        p.error("give one of MODULE:APP, --asgi MODULE:APP or --wsgi MODULE:APP")
    configure_logging(a.log_level)
    sys.path.insert(0, os.getcwd())  # like `python -m`: apps next to the caller import
    if a.app:
        app = load_app(a.app)
    else:
        app = load_web_app(a.asgi or a.wsgi, wsgi=bool(a.wsgi), routes=tuple(a.route))
    config = WorkerConfig(
        router=a.router,
        heartbeat_interval_s=a.heartbeat_interval,
        handler_timeout_s=a.handler_timeout,
        max_concurrency=a.max_concurrency,
        sync_threads=a.sync_threads,
        curve_key=a.curve_key,
        curve_server_key=a.curve_server_key,
    )
    if config.curve_key:
        log.info("CURVE on: the links to the router are encrypted and authenticated")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker = Worker(app, config)
        ready = asyncio.Event()
        task = loop.create_task(worker.run(stop, ready))
        await ready.wait()
        print_ready({"router": config.router, "node": worker.node_id, "actions": len(app.routes)})
        await task
        log.info("worker %s stopped (%d requests served)", worker.node_id, worker.served)

    asyncio.run(serve())
    return 0
