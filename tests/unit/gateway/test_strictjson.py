"""gateway.strictjson: client JSON is parsed so that re-encoding it yields JSON again."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.strictjson import loads


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": [1, 2.5, -3e10, null, true, "x"]}', {"a": [1, 2.5, -3e10, None, True, "x"]}),
        (b'{"n": 1e308}', {"n": 1e308}),
        ("123456789012345678901234567890", 123456789012345678901234567890),  # ints never overflow
        ('"\\u00e9"', "é"),
    ],
)
def test_json_parses_as_usual(text: str | bytes, value: Any) -> None:
    assert loads(text) == value
    assert json.loads(json.dumps(loads(text), allow_nan=False)) == value


@pytest.mark.parametrize(
    "text", ["NaN", "Infinity", "-Infinity", '{"x": [NaN]}', "1e999", "-1e999", '{"x": 1.5e400}']
)
def test_non_finite_numbers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text)


@pytest.mark.parametrize("text", ["", "{", "[1,]", "{'a': 1}"])
def test_other_bad_json_is_refused_as_json_refuses_it(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text)
