"""Retry budget (after Finagle's RetryBudget): retries may add at most `percent` of the
calls made in the last `ttl` seconds, plus a floor of `min_retries_per_sec` so a
low-traffic dependency can still retry.

Over any window of `ttl` seconds: retries <= percent * calls + min_retries_per_sec * ttl.
With every call failing, a brownout therefore costs ~1.2x the traffic, not max_attempts x.

The budget is per process (per pipeline instance). A fleet of W workers spends at most
W times the floor; the percentage part scales with each worker's own traffic.
"""

from __future__ import annotations

import math

from orchestrion.resilience.clock import SYSTEM_CLOCK, Clock


class RetryBudget:
    __slots__ = (
        "_buckets",
        "_clock",
        "_cur",
        "_deposits",
        "_width",
        "_withdrawals",
        "min_retries_per_sec",
        "percent",
        "reserve",
        "ttl",
    )

    def __init__(
        self,
        *,
        percent: float = 0.2,
        min_retries_per_sec: float = 10.0,
        ttl: float = 10.0,
        buckets: int = 10,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not 0 <= percent <= 1000:
            raise ValueError("percent must be between 0 and 1000 (a fraction: 0.2 is 20%)")
        if min_retries_per_sec < 0 or ttl <= 0 or buckets < 1:
            raise ValueError("min_retries_per_sec >= 0, ttl > 0 and buckets >= 1 are required")
        self.percent = percent
        self.min_retries_per_sec = min_retries_per_sec
        self.ttl = ttl
        self.reserve = min_retries_per_sec * ttl
        self._clock = clock
        self._buckets = buckets
        self._width = ttl / buckets
        # Ring of per-bucket counts; _cur is the absolute index of the newest bucket.
        self._deposits = [0] * buckets
        self._withdrawals = [0] * buckets
        self._cur = math.floor(clock.monotonic() / self._width)

    def _rotate(self) -> int:
        idx = math.floor(self._clock.monotonic() / self._width)
        cur = self._cur
        if idx != cur:
            # Clear the buckets that fell out of the window since the last touch.
            n = self._buckets
            for i in range(cur + 1, min(idx, cur + n) + 1):
                self._deposits[i % n] = 0
                self._withdrawals[i % n] = 0
            self._cur = idx
        return idx % self._buckets

    def deposit(self) -> None:
        """Record one call (first attempts only)."""
        self._deposits[self._rotate()] += 1

    def balance(self) -> float:
        """Retries available right now (may be fractional; a retry needs >= 1)."""
        self._rotate()
        return self.percent * sum(self._deposits) + self.reserve - sum(self._withdrawals)

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        slot = self._rotate()
        if self.percent * sum(self._deposits) + self.reserve - sum(self._withdrawals) < 1.0:
            return False
        self._withdrawals[slot] += 1
        return True
