"""Action apps: Sails-style actions answered by ``roomcast worker MODULE:APP`` processes.

``app = App()``; ``@app.action("POST", "/chat/join")`` registers a handler (sync or async) that
gets a :class:`roomcast.requests.Request` and returns a body, ``(status, body)``,
``(status, body, headers)`` or a :class:`~roomcast.requests.Response`. Path parameters
(``/user/:id``) land in ``req.params``, a last ``*`` segment matches any rest of the path;
query-string arguments too (path parameters win; a repeated argument keeps its last value).
A ``"*"`` action answers every HTTP method, never the ``CONNECT`` / ``DISCONNECT`` hooks.
``@app.on_connect`` / ``@app.on_disconnect`` register Sails' ``beforeConnect`` /
``afterDisconnect`` hooks, served as the virtual routes ``CONNECT /`` and ``DISCONNECT /``
(gateways call them when started with ``--connect-hook`` / ``--disconnect-hook``).

Pure: routing only; the worker shell (:mod:`roomcast.worker`) does the I/O.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from roomcast.core.errors import BadRequest
from roomcast.core.routes import Route, path_segments

__all__ = ["CONNECT", "DISCONNECT", "App", "Handler", "Match"]

Handler: TypeAlias = Callable[[Any], Any | Awaitable[Any]]
CONNECT, DISCONNECT = "CONNECT", "DISCONNECT"
# Lifecycle hooks are not requests: a "*" (any method) action never answers them, so a catch-all
# registered before ``on_connect`` cannot bypass the hook (roomcast/core/routes.py, HOOKS).
_METHODS = frozenset(
    {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "*", CONNECT, DISCONNECT}
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Route:
    route: Route
    handler: Handler


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    handler: Handler
    params: dict[str, str]  # path parameters over the query's arguments
    path: str
    query: dict[str, str] = dataclasses.field(default_factory=dict)
    route_params: dict[str, str] = dataclasses.field(default_factory=dict)


class App:
    """A set of actions, matched in registration order."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        # Run by the worker before it serves / after it stopped (an ASGI app's lifespan).
        self.startup: list[Callable[[], Awaitable[None]]] = []
        self.shutdown: list[Callable[[], Awaitable[None]]] = []

    def on_startup(self, hook: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        self.startup.append(hook)
        return hook

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        self.shutdown.append(hook)
        return hook

    def action(self, method: str, path: str) -> Callable[[Handler], Handler]:
        method = method.upper()
        if method not in _METHODS:
            raise ValueError(f"unsupported method {method!r}")
        if not path.startswith("/"):
            raise ValueError("an action path starts with /")

        def register(handler: Handler) -> Handler:
            self._routes.append(_Route(Route(method, tuple(path_segments(path))), handler))
            return handler

        return register

    def on_connect(self, handler: Handler) -> Handler:
        """Sails' ``beforeConnect``: return False or a status >= 400 to refuse the socket."""
        return self.action(CONNECT, "/")(handler)

    def on_disconnect(self, handler: Handler) -> Handler:
        """Sails' ``afterDisconnect``: runs after a socket went away (its result is ignored)."""
        return self.action(DISCONNECT, "/")(handler)

    def resolve(self, method: str, url: str) -> Match | None:
        """The action for ``method url`` with its params, or None (404)."""
        parts = urllib.parse.urlsplit(url)
        if not parts.path.startswith("/"):
            raise BadRequest("url must be a path starting with /")
        segments = path_segments(parts.path)
        method = method.upper()
        for route in self._routes:
            params = route.route.match(method, segments)
            if params is not None:
                # Like Sails (qs): a present-but-empty argument (``?flag=``, ``?flag``) is "".
                query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
                return Match(route.handler, {**query, **params}, parts.path, query, params)
        return None

    @property
    def routes(self) -> list[tuple[str, str]]:
        return [(r.route.method, "/" + "/".join(r.route.segments)) for r in self._routes]

    @property
    def route_specs(self) -> list[str]:
        """What a worker announces to the router: ``"METHOD /path"`` per action, in order."""
        return list(dict.fromkeys(r.route.spec for r in self._routes))
