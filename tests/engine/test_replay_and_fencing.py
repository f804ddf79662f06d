"""Replay after a crash, non-determinism detection, and fencing of a stale owner."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from orchestrion import Orchestrion, ScriptedModel, call, say
from orchestrion.engine.runner import RunExecutor
from orchestrion.errors import LeaseLost
from orchestrion.store.sqlite import SQLiteStore

from .helpers import Counter, Crash, GatedModel, weather_agent


async def _claim(store: SQLiteStore, run_id: str, owner: str) -> tuple:
    run = await store.get_run(run_id)
    # A crashed owner ("Crash" in these tests leaves its lease current) is taken over as
    # proved dead.
    lease = await store.claim(
        run_id,
        owner=owner,
        expected_epoch=run.epoch,
        lease_seconds=30,
        now=time.time(),
        dead_owner=run.owner,
    )
    assert lease is not None
    return await store.get_run(run_id), lease


async def test_completed_steps_are_not_executed_again_on_resume(db_path: Path) -> None:
    first = Counter()
    crashing = weather_agent(first, crash_in="notify")
    async with Orchestrion(f"sqlite:///{db_path}", agents=[crashing]) as orx:
        run = await orx.submit("weather", "Weather in Paris?", conversation="c1")
        claimed, lease = await _claim(orx.store, run.id, "host/1/1")
        with pytest.raises(Crash):
            await RunExecutor(orx.store, crashing, claimed, lease).execute()
        # Two model calls and the lookup were recorded; notify's effect landed, its step not.
        steps = await orx.store.load_steps(run.id)
        assert steps[1].name == "chat weather-model"
        assert steps[2].name == "execute_tool lookup"
        assert steps[3].name == "chat weather-model"
        assert 4 not in steps  # notify died before its step was recorded

    second = Counter()
    healthy = weather_agent(second)
    async with Orchestrion(f"sqlite:///{db_path}", agents=[healthy]) as orx:
        claimed, lease = await _claim(orx.store, run.id, "host/2/2")
        executor = RunExecutor(orx.store, healthy, claimed, lease, resumed=True)
        assert await executor.execute() == "succeeded"
        assert executor.journal is not None
        # lookup ran once in the first life and never again; the model was asked only
        # what was not journaled (the final answer), not the two recorded rounds.
        assert first.calls["lookup"] == 1 and "lookup" not in second.calls
        assert healthy.model.calls == 1  # type: ignore[attr-defined]
        assert executor.journal.replayed >= 3
        # notify re-executed under the same idempotency key: its effect exists once.
        effects = await orx.store.list_effects(kind="notify")
        assert len(effects) == 1 and effects[0].idempotency_key.startswith(run.id + ":")
        assert second.calls["notify"] == 1
        assert len(await orx.store.list_effects(kind="log")) == 1
        history = await orx.history("c1")
        assert [m.role for m in history].count("user") == 1
        assert history[-1].content == "It is sunny in Paris; Ada knows."
        # The resumed run did not write its recorded rounds' state changes a second time.
        moves = [
            (e.attributes["from"], e.attributes["to"])
            for e in await orx.store.read_events(run.id)
            if e.type == "state.changed"
        ]
        assert moves == [
            ("AWAITING_INPUT", "STREAMING_RESPONSE"),
            ("STREAMING_RESPONSE", "PROCESSING_TOOLS"),
            ("PROCESSING_TOOLS", "STREAMING_RESPONSE"),
            ("STREAMING_RESPONSE", "PROCESSING_TOOLS"),
            ("PROCESSING_TOOLS", "STREAMING_RESPONSE"),
            ("STREAMING_RESPONSE", "AWAITING_INPUT"),
        ]


async def test_changed_code_under_a_recorded_run_is_a_non_determinism_error(db_path: Path) -> None:
    counter = Counter()
    # A crash inside a write tool: everything before it was recorded (a write step makes
    # what led to it durable first; read-only steps alone are recorded lazily).
    crashing = weather_agent(counter, crash_in="notify")
    async with Orchestrion(f"sqlite:///{db_path}", agents=[crashing]) as orx:
        run = await orx.submit("weather", "Weather?", conversation="c1")
        claimed, lease = await _claim(orx.store, run.id, "host/1/1")
        with pytest.raises(Crash):
            await RunExecutor(orx.store, crashing, claimed, lease).execute()

    # Same agent name, but the model is now called something else: step 1's name differs.
    renamed = weather_agent(Counter())
    renamed.model = ScriptedModel([say("hi")], name="another-model")
    async with Orchestrion(f"sqlite:///{db_path}", agents=[renamed]) as orx:
        claimed, lease = await _claim(orx.store, run.id, "host/2/2")
        status = await RunExecutor(orx.store, renamed, claimed, lease, resumed=True).execute()
        assert status == "failed"
        failed = await orx.store.get_run(run.id)
        assert failed.error is not None and failed.error["type"] == "NonDeterminismError"
        assert "chat weather-model" in failed.error["message"]
        assert "chat another-model" in failed.error["message"]
        # The user sees the degradation answer, never the error text.
        assert "NonDeterminism" not in failed.result["answer"]  # type: ignore[index]
        assert await orx.history("c1") == []


async def test_stale_owner_is_fenced_after_takeover(db_path: Path) -> None:
    gated = GatedModel(ScriptedModel([call("lookup", city="Oslo"), say("done")], name="gated"))
    agent = weather_agent(Counter())
    agent.model = gated
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        store = orx.store
        run = await orx.submit("weather", "Weather in Oslo?", conversation="c1")
        claimed, stale_lease = await _claim(store, run.id, "host/1/1")
        stale = RunExecutor(store, agent, claimed, stale_lease)
        stale_task = asyncio.create_task(stale.execute())
        await gated.entered.wait()  # the stale owner is inside its first model call

        # Another worker takes the run over (as after a lease expiry): epoch bumps.
        fresh_run, fresh_lease = await _claim(store, run.id, "host/2/2")
        assert fresh_lease.epoch == stale_lease.epoch + 1
        gated.gate.set()
        assert await stale_task == "lost"
        assert await store.load_steps(run.id) == {}  # the stale step write was refused

        with pytest.raises(LeaseLost):
            await store.renew_lease(stale_lease, lease_seconds=30, now=time.time())

        fresh = RunExecutor(store, agent, fresh_run, fresh_lease, resumed=True)
        assert await fresh.execute() == "succeeded"
        history = await orx.history("c1")
        assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
        run_after = await store.get_run(run.id)
        assert run_after.status == "succeeded" and run_after.epoch == fresh_lease.epoch
