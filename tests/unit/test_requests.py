"""roomcast.requests: Request/Response values and socket-argument normalisation (pure)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from roomcast.core.errors import BadRequest
from roomcast.requests import Request, Response, get_id, socket_ids


class Sock:
    """An app's own request type: anything with a str ``socket`` attribute."""

    def __init__(self, socket: object) -> None:
        self.socket = socket


REQ = Request("s1", method="POST", url="/chat/join")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s1", ["s1"]),
        (REQ, ["s1"]),
        (Sock("s2"), ["s2"]),
        (["s1", "s2"], ["s1", "s2"]),
        (("s1", REQ, Sock("s3")), ["s1", "s3"]),
        (["s2", "s1", "s2"], ["s2", "s1"]),
        ([], []),
        ((), []),
        ("sails_model_user_7:user", ["sails_model_user_7:user"]),
    ],
)
def test_socket_ids(value: object, expected: list[str]) -> None:
    assert socket_ids(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        7,
        b"s1",
        {"s1"},
        {"socket": "s1"},
        [""],
        ["s1", None],
        [["s1"]],
        Sock(None),
        Sock(""),
        Sock(7),
        Request(""),
    ],
)
def test_socket_ids_rejects(value: object) -> None:
    with pytest.raises(BadRequest) as info:
        socket_ids(value)
    assert info.value.status == 400
    assert info.value.message == info.value.message.lower()


@pytest.mark.parametrize(("value", "expected"), [("s1", "s1"), (REQ, "s1"), (Sock("x:y"), "x:y")])
def test_get_id(value: object, expected: str) -> None:
    assert get_id(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", None, ["s1"], Sock(None)])
def test_get_id_rejects(value: object) -> None:
    with pytest.raises(BadRequest):
        get_id(value)  # type: ignore[arg-type]


def test_request_defaults_and_immutability() -> None:
    a, b = Request("s1"), Request("s2")
    assert (a.method, a.url, a.data, a.is_socket) == ("", "", None, True)
    assert a.headers == {} and a.params == {}
    assert a.headers is not b.headers  # no shared mutable default
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.socket = "s3"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Request("s1", "GET")  # type: ignore[call-arg]  # everything but socket is keyword-only
    full = Request("s1", method="GET", url="/user/7", params={"id": "7"}, is_socket=False)
    assert (full.method, full.url, full.params, full.is_socket) == (
        "GET",
        "/user/7",
        {"id": "7"},
        False,
    )


def test_request_cluster_is_a_handle_not_a_value() -> None:
    handle = object()
    req = Request("s1", cluster=handle)
    assert req.cluster is handle
    assert req == Request("s1")  # two requests are equal whichever worker serves them
    assert "cluster" not in repr(req)


def test_response_defaults() -> None:
    assert Response(204) == Response(status=204, body=None, headers={})


def test_import_is_pure() -> None:
    """The SDK package and its pure modules load no I/O library until Cluster is touched."""
    code = (
        "import sys, roomcast, roomcast.requests, roomcast.core.errors\n"
        "roomcast.Request, roomcast.NoSuchSocket, roomcast.RoomcastError\n"
        "bad = {'zmq', 'asyncio', 'socket', 'tornado'} & set(sys.modules)\n"
        "assert not bad, bad\n"
        "assert 'Cluster' in roomcast.__all__ and 'Cluster' in dir(roomcast)\n"
        # importlib.metadata (stdlib) pulls in socket: fine for the SDK, not for roomcast.core.
        "assert isinstance(roomcast.__version__, str) and roomcast.__version__\n"
        "assert 'zmq' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_lazy_exports_resolve() -> None:
    import roomcast
    from roomcast.core import errors

    for name in roomcast.__all__:
        assert getattr(roomcast, name) is not None
    for name in errors.__all__:
        if name != "error_from_reply":
            assert getattr(roomcast, name) is getattr(errors, name)
    with pytest.raises(AttributeError):
        roomcast.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_param_and_all_params_merge_like_sails() -> None:
    req = Request(
        "s1",
        data={"id": "body", "name": "ada", "n": 0},
        query={"id": "query", "name": "q", "page": "2"},
        route_params={"id": "7"},
        params={"id": "7", "name": "q", "page": "2"},
    )
    assert req.param("id") == "7"  # path, then body, then query
    assert req.param("name") == "ada"
    assert req.param("n") == 0
    assert req.param("page") == "2"
    assert req.param("missing") is None and req.param("missing", "d") == "d"
    assert req.all_params() == {"id": "7", "name": "ada", "n": 0, "page": "2"}


def test_all_params_ignores_a_body_that_is_not_an_object() -> None:
    req = Request("s1", data=[1, 2], query={"a": "1"})
    assert req.all_params() == {"a": "1"} and req.param("0") is None
