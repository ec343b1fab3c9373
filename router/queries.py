"""Answers about the rooms, and the presence data a client may set (pure; time passed in).

Owns the ``Query`` kinds (count, members, rooms of a socket, presence, presence stats,
recovery), the JSON their answers carry, and the limits on presence data. Kept apart from the
shell because none of it moves bytes: it reads the topology and the history and builds
replies, so that its tests can drive it without sockets. Changes nothing.
"""

from __future__ import annotations

import json

from roomcast.core import wire
from roomcast.core.errors import BadRequest, PayloadTooLarge
from roomcast.core.rooms import validate_room
from roomcast.core.topology import Topology
from router.history import History, Recovery

__all__ = [
    "MAX_PRESENCE_META_BYTES",
    "MAX_PRESENCE_USER_BYTES",
    "answer",
    "check_presence",
    "recovery",
    "recovery_within",
]

# Small by design: presence lives in router memory for every connection.
MAX_PRESENCE_USER_BYTES = 256
MAX_PRESENCE_META_BYTES = 1024


def answer(msg: wire.Query, topo: Topology, history: History, now: float) -> wire.Reply:
    """The reply to a query; ``BadRequest`` (or a room error) for a bad one."""
    if msg.kind is wire.QueryKind.COUNT:
        return wire.Reply(ref=msg.ref, count=topo.count(validate_room(msg.target)))
    if msg.kind is wire.QueryKind.MEMBERS:
        return wire.Reply(ref=msg.ref, names=tuple(topo.members(validate_room(msg.target))))
    if msg.kind is wire.QueryKind.ROOMS:
        return wire.Reply(ref=msg.ref, names=tuple(topo.rooms_of(msg.target)))
    if msg.kind is wire.QueryKind.PRESENCE:
        users = topo.presence(validate_room(msg.target))
        body = {
            user: {"connections": n, "meta": json.loads(meta) if meta else None}
            for user, (n, meta) in users.items()
        }
        return wire.Reply(ref=msg.ref, body=_json(body))
    if msg.kind is wire.QueryKind.RECOVER:
        since = history.since(validate_room(msg.target), msg.epoch, msg.offset, now)
        return wire.Reply(ref=msg.ref, body=recovery(since, msg.max_bytes))
    if msg.kind is wire.QueryKind.PRESENCE_STATS:
        connections, unique = topo.presence_stats(validate_room(msg.target))
        return wire.Reply(ref=msg.ref, body=_json({"connections": connections, "users": unique}))
    raise BadRequest("unknown query kind")


def check_presence(msg: wire.SetPresence) -> None:
    """``BadRequest``/``PayloadTooLarge`` unless the user id and metadata are within limits."""
    if len(msg.user.encode()) > MAX_PRESENCE_USER_BYTES:
        raise BadRequest(f"a presence user id is at most {MAX_PRESENCE_USER_BYTES} bytes")
    if len(msg.meta) > MAX_PRESENCE_META_BYTES:
        raise PayloadTooLarge(size=len(msg.meta), limit=MAX_PRESENCE_META_BYTES)
    if msg.meta:
        try:
            json.loads(msg.meta)
        except ValueError:
            raise BadRequest("presence metadata must be json") from None


def recovery(since: Recovery, max_bytes: int = 0) -> bytes:
    """The recovery answer as JSON, splicing each message's data JSON in without re-parsing.

    Larger than ``max_bytes`` (when non-zero: what the asker's connection can queue), it says
    ``recovered: false`` with no messages, at the room's current position, so the client
    resumes from there instead of being cut off as a slow consumer and asking again forever."""
    body, _fits = recovery_within(since, max_bytes)
    return body


def recovery_within(since: Recovery, max_bytes: int) -> tuple[bytes, bool]:
    """:func:`recovery`, and whether the full answer fit in ``max_bytes`` (0: no bound)."""
    body = _recovery(since)
    if max_bytes and len(body) > max_bytes:
        return _recovery(Recovery(False, since.epoch, since.offset, ())), False
    return body, True


def _recovery(since: Recovery) -> bytes:
    messages = b",".join(
        b'{"offset":%d,"event":%s,"data":%s}' % (offset, _json(event), data or b"null")
        for offset, event, data in since.messages
    )
    head = _json({"recovered": since.recovered, "epoch": since.epoch, "offset": since.offset})
    return head[:-1] + b',"messages":[' + messages + b"]}"


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
