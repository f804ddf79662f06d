"""The BreakerRegistry the runtime uses (breakers and budgets shared through a real store),
over its life: the hot path of a successful call leaves the store alone, and close()
publishes what is left, stops every background task, and is safe to call again."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from typing import Any

import pytest

from orchestrion.errors import ProviderUnavailable
from orchestrion.resilience import Attempt, FakeClock, RetryPolicy
from orchestrion.resilience.registry import BreakerRegistry
from orchestrion.resilience.shared_budget import budget_document_name
from orchestrion.resilience.summary import breaker_summary
from orchestrion.store.base import Store


def count_calls(store: Store) -> Counter[str]:
    """Count every call of a Store method on this (real, open) store object."""
    calls: Counter[str] = Counter()
    for name, _ in inspect.getmembers(Store, inspect.iscoroutinefunction):
        if name.startswith("_"):
            continue
        original = getattr(store, name)

        async def counted(*args: Any, _f: Any = original, _n: str = name, **kw: Any) -> Any:
            calls[_n] += 1
            return await _f(*args, **kw)

        setattr(store, name, counted)  # the instance attribute shadows the method
    return calls


def sync_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("sync ") and not t.done()]


async def ok(attempt: Attempt) -> str:
    return "ok"


async def broken(attempt: Attempt) -> str:
    raise ProviderUnavailable("down", status_code=503)


CALLS = 1_000


async def test_successful_calls_do_not_touch_the_store_per_call(any_store: Store) -> None:
    clock = FakeClock()
    registry = BreakerRegistry(any_store, clock=clock, share_budgets=True)
    pipeline = registry.pipeline("model:x")
    calls = count_calls(any_store)
    for _ in range(CALLS):
        assert await pipeline.call(ok) == "ok"
        clock.advance(0.001)  # a second of traffic: one sync interval
    await registry.close()
    used = sum(calls.values())
    # One load on the first call, then background syncs about once per second, and the
    # last publication: a handful of store calls, not one per call (nor one per 50).
    assert 0 < used <= CALLS // 50, calls
    assert set(calls) <= {"breaker_load", "breaker_save_if"}, calls
    # ...and yet the fleet sees every call.
    rows = {name: (doc, version) for name, doc, version in await any_store.list_breakers()}
    doc, version = rows["model:x"]
    assert breaker_summary("model:x", doc, version, now=clock.now())["calls"] == 100  # window
    budget, _ = rows[budget_document_name("model:x")]
    (mine,) = budget["workers"].values()
    assert sum(d for d, _ in mine["buckets"].values()) == CALLS  # every deposit


async def test_close_publishes_stops_its_tasks_and_is_idempotent(
    any_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="orchestrion")
    # Intervals far longer than the test: only close() can publish these outcomes.
    registry = BreakerRegistry(
        any_store,
        {"sync_interval": 3600.0, "minimum_calls": 50},
        share_budgets=True,
        budget_defaults={"sync_interval": 3600.0},
    )
    pipeline = registry.pipeline("model:x", retry=RetryPolicy(max_attempts=3, base_delay=0.0))
    for _ in range(5):
        await pipeline.call(ok)
    with pytest.raises(ProviderUnavailable):
        await pipeline.call(broken)
    assert sync_tasks()  # waiting for their interval
    calls = count_calls(any_store)

    await registry.close()
    assert sync_tasks() == []
    doc, version = await any_store.breaker_load("model:x")
    assert doc is not None
    row = breaker_summary("model:x", doc, version)
    assert (row["state"], row["calls"], row["failure_rate"]) == ("closed", 8, 3 / 8)
    budget, _ = await any_store.breaker_load(budget_document_name("model:x"))
    assert budget is not None
    (mine,) = budget["workers"].values()
    assert [
        sum(d for d, _ in mine["buckets"].values()),
        sum(w for _, w in mine["buckets"].values()),
    ] == [6, 2]
    used = sum(calls.values())

    await registry.close()  # nothing new: no store traffic
    assert sum(calls.values()) == used
    await any_store.close()
    await registry.close()  # even with the store closed: nothing to do, nothing raised
    await asyncio.sleep(0.05)
    assert sync_tasks() == []
    assert "not open" not in caplog.text
    assert "Traceback" not in caplog.text
    await any_store.open()  # for the fixture's close
