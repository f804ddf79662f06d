"""Retry policy: how many attempts, how long to wait between them, and when to stop.

Backoff is exponential with *full jitter*: the n-th wait is uniform in
[0, min(max_delay, base_delay * multiplier ** (n - 1))]. Full jitter spreads a fleet of
clients that failed together, so they do not come back together.

A dependency's Retry-After is honoured (the wait is at least what it asked) up to
`max_retry_after`; beyond that the call fails fast with RetryAfterTooLong instead of
holding a worker asleep for minutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4  # total, the first one included; 1 disables retries
    base_delay: float = 0.5  # seconds; ceiling of the first wait
    max_delay: float = 30.0  # cap on any backoff wait (Retry-After has its own cap)
    multiplier: float = 2.0
    jitter: bool = True  # False: waits are exactly the ceiling (for tests and docs)
    max_elapsed: float | None = 120.0  # since the first attempt, across crashes; None: no limit
    respect_retry_after: bool = True
    max_retry_after: float = 60.0  # longer requested waits fail fast with RetryAfterTooLong

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        for field_name in ("base_delay", "max_delay", "max_retry_after"):
            v = getattr(self, field_name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{field_name} must be a finite number >= 0")
        if not (self.multiplier >= 1 and math.isfinite(self.multiplier)):
            raise ValueError("multiplier must be a finite number >= 1")
        if self.max_elapsed is not None and not self.max_elapsed >= 0:
            raise ValueError("max_elapsed must be >= 0 or None")

    @classmethod
    def no_retry(cls) -> RetryPolicy:
        return cls(max_attempts=1)

    def ceiling(self, failed_attempts: int) -> float:
        """Upper bound of the wait after `failed_attempts` failures (>= 1)."""
        n = max(0, failed_attempts - 1)
        if self.base_delay == 0:
            return 0.0
        try:
            raw = self.base_delay * self.multiplier**n
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, raw)

    def backoff(self, failed_attempts: int, rng: Callable[[], float]) -> float:
        """The wait after `failed_attempts` failures; `rng` returns floats in [0, 1)."""
        ceiling = self.ceiling(failed_attempts)
        if not self.jitter:
            return ceiling
        return rng() * ceiling


DEFAULT_RETRY = RetryPolicy()
