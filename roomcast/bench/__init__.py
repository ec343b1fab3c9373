"""``roomcast bench``: load scenarios against real router and gateway processes on loopback.

Scenarios (``fanout``, ``chat``, ``consistency``, ``memory``, ``rooms``, ``connect``, ``failover``)
start the servers as processes (``sys.executable -m router|gateway``, or the plain-Tornado baseline
of :mod:`roomcast.bench.baseline`), drive them from load-agent processes
(:mod:`roomcast.bench.agent`) holding lean asyncio WebSocket clients
(:mod:`roomcast.bench.wsclient`), and print one JSON document (``router`` drives the router alone
from raw ZeroMQ sockets instead). Every phase is bounded in count and time. Like the rest of the
``roomcast`` package, nothing here imports ``gateway`` or ``router``; importing this package loads
nothing beyond the standard library until :func:`main` runs. See docs/performance.md for the method
and the figures.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``roomcast bench`` with ``argv`` (the arguments after ``bench``); returns the status."""
    from roomcast.bench.command import main as command_main

    return command_main(argv)
