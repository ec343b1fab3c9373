"""roomcast.asgi: virtual request -> ASGI scope, ASGI response -> JWR, and the requester."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from roomcast.asgi import (
    AsgiAdapter,
    Requester,
    _response,
    app_from_asgi,
    build_scope,
    introspect_routes,
    requester,
)
from roomcast.requests import Request

WHO = Requester("s1", "ada", {"sub": "ada"}, cluster=None)


def test_get_data_reads_as_query_and_headers_carry_the_cookie() -> None:
    req = Request(
        "s1",
        method="GET",
        url="/items/7?q=a%20b",
        headers={"Cookie": "session=x", "x-a": "1"},
        data={"page": 2, "all": True, "nested": {"no": 1}},
    )
    scope, body = build_scope(req, WHO)
    assert body == b""
    assert scope["method"] == "GET" and scope["path"] == "/items/7"
    assert scope["query_string"] == b"q=a%20b&page=2&all=true"
    headers = dict(scope["headers"])
    assert headers[b"cookie"] == b"session=x" and headers[b"x-a"] == b"1"
    assert headers[b"content-length"] == b"0" and headers[b"host"] == b"roomcast"
    assert scope["extensions"]["roomcast"] is WHO


def test_post_data_is_a_json_body() -> None:
    req = Request("s1", method="POST", url="/items", data={"name": "pen"})
    scope, body = build_scope(req, WHO)
    assert json.loads(body) == {"name": "pen"} and scope["query_string"] == b""
    headers = dict(scope["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()


@pytest.mark.parametrize(
    ("headers", "body", "expected_body"),
    [
        ([(b"content-type", b"application/json")], b'{"a":1}', {"a": 1}),
        ([(b"content-type", b"application/problem+json")], b"[1]", [1]),
        ([(b"content-type", b"text/plain")], b"hi", "hi"),
        ([(b"content-type", b"application/json")], b"not json", "not json"),
        ([], b"", None),
    ],
)
def test_response_bodies(
    headers: list[tuple[bytes, bytes]], body: bytes, expected_body: Any
) -> None:
    got = _response(201, [*headers, (b"Content-Length", b"9")], body)
    assert got.status == 201 and got.body == expected_body
    assert "content-length" not in got.headers


def test_repeated_response_headers_join() -> None:
    got = _response(200, [(b"set-cookie", b"a=1"), (b"Set-Cookie", b"b=2")], b"")
    assert got.headers == {"set-cookie": "a=1, b=2"}


class _WithScope:
    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope


class _WithEnviron:
    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ


def test_requester_from_asgi_and_wsgi_requests() -> None:
    scope = {"extensions": {"roomcast": WHO}}
    assert requester(_WithScope(scope)) is WHO
    assert requester(_WithEnviron({"asgi.scope": scope})) is WHO
    assert requester(scope) is WHO
    for other in (_WithScope({}), _WithEnviron({}), object(), {"extensions": {"roomcast": 1}}):
        with pytest.raises(LookupError):
            requester(other)


def test_adapter_runs_an_asgi_app_and_its_lifespan() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        request = await receive()
        who = scope["extensions"]["roomcast"]
        payload = {"user": who.user, "body": request["body"].decode(), "path": scope["path"]}
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})

    async def run() -> Any:
        served = app_from_asgi(app, ("POST /x/*",))
        assert served.route_specs == ["POST /x/*"]
        for hook in served.startup:
            await hook()
        match = served.resolve("POST", "/x/y")
        assert match is not None
        req = Request("s1", method="POST", url="/x/y", data=[1], user="ada")
        resp = await match.handler(req)
        for hook in served.shutdown:
            await hook()
        return resp

    resp = asyncio.run(run())
    assert resp.body == {"user": "ada", "body": "[1]", "path": "/x/y"}
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_an_app_without_lifespan_starts_and_one_without_a_response_fails() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise ValueError("no lifespan here")

    async def run() -> None:
        adapter = AsgiAdapter(app)
        await adapter.startup()
        await adapter.shutdown()
        with pytest.raises(RuntimeError):
            await adapter(Request("s1", method="GET", url="/"))

    asyncio.run(run())


def test_the_sdk_does_not_import_web_frameworks() -> None:
    code = (
        "import sys, roomcast, roomcast.asgi, roomcast.worker\n"
        "print(sorted(m for m in ('fastapi', 'starlette', 'flask', 'a2wsgi', 'django') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _Route:
    def __init__(self, path: str, methods: set[str] | None) -> None:
        self.path, self.methods = path, methods


class _Starlette:
    def __init__(self, *routes: _Route) -> None:
        self.routes = list(routes)


class _Rule:
    def __init__(self, rule: str, methods: set[str]) -> None:
        self.rule, self.methods = rule, methods


class _UrlMap:
    def __init__(self, *rules: _Rule) -> None:
        self.rules = rules

    def iter_rules(self) -> tuple[_Rule, ...]:
        return self.rules


class _Flask:
    def __init__(self, *rules: _Rule) -> None:
        self.url_map = _UrlMap(*rules)


def test_introspect_starlette_routes() -> None:
    app = _Starlette(
        _Route("/items/{item_id}", {"GET", "HEAD"}),
        _Route("/items", {"POST"}),
        _Route("/files/{rest:path}", {"GET"}),
        _Route("/user/{uid:int}/x", {"PUT"}),
    )
    assert introspect_routes(app) == (
        "GET /items/:item_id",
        "HEAD /items/:item_id",
        "POST /items",
        "GET /files/*",
        "PUT /user/:uid/x",
    )


def test_introspect_flask_rules() -> None:
    app = _Flask(_Rule("/a/<int:id>", {"GET"}), _Rule("/s/<path:f>", {"GET"}), _Rule("/", {"GET"}))
    assert introspect_routes(app) == ("GET /a/:id", "GET /s/*", "GET /")


@pytest.mark.parametrize(
    "app",
    [
        _Starlette(_Route("/ws", None)),  # a websocket route: no methods
        _Starlette(_Route("/x", {"GET"}), object()),  # a mount
        _Starlette(_Route("/files/{name}.txt", {"GET"})),  # a partial segment
        _Starlette(_Route("/{p:path}/tail", {"GET"})),  # a path convertor before the end
        _Flask(_Rule("/x-<id>", {"GET"})),
        _Starlette(),
        object(),
    ],
)
def test_introspection_gives_up_on_what_it_cannot_express(app: object) -> None:
    assert introspect_routes(app) is None
