"""roomcast.core.rooms: room names are 1-256 UTF-8 bytes without control characters."""

from __future__ import annotations

import pytest

from roomcast.core.errors import BadRequest, InvalidRoom
from roomcast.core.rooms import (
    MAX_ROOM_BYTES,
    MAX_ROOMS_PER_SOCKET,
    as_room_list,
    validate_room,
    validate_rooms,
)


def test_contract_limits() -> None:
    assert MAX_ROOM_BYTES == 256
    assert MAX_ROOMS_PER_SOCKET == 1000


VALID = [
    pytest.param("a", id="one-byte"),
    pytest.param("funSockets", id="plain"),
    pytest.param("sails_model_user_7:user", id="colon"),
    pytest.param("::", id="only-colons"),
    pytest.param(" spaced room ", id="spaces"),
    pytest.param("x" * 256, id="256-ascii"),
    pytest.param("é" * 128, id="256-bytes-of-2-byte-chars"),
    pytest.param("€" * 85 + "a", id="256-bytes-of-3-byte-chars"),
    pytest.param("🎉" * 64, id="256-bytes-of-4-byte-chars"),
    pytest.param("chat/общий", id="cyrillic"),
    pytest.param("\u00a0nbsp", id="no-break-space-is-not-control"),
    pytest.param("\ufeffbom", id="bom-is-not-control"),
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name: str) -> None:
    assert validate_room(name) is name


INVALID = [
    pytest.param("", id="empty"),
    pytest.param("x" * 257, id="257-ascii"),
    pytest.param("é" * 128 + "a", id="257-bytes-of-2-byte-chars"),
    pytest.param("é" * 129, id="258-bytes-only-129-chars"),
    pytest.param("€" * 86, id="258-bytes-of-3-byte-chars"),
    pytest.param("🎉" * 64 + "a", id="257-bytes-of-4-byte-chars"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("line\n", id="newline"),
    pytest.param("tab\t", id="tab"),
    pytest.param("\x1f", id="unit-separator"),
    pytest.param("del\x7f", id="del"),
    pytest.param("c1\x85", id="c1-next-line"),
    pytest.param("c1\x9f", id="c1-last"),
    pytest.param("half\ud800", id="lone-surrogate"),
    pytest.param(None, id="none"),
    pytest.param(7, id="int"),
    pytest.param(b"room", id="bytes"),
    pytest.param(["room"], id="list"),
]


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names(name: object) -> None:
    with pytest.raises(InvalidRoom) as info:
        validate_room(name)
    assert info.value.status == 400
    assert info.value.code == "invalid_room"


def test_size_error_names_the_byte_count() -> None:
    with pytest.raises(InvalidRoom, match="got 257"):
        validate_room("é" * 128 + "a")


def test_error_never_echoes_the_name() -> None:
    with pytest.raises(InvalidRoom) as info:
        validate_room("secret\n")
    assert "secret" not in str(info.value)


def test_validate_rooms() -> None:
    assert validate_rooms(["a", "b:c"]) == ["a", "b:c"]
    assert validate_rooms(iter(["a"])) == ["a"]
    assert validate_rooms([]) == []
    with pytest.raises(InvalidRoom):
        validate_rooms(["a", ""])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", ["a"]),
        ("a:b", ["a:b"]),
        (["a"], ["a"]),
        (["a", "b", "a"], ["a", "b", "a"]),
    ],
)
def test_as_room_list(value: object, expected: list[str]) -> None:
    assert as_room_list(value) == expected


def test_as_room_list_returns_a_new_list() -> None:
    rooms = ["a", "b"]
    result = as_room_list(rooms)
    assert result == rooms and result is not rooms


@pytest.mark.parametrize(
    "value",
    [[], (), ("a",), None, 1, {"a"}, {"room": "a"}, b"a"],
    ids=repr,
)
def test_as_room_list_rejects_other_shapes(value: object) -> None:
    with pytest.raises(BadRequest) as info:
        as_room_list(value)
    assert info.value.status == 400


@pytest.mark.parametrize("value", ["", ["a", ""], [1], ["a", None], ["x" * 257]], ids=repr)
def test_as_room_list_rejects_invalid_names(value: object) -> None:
    with pytest.raises(InvalidRoom):
        as_room_list(value)
