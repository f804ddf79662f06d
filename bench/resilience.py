"""Added cost of the resilience pipeline around a no-op async call that succeeds.

Variants: the bare call; retry + budget + closed breaker; the same plus a per-attempt
timeout (the "full" pipeline); the full pipeline with an event sink; and with the breaker
shared through an in-memory store (syncing every second / 50 outcomes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrion.resilience import (
    Attempt,
    CircuitBreaker,
    InMemoryBreakerStore,
    ResiliencePipeline,
    RetryBudget,
    RetryPolicy,
)


async def _noop(_: Attempt | None = None) -> int:
    return 1


def _pipeline(
    *, timeout: float | None, sink: bool = False, store: bool = False
) -> ResiliencePipeline:
    events: list[str] = []
    return ResiliencePipeline(
        "bench",
        retry=RetryPolicy(),
        budget=RetryBudget(),
        breaker=CircuitBreaker("bench", store=InMemoryBreakerStore() if store else None),
        timeout=timeout,
        on_event=(lambda t, a: events.append(t) if len(events) < 1000 else None) if sink else None,
    )


async def _time(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(min(n, 1000)):  # warm up
        await fn()
    best = float("inf")
    for _ in range(3):  # best of three, to shed scheduler noise
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


async def _main(n: int) -> dict[str, float]:
    plain = _pipeline(timeout=None)
    full = _pipeline(timeout=30.0)
    sinked = _pipeline(timeout=30.0, sink=True)
    shared = _pipeline(timeout=30.0, store=True)
    out: dict[str, float] = {}
    out["bare_us"] = await _time(_noop, n)
    out["retry_budget_breaker_us"] = await _time(lambda: plain.call(_noop), n)
    out["full_us"] = await _time(lambda: full.call(_noop), n)
    out["full_with_events_us"] = await _time(lambda: sinked.call(_noop), n)
    out["full_shared_breaker_us"] = await _time(lambda: shared.call(_noop), n)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    n = 2_000 if quick else 50_000
    r = asyncio.run(_main(n))
    bare = r["bare_us"]
    added = {k.replace("_us", "_added_us"): v - bare for k, v in r.items() if k != "bare_us"}
    lines = [
        f"resilience pipeline overhead, {n} successful no-op calls, best of 3 (µs per call)",
        f"  bare call                                  {bare:7.2f}",
    ]
    labels = {
        "retry_budget_breaker_us": "retry + budget + breaker (no timeout)",
        "full_us": "full: + per-attempt timeout",
        "full_with_events_us": "full + on_event sink",
        "full_shared_breaker_us": "full, breaker shared via in-memory store",
    }
    for key, label in labels.items():
        lines.append(f"  {label:<42} {r[key]:7.2f}  (+{r[key] - bare:.2f})")
    target = "met" if r["full_us"] - bare < 20 else "MISSED"
    lines.append(f"  target: full pipeline adds < 20 µs with the breaker closed: {target}")
    return {"lines": lines, "n": n, **r, **added}


if __name__ == "__main__":
    print("\n".join(run()["lines"]))
