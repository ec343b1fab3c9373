"""``roomcast.app``: the pure routing table of an action app (``App.resolve``)."""

from __future__ import annotations

from typing import Any

import pytest

from roomcast.app import CONNECT, DISCONNECT, App
from roomcast.core.errors import BadRequest


def handler(name: str) -> Any:
    def h(req: Any) -> str:
        return name

    h.__name__ = name
    return h


def make_app() -> tuple[App, dict[str, Any]]:
    app = App()
    handlers = {
        name: handler(name)
        for name in (
            "get_root",
            "echo_get",
            "echo_post",
            "user",
            "user_post",
            "nested",
            "star",
            "first",
            "second",
            "connect",
            "disconnect",
        )
    }
    app.action("GET", "/")(handlers["get_root"])
    app.action("GET", "/echo")(handlers["echo_get"])
    app.action("post", "/echo")(handlers["echo_post"])  # method names are case-insensitive
    app.action("GET", "/user/:id")(handlers["user"])
    app.action("POST", "/user/:id")(handlers["user_post"])
    app.action("PUT", "/org/:org/user/:id/")(handlers["nested"])
    app.action("*", "/any")(handlers["star"])
    app.action("*", "/order/:x")(handlers["first"])
    app.action("GET", "/order/:y")(handlers["second"])
    app.on_connect(handlers["connect"])
    app.on_disconnect(handlers["disconnect"])
    return app, handlers


APP, H = make_app()

# (method, url) -> (handler name, params, path) or None for no action (404).
RESOLVE_CASES: list[tuple[str, str, tuple[str, dict[str, str], str] | None]] = [
    ("GET", "/", ("get_root", {}, "/")),
    ("GET", "/echo", ("echo_get", {}, "/echo")),
    ("get", "/echo", ("echo_get", {}, "/echo")),
    ("POST", "/echo", ("echo_post", {}, "/echo")),
    ("DELETE", "/echo", None),
    ("GET", "/echo/", ("echo_get", {}, "/echo/")),  # a trailing slash is the same route
    ("GET", "/echo/more", None),
    ("GET", "/ech", None),
    ("GET", "/user/7", ("user", {"id": "7"}, "/user/7")),
    ("POST", "/user/7", ("user_post", {"id": "7"}, "/user/7")),
    ("PATCH", "/user/7", None),
    ("GET", "/user", None),
    ("GET", "/user/7/8", None),
    ("GET", "/user/a%20b%2Fc", ("user", {"id": "a b/c"}, "/user/a%20b%2Fc")),
    ("GET", "/user/%C3%A9", ("user", {"id": "é"}, "/user/%C3%A9")),
    ("PUT", "/org/o1/user/u2", ("nested", {"org": "o1", "id": "u2"}, "/org/o1/user/u2")),
    ("GET", "/org/o1/user/u2", None),
    # Query string: merged into params; path params win; last repeat wins; blanks are "".
    ("GET", "/echo?a=1&b=two", ("echo_get", {"a": "1", "b": "two"}, "/echo")),
    ("GET", "/user/7?id=9&x=1", ("user", {"id": "7", "x": "1"}, "/user/7")),
    ("GET", "/echo?a=1&a=2", ("echo_get", {"a": "2"}, "/echo")),
    ("GET", "/echo?empty=&flag", ("echo_get", {"empty": "", "flag": ""}, "/echo")),
    ("GET", "/echo?q=a%20b+c&%C3%A9=%C3%A9", ("echo_get", {"q": "a b c", "é": "é"}, "/echo")),
    ("GET", "/echo?", ("echo_get", {}, "/echo")),
    ("GET", "/echo#frag", ("echo_get", {}, "/echo")),
    # "*" answers every HTTP method...
    ("GET", "/any", ("star", {}, "/any")),
    ("POST", "/any", ("star", {}, "/any")),
    ("OPTIONS", "/any", ("star", {}, "/any")),
    ("HEAD", "/any?x=1", ("star", {"x": "1"}, "/any")),
    # ...and routes match in registration order.
    ("GET", "/order/1", ("first", {"x": "1"}, "/order/1")),
    # The lifecycle hooks.
    (CONNECT, "/", ("connect", {}, "/")),
    (DISCONNECT, "/", ("disconnect", {}, "/")),
    ("connect", "/", ("connect", {}, "/")),
    (CONNECT, "/any", None),  # "*" never answers a hook
    (DISCONNECT, "/order/1", None),
]


