"""gateway.ratelimit: a per-connection token bucket with strikes, driven by the times we pass."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.ratelimit import RateLimit

# Each script runs RateLimit(rate, burst, max_strikes, now=0.0) through ``allow(t)`` calls:
# (t, allowed, strikes after, abusive after).
SCRIPTS: list[Any] = [
    pytest.param(
        (5, 5, 3),
        [(0.0, True, 0, False)] * 5 + [(0.0, False, 1, False)],
        id="full-burst-at-start-then-refused",
    ),
    pytest.param(
        (5, 5, 3),
        [(0.0, True, 0, False)] * 5
        + [(0.0, False, 1, False), (0.0, False, 2, False), (0.0, False, 3, True)],
        id="max-strikes-in-a-row-is-abuse",
    ),
    pytest.param(
        (5, 5, 3),
        [(0.0, True, 0, False)] * 5
        + [(0.0, False, 1, False), (0.0, False, 2, False), (0.2, True, 2, False)]
        + [(0.2, False, 3, True)],
        id="a-frame-let-through-by-the-refill-does-not-reset-strikes",
    ),
    pytest.param(
        (5, 5, 3),
        [(0.0, True, 0, False)] * 5
        + [(0.0, False, 1, False), (0.0, False, 2, False), (0.5, True, 0, False)]
        + [(0.5, True, 0, False), (0.5, False, 1, False)],
        id="half-a-burst-refilled-resets-strikes",
    ),
    pytest.param(
        (5, 5, 100),
        [(0.0, True, 0, False)] * 5
        + [(0.1, False, 1, False), (0.19, False, 2, False), (0.2, True, 2, False)],
        id="refill-one-token-per-1/rate-seconds",
    ),
    pytest.param(
        (5, 5, 100),
        [(0.0, True, 0, False)] * 5 + [(0.4, True, 0, False)] * 2 + [(0.4, False, 1, False)],
        id="refill-accumulates",
    ),
    pytest.param(
        (5, 5, 100),
        [(0.0, True, 0, False)] * 5 + [(3600.0, True, 0, False)] * 5 + [(3600.0, False, 1, False)],
        id="refill-capped-at-burst",
    ),
    pytest.param(
        (5, 5, 100),
        [(100.0, True, 0, False)] * 5 + [(100.0, False, 1, False)],
        id="idle-start-still-capped-at-burst",
    ),
    pytest.param(
        (1000, 2, 100),
        [(0.0, True, 0, False)] * 2 + [(0.0, False, 1, False), (0.001, True, 0, False)],
        id="high-rate",
    ),
    pytest.param(
        (5, 5, 100),
        [(10.0, True, 0, False)] * 5
        + [(9.0, False, 1, False), (10.125, False, 2, False)]
        + [(10.25, True, 2, False)],  # 0.625 + 0.625 tokens: refill counted from 10.0, once
        id="clock-going-back-refills-nothing-and-loses-nothing",
    ),
    pytest.param(
        (2, 1, 100),
        [
            (0.0, True, 0, False),
            (0.25, False, 1, False),
            (0.5, True, 0, False),
            (0.75, False, 1, False),
            (1.0, True, 0, False),
        ],
        id="steady-rate-at-the-limit-is-served",
    ),
    pytest.param(
        (5, 0, 2),
        [(0.0, False, 1, False), (10.0, False, 2, True)],
        id="zero-burst-refuses-everything",
    ),
    pytest.param(
        (5, 5, 0),
        [(0.0, True, 0, True)],
        id="zero-strikes-is-abusive-from-the-start",
    ),
]


@pytest.mark.parametrize(("args", "steps"), SCRIPTS)
def test_scripts(
    args: tuple[float, float, int], steps: list[tuple[float, bool, int, bool]]
) -> None:
    limit = RateLimit(*args, now=0.0)
    assert (limit.rate, limit.burst, limit.max_strikes, limit.strikes) == (*args, 0)
    for i, (now, allowed, strikes, abusive) in enumerate(steps):
        got = (limit.allow(now), limit.strikes, limit.abusive)
        assert got == (allowed, strikes, abusive), f"step {i} at t={now}"


def test_fractional_refill_is_kept_between_frames() -> None:
    # 0.3 s at 5/s is 1.5 tokens: one frame now, and the half carries over.
    limit = RateLimit(5, 5, 100, now=0.0)
    for _ in range(5):
        assert limit.allow(0.0)
    assert limit.allow(0.3)
    assert not limit.allow(0.3)
    assert limit.allow(0.4)  # 0.5 + 0.5 tokens
    assert not limit.allow(0.4)


def test_sustained_flood_is_abusive_after_exactly_max_strikes() -> None:
    limit = RateLimit(5, 5, 20, now=0.0)
    outcomes = [limit.allow(0.001 * i) for i in range(25)]
    assert outcomes == [True] * 5 + [False] * 20
    assert limit.strikes == 20 and limit.abusive


def test_a_client_under_the_rate_is_never_refused() -> None:
    limit = RateLimit(10, 3, 5, now=0.0)
    for i in range(1000):
        assert limit.allow(0.1 * i + 0.1), f"frame {i}"
    assert limit.strikes == 0 and not limit.abusive


def _flood(rate_fps: float, seconds: float) -> float | None:
    """Feed the defaults (1000/s, burst 2000, 200 strikes) a steady flood: when it is abusive."""
    limit = RateLimit(1000.0, 2000.0, 200, 0.0)
    for i in range(int(rate_fps * seconds)):
        now = i / rate_fps
        limit.allow(now)
        if limit.abusive:
            return now
    return None


def test_a_sustained_flood_at_the_defaults_is_abuse_within_seconds() -> None:
    # The finding: 45,000 frames/s for 20 s never reached 200 strikes in a row, because the
    # refill let one frame through every millisecond and that reset the count.
    at = _flood(45_000, 20.0)
    assert at is not None and at < 0.1
    at = _flood(5_000, 20.0)
    assert at is not None and at < 1.0


def test_a_client_under_the_rate_is_never_abuse() -> None:
    assert _flood(990, 30.0) is None
