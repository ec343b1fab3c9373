"""Sails' call shapes: broadcast/blast with the event left out (roomcast.sockets)."""

from __future__ import annotations

import pytest

from roomcast.core.errors import BadRequest
from roomcast.sockets import sails_event_data


@pytest.mark.parametrize(
    ("event", "data", "expected"),
    [
        ("chat", {"a": 1}, ("chat", {"a": 1})),
        ("chat", None, ("chat", None)),  # broadcast(rooms, "chat"): an event without data
        ({"a": 1}, None, ("message", {"a": 1})),  # broadcast(rooms, data)
        ([1, 2], None, ("message", [1, 2])),
        (7, None, ("message", 7)),
        (None, None, (None, None)),  # refused later as an event (400), not taken for data
        ("", 1, ("", 1)),  # an empty event is still refused later (400)
    ],
)
def test_event_left_out(event: object, data: object, expected: tuple[object, object]) -> None:
    assert sails_event_data(event, data) == expected


def test_a_non_string_event_with_data_is_a_mistake() -> None:
    with pytest.raises(BadRequest):
        sails_event_data({"a": 1}, {"b": 2})