@pytest.mark.parametrize(("method", "url", "expected"), RESOLVE_CASES)
def test_resolve(method: str, url: str, expected: tuple[str, dict[str, str], str] | None) -> None:
    match = APP.resolve(method, url)
    if expected is None:
        assert match is None
        return
    assert match is not None
    name, params, path = expected
    assert match.handler is H[name]
    assert match.params == params
    assert match.path == path


def test_star_action_registered_before_the_hooks_does_not_shadow_them() -> None:
    """A catch-all root action must not bypass ``on_connect`` (an auth check, typically)."""
    app = App()
    catch_all, before_connect, after_disconnect = handler("all"), handler("bc"), handler("ad")
    app.action("*", "/")(catch_all)
    app.on_connect(before_connect)
    app.on_disconnect(after_disconnect)
    for method in ("GET", "POST", "DELETE"):
        match = app.resolve(method, "/")
        assert match is not None and match.handler is catch_all
    connect = app.resolve(CONNECT, "/")
    disconnect = app.resolve(DISCONNECT, "/")
    assert connect is not None and connect.handler is before_connect
    assert disconnect is not None and disconnect.handler is after_disconnect


def test_app_without_hooks_resolves_them_to_none() -> None:
    app = App()
    app.action("*", "/")(handler("all"))
    assert app.resolve(CONNECT, "/") is None
    assert app.resolve(DISCONNECT, "/") is None


def test_hook_query_is_merged_like_any_other() -> None:
    match = APP.resolve(CONNECT, "/?token=t")
    assert match is not None and match.params == {"token": "t"}


@pytest.mark.parametrize("url", ["echo", "", "?a=1", "echo/"])
def test_resolve_rejects_urls_that_are_not_paths(url: str) -> None:
    with pytest.raises(BadRequest):
        APP.resolve("GET", url)


def test_resolve_on_an_empty_app_is_none() -> None:
    assert App().resolve("GET", "/") is None


def test_decorator_returns_the_handler_unchanged() -> None:
    app = App()
    h = handler("h")
    assert app.action("GET", "/x")(h) is h
    assert app.on_connect(h) is h
    assert app.on_disconnect(h) is h


@pytest.mark.parametrize("method", ["TRACE", "FETCH", "", "GET "])
def test_unsupported_methods_are_refused_at_registration(method: str) -> None:
    with pytest.raises(ValueError, match="unsupported method"):
        App().action(method, "/x")


@pytest.mark.parametrize("path", ["x", "", "user/:id"])
def test_paths_must_start_with_a_slash(path: str) -> None:
    with pytest.raises(ValueError, match="starts with /"):
        App().action("GET", path)


def test_routes_lists_method_and_normalised_path_in_order() -> None:
    assert APP.routes == [
        ("GET", "/"),
        ("GET", "/echo"),
        ("POST", "/echo"),
        ("GET", "/user/:id"),
        ("POST", "/user/:id"),
        ("PUT", "/org/:org/user/:id"),
        ("*", "/any"),
        ("*", "/order/:x"),
        ("GET", "/order/:y"),
        (CONNECT, "/"),
        (DISCONNECT, "/"),
    ]


def test_route_specs_and_rest_segments() -> None:
    app = App()
    app.action("GET", "/user/:id")(lambda req: None)
    app.action("*", "/files/*")(lambda req: None)
    app.action("GET", "/user/:id")(lambda req: None)  # same pattern: announced once
    assert app.route_specs == ["GET /user/:id", "* /files/*"]
    match = app.resolve("GET", "/user/7?id=q&x=1")
    assert match is not None
    assert match.params == {"id": "7", "x": "1"}
    assert match.query == {"id": "q", "x": "1"} and match.route_params == {"id": "7"}
    assert app.resolve("DELETE", "/files/a/b/c") is not None


def test_lifecycle_hook_methods_are_the_routes_hooks() -> None:
    from roomcast.app import CONNECT, DISCONNECT
    from roomcast.core.routes import HOOKS

    assert frozenset({CONNECT, DISCONNECT}) == HOOKS
