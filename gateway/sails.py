"""Sails virtual requests over Socket.IO, pure (sails-hook-sockets 3 / sails.io.js 1.2.1).

A request is a Socket.IO event named by the lower-case HTTP method with one argument
``{method, headers, data, url}`` and an ack; the response is the ack's argument, a JSON
WebSocket Response (JWR) ``{body, headers, statusCode}``. Sails refuses requests from clients
whose handshake lacks ``__sails_io_sdk_version`` >= 0.11.0; we answer those with a 400 JWR.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from roomcast.core.errors import BadRequest

__all__ = [
    "MIN_SDK_VERSION",
    "VIRTUAL_METHODS",
    "VirtualRequest",
    "encode_jwr",
    "parse_virtual_request",
    "sdk_version_ok",
    "strip_headers",
]

VIRTUAL_METHODS = frozenset({"get", "post", "put", "patch", "delete", "options", "head"})
MIN_SDK_VERSION = (0, 11, 0)
# ASCII digits only, and few enough that int() never hits its digit limit.
_VERSION = re.compile(r"^([0-9]{1,9})\.([0-9]{1,9})\.([0-9]{1,9})")
_STRIPPED = frozenset({"set-cookie"})


@dataclasses.dataclass(frozen=True, slots=True)
class VirtualRequest:
    method: str
    url: str
    data: bytes  # JSON
    headers: bytes  # JSON object


def sdk_version_ok(value: str | None) -> bool:
    """True if the handshake's ``__sails_io_sdk_version`` is at least 0.11.0."""
    if not value:
        return False
    m = _VERSION.match(value)
    return bool(m) and tuple(int(g) for g in m.groups()) >= MIN_SDK_VERSION  # type: ignore[union-attr]


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def parse_virtual_request(event: str, args: tuple[Any, ...]) -> VirtualRequest:
    """The request an event carries; raise :class:`BadRequest` for a bad envelope."""
    if not args or not isinstance(args[0], dict):
        raise BadRequest("a virtual request needs an object {method, headers, data, url}")
    ctx = args[0]
    url = ctx.get("url")
    if not isinstance(url, str) or not url.startswith("/"):
        raise BadRequest("url must be a path starting with /")
    method = ctx.get("method", event)
    if not isinstance(method, str) or method.lower() != event:
        raise BadRequest("method must match the event name")
    headers = ctx.get("headers") or {}
    if not isinstance(headers, dict):
        raise BadRequest("headers must be an object")
    try:
        url.encode()
        return VirtualRequest(method.upper(), url, _dumps(ctx.get("data")), _dumps(headers))
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the json) cannot become utf-8
        raise BadRequest("url, headers and data must be valid unicode") from None


def strip_headers(headers_json: bytes) -> bytes:
    """Response headers without those a socket must not carry (``set-cookie``)."""
    if not headers_json:
        return b"{}"
    try:
        headers = json.loads(headers_json)
    except (ValueError, RecursionError):
        return b"{}"
    if not isinstance(headers, dict):
        return b"{}"
    if not any(k.lower() in _STRIPPED for k in headers):
        return headers_json
    return _dumps({k: v for k, v in headers.items() if k.lower() not in _STRIPPED})


def encode_jwr(status: int, body_json: bytes, headers_json: bytes) -> bytes:
    return (
        b'{"body":'
        + (body_json or b"null")
        + b',"headers":'
        + strip_headers(headers_json)
        + b',"statusCode":'
        + str(int(status)).encode()
        + b"}"
    )
