"""roomcast.core.errors: one table of (class, status, code), rebuilt from router replies."""

from __future__ import annotations

import json

import pytest

from roomcast.core import errors
from roomcast.core.errors import (
    ActionFailed,
    BadRequest,
    Conflict,
    Forbidden,
    InternalError,
    InvalidRoom,
    NoSuchSocket,
    NotFound,
    NoWorker,
    PayloadTooLarge,
    RateLimited,
    RoomcastError,
    RouterPassive,
    RouterUnavailable,
    StateError,
    Timeout,
    TooManyRooms,
    WireError,
    error_from_reply,
)

TABLE: list[tuple[type[RoomcastError], int, str]] = [
    (BadRequest, 400, "bad_request"),
    (InvalidRoom, 400, "invalid_room"),
    (Forbidden, 403, "forbidden"),
    (NoSuchSocket, 404, "no_such_socket"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (TooManyRooms, 429, "too_many_rooms"),
    (RateLimited, 429, "rate_limited"),
    (ActionFailed, 500, "action_failed"),
    (InternalError, 500, "internal"),
    (NoWorker, 503, "no_worker"),
    (RouterUnavailable, 503, "router_unavailable"),
    (RouterPassive, 503, "router_passive"),
    (Timeout, 504, "timeout"),
    (StateError, 500, "state_error"),
]
IDS = [cls.__name__ for cls, _, _ in TABLE]


def test_table_covers_every_error_class() -> None:
    defined = {
        v
        for v in vars(errors).values()
        if isinstance(v, type) and issubclass(v, RoomcastError) and v is not RoomcastError
    }
    assert defined == {cls for cls, _, _ in TABLE}
    assert len({code for _, _, code in TABLE}) == len(TABLE)


def test_all_is_complete() -> None:
    public = {n for n in vars(errors) if not n.startswith("_")} - {"annotations"}
    assert set(errors.__all__) == public


@pytest.mark.parametrize(("cls", "status", "code"), TABLE, ids=IDS)
def test_status_code_and_default_message(cls: type[RoomcastError], status: int, code: str) -> None:
    err = cls()
    assert (err.status, err.code) == (status, code)
    assert isinstance(err, RoomcastError) and isinstance(err, Exception)
    assert err.message == str(err)
    assert err.message and err.message == err.message.lower()
    body = err.as_body()
    assert {k: body[k] for k in ("error", "message")} == {"error": code, "message": err.message}
    assert set(body) <= {"error", "message", *cls.fields}


@pytest.mark.parametrize(("cls", "status", "code"), TABLE, ids=IDS)
def test_explicit_message(cls: type[RoomcastError], status: int, code: str) -> None:
    err = cls("custom text")
    assert err.message == str(err) == "custom text"
    body = err.as_body()
    assert {k: body[k] for k in ("error", "message")} == {"error": code, "message": "custom text"}
    assert set(body) <= {"error", "message", *cls.fields}


def test_base_error() -> None:
    err = RoomcastError()
    assert (err.status, err.code, err.message) == (500, "internal", "internal")


def test_errors_carry_their_data() -> None:
    err = NoSuchSocket(socket="abc")
    assert err.socket == "abc" and err.message == "no such socket: abc"
    assert NoSuchSocket().socket is None and NoSuchSocket().message == "no such socket"
    big = PayloadTooLarge(size=2000, limit=1024)
    assert (big.size, big.limit) == (2000, 1024)
    assert big.message == "payload of 2000 bytes exceeds the limit of 1024 bytes"
    many = TooManyRooms(limit=1000)
    assert many.limit == 1000 and many.message == "a socket may be in at most 1000 rooms"
    assert TooManyRooms("custom", limit=3).message == "custom"


def test_wire_errors_are_not_caller_errors_but_state_errors_are() -> None:
    # Everything the SDK raises at a caller is under RoomcastError (the README's promise),
    # misuse included; a peer's undecodable bytes are counted and dropped, never raised.
    assert issubclass(WireError, Exception) and not issubclass(WireError, RoomcastError)
    assert issubclass(StateError, RoomcastError)
    assert StateError("cluster is closed").as_body() == {
        "error": "state_error",
        "message": "cluster is closed",
    }


@pytest.mark.parametrize(
    "original",
    [
        NoSuchSocket(socket="s-1"),
        PayloadTooLarge(size=5_000_000, limit=1_048_576),
        TooManyRooms(limit=1000),
    ],
    ids=lambda e: type(e).__name__,
)
def test_error_fields_survive_a_reply(original: RoomcastError) -> None:
    body = json.dumps(original.as_body()).encode()
    rebuilt = error_from_reply(original.status, original.code, original.message, body)
    assert type(rebuilt) is type(original)
    assert rebuilt.as_body() == original.as_body()
    for name in original.fields:
        assert getattr(rebuilt, name) == getattr(original, name)


def test_error_fields_from_a_bad_body_keep_their_defaults() -> None:
    for body in (b"", b"not json", b"[1]", b'{"socket": 7}', b'{"size": "big", "limit": true}'):
        err = error_from_reply(404, "no_such_socket", "gone", body)
        assert isinstance(err, NoSuchSocket) and err.socket is None
        big = error_from_reply(413, "payload_too_large", "big", body)
        assert isinstance(big, PayloadTooLarge) and (big.size, big.limit) == (0, 0)


@pytest.mark.parametrize(("cls", "status", "code"), TABLE, ids=IDS)
def test_error_from_reply_round_trip(cls: type[RoomcastError], status: int, code: str) -> None:
    original = cls("what happened")
    rebuilt = error_from_reply(original.status, original.code, original.message)
    assert type(rebuilt) is cls
    assert (rebuilt.status, rebuilt.code, rebuilt.message) == (status, code, "what happened")
    assert rebuilt.as_body() == original.as_body()


@pytest.mark.parametrize(("cls", "status", "code"), TABLE, ids=IDS)
def test_error_from_reply_without_message(cls: type[RoomcastError], status: int, code: str) -> None:
    rebuilt = error_from_reply(status, code, "")
    assert type(rebuilt) is cls
    assert rebuilt.message == code.replace("_", " ")


def test_rebuilt_errors_have_their_data_attributes() -> None:
    # error_from_reply bypasses the subclass __init__; the attributes still exist.
    sock = error_from_reply(404, "no_such_socket", "no such socket: s1")
    assert isinstance(sock, NoSuchSocket) and sock.socket is None
    big = error_from_reply(413, "payload_too_large", "too big")
    assert isinstance(big, PayloadTooLarge) and (big.size, big.limit) == (0, 0)
    many = error_from_reply(429, "too_many_rooms", "")
    assert isinstance(many, TooManyRooms) and many.limit == 0


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (418, "teapot", "short and stout", (418, "teapot", "short and stout")),
        (418, "teapot", "", (418, "teapot", "teapot")),
        (502, "", "bad gateway", (502, "internal", "bad gateway")),
        (502, "", "", (502, "internal", "internal")),
    ],
)
def test_error_from_reply_unknown_code(
    status: int, code: str, message: str, expected: tuple[int, str, str]
) -> None:
    err = error_from_reply(status, code, message)
    assert type(err) is RoomcastError
    assert (err.status, err.code, err.message) == expected
    assert str(err) == expected[2]
    assert err.as_body() == {"error": expected[1], "message": expected[2]}
    # The instance override does not leak into the class.
    assert (RoomcastError.status, RoomcastError.code) == (500, "internal")
