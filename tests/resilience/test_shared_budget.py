"""Retry budgets shared by a fleet through the store: the merge of the shared document,
a SharedRetryBudget against an in-memory store, and real processes on one SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrion.resilience import FakeClock, InMemoryBreakerStore, RetryBudget
from orchestrion.resilience.cli import breakers
from orchestrion.resilience.registry import BreakerRegistry
from orchestrion.resilience.shared_budget import SharedRetryBudget, merge_budget_document
from orchestrion.resilience.shared_state import StoreBreakerState
from orchestrion.store import SQLiteStore
from tests.resilience.test_shared_state import Worker, start_all, workers  # noqa: F401

WIDTH, BUCKETS = 1.0, 10


def merge(doc: Any, me: str, mine: dict[int, tuple[int, int]], now: float) -> Any:
    return merge_budget_document(doc, me, mine, now=now, width=WIDTH, buckets=BUCKETS)


# ---- the merge ---------------------------------------------------------------------------


def test_merge_publishes_my_buckets_and_sums_the_others() -> None:
    doc, peers = merge(None, "a", {100: (5, 1), 101: (2, 0)}, now=101.5)
    assert doc["workers"] == {"a": {"at": 101.5, "buckets": {"100": [5, 1], "101": [2, 0]}}}
    assert peers == {}
    doc, peers = merge(doc, "b", {101: (3, 2)}, now=101.7)
    assert set(doc["workers"]) == {"a", "b"}
    assert peers == {100: (5, 1), 101: (2, 0)}  # b sees a's counts, not its own
    _, peers = merge(doc, "c", {}, now=101.9)
    assert peers == {100: (5, 1), 101: (5, 2)}  # c sees both, summed per bucket


def test_merge_replaces_my_entry_instead_of_adding_to_it() -> None:
    doc, _ = merge(None, "a", {100: (5, 1)}, now=100.5)
    doc, _ = merge(doc, "a", {100: (7, 2)}, now=100.9)  # the same bucket, counted further
    _, peers = merge(doc, "b", {}, now=100.9)
    assert peers == {100: (7, 2)}


def test_merge_drops_expired_buckets_and_prunes_stale_workers() -> None:
    doc, _ = merge(None, "old", {100: (9, 9)}, now=100.5)
    doc, _ = merge(doc, "mid", {100: (1, 1), 108: (4, 0)}, now=108.5)
    # At 110.2 the window is buckets 101..110: bucket 100 fell out of it.
    doc, peers = merge(doc, "me", {110: (1, 0)}, now=110.2)
    assert peers == {108: (4, 0)}
    assert set(doc["workers"]) == {"mid", "me"}  # "old" has nothing left in the window
    assert doc["workers"]["mid"]["buckets"] == {"108": [4, 0]}


def test_merge_ignores_malformed_entries() -> None:
    doc = {
        "workers": {
            "x": "nonsense",
            "y": {"buckets": {"abc": [1, 1], "105": [1], "106": [-3, 1], "107": ["a", 1]}},
            "z": {"buckets": {"105": [2, 1]}},
        }
    }
    new, peers = merge(doc, "me", {}, now=105.5)
    assert peers == {105: (2, 1)}
    assert set(new["workers"]) == {"z"}
    _, peers = merge({"workers": ["not", "a", "map"]}, "me", {}, now=105.5)
    assert peers == {}


# ---- one SharedRetryBudget per worker, on one in-memory store ----------------------------


async def test_shared_budgets_decide_with_the_fleets_totals() -> None:
    clock = FakeClock(start=1_000.0)
    state = InMemoryBreakerStore()
    settings = dict(percent=0.5, min_retries_per_sec=0.2, ttl=10.0, clock=clock)
    a = SharedRetryBudget("llm", state, worker_id="a", **settings)
    b = SharedRetryBudget("llm", state, worker_id="b", **settings)
    local = RetryBudget(**settings)  # type: ignore[arg-type]
    for _ in range(10):
        a.deposit()
        local.deposit()
    await a.sync()
    await b.sync()
    # b made no call, yet the fleet did: 0.5 * 10 + 0.2 * 10 = 7 retries for the fleet.
    assert b.balance() == pytest.approx(7.0)
    assert sum(b.try_withdraw() for _ in range(5)) == 5
    await b.sync()
    await a.sync()
    # a sees b's 5 retries: 2 are left for the whole fleet, not 7 for a alone.
    assert a.balance() == pytest.approx(2.0)
    assert sum(a.try_withdraw() for _ in range(10)) == 2
    assert local.balance() == pytest.approx(7.0)  # a local budget would not know
    # A refusal asks for a sync at once (in the background).
    await asyncio.sleep(0)
    syncs = a.syncs
    assert not a.try_withdraw()
    for _ in range(50):
        if a.syncs > syncs:
            break
        await asyncio.sleep(0.01)
    assert a.syncs > syncs
    # Once the window has passed, everything has expired: only the floor is left.
    clock.advance(10.5)
    await a.sync()
    await b.sync()
    assert a.balance() == pytest.approx(2.0) and b.balance() == pytest.approx(2.0)
    doc = state.peek("budget:llm")
    assert doc is not None and doc["kind"] == "retry_budget"
    await a.close()
    await b.close()


async def test_registry_shares_budgets_only_when_asked_and_checks_settings() -> None:
    state = InMemoryBreakerStore()
    shared = BreakerRegistry(state, share_budgets=True, budget_defaults={"sync_interval": 0.5})
    budget = shared.budget("llm")
    assert isinstance(budget, SharedRetryBudget) and budget.sync_interval == 0.5
    assert shared.budget("llm") is budget
    assert not isinstance(BreakerRegistry(state).budget("llm"), SharedRetryBudget)
    assert not isinstance(BreakerRegistry(None, share_budgets=True).budget("x"), SharedRetryBudget)
    with pytest.raises(TypeError, match="sync_interval"):
        BreakerRegistry(state, budget_defaults={"sync_interval": 1.0})  # local: no such thing
    with pytest.raises(TypeError, match="worker_id"):
        BreakerRegistry(state, share_budgets=True, budget_defaults={"worker_id": "x"})
    await shared.close()


# ---- real processes on one SQLite file --------------------------------------------------

PROCESSES = 3
CALLS = 40
BUDGET = {"percent": 0.2, "min_retries_per_sec": 0.5, "ttl": 60.0}  # floor: 30 retries
SYNC_INTERVAL = 0.05
ATTEMPT_SLEEP = 0.02
# The documented staleness bound: a decision may miss the other workers' retries of the
# last 2 x sync_interval (plus round trips). At one attempt per ATTEMPT_SLEEP per process
# that is at most PROCESSES * (2 * SYNC_INTERVAL / ATTEMPT_SLEEP) = 15 retries.
SLACK = PROCESSES * round(2 * SYNC_INTERVAL / ATTEMPT_SLEEP)


def allowed(total_calls: int) -> float:
    return BUDGET["percent"] * total_calls + BUDGET["min_retries_per_sec"] * BUDGET["ttl"]


async def run_fleet(path: Path, started: list[Worker], shared: bool) -> list[dict[str, Any]]:
    params = {
        "shared": shared,
        "calls": CALLS,
        "max_attempts": 4,
        "attempt_sleep": ATTEMPT_SLEEP,
        "budget": {**BUDGET, **({"sync_interval": SYNC_INTERVAL} if shared else {})},
    }
    names = [f"{'s' if shared else 'l'}{i}" for i in range(PROCESSES)]
    group = await start_all(started, "budget", path, names, params)
    for w in group:
        await w.send("go")
    return [(await w.finish())[0] for w in group]


async def test_a_fleet_of_processes_retries_within_one_shared_budget(
    tmp_path: Path,
    workers: list[Worker],  # noqa: F811
) -> None:
    path = tmp_path / "fleet.db"
    async with SQLiteStore(path):
        pass
    results = await run_fleet(path, workers, shared=True)
    calls = sum(r["calls"] for r in results)
    retries = sum(r["attempts"] - r["calls"] for r in results)
    assert calls == PROCESSES * CALLS
    limit = allowed(calls)  # 0.2 * 120 + 30 = 54 for the whole fleet
    assert retries <= limit + SLACK, (retries, results)
    assert retries >= limit - 1  # the budget was used, not refused wholesale
    assert all(r["refused"] > 0 for r in results)  # every process felt the fleet's limit

    # The same processes with local budgets: each allows itself the floor and 20 %.
    local = await run_fleet(tmp_path / "local.db", workers, shared=False)
    local_retries = sum(r["attempts"] - r["calls"] for r in local)
    per_process = BUDGET["percent"] * CALLS + BUDGET["min_retries_per_sec"] * BUDGET["ttl"]
    assert local_retries == pytest.approx(PROCESSES * per_process, abs=PROCESSES)
    assert local_retries > limit + SLACK

    # The shared document holds one entry per process; `orchestrion breakers` hides it.
    async with SQLiteStore(path) as store:
        doc, _ = await store.breaker_load("budget:llm")
        names = [n for n, _, _ in await store.list_breakers()]
    assert doc is not None and set(doc["workers"]) == {f"s{i}" for i in range(PROCESSES)}
    assert names == ["budget:llm"]


def test_the_breakers_command_does_not_list_budget_documents(tmp_path: Path) -> None:
    path = tmp_path / "store.db"

    async def seed() -> None:
        async with SQLiteStore(path) as store:
            budget = SharedRetryBudget("llm", StoreBreakerState(store), worker_id="w1")
            budget.deposit()
            await budget.close()
            assert await store.breaker_save_if("tool:crm", 0, {"state": "closed", "epoch": 1})
            names = [n for n, _, _ in await store.list_breakers()]
            assert names == ["budget:llm", "tool:crm"]

    asyncio.run(seed())
    settings = SimpleNamespace(store=f"sqlite:///{path}", durability="normal")
    out = CliRunner().invoke(breakers, ["--json"], obj=settings)
    assert out.exit_code == 0, out.output
    assert [json.loads(line)["name"] for line in out.output.splitlines()] == ["tool:crm"]
    out = CliRunner().invoke(breakers, [], obj=settings)
    assert out.exit_code == 0 and "tool:crm" in out.output and "budget" not in out.output
