"""A breaker's sliding windows of outcomes, and how a window travels between processes.

`CountWindow` (the last N calls) and `TimeWindow` (the last T seconds, in buckets) count
calls, failures and slow calls. Given a wall clock (`stamp`), a window also knows WHEN its
outcomes happened, so a shared breaker can publish it as time buckets: {"<bucket index>":
[calls, failures, slow]}, index = floor(time.time() / width). Published buckets count for
the fleet by their time, not by whether the process that published them is still alive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Counts = tuple[int, int, int]  # calls, failures, slow calls
# One published bucket: (start as wall-clock time, calls, failures, slow calls).
Bucket = tuple[float, int, int, int]


class CountWindow:
    """The last `size` outcomes. With `stamp` (a wall clock), each outcome's time is kept."""

    __slots__ = ("calls", "failures", "idx", "ring", "size", "slow", "stamp", "stamps")

    def __init__(self, size: int, stamp: Callable[[], float] | None = None) -> None:
        self.size = size
        self.stamp = stamp
        self.ring = [0] * size  # bit 0: failed, bit 1: slow
        self.stamps: list[float] = [0.0] * size if stamp is not None else []
        self.idx = 0
        self.calls = self.failures = self.slow = 0

    def add(self, failed: bool, slow: bool) -> None:
        i = self.idx
        if self.calls == self.size:
            old = self.ring[i]
            self.failures -= old & 1
            self.slow -= old >> 1
        else:
            self.calls += 1
        self.ring[i] = failed | (slow << 1)
        if self.stamp is not None:
            self.stamps[i] = self.stamp()
        self.failures += failed
        self.slow += slow
        self.idx = 0 if i + 1 == self.size else i + 1

    def totals(self) -> Counts:
        return self.calls, self.failures, self.slow

    def reset(self) -> None:
        self.ring = [0] * self.size
        if self.stamp is not None:
            self.stamps = [0.0] * self.size
        self.idx = self.calls = self.failures = self.slow = 0

    def buckets(self, width: float) -> dict[int, list[int]]:
        """This window's outcomes by wall-clock bucket (needs `stamp`)."""
        out: dict[int, list[int]] = {}
        # The ring fills from index 0, so its first `calls` entries are the live ones.
        for bits, at in zip(self.ring[: self.calls], self.stamps[: self.calls], strict=True):
            counts = out.setdefault(math.floor(at / width), [0, 0, 0])
            counts[0] += 1
            counts[1] += bits & 1
            counts[2] += bits >> 1
        return out


class TimeWindow:
    """The last `seconds`, in `buckets` buckets of `seconds / buckets` on clock `time`
    (monotonic for a local breaker; wall clock for a shared one, so buckets line up
    between processes)."""

    __slots__ = ("calls", "cur", "failures", "n", "slow", "time", "width")

    def __init__(self, seconds: float, time: Callable[[], float], buckets: int = 10) -> None:
        self.n = buckets
        self.width = seconds / buckets
        self.time = time
        self.reset()

    def reset(self) -> None:
        self.calls = [0] * self.n
        self.failures = [0] * self.n
        self.slow = [0] * self.n
        self.cur = math.floor(self.time() / self.width)

    def _slot(self) -> int:
        idx = math.floor(self.time() / self.width)
        if idx != self.cur:
            n = self.n
            for i in range(self.cur + 1, min(idx, self.cur + n) + 1):
                j = i % n
                self.calls[j] = self.failures[j] = self.slow[j] = 0
            self.cur = idx
        return idx % self.n

    def add(self, failed: bool, slow: bool) -> None:
        j = self._slot()
        self.calls[j] += 1
        self.failures[j] += failed
        self.slow[j] += slow

    def totals(self) -> Counts:
        self._slot()
        return sum(self.calls), sum(self.failures), sum(self.slow)

    def buckets(self, width: float) -> dict[int, list[int]]:
        """This window's outcomes by bucket index (`width` is the window's own)."""
        self._slot()
        out: dict[int, list[int]] = {}
        for back in range(self.n):
            idx = self.cur - back
            j = idx % self.n
            if self.calls[j]:
                out[idx] = [self.calls[j], self.failures[j], self.slow[j]]
        return out


# ---- published windows ------------------------------------------------------------------


def number(value: Any) -> float | None:
    """A finite JSON number, or None (booleans, strings, NaN and infinities are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def parse_buckets(raw: Any, arity: int) -> dict[int, tuple[int, ...]]:
    """A published {"<bucket index>": [n1, n2, ...]} map (`arity` counts per bucket);
    anything malformed (keys, lengths, negative or non-numeric counts) is left out."""
    out: dict[int, tuple[int, ...]] = {}
    if not isinstance(raw, Mapping):
        return out
    for key, counts in raw.items():
        try:
            idx = int(key)
        except (TypeError, ValueError):
            continue
        if not isinstance(counts, list | tuple) or len(counts) != arity:
            continue
        values = [number(c) for c in counts]
        if any(v is None or v < 0 for v in values):
            continue
        out[idx] = tuple(int(v) for v in values if v is not None)
    return out


def outcome_entry(
    epoch: int, now: float, width: float, horizon: float, buckets: Mapping[int, list[int]]
) -> dict[str, Any]:
    """One worker's published window: its buckets newer than `horizon` seconds."""
    since = now - horizon
    kept = {str(i): c for i, c in sorted(buckets.items()) if i * width > since and c[0]}
    return {"epoch": epoch, "at": now, "width": width, "horizon": horizon, "buckets": kept}


def entry_buckets(entry: Any, epoch: int) -> list[Bucket]:
    """The buckets of a published entry of breaker epoch `epoch` ([] for another epoch or
    a malformed entry)."""
    if not isinstance(entry, Mapping) or entry.get("epoch") != epoch:
        return []
    width = number(entry.get("width"))
    if width is None or width <= 0:
        return []
    parsed = parse_buckets(entry.get("buckets"), 3)
    return [(i * width, c[0], c[1], c[2]) for i, c in parsed.items()]


def entry_horizon(entry: Mapping[str, Any], default: float) -> float:
    horizon = number(entry.get("horizon"))
    return default if horizon is None or horizon <= 0 else horizon


def sum_since(buckets: Iterable[Bucket], since: float) -> Counts:
    """Calls, failures and slow calls of the buckets that started after `since`."""
    c = f = s = 0
    for start, calls, failures, slow in buckets:
        if start > since:
            c += calls
            f += failures
            s += slow
    return c, f, s
