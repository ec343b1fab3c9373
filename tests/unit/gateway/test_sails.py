"""gateway.sails: Sails virtual requests over Socket.IO (sails-hook-sockets 3, sails.io.js 1.2.1).

The SDK version gate, the request envelope ``{method, headers, data, url}``, the response
headers a socket must not carry, and the JWR ``{body, headers, statusCode}``.
"""

from __future__ import annotations

import http
import json
from typing import Any

import pytest

from gateway import sails
from gateway.sails import VirtualRequest
from roomcast.core.errors import BadRequest


def test_constants() -> None:
    assert sails.MIN_SDK_VERSION == (0, 11, 0)
    assert frozenset({"get", "post", "put", "patch", "delete", "options", "head"}) == (
        sails.VIRTUAL_METHODS
    )


# --- sdk_version_ok ------------------------------------------------------------------------------

VERSIONS: list[Any] = [
    pytest.param(None, False, id="absent"),
    pytest.param("", False, id="empty"),
    pytest.param("0.10.9", False, id="0.10.9-too-old"),
    pytest.param("0.10.99", False, id="0.10.99-compares-numerically"),
    pytest.param("0.9.99", False, id="0.9.99"),
    pytest.param("0.0.0", False, id="zero"),
    pytest.param("0.11.0", True, id="0.11.0-minimum"),
    pytest.param("0.11.1", True, id="0.11.1"),
    pytest.param("0.12.0", True, id="0.12.0"),
    pytest.param("0.100.0", True, id="0.100.0-compares-numerically"),
    pytest.param("1.0.0", True, id="1.0.0"),
    pytest.param("1.2.1", True, id="1.2.1-sails.io.js"),
    pytest.param("10.0.0", True, id="10.0.0"),
    pytest.param("1.2.1-beta.1", True, id="pre-release-suffix"),
    pytest.param("1.2.1 ", True, id="trailing-space"),
    pytest.param("1.2", False, id="two-parts"),
    pytest.param("1", False, id="one-part"),
    pytest.param("v1.2.1", False, id="v-prefix"),
    pytest.param(" 1.2.1", False, id="leading-space"),
    pytest.param("1.2.x", False, id="x-range"),
    pytest.param("1..2", False, id="empty-part"),
    pytest.param("-1.2.1", False, id="negative"),
    pytest.param("garbage", False, id="garbage"),
    pytest.param("\u0661.\u0662.\u0661", False, id="non-ascii-digits"),
    pytest.param("9" * 5000 + ".0.0", False, id="absurdly-long-major"),
    pytest.param("1.2." + "1" * 5000, True, id="absurdly-long-patch"),
]


@pytest.mark.parametrize(("value", "ok"), VERSIONS)
def test_sdk_version_ok(value: str | None, ok: bool) -> None:
    assert sails.sdk_version_ok(value) is ok


# --- parse_virtual_request -----------------------------------------------------------------------

FALSY: list[Any] = [[], "", 0, False, {}]  # sails.io.js always sends an object; these mean none

GOOD: list[Any] = [
    pytest.param(
        "get",
        ({"method": "get", "url": "/user/1", "headers": {"x-a": "b"}, "data": {"q": 1}},),
        VirtualRequest("GET", "/user/1", b'{"q":1}', b'{"x-a":"b"}'),
        id="sails-io-js-envelope",
    ),
    pytest.param(
        "post",
        ({"url": "/chat"},),
        VirtualRequest("POST", "/chat", b"null", b"{}"),
        id="method-defaults-to-event",
    ),
    pytest.param(
        "put",
        ({"method": "PUT", "url": "/a", "data": None},),
        VirtualRequest("PUT", "/a", b"null", b"{}"),
        id="method-case-insensitive",
    ),
    pytest.param(
        "delete",
        ({"method": "Delete", "url": "/a", "headers": None},),
        VirtualRequest("DELETE", "/a", b"null", b"{}"),
        id="null-headers",
    ),
    pytest.param(
        "patch",
        ({"url": "/a", "headers": {}, "data": [1, "é"]},),
        VirtualRequest("PATCH", "/a", '[1,"é"]'.encode(), b"{}"),
        id="utf8-data",
    ),
    pytest.param(
        "get",
        ({"url": "/a?b=c", "data": "s"}, "extra", 5),
        VirtualRequest("GET", "/a?b=c", b'"s"', b"{}"),
        id="extra-args-ignored",
    ),
    pytest.param(
        "options",
        ({"url": "/", "headers": {"a": 1}, "unknown": True},),
        VirtualRequest("OPTIONS", "/", b"null", b'{"a":1}'),
        id="unknown-keys-ignored",
    ),
    *(
        pytest.param(
            "get",
            ({"url": "/a", "headers": falsy},),
            VirtualRequest("GET", "/a", b"null", b"{}"),
            id=f"falsy-headers-mean-none-{falsy!r}",
        )
        for falsy in FALSY
    ),
]


@pytest.mark.parametrize(("event", "args", "expected"), GOOD)
def test_parse_virtual_request(event: str, args: tuple[Any, ...], expected: VirtualRequest) -> None:
    assert sails.parse_virtual_request(event, args) == expected


@pytest.mark.parametrize("event", sorted(sails.VIRTUAL_METHODS))
def test_every_virtual_method(event: str) -> None:
    req = sails.parse_virtual_request(event, ({"method": event, "url": "/x"},))
    assert req.method == event.upper()


