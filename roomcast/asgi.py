"""Existing ASGI (and, through a2wsgi, WSGI) web apps as action handlers.

``roomcast worker --asgi MODULE:APP`` serves virtual requests with an app that already has its
routing, validation, auth middleware and tests (FastAPI, Starlette, Django's ASGI handler);
``--wsgi MODULE:APP`` does the same for a WSGI app (Flask, Django's WSGI handler) wrapped by
`a2wsgi <https://pypi.org/project/a2wsgi/>`_ (the ``wsgi`` extra), not by an adapter of ours.

Each virtual request becomes one ASGI HTTP scope: its method, path and query string (for GET,
HEAD and DELETE an object ``data`` adds its scalar fields to the query, the way sails.io.js'
``io.socket.get(url, data)`` reads to an app), its headers (the socket's handshake cookie
included, see :class:`roomcast.requests.Request`), and for other methods ``data`` as a JSON
body. The response becomes the JWR: status, headers, and a JSON body when the app says
``application/json`` (text otherwise).

Who is asking reaches the app through the scope extension ``scope["extensions"]["roomcast"]``
(``socket``, ``user``, ``claims``, ``cluster``); :func:`requester` reads it from a Starlette
or Django request, a Flask request (``environ["asgi.scope"]``, set by a2wsgi) or a scope, and
:func:`join` / :func:`join_sync` put the requesting socket in a room as Sails'
``sails.sockets.join(req, room)`` does (``join_sync`` from WSGI threads).

No web framework is imported here: the app is only called through the ASGI interface.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

from roomcast.app import App
from roomcast.requests import Request, Response

__all__ = [
    "ANY_ROUTE",
    "AsgiAdapter",
    "Requester",
    "app_from_asgi",
    "build_scope",
    "introspect_routes",
    "join",
    "join_sync",
    "requester",
]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
AsgiApp: TypeAlias = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

ANY_ROUTE = "* /*"  # what an ASGI worker serves unless told (--route)
EXTENSION = "roomcast"
_QUERY_DATA_METHODS = frozenset({"GET", "HEAD", "DELETE"})


@dataclasses.dataclass(frozen=True)
class Requester:
    """The socket behind a request, as an endpoint of a web app sees it."""

    socket: str
    user: str | None
    claims: dict[str, Any]
    cluster: Any = dataclasses.field(repr=False)  # the worker's async Cluster
    loop: asyncio.AbstractEventLoop | None = dataclasses.field(default=None, repr=False)


def _query_from_data(data: object) -> list[tuple[str, str]]:
    if not isinstance(data, dict):
        return []
    pairs = []
    for key, value in data.items():
        if isinstance(value, bool):
            pairs.append((str(key), "true" if value else "false"))
        elif isinstance(value, (str, int, float)):
            pairs.append((str(key), str(value)))
    return pairs


def build_scope(req: Request, extension: Requester) -> tuple[Scope, bytes]:
    """The ASGI HTTP scope and body for a virtual request (pure)."""
    parts = urllib.parse.urlsplit(req.url)
    query = parts.query
    body = b""
    headers: dict[str, str] = {k.lower(): v for k, v in req.headers.items()}
    if req.method in _QUERY_DATA_METHODS:
        extra = urllib.parse.urlencode(_query_from_data(req.data))
        query = "&".join(q for q in (query, extra) if q)
    elif req.data is not None:
        body = json.dumps(req.data, separators=(",", ":")).encode()
        headers["content-type"] = "application/json"
    headers["content-length"] = str(len(body))
    headers.setdefault("host", "roomcast")
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": req.method,
        "scheme": "http",
        "path": urllib.parse.unquote(parts.path),
        "raw_path": parts.path.encode("ascii", "replace"),
        "query_string": query.encode("ascii", "replace"),
        "root_path": "",
        "headers": [
            (k.encode("latin-1", "replace"), v.encode("latin-1", "replace"))
            for k, v in headers.items()
        ],
        "client": None,
        "server": None,
        "extensions": {EXTENSION: extension},
    }
    return scope, body


def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
    merged: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in ("content-length", "transfer-encoding", "connection"):
            continue  # about HTTP framing, meaningless in a JWR
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    content_type = merged.get("content-type", "")
    decoded: object = None
    if body:
        text = body.decode("utf-8", "replace")
        decoded = text
        if "json" in content_type:
            try:
                decoded = json.loads(text)
            except ValueError:
                pass
    return Response(status, decoded, merged)


class AsgiAdapter:
    """Calls an ASGI app once per virtual request; runs its lifespan around the worker."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self._lifespan: asyncio.Task[None] | None = None
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()

    async def __call__(self, req: Request) -> Response:
        requester = Requester(
            req.socket, req.user, dict(req.claims), req.cluster, asyncio.get_running_loop()
        )
        scope, body = build_scope(req, requester)
        done = asyncio.Event()
        sent_body = False
        status: int | None = None
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers.extend((bytes(k), bytes(v)) for k, v in message.get("headers", ()))
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.app(scope, receive, send)
        finally:
            done.set()
        if status is None:
            raise RuntimeError("the ASGI app returned without starting a response")
        return _response(status, headers, b"".join(chunks))

    # --- lifespan (https://asgi.readthedocs.io/en/latest/specs/lifespan.html) ----------------

    async def startup(self) -> None:
        """Run the app's lifespan startup; an app that does not support lifespan is fine."""
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        self._lifespan = asyncio.ensure_future(self._run_lifespan(scope))
        await self._to_app.put({"type": "lifespan.startup"})
        answer = await self._from_app.get()
        if answer["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"the ASGI app failed to start: {answer.get('message', '')}")

    async def shutdown(self) -> None:
        if self._lifespan is None or self._lifespan.done():
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()

    async def _run_lifespan(self, scope: Scope) -> None:
        try:
            await self.app(scope, self._to_app.get, self._from_app.put)
        except Exception:
            pass  # the app does not do lifespan (the spec's way of saying so)
        # Whatever happened, whoever waits gets an answer.
        await self._from_app.put({"type": "lifespan.unsupported"})


def app_from_asgi(asgi_app: AsgiApp, routes: tuple[str, ...] = (ANY_ROUTE,)) -> App:
    """An :class:`App` whose actions (``routes``: what the worker announces) run ``asgi_app``."""
    adapter = AsgiAdapter(asgi_app)
    app = App()
    for spec in routes:
        method, _, path = spec.strip().partition(" ")
        app.action(method, path.strip())(adapter.__call__)
    app.on_startup(adapter.startup)
    app.on_shutdown(adapter.shutdown)
    return app


def _segment(segment: str, last: bool, opening: str, closing: str) -> str | None:
    """One path segment of a framework's route in our syntax, or None if it has no equivalent.

    ``{name}`` / ``<name>`` / ``<int:name>`` -> ``:name``; a last ``{name:path}`` /
    ``<path:name>`` -> ``*``; a literal stays; anything mixed (``{name}.txt``) is None.
    """
    if not (opening in segment or closing in segment):
        return segment
    if not (segment.startswith(opening) and segment.endswith(closing)):
        return None
    inner = segment[1:-1]
    if opening == "{":  # Starlette: {name} or {name:convertor}
        name, _, convertor = inner.partition(":")
    else:  # werkzeug: <name> or <convertor:name> (or <convertor(args):name>)
        convertor, _, name = inner.rpartition(":")
    if not name.isidentifier():
        return None
    if convertor == "path":
        return "*" if last else None
    return ":" + name


def _spec(method: str, path: str, opening: str, closing: str) -> str | None:
    parts = [p for p in path.split("/") if p]
    converted = [_segment(p, i == len(parts) - 1, opening, closing) for i, p in enumerate(parts)]
    if any(c is None for c in converted):
        return None
    return f"{method.upper()} /" + "/".join(c for c in converted if c is not None)


def introspect_routes(app: Any) -> tuple[str, ...] | None:
    """The routes a Starlette/FastAPI app (``app.routes``) or a Flask/werkzeug app
    (``app.url_map``) serves, as route specs; None when they cannot all be expressed (a mount,
    a websocket route, a regex, a partial segment): then the worker announces everything."""
    specs: list[str] = []
    url_map = getattr(app, "url_map", None)
    if url_map is not None and hasattr(url_map, "iter_rules"):
        rules = [(r.rule, r.methods or ()) for r in url_map.iter_rules()]
        opening, closing = "<", ">"
    elif isinstance(getattr(app, "routes", None), list):
        rules = []
        for route in app.routes:
            path, methods = getattr(route, "path", None), getattr(route, "methods", None)
            if not isinstance(path, str) or not methods:
                return None  # a Mount, a WebSocketRoute, ...: not every path is known
            rules.append((path, methods))
        opening, closing = "{", "}"
    else:
        return None
    for path, methods in rules:
        for method in sorted(methods):
            spec = _spec(method, path, opening, closing)
            if spec is None:
                return None
            specs.append(spec)
    return tuple(dict.fromkeys(specs)) or None


def requester(request: Any) -> Requester:
    """Who sent ``request``: a Starlette/FastAPI or Django ASGI request (``.scope``), a Flask or
    other WSGI request under a2wsgi (``.environ["asgi.scope"]``), or a scope/environ itself.
    Raises LookupError when the request did not come through a roomcast worker."""
    scope = getattr(request, "scope", None)
    if scope is None:
        environ = getattr(request, "environ", None)
        if environ is None and isinstance(request, dict):
            environ = request
        scope = environ.get("asgi.scope", environ) if isinstance(environ, dict) else None
    ext = scope.get("extensions", {}).get(EXTENSION) if isinstance(scope, dict) else None
    if not isinstance(ext, Requester):
        raise LookupError("not a virtual request served by a roomcast worker")
    return ext


async def join(request: Any, room: str) -> None:
    """Sails' ``sails.sockets.join(req, room)`` from an async endpoint."""
    who = requester(request)
    await who.cluster.sockets.join(who.socket, room)


def join_sync(request: Any, room: str, timeout_s: float = 10.0) -> None:
    """The same from a sync (WSGI) endpoint, which runs in a thread of its own."""
    who = requester(request)
    if who.loop is None:
        raise LookupError("no worker loop to run the join on")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is who.loop:
        raise RuntimeError("join_sync() on the worker's loop would block it: await join()")
    future = asyncio.run_coroutine_threadsafe(who.cluster.sockets.join(who.socket, room), who.loop)
    future.result(timeout_s)
