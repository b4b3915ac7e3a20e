"""A token bucket: a global cap on requests per second, with a pause for upstream 429s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allow `rate` acquisitions per second on average, bursts up to `burst`."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()
        self._paused_until = 0.0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def available(self) -> int:
        """Whole tokens that could be taken right now without waiting (0 while paused)."""
        now = self._clock()
        if now < self._paused_until:
            return 0
        self._refill(now)
        return int(self._tokens)

    def try_acquire(self) -> float:
        """Take a token if one is there (returns 0.0), else the seconds to wait for one."""
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    async def acquire(self) -> None:
        """Wait until a token is available and take it."""
        while (wait := self.try_acquire()) > 0:
            await asyncio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hand out nothing for `seconds` (upstream asked us to back off)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
