"""Added cost of the resilience pipeline around a no-op async call that succeeds.

Variants: the bare call; retry + budget + closed breaker; the same plus a per-attempt
timeout (the "full" pipeline); the full pipeline with an event sink; then the full
pipeline as the runtime builds it, from a `BreakerRegistry`: local (no store), and shared
through a real store the way `Orchestrion` uses it (`BreakerRegistry(store,
share_budgets=True)`: the breaker and the retry budget of every process on that store),
with the store calls it made per 1,000 calls. By default the store is a SQLite file in a
temporary folder; `orchestrion bench resilience --store sqlite:///PATH` picks the file.
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from orchestrion.resilience import (
    Attempt,
    CircuitBreaker,
    ResiliencePipeline,
    RetryBudget,
    RetryPolicy,
)
from orchestrion.resilience.registry import BreakerRegistry
from orchestrion.store import open_store
from orchestrion.store.base import Store


async def _noop(_: Attempt | None = None) -> int:
    return 1


def _pipeline(*, timeout: float | None, sink: bool = False) -> ResiliencePipeline:
    events: list[str] = []
    return ResiliencePipeline(
        "bench",
        retry=RetryPolicy(),
        budget=RetryBudget(),
        breaker=CircuitBreaker("bench"),
        timeout=timeout,
        on_event=(lambda t, a: events.append(t) if len(events) < 1000 else None) if sink else None,
    )


def _count_store_calls(store: Store) -> Counter[str]:
    calls: Counter[str] = Counter()
    for name, _ in inspect.getmembers(Store, inspect.iscoroutinefunction):
        if not name.startswith("_"):
            original = getattr(store, name)

            async def counted(*a: Any, _f: Any = original, _n: str = name, **kw: Any) -> Any:
                calls[_n] += 1
                return await _f(*a, **kw)

            setattr(store, name, counted)
    return calls


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


async def _main(n: int, url: str) -> dict[str, float]:
    plain = _pipeline(timeout=None)
    full = _pipeline(timeout=30.0)
    sinked = _pipeline(timeout=30.0, sink=True)
    out: dict[str, float] = {}
    out["bare_us"] = await _time(_noop, n)
    out["retry_budget_breaker_us"] = await _time(lambda: plain.call(_noop), n)
    out["full_us"] = await _time(lambda: full.call(_noop), n)
    out["full_with_events_us"] = await _time(lambda: sinked.call(_noop), n)
    local = BreakerRegistry(None).pipeline("model:bench", timeout=30.0)
    out["registry_local_us"] = await _time(lambda: local.call(_noop), n)
    async with open_store(url) as store:
        calls = _count_store_calls(store)
        registry = BreakerRegistry(store, share_budgets=True)
        shared = registry.pipeline("model:bench", timeout=30.0)
        made = 0

        async def one() -> int:
            nonlocal made
            made += 1
            return await shared.call(_noop)

        out["registry_shared_us"] = await _time(one, n)
        await registry.close()
        out["shared_store_calls_per_1000"] = sum(calls.values()) / made * 1000
    return out


LABELS = {
    "retry_budget_breaker_us": "retry + budget + breaker (no timeout)",
    "full_us": "full: + per-attempt timeout",
    "full_with_events_us": "full + on_event sink",
    "registry_local_us": "full, from BreakerRegistry(None): local",
    "registry_shared_us": "full, from BreakerRegistry(store, share_budgets=True)",
}


def run(quick: bool = False, store: str | None = None) -> dict[str, Any]:
    n = 2_000 if quick else 50_000
    if store is not None and not store.startswith("sqlite:///"):
        raise ValueError(
            f"bench resilience measures a SQLite store (sqlite:///PATH), not {store!r}"
        )
    with tempfile.TemporaryDirectory(prefix="orchestrion-bench-") as folder:
        url = store or f"sqlite:///{Path(folder) / 'resilience.db'}"
        r = asyncio.run(_main(n, url))
    bare = r["bare_us"]
    added = {
        k.replace("_us", "_added_us"): v - bare
        for k, v in r.items()
        if k.endswith("_us") and k != "bare_us"
    }
    lines = [
        f"resilience pipeline overhead, {n} successful no-op calls, best of 3 (µs per call)",
        f"  bare call                                              {bare:7.2f}",
    ]
    for key, label in LABELS.items():
        lines.append(f"  {label:<54} {r[key]:7.2f}  (+{r[key] - bare:.2f})")
    lines.append(
        "  the shared variant is the runtime's: breaker and retry budget in the store "
        f"({'SQLite file' if store is None else store}),"
    )
    lines.append(
        f"  synchronised in the background: {r['shared_store_calls_per_1000']:.2f} store "
        "calls per 1,000 calls"
    )
    target = "met" if r["registry_shared_us"] - bare < 20 else "MISSED"
    lines.append(f"  target: the runtime's pipeline adds < 20 µs with the breaker closed: {target}")
    return {"lines": lines, "n": n, **r, **added}


if __name__ == "__main__":
    print("\n".join(run()["lines"]))
