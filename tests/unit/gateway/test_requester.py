"""gateway.requester: the requester context a connection hands to action workers."""

from __future__ import annotations

import json

import pytest

from gateway.requester import (
    DEFAULT_HANDSHAKE_HEADERS,
    MAX_CONTEXT_BYTES,
    MAX_HEADER_BYTES,
    context_json,
    parse_allowlist,
)


def _ctx(claims: dict[str, object] | None, headers: list[tuple[str, str]], allow=None) -> dict:
    return json.loads(context_json(claims, headers, allow or DEFAULT_HANDSHAKE_HEADERS))


def test_allowlisted_headers_and_claims_only() -> None:
    got = _ctx(
        {"sub": "alice", "exp": 9},
        [
            ("Cookie", "sid=1"),
            ("User-Agent", "ua"),
            ("Authorization", "Bearer secret"),
            ("X-Tenant", "t1"),
            ("Accept-Language", "fr"),
            ("Origin", "https://a.example"),
        ],
    )
    assert got == {
        "claims": {"sub": "alice", "exp": 9},
        "headers": {
            "cookie": "sid=1",
            "user-agent": "ua",
            "accept-language": "fr",
            "origin": "https://a.example",
        },
    }


def test_operator_chosen_x_headers_and_repeats() -> None:
    allow = parse_allowlist("cookie, X-Tenant")
    got = _ctx(
        None, [("Cookie", "a=1"), ("cookie", "b=2"), ("x-tenant", "t"), ("X-Tenant", "u")], allow
    )
    assert got == {"claims": {}, "headers": {"cookie": "a=1; b=2", "x-tenant": "t, u"}}


def test_oversize_values_are_left_out_and_the_total_is_bounded() -> None:
    big = "v" * (MAX_HEADER_BYTES + 1)
    assert _ctx(None, [("cookie", big), ("origin", "o")])["headers"] == {"origin": "o"}
    allow = tuple(f"x-{i}" for i in range(10))
    many = [(f"x-{i}", "v" * (MAX_HEADER_BYTES - 10)) for i in range(10)]
    raw = context_json(None, many, allow)
    assert len(raw) <= MAX_CONTEXT_BYTES
    assert 0 < len(json.loads(raw)["headers"]) < 10


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        ("Cookie,,cookie , x-a", ("cookie", "x-a")),
        ("user-agent", ("user-agent",)),
    ],
)
def test_parse_allowlist(value: str, expected: tuple[str, ...]) -> None:
    assert parse_allowlist(value) == expected


@pytest.mark.parametrize("value", ["authorization", "cookie, Authorization", "bad name", "x:y"])
def test_parse_allowlist_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_allowlist(value)


def test_oversize_claims_are_cut_down_to_sub() -> None:
    claims = {"sub": "ada", "big": "x" * MAX_CONTEXT_BYTES}
    raw = context_json(claims, [("cookie", "c=1")], DEFAULT_HANDSHAKE_HEADERS)
    assert json.loads(raw) == {"claims": {"sub": "ada"}, "headers": {"cookie": "c=1"}}
    assert len(raw) <= MAX_CONTEXT_BYTES
