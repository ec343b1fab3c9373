"""Health and metrics over HTTP for the router (Tornado).

``/healthz``: the event loop answers. ``/readyz``: sockets bound and serving (503 while draining,
and while standing by as the passive router of a pair).
``/metrics``: Prometheus text from the router's registry.
"""

from __future__ import annotations

from collections.abc import Callable

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["make_app"]


class _Health(tornado.web.RequestHandler):
    def initialize(self, check: Callable[[], bool]) -> None:
        self._check = check

    def get(self) -> None:
        ok = self._check()
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "text/plain")
        self.finish("ok\n" if ok else "unavailable\n")


class _Metrics(tornado.web.RequestHandler):
    def initialize(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self._registry))


def make_app(registry: CollectorRegistry, ready: Callable[[], bool]) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/healthz", _Health, {"check": lambda: True}),
            (r"/readyz", _Health, {"check": ready}),
            (r"/metrics", _Metrics, {"registry": registry}),
        ],
        log_function=lambda handler: None,
    )
