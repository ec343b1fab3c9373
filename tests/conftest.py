"""Shared test basics for every tier: an env-scaled timeout unit, deadline polls, fresh registries.

Tests wait for a signal (a message, an ack, a READY line) with a timeout, or poll with
:func:`deadline_poll`; nothing else may sleep. Timeouts are multiples of :data:`TIMEOUT_UNIT`, which
``ROOMCAST_TEST_TIMEOUT_FACTOR`` scales for slow machines (default 1.0, or 2.0 when ``CI=true``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import prometheus_client
import pytest

__all__ = ["TIMEOUT_FACTOR", "TIMEOUT_UNIT", "deadline_poll"]

T = TypeVar("T")


def _timeout_factor() -> float:
    raw = os.environ.get("ROOMCAST_TEST_TIMEOUT_FACTOR")
    if raw is None or not raw.strip():
        return 2.0 if os.environ.get("CI", "").lower() in ("1", "true", "yes") else 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise RuntimeError(f"ROOMCAST_TEST_TIMEOUT_FACTOR must be a number, got {raw!r}") from None
    if not factor > 0:
        raise RuntimeError(f"ROOMCAST_TEST_TIMEOUT_FACTOR must be positive, got {raw!r}")
    return factor


TIMEOUT_FACTOR = _timeout_factor()
# Seconds. Write waits as `5 * TIMEOUT_UNIT`, never as bare seconds.
TIMEOUT_UNIT = 1.0 * TIMEOUT_FACTOR


def deadline_poll(
    fn: Callable[[], T], timeout: float, interval: float = 0.01, *, message: str = ""
) -> T:
    """Call ``fn`` until it returns something truthy and return that; fail after ``timeout`` s.

    ``timeout`` is in seconds and already scaled by the caller (``3 * TIMEOUT_UNIT``). ``fn`` is
    always called at least once, and once more at the deadline, so a slow poll never loses a
    result that arrived in time. Raises ``AssertionError`` naming ``message`` (or ``fn``).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = message or getattr(fn, "__qualname__", repr(fn))
            raise AssertionError(
                f"timed out after {timeout:.2f}s waiting for {what} (last value: {result!r})"
            )
        time.sleep(min(interval, remaining))


@pytest.fixture
def fresh_registry() -> prometheus_client.CollectorRegistry:
    """A new, empty Prometheus registry: metrics never leak between tests."""
    return prometheus_client.CollectorRegistry()
