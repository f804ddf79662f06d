"""The commit budget (issues 12 and 19): a turn of N tool calls and M model calls costs at
most N + M + 3 commits (submit, claim, complete); read-only steps ride with the run's next
commit; on PostgreSQL no session is left inside a transaction once `send()` returned, and
a tool call costs at most one round trip."""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg
import pytest

from orchestrion import Agent, Orchestrion, ScriptedModel, call, say, tool
from orchestrion.store.postgres import PostgresStore
from tests.store.pg import sql

TOOL_CALLS = 10


def agent(effect: str) -> Agent:
    @tool(effect=effect)  # type: ignore[arg-type]
    async def work(i: int) -> str:
        """Do a small thing."""
        return f"did {i}"

    replies = [call("work", i=i) for i in range(TOOL_CALLS)] + [say("done")]
    return Agent("budget", model=ScriptedModel(replies), tools=[work])


def count_writes(store: Any) -> Counter[str]:
    """Count the store's transactions by the method that made them."""
    counts: Counter[str] = Counter()
    names = (
        "create_run",
        "claim",
        "record_steps",
        "append_events",
        "complete_run",
        "renew_leases",
        "set_conversation_state",
        "save_attempt",
        "record_effect",
    )
    for name in names:
        original = getattr(store, name)

        async def counted(*args: Any, __name: str = name, __f: Any = original, **kw: Any) -> Any:
            counts[__name] += 1
            return await __f(*args, **kw)

        setattr(store, name, counted)
    return counts


@pytest.mark.parametrize("effect", ["read", "write"])
async def test_a_turn_costs_at_most_n_plus_m_plus_3_commits(store_url: str, effect: str) -> None:
    async with Orchestrion(store_url, agents=[agent(effect)]) as orx:
        await orx.send("budget", "warm up")  # breakers and budgets publish once, first
        counts = count_writes(orx.store)
        result = await orx.send("budget", "go")
        assert result.status == "succeeded"
        commits = sum(counts.values())
        model_calls = TOOL_CALLS + 1
        assert commits <= TOOL_CALLS + model_calls + 3, counts
        assert counts["create_run"] == counts["claim"] == counts["complete_run"] == 1
        if effect == "write":
            # Each write is recorded at once, and what decided it (the model's call) is
            # made durable just before it runs: two commits per tool call, no more.
            assert counts["record_steps"] == 2 * TOOL_CALLS, counts
        steps = await orx.store.load_steps(result.run_id)
        assert len(steps) == TOOL_CALLS + model_calls  # every step recorded, lazily or not


async def test_a_fast_read_only_turn_is_three_commits(tmp_path: Any) -> None:
    """Read-only steps that finish within the flush delay ride with the completion."""
    async with Orchestrion(f"sqlite:///{tmp_path / 's.db'}", agents=[agent("read")]) as orx:
        await orx.send("budget", "warm up")
        counts = count_writes(orx.store)
        results = [await orx.send("budget", "go") for _ in range(5)]
        assert all(r.status == "succeeded" for r in results)
        # On a very slow machine the upkeep may flush once in a while (still in budget);
        # typically each turn is exactly submit + claim + completion.
        assert counts["create_run"] == counts["claim"] == counts["complete_run"] == 5
        assert counts["record_steps"] <= 5, counts


async def test_no_postgres_session_is_left_in_a_transaction_after_send(store_url: str) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL property (SQLite transactions are synchronous)")
    async with Orchestrion(store_url, agents=[agent("write")]) as orx:
        assert isinstance(orx.store, PostgresStore)
        application = orx.store.application_name
        for i in range(5):
            assert (await orx.send("budget", f"go {i}")).status == "succeeded"
            open_transactions = sql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND state LIKE 'idle in transaction%%'",
                (application,),
            )
            assert open_transactions == [(0,)]


async def test_a_postgres_tool_call_costs_at_most_one_round_trip(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("round trips are a PostgreSQL property")
    trips: list[str] = []
    execute = psycopg.AsyncCursor.execute
    pipeline = psycopg.AsyncConnection.pipeline

    async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if self.connection._pipeline is None:  # pipelined statements share one trip
            trips.append(str(query)[:60])
        return await execute(self, query, *args, **kwargs)

    def one_trip(self: Any) -> Any:
        if self._pipeline is None:  # psycopg nests pipelines inside one
            trips.append("pipeline")
        return pipeline(self)

    async with Orchestrion(store_url, agents=[agent("read")]) as orx:
        await orx.send("budget", "warm up")
        monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted)
        monkeypatch.setattr(psycopg.AsyncConnection, "pipeline", one_trip)
        assert (await orx.send("budget", "go")).status == "succeeded"
        monkeypatch.undo()
    # Submit, schedule, claim, load the turn, complete, read the result: a fixed number
    # of round trips per turn; the 21 steps themselves ride with the completion (or with
    # a flush, on a slow machine): fewer trips than tool calls.
    assert len(trips) <= TOOL_CALLS, trips
