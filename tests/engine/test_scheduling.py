"""The engine under real use (issue 10): a finished turn is reported only once durable,
no queue starves, waiting costs nothing, sibling tool calls end with their turn, a sync
tool is never run twice at once, what the runtime opens it closes, and nothing grows."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from orchestrion import Agent, Orchestrion, ScriptedModel, ToolContext, call, calls, say, tool
from orchestrion.errors import LeaseLost, StoreError
from orchestrion.store.base import Store

FAR_OWNER = "far-away-host:beef/4242/1"  # alive as far as this host can tell


def echo_agent(name: str = "echo", **kwargs: Any) -> Agent:
    """One tool call, then an answer that names the tool's result."""

    @tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        return f"value-of-{key}"

    model = ScriptedModel([call("lookup", key="k"), say("The answer is here.")], name=name)
    return Agent(name, model=model, tools=[lookup], **kwargs)


def count_calls(store: Store, *names: str) -> Counter[str]:
    """Count calls of some store methods (the store stays real)."""
    counts: Counter[str] = Counter()
    for name in names:
        original = getattr(store, name)

        async def counted(*args: Any, __name: str = name, __f: Any = original, **kw: Any) -> Any:
            counts[__name] += 1
            return await __f(*args, **kw)

        setattr(store, name, counted)
    return counts


# ---- 1. a finished turn is reported as finished, only once it is durable ---------------


async def test_send_reports_every_finished_turn_as_finished(store_url: str) -> None:
    async with Orchestrion(store_url, agents=[echo_agent()]) as orx:
        results = await asyncio.gather(
            *(orx.send("echo", f"hello {i}", conversation=f"c{i % 20}") for i in range(200))
        )
        for result in results:
            assert (result.status, result.answer) == ("succeeded", "The answer is here.")
            stored = await orx.store.get_run(result.run_id)
            assert stored.status == "succeeded"
        # Each conversation's turns ran one at a time, each appended once.
        history = await orx.history("c3")
        assert len(history) == 10 * 4  # user, tool call, tool result, answer


async def test_a_stream_ends_only_after_the_completion_is_durable(store_url: str) -> None:
    async with Orchestrion(store_url, agents=[echo_agent()]) as orx:
        for i in range(30):
            async for event in orx.stream("echo", "hi", conversation=f"s{i}"):
                if event.type == "run.finished":
                    # The consumer hears of the end: the store already says so.
                    assert (await orx.store.get_run(event.run_id)).terminal


async def test_a_failed_completion_is_raised_to_the_caller(store_url: str) -> None:
    async with Orchestrion(store_url, agents=[echo_agent()]) as orx:
        original = orx.store.complete_run

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise StoreError("store x: database or disk is full; free some space")

        orx.store.complete_run = broken  # type: ignore[method-assign]
        with pytest.raises(StoreError, match="disk is full"):
            await orx.send("echo", "hi", conversation="c1")
        orx.store.complete_run = original  # type: ignore[method-assign]
        (run,) = await orx.store.list_runs(conversation_id="c1")
        assert run.status == "running"  # not reported as finished: it was not
        assert orx.worker.counts["crashed"] == 1


# ---- 2. no queue starves ----------------------------------------------------------------


async def test_queued_runs_are_found_behind_hundreds_of_running_and_limited_ones(
    store_url: str,
) -> None:
    limited = echo_agent("limited", max_concurrent_runs=1)
    free = echo_agent("free")
    async with Orchestrion(store_url, agents=[limited, free]) as orx:
        store = orx.store
        # 80 runs that another (live, far away) worker is executing...
        for i in range(80):
            run = await orx.submit("free", "busy", conversation=f"busy-{i}")
            assert await store.claim(
                run.id, owner=FAR_OWNER, expected_epoch=0, lease_seconds=600, now=time.time()
            )
        # ...a limited queue at its limit (its one slot taken far away) with a backlog...
        first = await orx.submit("limited", "x", conversation="lim-0")
        assert await store.claim(
            first.id, owner=FAR_OWNER, expected_epoch=0, lease_seconds=600, now=time.time()
        )
        backlog = [await orx.submit("limited", "x", conversation=f"lim-{i}") for i in range(1, 60)]
        # ...and, queued behind all of them, the free queue's runs.
        fresh = [await orx.submit("free", "go", conversation=f"fresh-{i}") for i in range(120)]
        orx.worker.concurrency = 16
        executed = await orx.work(drain=True)
        assert executed == len(fresh)
        for run in fresh:
            assert (await store.get_run(run.id)).status == "succeeded"
        for run in backlog:
            assert (await store.get_run(run.id)).status == "queued"  # the limit held


# ---- 3. waiting costs nothing -----------------------------------------------------------