BAD: list[Any] = [
    pytest.param("get", (), "a virtual request needs an object", id="no-args"),
    pytest.param("get", (None,), "a virtual request needs an object", id="null"),
    pytest.param("get", ([],), "a virtual request needs an object", id="list"),
    pytest.param("get", ("/a",), "a virtual request needs an object", id="string"),
    pytest.param("get", ({},), "url must be a path", id="no-url"),
    pytest.param("get", ({"url": None},), "url must be a path", id="null-url"),
    pytest.param("get", ({"url": ""},), "url must be a path", id="empty-url"),
    pytest.param("get", ({"url": "a/b"},), "url must be a path", id="relative-url"),
    pytest.param("get", ({"url": 5},), "url must be a path", id="number-url"),
    pytest.param("get", ({"url": "/\ud800"},), "must be valid unicode", id="surrogate-url"),
    pytest.param("get", ({"url": "/a", "method": "post"},), "method must match", id="mismatch"),
    pytest.param("get", ({"url": "/a", "method": None},), "method must match", id="null-method"),
    pytest.param("get", ({"url": "/a", "method": 1},), "method must match", id="number-method"),
    pytest.param("get", ({"url": "/a", "method": ""},), "method must match", id="empty-method"),
    pytest.param("get", ({"url": "/a", "headers": ["h"]},), "headers must be an object",
                 id="list-headers"),
    pytest.param("get", ({"url": "/a", "headers": "h"},), "headers must be an object",
                 id="string-headers"),
    pytest.param("get", ({"url": "/a", "headers": 1},), "headers must be an object",
                 id="number-headers"),
    pytest.param("get", ({"url": "/a", "data": "\ud800"},), "must be valid unicode",
                 id="surrogate-data"),
    pytest.param("get", ({"url": "/a", "headers": {"\udc00": 1}},), "must be valid unicode",
                 id="surrogate-header"),
]  # fmt: skip


@pytest.mark.parametrize(("event", "args", "message"), BAD)
def test_parse_virtual_request_errors(event: str, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        sails.parse_virtual_request(event, args)
    err = info.value
    assert message in err.message
    assert (err.status, err.code) == (400, "bad_request")
    assert err.message[:1].islower()


# --- strip_headers -------------------------------------------------------------------------------

STRIP: list[Any] = [
    pytest.param(b"", b"{}", id="empty"),
    pytest.param(b"not json", b"{}", id="garbage"),
    pytest.param(b"\xff\xfe", b"{}", id="not-utf8"),
    pytest.param(b"[" * 100_000, b"{}", id="nesting-too-deep"),
    pytest.param(b"null", b"{}", id="null"),
    pytest.param(b'["set-cookie"]', b"{}", id="array"),
    pytest.param(b'"x"', b"{}", id="string"),
    pytest.param(b"{}", b"{}", id="empty-object"),
    pytest.param(b'{"set-cookie":"a=1"}', b"{}", id="only-set-cookie"),
    pytest.param(b'{"Set-Cookie":["a=1","b=2"],"X-A":"b"}', b'{"X-A":"b"}', id="title-case"),
    pytest.param(b'{"SET-COOKIE":"a","content-type":"t"}', b'{"content-type":"t"}', id="upper"),
    pytest.param(b'{"sEt-CoOkIe":"a","n":1}', b'{"n":1}', id="mixed-case"),
    pytest.param(
        b'{"a":1,"set-cookie":"x","Set-Cookie":"y","b":[2]}', b'{"a":1,"b":[2]}', id="several"
    ),
    pytest.param(
        '{"set-cookie":"x","é":"ü"}'.encode(), '{"é":"ü"}'.encode(), id="rewritten-as-utf8"
    ),
]


@pytest.mark.parametrize(("headers", "expected"), STRIP)
def test_strip_headers(headers: bytes, expected: bytes) -> None:
    assert sails.strip_headers(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        b'{"content-type":"application/json"}',
        b'{ "x-set-cookie" : "kept", "set-cookie2": "kept" }',
        b'{"Cookie":"a=1","location":"/x"}',
    ],
)
def test_strip_headers_keeps_other_headers_untouched(headers: bytes) -> None:
    assert sails.strip_headers(headers) is headers  # no re-encoding when nothing is stripped


# --- encode_jwr ----------------------------------------------------------------------------------

JWR: list[Any] = [
    pytest.param(
        (200, b'{"ok":true}', b'{"x-a":"b"}'),
        b'{"body":{"ok":true},"headers":{"x-a":"b"},"statusCode":200}',
        id="ok",
    ),
    pytest.param((204, b"", b""), b'{"body":null,"headers":{},"statusCode":204}', id="empty"),
    pytest.param(
        (400, b'{"error":"bad_request","message":"m"}', b"{}"),
        b'{"body":{"error":"bad_request","message":"m"},"headers":{},"statusCode":400}',
        id="error",
    ),
    pytest.param(
        (302, b'"moved"', b'{"Set-Cookie":"s=1","Location":"/b"}'),
        b'{"body":"moved","headers":{"Location":"/b"},"statusCode":302}',
        id="set-cookie-stripped",
    ),
    pytest.param(
        (http.HTTPStatus.NOT_FOUND, b"null", b"garbage"),
        b'{"body":null,"headers":{},"statusCode":404}',
        id="enum-status-bad-headers",
    ),
    pytest.param(
        (200, b" [1, 2] ", b"{}"),
        b'{"body": [1, 2] ,"headers":{},"statusCode":200}',
        id="body-spliced-verbatim",
    ),
]


@pytest.mark.parametrize(("args", "expected"), JWR)
def test_encode_jwr(args: tuple[int, bytes, bytes], expected: bytes) -> None:
    out = sails.encode_jwr(*args)
    assert out == expected
    jwr = json.loads(out)
    assert list(jwr) == ["body", "headers", "statusCode"]
    assert isinstance(jwr["statusCode"], int)
    assert isinstance(jwr["headers"], dict)
