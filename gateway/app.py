"""The gateway's Tornado applications: public (client protocols) and internal (metrics).

Public: ``/ws`` (plain JSON), ``/socket.io/`` (Socket.IO for sails.io.js and socket.io-client),
``/__getcookie`` (sails.io.js cross-origin bootstrap), ``/healthz``, ``/readyz``, and in
development the demo chat at ``/``. Internal: ``/metrics``, the server API
(``/api/<operation>``, ``/api/openapi.json``), ``/healthz``, ``/readyz``.
"""

from __future__ import annotations

import pathlib
from typing import Any

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.api import Api, ApiHandler, OpenApiHandler
from gateway.hub import Gateway
from gateway.plain_handler import PlainHandler, ws_ticker
from gateway.polling import Sessions, polling_rule
from gateway.sio_handler import GetCookieHandler, SioHandler, sio_ticker

__all__ = ["STATIC_DIR", "make_internal_app", "make_public_app"]

STATIC_DIR = pathlib.Path(__file__).parent / "static"


class _Health(tornado.web.RequestHandler):
    def initialize(self, gateway: Gateway, readiness: bool) -> None:
        self.gateway = gateway
        self.readiness = readiness

    def get(self) -> None:
        ok = self.gateway.ready if self.readiness else True
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "text/plain")
        self.finish("ok\n" if ok else "not ready\n")


class _Metrics(tornado.web.RequestHandler):
    def initialize(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.registry))


def _health_routes(gateway: Gateway) -> list[Any]:
    return [
        (r"/healthz", _Health, {"gateway": gateway, "readiness": False}),
        (r"/readyz", _Health, {"gateway": gateway, "readiness": True}),
    ]


def make_public_app(gateway: Gateway) -> tornado.web.Application:
    config = gateway.config
    sessions = Sessions(gateway)  # Socket.IO sessions on HTTP long-polling
    gateway.tickers.append(sio_ticker(gateway.conns))
    gateway.tickers.append(ws_ticker(gateway.conns))
    gateway.tickers.append(sessions.tick)
    routes: list[Any] = [
        (r"/ws", PlainHandler, {"gateway": gateway}),
        polling_rule(gateway, sessions),  # /socket.io/?transport=polling
        (r"/socket\.io/?", SioHandler, {"gateway": gateway, "sessions": sessions}),
        (r"/__getcookie", GetCookieHandler),
        *_health_routes(gateway),
    ]
    if config.development:
        # The demo chat; production gateways serve only protocol endpoints.
        page = {"path": str(STATIC_DIR), "default_filename": "index.html"}
        routes += [(r"/()", tornado.web.StaticFileHandler, page)]
        routes += [(r"/static/(.*)", tornado.web.StaticFileHandler, {"path": str(STATIC_DIR)})]
        # sails.io.js-dist, copied here from npm by scripts/bootstrap (not in git).
        vendor = {"path": str(STATIC_DIR / "vendor")}
        routes += [(r"/js/(.*)", tornado.web.StaticFileHandler, vendor)]
    return tornado.web.Application(
        routes,
        websocket_max_message_size=config.max_frame_bytes,
        # No websocket_ping_interval: Tornado would run a ping coroutine per connection; the
        # hub's once-a-second tickers ping instead (ws_ticker, and Engine.IO's own pings).
        log_function=lambda handler: None,
    )


def make_internal_app(
    gateway: Gateway, registry: CollectorRegistry, api: Api
) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/metrics", _Metrics, {"registry": registry}),
            (r"/api/openapi\.json", OpenApiHandler, {"api": api}),
            (r"/api/([^/]+)", ApiHandler, {"api": api}),
            *_health_routes(gateway),
        ],
        log_function=lambda handler: None,
    )