async def test_turns_queued_on_a_busy_conversation_do_not_poll(store_url: str) -> None:
    async with Orchestrion(store_url, agents=[echo_agent()]) as orx:
        counts = count_calls(orx.store, "claim", "queue_heads", "get_run")
        runs = [await orx.submit("echo", f"m{i}", conversation="one") for i in range(200)]
        for run in runs:
            orx.start(run.id)
        deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
        while not all([(await orx.store.get_run(r.id)).terminal for r in runs[-1:]]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        while orx.worker.active:  # noqa: ASYNC110 (the test watches the worker from outside)
            await asyncio.sleep(0.01)
        statuses = Counter([(await orx.store.get_run(r.id)).status for r in runs])
        assert statuses == {"succeeded": 200}
        # Each run is claimed once, woken by the end of the run ahead of it: no poll loop
        # per waiting turn (polling every 50 ms made thousands of claims here).
        assert counts["claim"] == 200
        assert counts["queue_heads"] <= 3 * 200


# ---- 4. sibling tool calls end with their turn ------------------------------------------


async def test_sibling_tool_calls_are_cancelled_when_one_ends_the_turn(db_path: Path) -> None:
    late_effects: list[str] = []

    @tool
    async def doomed() -> str:
        """Fails in a way that ends the turn."""
        raise LeaseLost("another worker took the run")

    @tool(effect="write")
    async def slow_write(ctx: ToolContext) -> str:
        """Acts after a while."""
        await asyncio.sleep(0.5)
        late_effects.append(ctx.idempotency_key)
        return "written"

    model = ScriptedModel([calls(call("doomed"), call("slow_write")), say("done")])
    agent = Agent("siblings", model=model, tools=[doomed, slow_write])
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        run = await orx.submit("siblings", "go", conversation="c1")
        orx.start(run.id)
        while orx.worker.counts["lost"] == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.8)  # longer than slow_write would take
        assert late_effects == []  # it was cancelled with its turn, not left running


# ---- 5. a sync tool is never run twice at once ------------------------------------------


async def test_a_timed_out_sync_write_tool_is_not_run_again_while_it_still_runs(
    db_path: Path,
) -> None:
    running = 0
    most = 0
    executions = 0
    lock = threading.Lock()

    @tool(effect="write", timeout=0.2)
    def blocking_write(item: str) -> str:
        """A slow write in a thread (a thread cannot be cancelled)."""
        nonlocal running, most, executions
        with lock:
            running += 1
            executions += 1
            most = max(most, running)
        time.sleep(0.35)
        with lock:
            running -= 1
        return f"wrote {item}"

    model = ScriptedModel([call("blocking_write", item="a"), say("done")])
    agent = Agent("sync", model=model, tools=[blocking_write])
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("sync", "go", conversation="c1")
    assert result.status == "succeeded"
    assert most == 1  # never two executions at once
    assert executions == 1  # the late first execution's result was used, not a second one


# ---- 8. what the runtime opens, it closes -----------------------------------------------


class ClosableModel(ScriptedModel):
    def __init__(self) -> None:
        super().__init__([say("hi")], name="closable")
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


async def test_close_closes_the_scheduler_breakers_models_and_store(store_url: str) -> None:
    model = ClosableModel()
    orx = Orchestrion(store_url, agents=[Agent("c", model=model)])
    async with orx:
        assert (await orx.send("c", "hello")).status == "succeeded"
    assert model.closed == 1
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert others == []  # no scheduler, upkeep or breaker sync outlives the runtime
    with pytest.raises(StoreError, match="not open"):
        await orx.store.get_run("run_x")


# ---- 11. store I/O errors are StoreErrors that say what to do ----------------------------


async def test_a_full_store_is_a_store_error_that_says_so(db_path: Path) -> None:
    async with Orchestrion(f"sqlite:///{db_path}", agents=[echo_agent()]) as orx:
        assert (await orx.send("echo", "hi", conversation="c1")).status == "succeeded"
        pages = orx.store.conn.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[attr-defined]
        orx.store.conn.execute(f"PRAGMA max_page_count = {pages}")  # type: ignore[attr-defined]
        with pytest.raises(StoreError, match=r"disk is full.*free some space"):
            for i in range(200):
                await orx.send("echo", "x" * 5000, conversation=f"big-{i}")


async def test_a_read_only_store_is_a_store_error_that_says_so(db_path: Path) -> None:
    async with Orchestrion(f"sqlite:///{db_path}", agents=[echo_agent()]) as orx:
        await orx.send("echo", "hi")
        # SQLite refuses writes as for a read-only file (a chmod would not stop root).
        orx.store.conn.execute("PRAGMA query_only = ON")  # type: ignore[attr-defined]
        with pytest.raises(StoreError, match="read-only"):
            await orx.send("echo", "hi")


async def test_a_device_is_refused_as_a_store() -> None:
    with pytest.raises(StoreError, match="not a regular file"):
        async with Orchestrion("sqlite:////dev/null"):
            pass
    assert not os.path.exists("/dev/null-journal")  # noqa: ASYNC240


# ---- 12. nothing grows without bound -----------------------------------------------------


async def test_a_reader_that_leaves_stops_receiving(db_path: Path) -> None:
    model = ScriptedModel([say("word " * 200)], chunk_size=2, latency=0.05)
    async with Orchestrion(f"sqlite:///{db_path}", agents=[Agent("talk", model=model)]) as orx:
        stream = orx.stream("talk", "go", conversation="c1")
        first = await stream.__anext__()
        await stream.aclose()
        while orx.worker.active:
            executor = orx.worker.live.get(first.run_id)
            if executor is not None:
                assert executor.sinks == []  # nothing is queued for the reader who left
            await asyncio.sleep(0.01)
        assert (await orx.result(first.run_id)).status == "succeeded"
        assert orx.worker._watches == {} and orx.worker._sinks == {}
        assert sum(orx.worker.counts.values()) == 1  # counts, not a record per run
