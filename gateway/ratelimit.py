"""Per-connection inbound rate limit (pure): a token bucket plus a strike count.

``allow(now)`` spends one token per inbound frame; tokens refill at ``rate_per_s`` up to
``burst``. A frame over the limit is refused (the shell answers 429) and is a strike. Strikes
reset only once the client is really back under the limit — its bucket refilled to half the
burst (at least one token) — not when one frame slips through on the trickle of the refill:
a sustained flood admits a frame every ``1/rate_per_s`` seconds and must still add up.
``abusive`` says the client kept flooding for ``max_strikes`` refused frames without slowing
down: the shell closes it with 4003. Every inbound frame counts, WebSocket pings included.
"""

from __future__ import annotations

__all__ = ["RateLimit"]


class RateLimit:
    __slots__ = ("_last", "_tokens", "burst", "max_strikes", "rate", "strikes")

    def __init__(self, rate_per_s: float, burst: float, max_strikes: int, now: float) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.max_strikes = max_strikes
        self._tokens = burst
        self._last = now
        self.strikes = 0

    def allow(self, now: float) -> bool:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now
        if self._tokens >= max(1.0, self.burst / 2):
            self.strikes = 0  # it slowed down long enough to refill half its burst
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.strikes += 1
        return False

    @property
    def abusive(self) -> bool:
        return self.strikes >= self.max_strikes
