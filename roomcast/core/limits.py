"""The publish size bound every path shares: SDK, HTTP API, router and client ops.

A published message is delivered to clients as one frame whose size is, give or take a few
dozen bytes of framing, its event name plus its JSON data. One larger than a gateway's
per-connection send-queue bound can never be delivered (it would cut every subscriber as a slow
consumer), and one larger than the inbound frame bound is a message no client could have sent.
So a publish over ``max_publish_bytes`` is refused where it enters the cluster, with
:class:`~roomcast.core.errors.PayloadTooLarge` (413 ``payload_too_large``), before anything is
delivered. The default is the gateways' default inbound frame bound (1 MiB), well under their
default send-queue bound (4 MiB).

Pure: sizes in, an error out.
"""

from __future__ import annotations

from roomcast.core.errors import PayloadTooLarge

__all__ = ["DEFAULT_MAX_PUBLISH_BYTES", "check_publish_size", "publish_size"]

DEFAULT_MAX_PUBLISH_BYTES = 1024 * 1024


def publish_size(event: str, data: bytes) -> int:
    """The bytes a publish counts against the bound: its event name (UTF-8) plus its data."""
    return len(event.encode("utf-8", "surrogatepass")) + len(data)


def check_publish_size(event: str, data: bytes, limit: int) -> None:
    """Raise PayloadTooLarge when ``event`` + ``data`` exceed ``limit`` bytes (0: no bound)."""
    if limit <= 0:
        return
    size = publish_size(event, data)
    if size > limit:
        raise PayloadTooLarge(
            f"a published message of {size} bytes exceeds the limit of {limit} bytes "
            "(max_publish_bytes)",
            size=size,
            limit=limit,
        )
