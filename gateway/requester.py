"""What action workers learn about the socket that asks (pure): its claims and handshake headers.

Sails hands a virtual request the socket's handshake (its cookie, so ``req.session`` and
policies work over a socket as over HTTP). A gateway builds one *requester context* per
connection, once: the verified token claims and the handshake headers on an allowlist
(``--handshake-headers``), as one JSON object ``{"claims": {...}, "headers": {...}}``. The router
keeps it with the socket (so it holds on any gateway, and after a router restart or failover,
through resyncs) and attaches it to every request the socket makes; the worker merges the
headers under the request's own.

Bounds, because the router keeps one context per socket: a header value longer than
:data:`MAX_HEADER_BYTES` is left out, and so are headers past :data:`MAX_CONTEXT_BYTES` in all;
claims larger than half of that are cut down to ``sub`` (tokens are signed, but a big one must
not cost the router that much for each of its sockets).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "DEFAULT_HANDSHAKE_HEADERS",
    "MAX_CONTEXT_BYTES",
    "MAX_HEADER_BYTES",
    "context_json",
    "parse_allowlist",
]

DEFAULT_HANDSHAKE_HEADERS = ("cookie", "user-agent", "accept-language", "origin")
MAX_HEADER_BYTES = 8 * 1024
MAX_CONTEXT_BYTES = 16 * 1024


def parse_allowlist(value: str) -> tuple[str, ...]:
    """``"cookie, X-Tenant"`` -> ``("cookie", "x-tenant")``; raises ValueError on a bad name."""
    names = []
    for raw in value.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if not all(c.isalnum() or c in "-_" for c in name):
            raise ValueError(f"not a header name: {raw.strip()[:64]!r}")
        if name == "authorization":
            # The token is already verified into the claims: never pass the credential on.
            raise ValueError("authorization is never passed to actions (req.claims has the token)")
        names.append(name)
    return tuple(dict.fromkeys(names))


def context_json(
    claims: Mapping[str, Any] | None,
    headers: Iterable[tuple[str, str]],
    allow: Iterable[str],
) -> bytes:
    """The requester context of one connection, as compact JSON bytes.

    ``headers``: the handshake's (name, value) pairs in order; repeated names join with ", "
    (``cookie``: with "; ", as one Cookie header would read).
    """
    allowed = frozenset(allow)
    picked: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key not in allowed or len(value.encode("utf-8", "replace")) > MAX_HEADER_BYTES:
            continue
        if key in picked:
            picked[key] += ("; " if key == "cookie" else ", ") + value
        else:
            picked[key] = value
    doc: dict[str, Any] = {"claims": dict(claims or {}), "headers": {}}
    size = len(json.dumps(doc, separators=(",", ":")).encode())
    if size > MAX_CONTEXT_BYTES // 2:
        doc["claims"] = {k: v for k, v in doc["claims"].items() if k == "sub"}
        size = len(json.dumps(doc, separators=(",", ":")).encode())
    for key, value in picked.items():
        cost = len(key) + len(value.encode("utf-8", "replace")) + 8
        if size + cost > MAX_CONTEXT_BYTES:
            continue
        doc["headers"][key] = value
        size += cost
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
