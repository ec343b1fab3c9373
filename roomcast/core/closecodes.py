"""WebSocket close codes used by gateways (contract: architecture §4).

The 4000 range is ours. ``reconnect_policy`` tells a client what to do: 1001/4001/4002 mean
"reconnect (elsewhere) now", 4003 and 1011 "back off", 1008/1009 "fix the client, do not retry as
is". ``is_final`` says which closes must also stop a library's automatic reconnection.
"""

from __future__ import annotations

import enum

__all__ = ["CloseCode", "is_final", "reconnect_policy"]


class CloseCode(enum.IntEnum):
    GOING_AWAY = 1001  # drain: reconnect elsewhere
    POLICY_VIOLATION = 1008  # auth, origin
    MESSAGE_TOO_BIG = 1009  # inbound frame over the limit
    INTERNAL_ERROR = 1011
    SLOW_CONSUMER = 4001  # send queue over its bound
    ROUTER_UNAVAILABLE = 4002  # router unreachable for too long
    ABUSE = 4003  # rate limit: do not reconnect at once


def reconnect_policy(code: int) -> str:
    """``"now"``, ``"backoff"`` or ``"never"`` for a close code."""
    if code in (CloseCode.GOING_AWAY, CloseCode.SLOW_CONSUMER, CloseCode.ROUTER_UNAVAILABLE):
        return "now"
    if code in (CloseCode.ABUSE, CloseCode.INTERNAL_ERROR):
        return "backoff"
    return "never"


def is_final(code: int) -> bool:
    """Whether a close is meant to stop the client's automatic reconnection.

    Only policy, size and abuse closes are: a Socket.IO client gets the namespace DISCONNECT
    ("41") for them, which its library treats as a deliberate kick. Every other close (drain,
    slow consumer, router unavailable, internal error, a ping timeout) only closes the
    transport, as a restarting Socket.IO server does, so that sails.io.js and socket.io-client
    reconnect by themselves with their default settings.
    """
    return reconnect_policy(code) == "never" or code == CloseCode.ABUSE
